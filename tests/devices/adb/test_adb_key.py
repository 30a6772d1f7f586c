"""The ADB private key: created 0600 (folder 0700 when latbench makes it), like adb does;
an existing key others can read is used with a warning."""

from __future__ import annotations

import os
import stat
import warnings
from pathlib import Path

import pytest

from latbench.devices.adb.transport import load_signer
from latbench.exceptions import UserInputError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="file modes are POSIX")


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.fixture
def open_umask():
    """The loosest umask, so modes come from the code, not from the test machine's umask."""
    old = os.umask(0)
    yield
    os.umask(old)


def test_a_new_key_is_private_in_a_private_folder(home, open_umask):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # and no warning about it
        signer = load_signer()
    key = home / ".android" / "adbkey"
    assert mode(home / ".android") == 0o700
    assert mode(key) == 0o600
    assert key.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert (home / ".android" / "adbkey.pub").is_file()
    assert signer.Sign(b"x" * 20)  # a usable key


def test_an_existing_folder_keeps_its_mode_but_the_key_is_private(home, open_umask):
    folder = home / ".android"
    folder.mkdir(mode=0o755)
    load_signer()
    assert mode(folder) == 0o755  # not latbench's folder: left alone
    assert mode(folder / "adbkey") == 0o600


def test_an_explicit_key_path_is_created_private_too(tmp_path, open_umask):
    key = tmp_path / "keys" / "deep" / "phone.key"
    load_signer(key)
    assert mode(key) == 0o600 and mode(key.parent) == 0o700


def test_a_key_readable_by_others_is_used_with_a_warning(home):
    key = home / "adbkey"
    load_signer(key)
    key.chmod(0o644)
    with pytest.warns(UserWarning, match=r"readable by other users \(mode 0644\).*chmod 600"):
        assert load_signer(key) is not None
    key.chmod(0o640)
    with pytest.warns(UserWarning, match="mode 0640"):
        load_signer(key)
    key.chmod(0o600)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_signer(key)


def test_a_dangling_symlink_is_not_written_through(home):
    target = home / "elsewhere" / "stolen"
    (home / "elsewhere").mkdir()
    key = home / "adbkey"
    key.symlink_to(target)
    with pytest.raises(UserInputError, match="not a usable ADB private key"):
        load_signer(key)
    assert not target.exists()


def test_a_failed_generation_leaves_no_empty_key(home, monkeypatch):
    import adb_shell.auth.keygen as keygen_mod

    def broken(path):
        raise OSError("disk full")

    monkeypatch.setattr(keygen_mod, "keygen", broken)
    key = home / "adbkey"
    with pytest.raises(UserInputError, match="disk full"):
        load_signer(key)
    assert not key.exists()  # the next run generates a key again instead of failing on it


def test_the_cli_prints_a_library_warning_as_one_line(capsys):
    from latbench.cli import _show_warning

    _show_warning(UserWarning("the ADB private key '/k' is readable by other users"), UserWarning,
                  "x.py", 1)
    _show_warning(DeprecationWarning("old"), DeprecationWarning, "x.py", 1)
    err = capsys.readouterr().err
    assert err.splitlines() == ["warning: the ADB private key '/k' is readable by other users",
                                "warning: DeprecationWarning: old"]
