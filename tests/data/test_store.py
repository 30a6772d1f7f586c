"""The SQLite latency store: schema, idempotent writes, concurrency, resume queries."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3

import numpy as np
import pandas as pd
import pytest

from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.data import schema
from latbench.data.features import LAYER_COLUMNS, layer_key
from latbench.data.store import (
    Store,
    decode_layer_table,
    encode_layer_columns,
    encode_layer_table,
    shape_str,
)
from latbench.exceptions import StoreError, UserInputError

SHAPE = (1, 3, 32, 32)


def layers(n: int = 3, width: int = 8) -> pd.DataFrame:
    rows = []
    for i in range(n):
        rows.append(dict(
            name=f"features.{i}", op="conv" if i % 2 == 0 else "act", in_channels=width,
            out_channels=width, kernel_h=3, kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1,
            dilation_h=1, dilation_w=1, groups=1, bias=0, in_h=32, in_w=32, out_h=32, out_w=32,
            macs=width * width * 9 * 1024 * (i % 2 == 0), params=width * width * 9, weight_bytes=4 * width * width * 9,
            act_in_bytes=4 * width * 1024, act_out_bytes=4 * width * 1024))
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def measurement(samples_ms=(1.0, 1.1, 1.2, 0.9), *, threads: int = 1, ts: float = 1000.0,
                sha: str = "abc", runtime_version: str = "1.20") -> Measurement:
    spec = BenchSpec(artifact_sha256=sha, device="cpu", runtime="onnxruntime",
                     runtime_version=runtime_version, provider="CPUExecutionProvider",
                     threads=threads, input_shape=SHAPE, warmup=2, repeats=len(samples_ms))
    info = DeviceInfo(name="cpu", kind="cpu", fingerprint="fp1")
    return Measurement(spec=spec, samples_s=tuple(s / 1e3 for s in samples_ms), info_before=info,
                       info_after=info, timestamp=ts)


CPU = DeviceInfo(name="cpu", kind="cpu", fingerprint="fp1")


def test_new_database_is_wal_with_current_schema_version(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        assert s.connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema.read_version(s.connection) == schema.SCHEMA_VERSION
        assert s.counts() == dict(devices=0, variants=0, layer_tables=0, measurements=0,
                                  failures=0, layer_measurements=0)


def test_newer_schema_is_refused_with_upgrade_hint(tmp_path):
    db = tmp_path / "lat.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_info SET value='99' WHERE key='schema_version'")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match=rf"newer latbench \(schema 99 > {schema.SCHEMA_VERSION}\): "
                                         "upgrade latbench"):
        Store(db)


def test_older_schema_is_migrated(tmp_path, monkeypatch):
    db = tmp_path / "lat.db"
    Store(db).close()
    calls = []

    def step(conn):
        calls.append(1)
        conn.execute("ALTER TABLE devices ADD COLUMN note TEXT")

    current = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(schema.MIGRATIONS, current, step)
    with Store(db) as s:
        assert schema.read_version(s.connection) == current + 1
        cols = [r[1] for r in s.connection.execute("PRAGMA table_info(devices)")]
    assert "note" in cols and calls == [1]
    Store(db).close()  # already migrated: the step does not run again
    assert calls == [1]


def test_foreign_sqlite_file_is_refused(tmp_path):
    db = tmp_path / "other.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(StoreError, match="not a latbench store"):
        Store(db)


def test_missing_directory_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        Store(tmp_path / "nope" / "lat.db")


def test_layer_table_codec_round_trips_and_hashes_content():
    t = layers(5)
    blob, h = encode_layer_table(t)
    cols = decode_layer_table(blob)
    back = pd.DataFrame(cols).astype({"name": "str", "op": "str"})
    pd.testing.assert_frame_equal(back, t)
    assert encode_layer_table(t.copy())[1] == h
    assert encode_layer_table(layers(5, width=16))[1] != h
    with pytest.raises(StoreError, match="corrupt"):
        decode_layer_table(b"not a table")


def test_column_encoder_gives_the_same_bytes_as_the_frame_encoder():
    t = layers(4)
    t["ratio"] = [0.5, 1.5, 2.0, 3.25]  # a float column round-trips too
    cols = {c: t[c].to_numpy(dtype=object if c in ("name", "op") else None) for c in t.columns}
    assert encode_layer_columns(cols) == encode_layer_table(t)
    back = decode_layer_table(encode_layer_table(t)[0])
    assert back["ratio"].tolist() == [0.5, 1.5, 2.0, 3.25] and back["macs"].dtype == np.int64


def test_add_device_is_idempotent_and_kind_conflicts_are_refused(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        a = s.add_device(CPU, {"threads": 1})
        b = s.add_device(DeviceInfo(name="cpu", kind="cpu", fingerprint="fp2"))
        assert a == b
        assert s.device_info("cpu")["fingerprint"] == "fp2"
        with pytest.raises(UserInputError, match="already in the store as a 'cpu' device"):
            s.add_device(DeviceInfo(name="cpu", kind="imported"))
        assert len(s.devices()) == 1


def test_add_variant_is_idempotent_and_dedups_layer_tables(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        v1 = s.add_variant("resnet18", SHAPE, layers(), plan={"conv1": ["svd", 4]}, method="svd",
                           content_hash="h1")
        assert s.add_variant("resnet18", "1x3x32x32", layers(), content_hash="h1") == v1
        v2 = s.add_variant("resnet18", SHAPE, layers(), content_hash="h2")
        v3 = s.add_variant("resnet18", (1, 3, 64, 64), layers(), content_hash="h1")
        assert len({v1, v2, v3}) == 3
        assert s.counts()["layer_tables"] == 1  # three variants, one distinct table
        row = s.connection.execute("SELECT method, plan FROM variants WHERE id=?", (v1,)).fetchone()
        assert row == ("svd", '{"conv1":["svd",4]}')
        # No plan → method "none"; a plan without a method → "mixed"; default hash from spec.
        v4 = s.add_variant("vgg11", SHAPE, layers(2))
        v5 = s.add_variant("vgg11", SHAPE, layers(2), plan={"a": ["cp", 2]})
        methods = dict(s.connection.execute("SELECT id, method FROM variants WHERE id IN (?, ?)",
                                            (v4, v5)).fetchall())
        assert methods == {v4: "none", v5: "mixed"}


def test_measurement_round_trip_statistics_and_idempotence(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(CPU)
        v = s.add_variant("resnet18", SHAPE, layers(), content_hash="abc")
        m = measurement()
        i = s.add_measurement(v, d, m)
        assert s.add_measurement(v, d, m) == i  # same measurement twice → one row
        j = s.add_measurement(v, d, measurement(ts=2000.0))  # re-measured later → a new row
        assert j != i
        row = pd.read_sql("SELECT * FROM measurements WHERE id=?", s.connection, params=(i,)).iloc[0]
        assert row.median_ms == pytest.approx(1.05)
        assert row.n_samples == 4 and row.threads == 1 and row.runtime == "onnxruntime"
        assert row.spec_key == m.spec.key and row.source == "measured"
        assert np.allclose(pd.read_json(pd.io.common.StringIO(row.samples_s), typ="series"),
                           [0.001, 0.0011, 0.0012, 0.0009])
        assert s.counts()["measurements"] == 2


def test_has_measurement_matches_on_every_key_part(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(CPU)
        v = s.add_variant("resnet18", SHAPE, layers(), content_hash="abc")
        assert not s.has_measurement("abc", SHAPE, "cpu", "onnxruntime", "1.20", 1)
        s.add_measurement(v, d, measurement())
        assert s.has_measurement("abc", SHAPE, "cpu", "onnxruntime", "1.20", 1)
        assert s.has_measurement("abc", "1x3x32x32", "cpu", "onnxruntime", "1.20", 1)
        assert not s.has_measurement("abc", SHAPE, "cpu", "onnxruntime", "1.20", 4)
        assert not s.has_measurement("abc", SHAPE, "cpu", "onnxruntime", "1.21", 1)
        assert not s.has_measurement("abc", SHAPE, "gpu", "onnxruntime", "1.20", 1)
        assert not s.has_measurement("xyz", SHAPE, "cpu", "onnxruntime", "1.20", 1)
        assert not s.has_measurement("abc", (1, 3, 64, 64), "cpu", "onnxruntime", "1.20", 1)


def test_imported_measurement_is_one_sample_and_unique_per_device(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(DeviceInfo(name="phone", kind="imported"))
        v = s.add_variant("nb201:x", SHAPE, layers(), content_hash="n1")
        kw = dict(device_name="phone", input_shape=SHAPE, content_hash="n1", source="imported:f.csv")
        i = s.add_imported_measurement(v, d, 3.5, **kw)
        assert s.add_imported_measurement(v, d, 3.5, **kw) == i
        row = s.connection.execute("SELECT median_ms, n_samples, confident, runtime, source "
                                   "FROM measurements").fetchall()
        assert row == [(3.5, 1, None, "imported", "imported:f.csv")]
        with pytest.raises(UserInputError, match="not a positive number"):
            s.add_imported_measurement(v, d, -1.0, **kw)


def test_failures_are_logged_with_what_is_known(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(CPU)
        v = s.add_variant("resnet18", SHAPE, layers(), content_hash="abc")
        s.add_failure("compress", "rank too large", device_id=d, source_model="vgg11",
                      plan={"x": ["cp", 999]})
        s.add_failure("measure", "timeout", device_id=d, variant_id=v)
        f = s.failures()
        assert f["stage"].tolist() == ["compress", "measure"]
        assert f["source_model"].tolist() == ["vgg11", "resnet18"]
        assert f["content_hash"].tolist()[1] == "abc" and f["device"].tolist() == ["cpu", "cpu"]


def test_layer_measurements_keyed_by_layer_key(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(CPU)
        row = layers(1).iloc[0]
        key = layer_key(row)
        assert not s.has_layer_measurement(key, "cpu", "onnxruntime", "1.20", 1)
        i = s.add_layer_measurement(d, row, measurement())
        assert s.add_layer_measurement(d, row.to_dict(), measurement()) == i
        assert s.has_layer_measurement(key, "cpu", "onnxruntime", "1.20", 1)
        assert not s.has_layer_measurement(key, "cpu", "onnxruntime", "1.20", 2)
        assert s.counts()["layer_measurements"] == 1


def test_transaction_rolls_back_everything_on_error(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        with pytest.raises(RuntimeError):
            with s.transaction():
                s.add_device(CPU)
                s.add_variant("resnet18", SHAPE, layers(), content_hash="abc")
                raise RuntimeError("killed mid-batch")
        assert s.counts()["devices"] == 0 and s.counts()["variants"] == 0
        s.add_device(CPU)  # each add outside a transaction commits at once
    with Store(tmp_path / "lat.db") as s2:
        assert s2.counts()["devices"] == 1


def test_summary_counts_per_device_model_method(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        d = s.add_device(CPU)
        for k in range(3):
            v = s.add_variant("resnet18", SHAPE, layers(), method="svd", content_hash=f"r{k}")
            s.add_measurement(v, d, measurement(ts=float(k)))
        for k in range(2):
            v = s.add_variant(f"nb201:arch{k}", SHAPE, layers(), content_hash=f"n{k}")
            s.add_measurement(v, d, measurement())
        s.add_failure("measure", "boom", device_id=d, variant_id=v)
        out = s.summary().set_index(["source_model", "method"])
    assert out.loc[("resnet18", "svd"), "n_measurements"] == 3
    assert out.loc[("resnet18", "svd"), "n_failures"] == 0
    assert out.loc[("nb201", "none"), "n_variants"] == 2
    assert out.loc[("nb201", "none"), "n_failures"] == 1


def test_shape_str_validates():
    assert shape_str((1, 3, 8, 8)) == "1x3x8x8"
    with pytest.raises(UserInputError):
        shape_str((1, 0, 8))


def _writer(db: str, worker: int, n: int) -> None:
    # Both processes write the same variants and measurements, interleaved with their own.
    with Store(db) as s:
        d = s.add_device(CPU)
        for k in range(n):
            v = s.add_variant("resnet18", SHAPE, layers(), content_hash=f"shared{k}")
            s.add_measurement(v, d, measurement(ts=float(k)))
            own = s.add_variant("resnet18", SHAPE, layers(), content_hash=f"w{worker}-{k}")
            s.add_measurement(own, d, measurement(ts=float(k)))
            s.add_failure("measure", f"w{worker}-{k}", device_id=d)


@pytest.mark.slow
def test_two_processes_writing_at_once_stay_consistent(tmp_path):
    db = str(tmp_path / "lat.db")
    Store(db).close()  # schema first, so both workers open an existing store
    # spawn, not fork: the suite may have started JAX threads (LiteRT conversion) by now, and a
    # forked child of a multithreaded process can deadlock
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(db, w, 25)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    with Store(db) as s:
        c = s.counts()
        assert c["devices"] == 1
        assert c["variants"] == 25 + 2 * 25
        assert c["measurements"] == 25 + 2 * 25
        assert c["failures"] == 50
        dup = s.connection.execute(
            "SELECT count(*) FROM (SELECT variant_id, device_id, spec_key, timestamp FROM measurements "
            "GROUP BY 1, 2, 3, 4 HAVING count(*) > 1)").fetchone()[0]
        assert dup == 0
