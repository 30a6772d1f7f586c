"""latbench.concurrency with real processes: process identity and liveness, the device lock
(held across processes, released by kill -9, a waiter told so), owned temporary folders and
the removal of those that killed processes left behind (issue 15)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from latbench import concurrency as cc
from latbench.exceptions import LatbenchNotice

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(autouse=True)
def locks_here(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def wait_for(path: Path, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while not path.exists():
        assert proc.poll() is None, "the helper process ended early"
        assert time.monotonic() < end, f"timed out waiting for {path}"
        time.sleep(0.02)


HOLDER = r"""
import sys, time
from pathlib import Path
from latbench.concurrency import device_lock
held, go = Path(sys.argv[2]), Path(sys.argv[3])
with device_lock(sys.argv[1], device="phone", what="timing a big model"):
    held.touch()
    while not go.exists():
        time.sleep(0.01)
"""


def holder(tmp_path: Path, key: str) -> tuple[subprocess.Popen, Path, Path]:
    held, go = tmp_path / "held", tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    p = subprocess.Popen([sys.executable, "-c", HOLDER, key, str(held), str(go)], env=env)
    wait_for(held, p)
    return p, held, go


def test_process_identity_and_liveness():
    me = cc.this_process()
    assert me.pid == os.getpid() and me.host == socket.gethostname()
    assert cc.is_alive(me) is True and cc.ProcessId.parse(str(me)) == me
    assert cc.ProcessId.parse("ray:worker-1") is None
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    other = cc.ProcessId(socket.gethostname(), p.pid, cc._start_ticks(p.pid) or 0)
    assert cc.is_alive(other) is True
    # a pid given to a new process is not the old one: the start time tells them apart
    assert cc.is_alive(cc.ProcessId(other.host, other.pid, other.start + 1)) is False
    p.kill()
    p.wait()
    assert cc.is_alive(other) is False
    assert cc.is_alive(cc.ProcessId("some-other-host", 1, 1)) is None
    tok = cc.owner_token(other)
    assert cc.parse_owner_token(f"model-{tok}.onnx") == (cc.host_tag(), other.pid, other.start)
    assert cc.stale_token(f"x-{tok}") and not cc.stale_token(f"x-{cc.owner_token()}")
    assert not cc.stale_token("perf_test_result.txt")


def test_the_device_lock_makes_a_second_process_wait_and_says_so(tmp_path):
    p, held, go = holder(tmp_path, "adb-serial:XYZ")
    try:
        # the holder lets go a little after we start waiting
        releaser = subprocess.Popen([sys.executable, "-c",
                                     f"import time, pathlib; time.sleep(0.5); "
                                     f"pathlib.Path({str(go)!r}).touch()"])
        with pytest.warns(LatbenchNotice, match=r"device 'phone' is busy with pid \d+ \(timing a "
                                                r"big model, since .*\) of another latbench"):
            with cc.device_lock("adb-serial:XYZ", device="phone"):
                assert go.exists()  # we got it only after the holder was told to go
        releaser.wait()
    finally:
        go.touch()
        p.wait(timeout=60)


def test_a_killed_holder_releases_the_device_lock(tmp_path):
    p, held, go = holder(tmp_path, "adb:10.0.0.2:5555")
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("error", LatbenchNotice)  # no wait: nobody holds it
        with cc.device_lock("adb:10.0.0.2:5555", device="phone"):
            pass


def test_other_keys_do_not_wait(tmp_path):
    p, held, go = holder(tmp_path, "adb-serial:A")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", LatbenchNotice)
            with cc.device_lock("adb-serial:B", device="other"):
                pass
    finally:
        go.touch()
        p.wait(timeout=60)


def test_owned_tempdirs_are_removed_and_stale_ones_swept(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    dead = cc.ProcessId(socket.gethostname(), p.pid, cc._start_ticks(p.pid) or 0)
    p.kill()
    p.wait()
    stale = tmp_path / f"latbench-sweep-{cc.owner_token(dead)}-abcd"
    stale.mkdir()
    (stale / "big.onnx").write_bytes(b"x" * 1000)
    foreign = tmp_path / "latbench-sweep-lb0000beefp1s1-zzzz"  # another host's: left alone
    foreign.mkdir()
    legacy_new = tmp_path / "latbench-sweep-oldstyle"  # no token, recent: left alone
    legacy_new.mkdir()
    legacy_old = tmp_path / "latbench-check-ancient"
    legacy_old.mkdir()
    old = time.time() - cc.LEGACY_TEMPDIR_AGE_S - 60
    os.utime(legacy_old, (old, old))
    unrelated = tmp_path / "something-else"
    unrelated.mkdir()
    with cc.owned_tempdir("latbench-sweep-") as d:
        assert d.is_dir() and d.name.startswith(f"latbench-sweep-{cc.owner_token()}-")
        assert not stale.exists() and not legacy_old.exists()
        assert foreign.exists() and legacy_new.exists() and unrelated.exists()
        # a live process's folder is not stale, even for another latbench
        assert cc.remove_stale_tempdirs() == [] and d.exists()
    assert not d.exists()
