"""AdbConnection against the loopback device: auth, shell exit status, push cache, failures."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import pytest
from adb_shell.adb_device import AdbDeviceTcp
from adb_shell.auth.sign_pythonrsa import PythonRSASigner

from latbench.devices.adb import transport
from latbench.devices.adb.transport import AdbConnection
from latbench.exceptions import DeviceTimeoutError
from latbench.exceptions import DeviceError, UserInputError


def pub(adbkey: Path) -> str:
    return Path(str(adbkey) + ".pub").read_text()


def conn(fake, adbkey, **kw) -> AdbConnection:
    return AdbConnection("phone", host=fake.host, adbkey=adbkey, io_timeout_s=5.0,
                         auth_timeout_s=2.0, **kw)


def test_adb_shells_own_tcp_device_talks_to_the_loopback_device(make_fake, adbkey):
    fake = make_fake(authorized_keys=[pub(adbkey)])
    dev = AdbDeviceTcp("127.0.0.1", fake.port, default_transport_timeout_s=5.0)
    assert dev.connect(rsa_keys=[PythonRSASigner.FromRSAKeyPath(str(adbkey))],
                       auth_timeout_s=2.0, read_timeout_s=5.0)
    assert dev.shell("getprop ro.product.model", read_timeout_s=5.0) == "Pixel 6\n"
    dev.close()
    assert fake.auth_results == ["signature-ok"]


def test_connect_without_auth_runs_commands_with_exit_status(make_fake, adbkey):
    fake = make_fake()
    c = conn(fake, adbkey)
    assert c.shell("echo hello").output == "hello\n"
    assert c.shell("echo hello").rc == 0
    r = c.shell("cat /no/such/file")
    assert r.rc == 1 and "No such file" in r.output
    assert c.shell("frobnicate").rc == 127
    assert fake.auth_results == []
    c.close()


def test_connect_with_known_key_signs_the_token(make_fake, adbkey):
    fake = make_fake(authorized_keys=[pub(adbkey)])
    c = conn(fake, adbkey)
    c.connect()
    assert c.connected and fake.auth_results == ["signature-ok"]
    c.close()


def test_new_key_accepted_on_the_phone_connects(make_fake, adbkey, tmp_path):
    other = tmp_path / "other_key"  # generated on first use
    fake = make_fake(authorized_keys=[pub(adbkey)], accept_new_keys=True)
    c = conn(fake, other)
    assert c.shell("echo ok").rc == 0
    assert other.exists() and Path(str(other) + ".pub").exists()
    assert fake.auth_results == ["signature-bad", "key-accepted"]
    c.close()


def test_refused_key_is_unauthorised(make_fake, adbkey, tmp_path):
    fake = make_fake(authorized_keys=[pub(adbkey)], accept_new_keys=False)
    c = conn(fake, tmp_path / "stranger")
    with pytest.raises(DeviceError, match="unauthorised: accept the prompt on the phone"):
        c.connect()
    assert fake.auth_results == ["signature-bad", "key-refused"]
    assert not c.connected


def test_unreachable_device_is_a_device_error(adbkey):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    c = AdbConnection("phone", host=f"127.0.0.1:{port}", adbkey=adbkey, io_timeout_s=2.0)
    with pytest.raises(DeviceError, match=r"'phone' is unreachable at 127\.0\.0\.1"):
        c.connect()


def test_ensure_file_pushes_once_then_hits_the_cache(make_fake, adbkey, tmp_path):
    fake = make_fake()
    local = tmp_path / "blob.bin"
    local.write_bytes(b"x" * 200_000)  # several sync DATA chunks
    sha = hashlib.sha256(local.read_bytes()).hexdigest()
    c = conn(fake, adbkey)
    remote = f"/data/local/tmp/lb/blob-{sha[:8]}"
    assert c.ensure_file(local, remote, sha, executable=True) is True
    on_device = fake.sandbox.host(remote)
    assert on_device.read_bytes() == local.read_bytes()
    assert on_device.stat().st_mode & 0o777 == 0o755
    assert fake.pushed == [remote + ".part"]
    assert c.ensure_file(local, remote, sha) is False  # in-memory cache
    c.close()
    c2 = conn(fake, adbkey)  # a new connection asks the device's sha256sum
    assert c2.ensure_file(local, remote, sha) is False
    assert len(fake.pushed) == 1
    c2.close()


def test_ensure_file_repushes_a_changed_file(make_fake, adbkey, tmp_path):
    fake = make_fake()
    local = tmp_path / "m"
    local.write_bytes(b"new")
    sha = hashlib.sha256(b"new").hexdigest()
    fake.sandbox.write("/r/m", b"old")
    c = conn(fake, adbkey)
    assert c.ensure_file(local, "/r/m", sha) is True
    assert fake.sandbox.host("/r/m").read_bytes() == b"new"
    c.close()


def test_ensure_file_falls_back_to_ls_without_sha256sum(make_fake, adbkey, tmp_path):
    fake = make_fake(has_sha256sum=False)
    local = tmp_path / "m"
    local.write_bytes(b"abc")
    sha = hashlib.sha256(b"abc").hexdigest()
    c = conn(fake, adbkey)
    assert c.ensure_file(local, "/r/m", sha) is True
    c.close()
    c = conn(fake, adbkey)
    assert c.ensure_file(local, "/r/m", sha) is False
    assert len(fake.pushed) == 1
    c.close()


def test_push_refused_by_device_is_a_device_error(make_fake, adbkey, tmp_path):
    fake = make_fake()
    local = tmp_path / "m"
    local.write_bytes(b"abc")
    c = conn(fake, adbkey)
    with pytest.raises(DeviceError, match="refused the file"):
        c.push(local, "/system/bin/m")
    c.close()


def test_timeout_raises_and_closes(make_fake, adbkey, runners):
    fake = make_fake(runner_env={"STANDIN_MODE": "hang"})
    fake.sandbox.write("/bin/r", Path(runners["ort"]).read_bytes(), 0o755)
    c = conn(fake, adbkey)
    with pytest.raises(DeviceTimeoutError, match=r"timed out after 0\.5 s"):
        c.shell("/bin/r", timeout_s=0.5)
    assert not c.connected
    assert c.shell("echo again").rc == 0  # reconnects
    c.close()


def test_dropped_connection_is_reported_as_such(make_fake, adbkey, runners):
    fake = make_fake(drop_on="/bin/r", runner_env={"STANDIN_MODE": "hang"}, drop_after_s=0.2)
    fake.sandbox.write("/bin/r", Path(runners["ort"]).read_bytes(), 0o755)
    c = conn(fake, adbkey)
    with pytest.raises(DeviceError, match="connection .* dropped during running it"):
        c.shell("/bin/r", timeout_s=10, what="running it")
    c.close()


@pytest.mark.parametrize("host,expected", [("192.168.1.20:5555", ("192.168.1.20", 5555)),
                                           ("10.0.0.2", ("10.0.0.2", 5555)),
                                           ("[::1]:6000", ("::1", 6000))])
def test_parse_host(host, expected):
    assert transport.parse_host(host) == expected


@pytest.mark.parametrize("host", ["phone:abc", ":5555", "h:70000"])
def test_bad_hosts_are_user_errors(host):
    with pytest.raises(UserInputError):
        transport.parse_host(host)


def test_several_usb_devices_and_no_serial_is_an_error_listing_them():
    with pytest.raises(DeviceError, match="2 Android devices are attached \\(AAA, BBB\\); set serial"):
        transport.choose_usb_serial("phone", ["AAA", "BBB"])
    with pytest.raises(DeviceError, match="no Android device found on USB"):
        transport.choose_usb_serial("phone", [])
    assert transport.choose_usb_serial("phone", ["AAA"]) == "AAA"


def test_usb_autodetect_never_guesses(monkeypatch, adbkey):
    monkeypatch.setattr(transport, "list_usb_serials", lambda timeout_s=10.0: ["S1", "S2"])
    with pytest.raises(DeviceError, match="S1, S2"):
        AdbConnection("phone", adbkey=adbkey).connect()


def test_usb_without_libusb_gives_an_install_hint(adbkey):
    pytest.importorskip("adb_shell")
    try:
        import usb1  # noqa: F401
        pytest.skip("libusb1 is installed here")
    except ImportError:
        pass
    with pytest.raises(DeviceError, match=r"latbench\[usb\]"):
        AdbConnection("phone", serial="X", adbkey=adbkey).connect()


def test_unreadable_key_is_a_user_error(tmp_path):
    bad = tmp_path / "adbkey"
    bad.write_text("not a key")
    with pytest.raises(UserInputError, match="not a usable ADB private key"):
        transport.load_signer(bad)
