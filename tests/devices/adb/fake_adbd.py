"""A loopback ADB *device* (the adbd side) for tests: adb-shell's real host code talks to it.

It listens on 127.0.0.1 (a free port), serves each connection in a thread, and stops with
:meth:`FakeAdbd.stop` (every loop is bounded by a stop flag or a timeout). Wire protocol:
24-byte ``<6I>`` headers (command, arg0, arg1, length, checksum, magic) + payload;
``CNXN``/``AUTH`` handshake (RSA signature over a token, checked against the configured
public keys, or a public key offered for the user to "accept"), ``OPEN shell:`` streams
answered with ``WRTE``s (each acknowledged with ``OKAY``) and ``CLSE``, and the ``sync:``
service (``SEND``/``DATA``/``DONE`` → ``OKAY``/``FAIL``, ``STAT``, ``RECV``, ``QUIT``).

Shell commands run in a sandbox: a temporary directory stands for the device's ``/`` and a
small interpreter knows only the commands latbench sends (``;`` lists, ``echo $?``, mkdir,
chmod, mv, rm, ls, cat, sha256sum, grep -H, getprop, settings, dumpsys battery, taskset,
pkill, and running a pushed file). A pushed "binary" is run as a Python script with the
sandbox root in ``$FAKE_ADB_ROOT``. Nothing outside the sandbox is read or written.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import os
import posixpath
import re
import select
import shlex
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

HEADER = struct.Struct("<6I")
VERSION = 0x01000000
MAXDATA = 1024 * 1024


def _wire(cmd: bytes) -> int:
    return struct.unpack("<I", cmd)[0]


CNXN, AUTH, OPEN, OKAY, WRTE, CLSE = (_wire(c) for c in (b"CNXN", b"AUTH", b"OPEN", b"OKAY",
                                                          b"WRTE", b"CLSE"))
AUTH_TOKEN, AUTH_SIGNATURE, AUTH_RSAPUBLICKEY = 1, 2, 3
#: Pushes under these device paths fail, as on a phone's read-only system partition.
READ_ONLY = ("/system/", "/vendor/")
# PKCS#1 v1.5 DigestInfo prefix for SHA-1: adbd checks the token signature against it.
_SHA1_PREFIX = bytes.fromhex("3021300906052b0e03021a05000414")


def decode_adb_pubkey(text: str | bytes) -> tuple[int, int]:
    """(modulus, exponent) of an ADB public key (base64 ``RSAPublicKey`` struct + user@host)."""
    raw = base64.b64decode(text.split()[0] if isinstance(text, str) else text.split()[0])
    words, _n0inv, modulus, _rr, exponent = struct.unpack("<II256s256sI", raw)
    assert words == 64
    return int.from_bytes(modulus, "little"), exponent


def verify_signature(pubkey: str, token: bytes, signature: bytes) -> bool:
    """Whether ``signature`` is the PKCS#1 v1.5 (SHA-1 prehashed) signature of ``token``."""
    n, e = decode_adb_pubkey(pubkey)
    k = (n.bit_length() + 7) // 8
    if len(signature) != k:
        return False
    block = pow(int.from_bytes(signature, "big"), e, n).to_bytes(k, "big")
    digest_info = _SHA1_PREFIX + token
    expected = b"\x00\x01" + b"\xff" * (k - 3 - len(digest_info)) + b"\x00" + digest_info
    return block == expected


class _Closed(Exception):
    """The host went away."""


class Sandbox:
    """The fake device's filesystem (a host directory standing for ``/``) and its shell."""

    def __init__(self, root: Path, *, props: dict[str, str], settings: dict[str, str],
                 battery: str, runner_env: dict[str, str], has_sha256sum: bool = True,
                 max_command_s: float = 20.0) -> None:
        self.root = root.resolve()
        self.props = props
        self.settings = settings
        self.battery = battery
        self.runner_env = runner_env
        self.has_sha256sum = has_sha256sum
        self.max_command_s = max_command_s
        self._procs: list[subprocess.Popen] = []
        self._lock = threading.Lock()
        #: Every executed file: (start, end) on the monotonic clock, and its command line.
        self.execs: list[tuple[float, float, str]] = []

    # -- paths ------------------------------------------------------------------------
    def host(self, remote: str) -> Path:
        """The sandbox path for a device path; refuses anything that would leave the sandbox."""
        norm = posixpath.normpath("/" + remote if not remote.startswith("/") else remote)
        p = (self.root / norm.lstrip("/")).resolve()
        if p != self.root and self.root not in p.parents:
            raise PermissionError(remote)
        return p

    def remote(self, host: Path) -> str:
        return "/" + host.resolve().relative_to(self.root).as_posix()

    def write(self, remote: str, data: bytes | str, mode: int = 0o644) -> None:
        p = self.host(remote)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data.encode() if isinstance(data, str) else data)
        os.chmod(p, mode)

    def _expand(self, arg: str) -> list[str]:
        if not any(c in arg for c in "*?[") or not arg.startswith("/"):
            return [arg]
        matches = sorted(glob.glob(str(self.root / arg.lstrip("/"))))
        return [self.remote(Path(m)) for m in matches] or [arg]

    # -- shell ------------------------------------------------------------------------
    def run(self, command: str, should_abort: Callable[[], bool]) -> tuple[str, int] | None:
        """Run a ``;`` list; ``None`` when ``should_abort`` stopped it (host gone/dropped)."""
        lex = shlex.shlex(command, posix=True, punctuation_chars=";")
        lex.whitespace_split = True
        segments: list[list[str]] = [[]]
        for tok in lex:
            if tok == ";":
                segments.append([])
            else:
                segments[-1].append(tok)
        out: list[str] = []
        rc = 0
        for argv in (s for s in segments if s):
            argv = [a.replace("$?", str(rc)) for a in argv]
            expanded = [x for a in argv for x in self._expand(a)]
            # Checked before each command too, so a drop after 0 s happens whatever the speed.
            res = None if should_abort() else self._one(expanded, should_abort)
            if res is None:
                return None
            text, rc = res
            out.append(text)
        return "".join(out), rc

    def _one(self, argv: list[str], should_abort: Callable[[], bool]) -> tuple[str, int] | None:
        cmd, args = argv[0], argv[1:]
        try:
            if cmd == "echo":
                return " ".join(args) + "\n", 0
            if cmd == "mkdir":
                for a in (a for a in args if not a.startswith("-")):
                    self.host(a).mkdir(parents=True, exist_ok=True)
                return "", 0
            if cmd == "chmod":
                os.chmod(self._existing(args[1]), int(args[0], 8))
                return "", 0
            if cmd == "mv":
                os.replace(self._existing(args[0]), self.host(args[1]))
                return "", 0
            if cmd == "rm":
                force = "-f" in args
                for a in (a for a in args if not a.startswith("-")):
                    p = self.host(a)
                    if p.exists():
                        p.unlink()
                    elif not force:
                        return f"rm: {a}: No such file or directory\n", 1
                return "", 0
            if cmd == "ls":
                out = []
                for a in (a for a in args if not a.startswith("-")):
                    p = self._existing(a)
                    # a folder lists its entries one a line, as toybox ls does into a pipe
                    out.extend(sorted(os.listdir(p)) if p.is_dir() else [a])
                return "".join(f"{x}\n" for x in out), 0
            if cmd == "cat":
                return "".join(self._existing(a).read_text() for a in args), 0
            if cmd == "sha256sum":
                if not self.has_sha256sum:
                    return "/system/bin/sh: sha256sum: inaccessible or not found\n", 127
                p = self._existing(args[0])
                return f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {args[0]}\n", 0
            if cmd == "grep":
                return self._grep(args)
            if cmd == "getprop":
                if args:
                    return self.props.get(args[0], "") + "\n", 0
                return "".join(f"[{k}]: [{v}]\n" for k, v in self.props.items()), 0
            if cmd == "settings" and args[:2] == ["get", "global"]:
                return self.settings.get(args[2], "null") + "\n", 0
            if cmd == "dumpsys" and args == ["battery"]:
                return self.battery, 0
            if cmd == "pkill":
                return self._pkill(args[-1])
            if cmd == "taskset":
                int(args[0], 16)
                return self._one(args[1:], should_abort)
            if cmd.startswith("/"):
                return self._exec(cmd, args, should_abort)
            return f"/system/bin/sh: {cmd}: inaccessible or not found\n", 127
        except FileNotFoundError as exc:
            return f"{cmd}: {exc.args[0]}: No such file or directory\n", 1
        except (PermissionError, ValueError, IndexError) as exc:
            return f"{cmd}: {exc}\n", 1

    def _existing(self, remote: str) -> Path:
        p = self.host(remote)
        if not p.exists():
            raise FileNotFoundError(remote)
        return p

    def _grep(self, args: list[str]) -> tuple[str, int]:
        files = [a for a in args if a not in ("-H", ".")]
        out, found = [], False
        for f in files:
            try:
                p = self._existing(f)
            except FileNotFoundError:
                out.append(f"grep: {f}: No such file or directory\n")
                continue
            for line in p.read_text().splitlines():
                if line:
                    out.append(f"{f}:{line}\n")
                    found = True
        return "".join(out), 0 if found else 1

    def _pkill(self, pattern: str) -> tuple[str, int]:
        # pkill -f: an extended regex searched in the whole command line
        killed = 0
        with self._lock:
            for proc in self._procs:
                line = " ".join(str(a) for a in proc.args)
                if proc.poll() is None and re.search(pattern, line):
                    proc.kill()
                    killed += 1
        return "", 0 if killed else 1

    def _exec(self, path: str, args: list[str], should_abort: Callable[[], bool]
              ) -> tuple[str, int] | None:
        p = self.host(path)
        if not p.is_file():
            return f"/system/bin/sh: {path}: inaccessible or not found\n", 127
        if not os.access(p, os.X_OK):
            return f"/system/bin/sh: {path}: can't execute: Permission denied\n", 126
        env = {"PATH": os.environ.get("PATH", ""), "FAKE_ADB_ROOT": str(self.root),
               "FAKE_ADB_ARGV0": path, **self.runner_env}
        started = time.monotonic()
        proc = subprocess.Popen([sys.executable, str(p), *args], cwd=self.root, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        with self._lock:
            self._procs.append(proc)
        deadline = time.monotonic() + self.max_command_s
        try:
            while True:
                try:
                    out, _ = proc.communicate(timeout=0.05)
                    break
                except subprocess.TimeoutExpired:
                    if should_abort() or time.monotonic() > deadline:
                        proc.kill()
                        proc.communicate()
                        return None
        finally:
            with self._lock:
                self._procs.remove(proc)
                self.execs.append((started, time.monotonic(), " ".join([path, *args])))
        rc = proc.returncode
        # A process killed by signal N exits with 128 + N in sh.
        return out.decode(errors="replace"), (128 - rc if rc < 0 else rc)

    def kill_all(self) -> None:
        with self._lock:
            for proc in self._procs:
                if proc.poll() is None:
                    proc.kill()


class FakeAdbd:
    """A loopback ADB device. Use as a context manager; ``port`` is where it listens.

    Parameters
    ----------
    root : Path
        Sandbox directory standing for the device's ``/``.
    authorized_keys : list of str, optional
        ADB public keys (``.pub`` contents) the device trusts; ``None``: no authentication.
    accept_new_keys : bool
        Whether an offered unknown public key is "accepted on the phone" (else the device
        closes the connection, as if the user refused).
    props, settings, battery, sysfs : ...
        ``getprop`` values, ``settings get global`` values, ``dumpsys battery`` text, and
        files (device path → content) written into the sandbox.
    runner_env : dict
        Environment of executed runners (e.g. ``STANDIN_MODE``).
    drop_on : str, optional
        When a shell command containing this runs, close the socket after ``drop_after_s``.
    """

    def __init__(self, root: Path, *, authorized_keys: list[str] | None = None,
                 accept_new_keys: bool = False, props: dict[str, str] | None = None,
                 settings: dict[str, str] | None = None, battery: str = "",
                 sysfs: dict[str, str] | None = None, runner_env: dict[str, str] | None = None,
                 drop_on: str | None = None, drop_after_s: float = 0.3,
                 has_sha256sum: bool = True, max_command_s: float = 20.0) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.sandbox = Sandbox(root, props=props or {}, settings=settings or {},
                               battery=battery, runner_env=runner_env or {},
                               has_sha256sum=has_sha256sum, max_command_s=max_command_s)
        for path, content in (sysfs or {}).items():
            self.sandbox.write(path, content)
        self.authorized_keys = list(authorized_keys) if authorized_keys is not None else None
        self.accept_new_keys = accept_new_keys
        self.drop_on = drop_on
        self.drop_after_s = drop_after_s
        self.commands: list[str] = []
        self.pushed: list[str] = []
        self.auth_results: list[str] = []
        self.connections = 0
        self._pending: tuple[str, int, list[bytes]] | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(8)
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]

    # -- lifecycle ----------------------------------------------------------------------
    def __enter__(self) -> "FakeAdbd":
        t = threading.Thread(target=self._accept_loop, name="fake-adbd", daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self.sandbox.kill_all()
        for s in [self._server, *self._socks]:
            try:
                s.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(timeout=5)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._server.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            self.connections += 1
            self._socks.append(sock)
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            t.start()
            self._threads.append(t)

    # -- wire ---------------------------------------------------------------------------
    def _recv_exact(self, sock: socket.socket, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            if self._stop.is_set():
                raise _Closed()
            r, _, _ = select.select([sock], [], [], 0.1)
            if not r:
                continue
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise _Closed()
            buf += chunk
        return bytes(buf)

    def _read(self, sock: socket.socket) -> tuple[int, int, int, bytes]:
        cmd, arg0, arg1, length, check, magic = HEADER.unpack(self._recv_exact(sock, HEADER.size))
        assert magic == cmd ^ 0xFFFFFFFF, "bad magic"
        data = self._recv_exact(sock, length) if length else b""
        assert sum(data) & 0xFFFFFFFF == check, "bad checksum"
        return cmd, arg0, arg1, data

    @staticmethod
    def _send(sock: socket.socket, cmd: int, arg0: int, arg1: int, data: bytes = b"") -> None:
        sock.sendall(HEADER.pack(cmd, arg0, arg1, len(data), sum(data) & 0xFFFFFFFF,
                                 cmd ^ 0xFFFFFFFF) + data)

    def _write_stream(self, sock: socket.socket, rid: int, lid: int, data: bytes) -> None:
        for i in range(0, len(data), 4096):
            self._send(sock, WRTE, rid, lid, data[i:i + 4096])
            while True:  # wait for the host's OKAY for this stream
                cmd, a0, a1, _ = self._read(sock)
                if cmd == OKAY and a1 == rid:
                    break
                if cmd == CLSE and a1 == rid:
                    raise _Closed()

    # -- connection -----------------------------------------------------------------------
    def _serve(self, sock: socket.socket) -> None:
        authed = self.authorized_keys is None
        token = os.urandom(20)
        next_id = 100
        syncs: dict[int, bytearray] = {}
        try:
            while not self._stop.is_set():
                cmd, arg0, arg1, data = self._read(sock)
                if cmd == CNXN:
                    if authed:
                        self._cnxn(sock)
                    else:
                        self._send(sock, AUTH, AUTH_TOKEN, 0, token)
                elif cmd == AUTH and arg0 == AUTH_SIGNATURE:
                    if any(verify_signature(k, token, data) for k in self.authorized_keys or []):
                        authed = True
                        self.auth_results.append("signature-ok")
                        self._cnxn(sock)
                    else:
                        self.auth_results.append("signature-bad")
                        token = os.urandom(20)
                        self._send(sock, AUTH, AUTH_TOKEN, 0, token)
                elif cmd == AUTH and arg0 == AUTH_RSAPUBLICKEY:
                    key = data.rstrip(b"\0").decode()
                    if self.accept_new_keys:  # the user tapped "Allow" on the phone
                        self.authorized_keys = [*(self.authorized_keys or []), key]
                        authed = True
                        self.auth_results.append("key-accepted")
                        self._cnxn(sock)
                    else:  # the user refused: adbd drops the connection
                        self.auth_results.append("key-refused")
                        return
                elif not authed:
                    return
                elif cmd == OPEN:
                    next_id += 1
                    rid, lid = next_id, arg0
                    dest = data.rstrip(b"\0").decode()
                    self._send(sock, OKAY, rid, lid)
                    if dest.startswith("shell:"):
                        if not self._shell(sock, rid, lid, dest[len("shell:"):]):
                            return
                    elif dest == "sync:":
                        syncs[rid] = bytearray()
                    else:
                        self._send(sock, CLSE, rid, lid)
                elif cmd == WRTE:
                    self._send(sock, OKAY, arg1, arg0)
                    if arg1 in syncs:
                        syncs[arg1] += data
                        if not self._sync(sock, arg1, arg0, syncs[arg1]):
                            del syncs[arg1]
                            self._send(sock, CLSE, arg1, arg0)
                elif cmd == CLSE:
                    if arg1 in syncs:
                        del syncs[arg1]
                        self._send(sock, CLSE, arg1, arg0)
                # a stray OKAY needs no answer
        except (_Closed, OSError, AssertionError):
            pass
        finally:
            try:
                sock.close()
            except OSError:
                pass

    def _cnxn(self, sock: socket.socket) -> None:
        banner = "device::" + "".join(f"{k}={self.sandbox.props.get(k, '')};" for k in
                                      ("ro.product.name", "ro.product.model", "ro.product.device"))
        self._send(sock, CNXN, VERSION, MAXDATA, banner.encode() + b"\0")

    def _shell(self, sock: socket.socket, rid: int, lid: int, command: str) -> bool:
        self.commands.append(command)
        drop_at = (time.monotonic() + self.drop_after_s
                   if self.drop_on is not None and self.drop_on in command else None)

        def should_abort() -> bool:
            if drop_at is not None and time.monotonic() >= drop_at:
                return True
            if self._stop.is_set():
                return True
            r, _, _ = select.select([sock], [], [], 0)
            # While a command runs the host only waits; readable means it hung up.
            return bool(r) and sock.recv(1, socket.MSG_PEEK) == b""

        res = self.sandbox.run(command, should_abort)
        if res is None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False
        out, _rc = res
        self._write_stream(sock, rid, lid, out.encode())
        self._send(sock, CLSE, rid, lid)
        return True

    def _sync(self, sock: socket.socket, rid: int, lid: int, buf: bytearray) -> bool:
        """Consume complete sync records in ``buf``; ``False`` after ``QUIT``."""
        while len(buf) >= 8:
            rec, n = struct.unpack("<4sI", buf[:8])
            if rec == b"DONE":
                del buf[:8]
                if self._pending is not None:  # None: SEND already failed
                    path, mode, chunks = self._pending
                    self.sandbox.write(path, b"".join(chunks), mode & 0o777)
                    self.pushed.append(path)
                    self._write_stream(sock, rid, lid, b"OKAY" + struct.pack("<I", 0))
                self._pending = None
                continue
            if rec == b"QUIT":
                del buf[:8]
                return False
            if len(buf) < 8 + n:
                return True
            payload = bytes(buf[8:8 + n])
            del buf[:8 + n]
            if rec == b"SEND":
                path, _, mode = payload.decode().rpartition(",")
                if path.startswith(READ_ONLY):
                    msg = f"couldn't create file: Read-only file system ({path})".encode()
                    self._write_stream(sock, rid, lid, b"FAIL" + struct.pack("<I", len(msg)) + msg)
                    self._pending = None
                    continue
                self._pending = (path, int(mode), [])
            elif rec == b"DATA":
                if self._pending is not None:
                    self._pending[2].append(payload)
            elif rec == b"STAT":
                p = self.sandbox.host(payload.decode())
                st = p.stat() if p.exists() else None
                self._write_stream(sock, rid, lid, b"STAT" + struct.pack(
                    "<3I", st.st_mode if st else 0, st.st_size if st else 0,
                    int(st.st_mtime) if st else 0))
            elif rec == b"RECV":
                data = self.sandbox.host(payload.decode()).read_bytes()
                out = b"".join(b"DATA" + struct.pack("<I", len(data[i:i + 65536])) +
                               data[i:i + 65536] for i in range(0, len(data), 65536))
                self._write_stream(sock, rid, lid, out + b"DONE" + struct.pack("<I", 0))
        return True
