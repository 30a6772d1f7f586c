"""Several latbench processes on one host, one phone or one database: who owns what, and
whether its owner still runs.

* :class:`ProcessId` names a process by host, pid and start time (a pid alone is reused
  by the OS); :func:`this_process` is ours, :func:`is_alive` tells whether one still runs.
  The store's claims (:meth:`latbench.data.store.Store.claim`) record it, so the claim of a
  killed process (``kill -9`` leaves no chance to release anything) can be taken over.
* :func:`owner_token` is the same identity in a form fit for file names; temporary folders
  (:func:`owned_tempdir`) and files latbench leaves on a phone carry it, so the next run
  can remove what a killed process left behind (:func:`stale_token`,
  :func:`remove_stale_tempdirs`) without touching what a live one uses.
* :func:`device_lock` serialises measurements on one physical device across the processes
  of this host (``flock`` on a file under ``~/.cache/latbench/locks``): two runners on one
  phone disturb each other's timings. Who waits is told through a
  :class:`~latbench.exceptions.LatbenchNotice` warning, which the command line prints as a
  ``note:`` line.

Nothing here does work at import time.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from latbench.exceptions import LatbenchNotice

__all__ = [
    "ProcessId",
    "this_process",
    "is_alive",
    "owner_token",
    "parse_owner_token",
    "stale_token",
    "host_tag",
    "lock_dir",
    "device_lock",
    "owned_tempdir",
    "remove_stale_tempdirs",
    "TEMPDIR_PREFIXES",
]

#: Prefixes of the temporary folders latbench makes (and removes when their owner is gone).
TEMPDIR_PREFIXES = ("latbench-sweep-", "latbench-check-")

#: A folder of these prefixes without an owner token was made by a latbench before owner
#: tokens; it is removed when nothing was written in it for this long (seconds): a sweep
#: writes a model into its folder for every variant, so a day of silence means it is gone.
LEGACY_TEMPDIR_AGE_S = 24 * 3600.0

_TOKEN_RE = re.compile(r"lb([0-9a-f]{8})p(\d+)s(\d+)")


@dataclass(frozen=True)
class ProcessId:
    """A process: the host it runs on, its pid, and its start time.

    ``start`` is the kernel's start time of the process in clock ticks since boot
    (``/proc/<pid>/stat``, field 22), or 0 where there is no ``/proc``; with it, a pid the
    OS gave to a new process is not mistaken for the old one.
    """

    host: str
    pid: int
    start: int = 0

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}:{self.start}"

    @classmethod
    def parse(cls, text: str) -> "ProcessId | None":
        """The inverse of ``str()``; ``None`` for anything else (an owner named by a driver)."""
        host, _, rest = text.rpartition(":")
        host, _, pid = host.rpartition(":")
        if not host or not pid.isdigit() or not rest.isdigit():
            return None
        return cls(host, int(pid), int(rest))


def _start_ticks(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot; ``None`` if there is no such
    process (or it is a zombie: it exited and holds nothing); 0 where ``/proc`` is missing."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        if not Path("/proc/self/stat").exists():  # no procfs (macOS): ask the kernel
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return None
            except PermissionError:  # another user's process: it exists
                return 0
            return 0
        return None
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    fields = text[text.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return 0


_SELF: ProcessId | None = None


def this_process() -> ProcessId:
    """This process (host name, pid, start time); computed once per process."""
    global _SELF
    if _SELF is None or _SELF.pid != os.getpid():  # a fork is another process
        _SELF = ProcessId(socket.gethostname(), os.getpid(), _start_ticks(os.getpid()) or 0)
    return _SELF


def is_alive(proc: ProcessId) -> bool | None:
    """Whether ``proc`` still runs: ``True``/``False`` for a process of this host, ``None``
    for another host's (it cannot be told from here)."""
    if proc.host != socket.gethostname():
        return None
    start = _start_ticks(proc.pid)
    if start is None:
        return False
    return not (proc.start and start and start != proc.start)


def host_tag(host: str | None = None) -> str:
    """8 hex digits naming a host in file names (a hash of its name)."""
    return hashlib.sha256((host or socket.gethostname()).encode()).hexdigest()[:8]


def owner_token(proc: ProcessId | None = None) -> str:
    """``lb<host tag>p<pid>s<start>``: a process's identity, fit for file names."""
    p = proc or this_process()
    return f"lb{host_tag(p.host)}p{p.pid}s{p.start}"


def parse_owner_token(name: str) -> tuple[str, int, int] | None:
    """``(host tag, pid, start)`` of the first owner token in ``name``, or ``None``."""
    m = _TOKEN_RE.search(name)
    return None if m is None else (m.group(1), int(m.group(2)), int(m.group(3)))


def stale_token(name: str) -> bool:
    """Whether ``name`` carries the owner token of a process of this host that is gone.

    Names without a token, of other hosts, or of a live process are not stale.
    """
    parsed = parse_owner_token(name)
    if parsed is None:
        return False
    tag, pid, start = parsed
    if tag != host_tag():
        return False
    if pid == os.getpid():
        return False
    return is_alive(ProcessId(socket.gethostname(), pid, start)) is False


# ------------------------------------------------------------------------ device locks
def lock_dir() -> Path:
    """Where device locks live: ``$XDG_CACHE_HOME/latbench/locks`` (``~/.cache/...``).

    One folder per user: two users of one host measuring one phone are not serialised.
    """
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "latbench" / "locks"


def _lock_path(key: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", key)[:60]
    return lock_dir() / f"{safe}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock"


def _describe_holder(raw: bytes) -> str:
    try:
        doc = json.loads(raw.decode() or "{}")
        since = time.strftime("%H:%M:%S", time.localtime(float(doc["since"])))
        return f"pid {int(doc['pid'])} ({doc.get('what', 'a measurement')}, since {since})"
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        return "another process"


@contextmanager
def device_lock(key: str, *, device: str, what: str = "measuring") -> Iterator[None]:
    """Hold the lock of the physical device ``key`` (its serial, or its address) for this
    host's latbench processes, waiting for whoever holds it.

    The lock is an ``flock`` on a file under :func:`lock_dir`, so it is released when its
    holder exits, however it exits (``kill -9`` included). The holder writes its pid and
    what it does into the file; a process that has to wait warns once with a
    :class:`~latbench.exceptions.LatbenchNotice` naming them.

    Parameters
    ----------
    key : str
        What identifies the physical device (``ro.serialno``, else ``host:port``).
    device : str
        The profile name, for the message.
    what : str
        What the holder does, for the waiters' message.

    Raises
    ------
    DeviceError
        Never; a lock folder that cannot be made (read-only home) is warned about once and
        the measurement goes on unserialised.
    """
    path = _lock_path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as exc:
        warnings.warn(f"cannot create the lock of device {device!r} in {str(path.parent)!r} "
                      f"({exc.strerror}): measurements of other latbench processes on it are "
                      "not serialised; set XDG_CACHE_HOME to a writable folder", LatbenchNotice,
                      stacklevel=3)
        yield
        return
    try:
        _acquire(fd, path, device)
        try:
            payload = json.dumps({"pid": os.getpid(), "since": time.time(), "what": what,
                                  "device": device}).encode()
            os.ftruncate(fd, 0)
            os.pwrite(fd, payload, 0)
        except OSError:  # a full disk: the lock holds all the same, waiters learn less
            pass
        try:
            yield
        finally:
            _release(fd)
    finally:
        os.close(fd)


def _acquire(fd: int, path: Path, device: str) -> None:
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return
        except OSError:
            _notice_wait(fd, device)
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                time.sleep(0.2)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
    _notice_wait(fd, device)
    fcntl.flock(fd, fcntl.LOCK_EX)  # Ctrl-C interrupts the wait (KeyboardInterrupt)


def _release(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        import msvcrt

        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        return
    fcntl.flock(fd, fcntl.LOCK_UN)


def _notice_wait(fd: int, device: str) -> None:
    try:
        raw = os.pread(fd, 4096, 0)
    except OSError:
        raw = b""
    warnings.warn(f"device {device!r} is busy with {_describe_holder(raw)} of another latbench "
                  "process on this host; waiting for it to finish, so that the two do not "
                  "disturb each other's timings", LatbenchNotice, stacklevel=4)


# ------------------------------------------------------------------- temporary folders
@contextmanager
def owned_tempdir(prefix: str) -> Iterator[Path]:
    """A new temporary folder named ``<prefix><owner token>-XXXX`` (under ``$TMPDIR``),
    removed on exit; what killed processes left under the same prefixes is removed first
    (:func:`remove_stale_tempdirs`).

    Raises
    ------
    OSError
        If the folder cannot be made (a full or read-only ``$TMPDIR``).
    """
    remove_stale_tempdirs()
    path = Path(tempfile.mkdtemp(prefix=f"{prefix}{owner_token()}-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale_tempdirs(root: str | Path | None = None,
                          prefixes: tuple[str, ...] = TEMPDIR_PREFIXES) -> list[Path]:
    """Remove the temporary folders of latbench processes of this host that are gone.

    A folder counts as stale if its owner token names a process of this host that no
    longer runs, or (a folder of an older latbench, without a token) if nothing was written
    in it for :data:`LEGACY_TEMPDIR_AGE_S`. Folders of live processes and of other hosts
    (a shared ``/tmp``) are left alone. Failures to remove are ignored.

    Returns
    -------
    list of Path
        The folders removed.
    """
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed = []
    try:
        entries = list(os.scandir(base))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith(prefixes):
            continue
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            if parse_owner_token(entry.name) is not None:
                stale = stale_token(entry.name)
            else:
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMPDIR_AGE_S
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            if not os.path.exists(entry.path):
                removed.append(Path(entry.path))
    return removed
