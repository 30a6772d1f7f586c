"""The store under several processes and faults (issue 15): claims split work between real
processes and are taken over from dead ones; read-only opens change nothing; a full disk is
a :class:`StoreError` that says what was kept."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latbench.concurrency import ProcessId, _start_ticks, this_process
from latbench.data.store import Store, layer_claim, variant_claim
from latbench.exceptions import StoreError, UserInputError

SRC = Path(__file__).resolve().parents[2] / "src"


def dead_owner() -> str:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    proc = ProcessId(socket.gethostname(), p.pid, _start_ticks(p.pid) or 0)
    p.kill()
    p.wait()
    return str(proc)


def test_claim_renew_release_between_owners(tmp_path):
    item = variant_claim("abc", (1, 3, 8, 8), "cpu", "onnxruntime", "1.20", 1, "onnx")
    assert json.loads(item)[0] == "variant"
    with Store(tmp_path / "s.db") as s:
        assert s.claim(item, note="net svd@0.5")  # this process
        assert s.claim(item)  # claiming again renews
        assert s.claim_holder(item) == str(this_process())
        # a worker named by a driver cannot take a claim this live process holds
        assert not s.claim(item, owner="ray:worker-1")
        assert s.release(item, owner="ray:worker-1") == 0
        assert s.release(item) == 1 and s.claim_holder(item) is None
        assert s.claim(item, owner="ray:worker-1", lease_s=60)
        assert not s.claim(item)  # its lease holds
        assert s.renew(item, owner="ray:worker-1") and not s.renew(item)
        df = s.claims()
        assert list(df.columns) == ["item", "owner", "note", "claimed_at", "expires_at", "live"]
        assert df["owner"].tolist() == ["ray:worker-1"] and df["live"].tolist() == [True]
        assert s.release(owner="ray:worker-1") == 1 and s.claims().empty
        with pytest.raises(UserInputError, match="lease_s"):
            s.claim(item, lease_s=float("nan"))


def test_claims_of_dead_processes_and_lapsed_leases_are_taken_over(tmp_path):
    item = layer_claim("k1", "cpu", "onnxruntime", "1.20", 1, "onnx")
    other = layer_claim("k2", "cpu", "onnxruntime", "1.20", 1, "onnx")
    with Store(tmp_path / "s.db") as s:
        assert s.claim(item, owner=dead_owner())  # killed with kill -9: it released nothing
        assert s.claim_holder(item) is None and s.claims(live_only=True).empty
        assert s.claim(item)  # taken over
        assert s.claim(other, owner="otherhost:12:34", lease_s=0.05)
        assert not s.claim(other)
        time.sleep(0.2)  # another host's owner cannot be asked: its lease decides
        assert s.claim(other)


CLAIMER = r"""
import json, os, sys, time
from pathlib import Path
from latbench.data.store import Store

db, n, me, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3], Path(sys.argv[4])

def barrier(stage):
    (folder / f"{stage}-{me}").touch()
    while len(list(folder.glob(f"{stage}-*"))) < 2:
        time.sleep(0.01)

got = []
with Store(db) as s:
    barrier("ready")  # both run before either claims
    for i in range(n):
        if s.claim(f"item-{i}"):
            got.append(i)
    barrier("done")  # both still run while the other claims
print(json.dumps(got))
"""


def test_two_processes_claiming_at_once_split_the_items_exactly(tmp_path):
    db = tmp_path / "s.db"
    Store(db).close()
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    procs = [subprocess.Popen([sys.executable, "-c", CLAIMER, str(db), "200", str(k),
                               str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
             for k in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs)
    a, b = (set(json.loads(o)) for o in outs)
    assert a | b == set(range(200)) and not (a & b)  # each item claimed exactly once
    with Store(db) as s:
        assert len(s.claims()) == 200


def test_read_only_open_changes_nothing_and_refuses_writes(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as s:
        s.claim("x")
    before = db.read_bytes()
    with Store(db, read_only=True) as s:
        assert s.read_only and len(s.claims()) == 1
        with pytest.raises(StoreError, match="opened read-only"):
            s.claim("y")
    assert db.read_bytes() == before


def test_read_only_summary_of_a_foreign_sqlite_file_leaves_its_journal_mode(tmp_path, capsys):
    from latbench.cli import main

    foreign = tmp_path / "other.sqlite"
    with sqlite3.connect(foreign) as c:
        c.execute("CREATE TABLE t (x)")
        c.execute("INSERT INTO t VALUES (1)")
    before = foreign.read_bytes()
    with pytest.raises(SystemExit) as e:
        main(["data", "summary", "--db", str(foreign)])
    assert e.value.code == 4
    assert capsys.readouterr().err.startswith("error: ")
    assert foreign.read_bytes() == before
    with sqlite3.connect(foreign) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes read-only folders")
def test_read_only_folder_still_reads(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    with Store(d / "s.db") as s:
        s.claim("x")
    d.chmod(0o555)
    try:
        with Store(d / "s.db", read_only=True) as s:
            assert len(s.claims()) == 1
        with pytest.raises(StoreError, match="read"):
            with Store(d / "s.db") as s:
                s.claim("y")
    finally:
        d.chmod(0o755)


def test_a_full_disk_is_a_store_error_that_keeps_earlier_writes(tmp_path):
    db = tmp_path / "s.db"
    with Store(db) as s:
        s.claim("kept")
        pages = s.connection.execute("PRAGMA page_count").fetchone()[0]
        # SQLite's own cap on the file size stands for a full disk (SQLITE_FULL)
        s.connection.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreError, match=r"the disk is full .*everything stored before it "
                                             r"is kept"):
            for i in range(10_000):
                s.claim(f"item-{i:05d}-" + "x" * 200)
    with Store(db, read_only=True) as s:
        assert "kept" in set(s.claims()["item"])


@pytest.mark.slow
def test_processes_creating_one_new_store_at_once_all_open_it(tmp_path):
    # Four processes open a store that does not exist yet, at the same moment, five times
    # over: none may see a half-made store as a foreign one or give up on "database is locked"
    # (a two-statement version read and an unretried WAL switch had both failed this way).
    code = "import sys; from latbench.data.store import Store; Store(sys.argv[1]).close()"
    for k in range(5):
        db = tmp_path / f"new{k}.db"
        procs = [subprocess.Popen([sys.executable, "-c", code, str(db)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
        errs = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0, 0], errs
        with Store(db) as s:
            assert s.counts()["variants"] == 0
