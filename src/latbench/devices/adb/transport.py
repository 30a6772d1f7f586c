"""An ADB connection over TCP or USB (adb-shell): keys, shell with exit status, cached push.

Every call has a timeout, and every failure of the link becomes a :class:`DeviceError`
that names the device and says what to do. A dropped TCP connection is reported as such
(adb-shell's own transport would spin on the closed socket until its read timeout).
"""

from __future__ import annotations

import math
import os
import posixpath
import re
import shlex
import stat as stat_mod
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adb_shell import exceptions as adb_exc
from adb_shell.adb_device import AdbDevice as _AdbShellDevice
from adb_shell.transport.tcp_transport import TcpTransport

from latbench.exceptions import ConnectionDroppedError, DeviceError, DeviceTimeoutError, UserInputError

__all__ = [
    "AdbConnection",
    "ShellResult",
    "ConnectionDroppedError",
    "DeviceTimeoutError",
    "DEFAULT_ADBKEY",
    "parse_host",
    "load_signer",
    "list_usb_serials",
    "choose_usb_serial",
]

#: Where adb keeps its key; no ``$ANDROID_HOME`` or SDK is needed.
DEFAULT_ADBKEY = Path("~/.android/adbkey")

_RC_MARK = "__rc="
_RC_RE = re.compile(r"__rc=(\d+)\s*$")



class _TcpTransport(TcpTransport):
    """adb-shell's TCP transport, but an orderly close by the peer raises at once."""

    def bulk_read(self, numbytes: int, transport_timeout_s: float | None) -> bytes:
        data = super().bulk_read(numbytes, transport_timeout_s)
        if not data and numbytes > 0:
            raise ConnectionDroppedError(f"{self._host}:{self._port} closed the connection")
        return data



@dataclass(frozen=True)
class ShellResult:
    """What a shell command printed (stdout and stderr, ``\\r\\n`` normalised) and its exit status.

    ``rc`` is ``None`` when the exit-status marker never arrived (the shell died).
    """

    output: str
    rc: int | None


def parse_host(host: str) -> tuple[str, int]:
    """``"192.168.1.20:5555"`` → ``("192.168.1.20", 5555)``; the port defaults to 5555.

    Raises
    ------
    UserInputError
        If the port is not an integer in 1..65535 or the host is empty.
    """
    text = host.strip()
    if text.startswith("["):  # [IPv6]:port
        addr, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        addr, port_text = text.split(":")
    else:
        addr, port_text = text, ""
    try:
        port = int(port_text) if port_text else 5555
    except ValueError:
        raise UserInputError(f"host {host!r}: port {port_text!r} is not a number") from None
    if not addr or not 0 < port < 65536:
        raise UserInputError(f"host {host!r} must look like '192.168.1.20:5555'")
    return addr, port


def load_signer(adbkey: str | Path | None = None) -> Any:
    """An adb-shell ``PythonRSASigner`` for the ADB private key at ``adbkey``.

    The key defaults to ``~/.android/adbkey`` (adb's own, so a phone that trusts this
    computer's adb trusts latbench too). A missing key is generated (2048-bit RSA, with its
    ``.pub``) the way adb makes it: the private key readable by its owner only (0600), in
    a folder only its owner may enter (0700) when latbench creates the folder. A missing
    ``.pub`` is derived from the private key. An existing private key that others may read
    is used, with a warning (:class:`UserWarning`) saying how to fix it: whoever holds
    it is trusted by every phone that trusts this computer.

    Raises
    ------
    UserInputError
        If the key file exists but is not a readable PEM private key.
    """
    from adb_shell.auth.keygen import write_public_keyfile
    from adb_shell.auth.sign_pythonrsa import PythonRSASigner

    path = Path(adbkey if adbkey is not None else DEFAULT_ADBKEY).expanduser()
    try:
        if not path.exists():
            _generate_key(path)
        elif not Path(str(path) + ".pub").exists():
            write_public_keyfile(str(path), str(path) + ".pub")
        signer = PythonRSASigner.FromRSAKeyPath(str(path))
        _warn_if_exposed(path)
        return signer
    except (OSError, ValueError) as exc:
        raise UserInputError(f"adbkey {str(path)!r} is not a usable ADB private key ({exc}); "
                             f"point 'adbkey' at adb's key or remove the file to make a new one"
                             ) from None


def _generate_key(path: Path) -> None:
    """Write a new key pair at ``path`` (+ ``.pub``): the private key 0600 from its creation."""
    from adb_shell.auth.keygen import keygen

    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    # The file is created empty with 0600 (O_EXCL: never through someone's symlink) before
    # adb-shell writes the key into it, so the key is never readable by others, not even
    # for a moment; adb-shell's own keygen would create it with the umask (usually 0644).
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    try:
        keygen(str(path))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def _warn_if_exposed(path: Path) -> None:
    if os.name != "posix":  # Windows has ACLs, not mode bits
        return
    mode = stat_mod.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        warnings.warn(
            f"the ADB private key {str(path)!r} is readable by other users (mode {mode:04o}); "
            f"anyone who can read it is trusted by your phones: chmod 600 {shlex.quote(str(path))}",
            UserWarning, stacklevel=3)


def list_usb_serials(timeout_s: float = 10.0) -> list[str]:
    """Serial numbers of the Android devices attached over USB.

    Raises
    ------
    DeviceError
        If USB support (libusb1, the ``usb`` extra) is not installed.
    """
    try:
        from adb_shell.transport.usb_transport import UsbTransport
    except (ImportError, OSError):
        raise DeviceError("USB devices need libusb1: pip install 'latbench[usb]' (or use a "
                          "host = \"IP:5555\" profile over Wi-Fi)") from None
    return [str(t.serial_number) for t in UsbTransport.find_all_adb_devices(timeout_s)]


def choose_usb_serial(name: str, serials: list[str]) -> str:
    """The one attached device's serial; never a guess between several.

    Raises
    ------
    DeviceError
        If no device or more than one device is attached.
    """
    if not serials:
        raise DeviceError(f"device {name!r}: no Android device found on USB; plug it in, enable "
                          f"USB debugging (and stop a running 'adb server', which holds the "
                          f"USB interface), or give host = \"IP:5555\" in the profile")
    if len(serials) > 1:
        raise DeviceError(f"device {name!r}: {len(serials)} Android devices are attached "
                          f"({', '.join(serials)}); set serial = \"...\" in the profile to pick one")
    return serials[0]


def _adb_errors() -> tuple[type[BaseException], ...]:
    return (OSError, adb_exc.AdbCommandFailureException, adb_exc.AdbConnectionError,
            adb_exc.AdbTimeoutError, adb_exc.DeviceAuthError, adb_exc.InvalidChecksumError,
            adb_exc.InvalidCommandError, adb_exc.InvalidResponseError, adb_exc.PushFailedError,
            adb_exc.TcpTimeoutException, adb_exc.UsbReadFailedError,
            adb_exc.UsbWriteFailedError, adb_exc.UsbDeviceNotFoundError,
            adb_exc.InvalidTransportError)


class AdbConnection:
    """One ADB link to one device.

    Parameters
    ----------
    name : str
        The device (profile) name, used in every error message.
    host : str, optional
        ``"IP:port"`` for TCP (``AdbDeviceTcp``-equivalent; the port defaults to 5555).
    serial : str, optional
        USB serial (``AdbDeviceUsb``). With neither ``host`` nor ``serial``, the single
        attached USB device is used; several attached devices are an error.
    adbkey : str or Path, optional
        ADB private key (default ``~/.android/adbkey``, generated when missing).
    io_timeout_s : float
        Timeout of connecting, pushing and short commands, in seconds.
    auth_timeout_s : float
        How long to wait for the user to accept the key on the phone, in seconds.
    """

    def __init__(self, name: str, *, host: str | None = None, serial: str | None = None,
                 adbkey: str | Path | None = None, io_timeout_s: float = 10.0,
                 auth_timeout_s: float = 30.0) -> None:
        if host is not None and serial is not None:
            raise UserInputError(f"device {name!r}: give host (TCP) or serial (USB), not both")
        self.name = name
        self.host = host
        self.serial = serial
        self.adbkey = adbkey
        for key, value in (("io_timeout_s", io_timeout_s), ("auth_timeout_s", auth_timeout_s)):
            if not (math.isfinite(value) and value > 0):
                raise UserInputError(f"device {name!r}: {key} must be a finite number of "
                                     f"seconds (positive), got {value}")
        self.io_timeout_s = float(io_timeout_s)
        self.auth_timeout_s = float(auth_timeout_s)
        self._dev: Any = None
        self._verified: dict[str, str] = {}
        #: Remote files :meth:`ensure_file` pushed (a cache hit pushes nothing).
        self.pushed: list[str] = []
        if host is not None:
            parse_host(host)  # fail early on a malformed address

    # ----------------------------------------------------------------- connect / close
    @property
    def where(self) -> str:
        return self.host if self.host is not None else f"USB {self.serial or '(auto)'}"

    @property
    def connected(self) -> bool:
        return self._dev is not None and bool(self._dev.available)

    def connect(self) -> None:
        """Open the link and authenticate (a no-op when already connected).

        Raises
        ------
        DeviceError
            Unreachable, unauthorised (accept the prompt on the phone), or USB problems.
        """
        if self.connected:
            return
        signer = load_signer(self.adbkey)
        dev = self._make_device()
        prompted = False

        def _on_prompt(_: object) -> None:
            nonlocal prompted
            prompted = True

        try:
            dev.connect(rsa_keys=[signer], transport_timeout_s=self.io_timeout_s,
                        auth_timeout_s=self.auth_timeout_s, read_timeout_s=self.io_timeout_s,
                        auth_callback=_on_prompt)
        except _adb_errors() as exc:
            _quiet_close(dev)
            key = Path(self.adbkey or DEFAULT_ADBKEY).expanduser()
            if prompted or isinstance(exc, adb_exc.DeviceAuthError):
                raise DeviceError(
                    f"device {self.name!r} ({self.where}) is unauthorised: accept the prompt on "
                    f"the phone ('Allow USB debugging?' for key {key}.pub, tick 'Always allow') "
                    f"and retry") from None
            raise DeviceError(
                f"device {self.name!r} is unreachable at {self.where}: {_describe(exc)}; check "
                f"that it is on and on the same network with wireless/TCP debugging enabled "
                f"('adb tcpip 5555'), or fix host/serial in the profile") from None
        self._dev = dev

    def _make_device(self) -> Any:
        if self.host is not None:
            addr, port = parse_host(self.host)
            return _AdbShellDevice(_TcpTransport(addr, port),
                                   default_transport_timeout_s=self.io_timeout_s)
        serial = self.serial or choose_usb_serial(self.name, list_usb_serials(self.io_timeout_s))
        try:
            from adb_shell.adb_device import AdbDeviceUsb

            return AdbDeviceUsb(serial=serial, default_transport_timeout_s=self.io_timeout_s)
        except adb_exc.InvalidTransportError:
            raise DeviceError("USB devices need libusb1: pip install 'latbench[usb]'") from None
        except (adb_exc.UsbDeviceNotFoundError, OSError) as exc:
            raise DeviceError(f"device {self.name!r}: USB device {serial!r} not found "
                              f"({_describe(exc)}); check the cable and 'adb devices'") from None

    def close(self) -> None:
        """Close the link; the next call reconnects."""
        if self._dev is not None:
            _quiet_close(self._dev)
        self._dev = None
        self._verified.clear()

    # ----------------------------------------------------------------------- commands
    def shell(self, command: str, *, timeout_s: float | None = None,
              what: str = "a shell command") -> ShellResult:
        """Run ``command`` in the device's shell and return its output and exit status.

        The exit status is read from an appended ``; echo __rc=$?`` because adb's v1 shell
        protocol carries none.

        Parameters
        ----------
        command : str
            A ``sh`` command line.
        timeout_s : float, optional
            Limit for the whole command in seconds (default ``io_timeout_s``); the connection
            is closed when it is exceeded, since the command may still be running.
        what : str
            What the command is, for error messages.

        Raises
        ------
        DeviceError
            On timeout, a dropped connection or a protocol error.
        """
        self.connect()
        t = float(timeout_s if timeout_s is not None else self.io_timeout_s)
        try:
            raw = self._dev.shell(f"{command}; echo {_RC_MARK}$?", transport_timeout_s=t,
                                  read_timeout_s=t, timeout_s=t, decode=True)
        except _adb_errors() as exc:
            self.close()
            raise self._link_error(exc, what, t) from None
        text = raw.replace("\r\n", "\n")
        m = _RC_RE.search(text)
        if m is None:
            return ShellResult(text, None)
        return ShellResult(text[:m.start()], int(m.group(1)))

    def push(self, local: str | Path, remote: str, *, mode: int = 0o644,
             timeout_s: float | None = None) -> None:
        """Copy ``local`` to ``remote`` on the device (ADB sync ``SEND``).

        Raises
        ------
        DeviceError
            If the device refuses the file (no space, read-only path...) or the link fails.
        """
        self.connect()
        t = float(timeout_s if timeout_s is not None else self.io_timeout_s)
        try:
            self._dev.push(str(local), remote, st_mode=stat_mod.S_IFREG | mode,
                           transport_timeout_s=t, read_timeout_s=t)
        except (adb_exc.AdbCommandFailureException, adb_exc.PushFailedError) as exc:
            self.close()
            raise DeviceError(f"device {self.name!r} refused the file {remote}: "
                              f"{_describe(exc)}; check free space and that the remote_dir is "
                              f"writable (e.g. /data/local/tmp/...)") from None
        except _adb_errors() as exc:
            self.close()
            raise self._link_error(exc, f"pushing {Path(local).name}", t) from None

    def ensure_file(self, local: str | Path, remote: str, sha256: str, *,
                    executable: bool = False, timeout_s: float | None = None) -> bool:
        """Make ``remote`` hold ``local``'s bytes, pushing only when it does not already.

        The device's ``sha256sum`` decides (``ls`` where the device has no ``sha256sum``:
        remote names carry the hash and files only get their name once complete). Files go
        to ``remote.part`` first and are renamed, so an interrupted push is never mistaken
        for a cached file.

        Returns
        -------
        bool
            Whether the file was pushed (``False``: a cache hit).

        Raises
        ------
        DeviceError
            If pushing, ``chmod`` or the rename fails.
        """
        if self._verified.get(remote) == sha256:
            return False
        q = shlex.quote(remote)
        r = self.shell(f"sha256sum {q}", what="checking a cached file")
        if r.rc == 0 and r.output.split()[:1] == [sha256]:
            self._verified[remote] = sha256
            return False
        if r.rc == 127 and self.shell(f"ls {q}", what="checking a cached file").rc == 0:
            self._verified[remote] = sha256
            return False
        part = remote + ".part"
        self._checked(f"mkdir -p {shlex.quote(posixpath.dirname(remote) or '/')}",
                      "creating the remote directory")
        self.push(local, part, mode=0o755 if executable else 0o644, timeout_s=timeout_s)
        if executable:
            self._checked(f"chmod 755 {shlex.quote(part)}", "making the runner executable")
        self._checked(f"mv {shlex.quote(part)} {q}", "renaming the pushed file")
        self._verified[remote] = sha256
        self.pushed.append(remote)
        return True

    def forget(self, remote: str) -> None:
        """Drop ``remote`` from the in-memory cache (e.g. after it vanished on the device)."""
        self._verified.pop(remote, None)

    def _checked(self, command: str, what: str) -> str:
        r = self.shell(command, what=what)
        if r.rc != 0:
            raise DeviceError(f"device {self.name!r}: {what} failed (exit {r.rc}): "
                              f"{_tail(r.output)}; check that remote_dir is writable")
        return r.output

    def _link_error(self, exc: BaseException, what: str, timeout_s: float) -> DeviceError:
        if isinstance(exc, (adb_exc.TcpTimeoutException, adb_exc.AdbTimeoutError, TimeoutError)):
            return DeviceTimeoutError(
                f"device {self.name!r}: {what} timed out after {timeout_s:g} s; raise timeout_s "
                f"in the profile (or lower the repeats), and check the device is responsive")
        if isinstance(exc, (ConnectionError, adb_exc.UsbReadFailedError,
                            adb_exc.UsbWriteFailedError, adb_exc.AdbConnectionError)):
            return DeviceError(
                f"device {self.name!r}: the connection ({self.where}) dropped during {what}; "
                f"check the cable/Wi-Fi and that the device did not reboot, then retry")
        return DeviceError(f"device {self.name!r}: ADB error during {what}: {_describe(exc)}; "
                           f"retry, and reconnect the device if it persists")


def _quiet_close(dev: Any) -> None:
    try:
        dev.close()
    except _adb_errors():  # the link is already broken; closing is best effort
        pass


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _tail(text: str, lines: int = 5) -> str:
    kept = [ln for ln in text.strip().splitlines() if ln.strip()][-lines:]
    return " | ".join(kept) if kept else "(no output)"
