"""Artifact formats in the store: an ONNX and a TFLite measurement of one variant are two rows,
resume keys include the format, and schema-1 databases are migrated with it filled in."""

from __future__ import annotations

import json
import sqlite3

import pandas as pd
import pytest

from latbench.data import schema
from latbench.data.export import flat_table
from latbench.data.features import LAYER_COLUMNS
from latbench.data.store import Store
from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo

SHAPE = (1, 3, 32, 32)
DEV = DeviceInfo(name="phone", kind="adb", fingerprint="fp")


def table() -> pd.DataFrame:
    row = dict(name="features.0", op="conv", in_channels=8, out_channels=8, kernel_h=3,
               kernel_w=3, stride_h=1, stride_w=1, pad_h=1, pad_w=1, dilation_h=1,
               dilation_w=1, groups=1, bias=0, in_h=32, in_w=32, out_h=32, out_w=32,
               macs=8 * 8 * 9 * 1024, params=576, weight_bytes=2304, act_in_bytes=32768,
               act_out_bytes=32768, inputs="")
    return pd.DataFrame([row], columns=LAYER_COLUMNS)


def meas(runtime: str, fmt: str, ms: float, ts: float) -> Measurement:
    spec = BenchSpec(artifact_sha256=f"sha-{fmt}", device="phone", runtime=runtime,
                     runtime_version="v1", provider="cpu", threads=4, input_shape=SHAPE,
                     warmup=1, repeats=3, format=fmt)
    return Measurement(spec=spec, samples_s=(ms / 1e3,) * 3, info_before=DEV, info_after=DEV,
                       timestamp=ts)


def test_onnx_and_tflite_of_one_variant_are_two_rows_side_by_side(tmp_path):
    db = tmp_path / "lat.db"
    with Store(db) as s:
        dev = s.add_device(DEV)
        vid = s.add_variant("resnet18", SHAPE, table(), method="none", content_hash="v1")
        s.add_measurement(vid, dev, meas("onnxruntime", "onnx", 10.0, 1.0))
        s.add_measurement(vid, dev, meas("tflite", "tflite", 8.0, 2.0))
        assert s.counts()["measurements"] == 2
        assert s.has_measurement("v1", SHAPE, "phone", "tflite", "v1", 4, format="tflite")
        assert not s.has_measurement("v1", SHAPE, "phone", "tflite", "v1", 4, format="onnx")
        assert s.has_measurement("v1", SHAPE, "phone", "tflite", "v1", 4)  # format not asked
    df = flat_table(db)
    assert list(df["format"]) == ["onnx", "tflite"]
    assert list(df["variant_id"].unique()) == [vid] and list(df["latency_ms"]) == [10.0, 8.0]


def test_layer_lookups_filter_by_format_and_source(tmp_path):
    with Store(tmp_path / "lat.db") as s:
        dev = s.add_device(DEV)
        row = table().iloc[0]
        s.add_layer_measurement(dev, row, meas("tflite", "tflite", 2.0, 1.0), source="op_profile:v9")
        from latbench.data.features import layer_key

        k = layer_key(row)
        assert s.has_layer_measurement(k, "phone", "tflite", "v1", 4, format="tflite")
        assert not s.has_layer_measurement(k, "phone", "tflite", "v1", 4, format="onnx")
        assert s.has_layer_measurement(k, "phone", "tflite", "v1", 4, source="op_profile")
        assert not s.has_layer_measurement(k, "phone", "tflite", "v1", 4, source="measured")
        assert s.layer_latency_ms(k, "phone", "tflite", "v1", 4, format="tflite") == 2.0
        assert s.has_op_profile("v9", "phone", "tflite", "v1", 4, format="tflite")
        assert not s.has_op_profile("v8", "phone", "tflite", "v1", 4)
        s.add_failure("op_profile", "nothing mapped", device_id=dev, content_hash="v8")
        assert s.has_op_profile("v8", "phone", "tflite", "v1", 4)


def _downgrade_to_schema_1(db) -> None:
    """Turn a current store into what schema 1 wrote (no format columns)."""
    con = sqlite3.connect(db)
    for t, idx in (("measurements", "measurements_resume"),
                   ("layer_measurements", "layer_measurements_lookup")):
        con.execute(f"DROP INDEX {idx}")
        con.execute(f"UPDATE {t} SET spec = json_remove(spec, '$.format')")
        con.execute(f"ALTER TABLE {t} DROP COLUMN format")
    con.execute("CREATE INDEX measurements_resume ON measurements(variant_id, device_id, runtime, "
                "runtime_version, threads)")
    con.execute("CREATE INDEX layer_measurements_lookup ON layer_measurements(device_id, "
                "layer_key, runtime, runtime_version, threads)")
    con.execute("UPDATE schema_info SET value='1' WHERE key='schema_version'")
    con.commit()
    con.close()


def test_schema_1_database_is_migrated_with_formats_from_the_runtime(tmp_path):
    db = tmp_path / "old.db"
    with Store(db) as s:
        dev = s.add_device(DEV)
        vid = s.add_variant("m", SHAPE, table(), method="none", content_hash="v1")
        s.add_measurement(vid, dev, meas("onnxruntime", "onnx", 10.0, 1.0))
        s.add_measurement(vid, dev, meas("tflite", "tflite", 8.0, 2.0))
        s.add_measurement(vid, dev, meas("litert", "tflite", 7.0, 3.0))
        s.add_imported_measurement(vid, dev, 9.0, device_name="phone", input_shape=SHAPE,
                                   content_hash="v1", source="imported:x.csv")
        s.add_layer_measurement(dev, table().iloc[0], meas("tflite", "tflite", 2.0, 1.0))
    _downgrade_to_schema_1(db)
    with Store(db) as s:
        assert schema.read_version(s.connection) == schema.SCHEMA_VERSION == 3  # 1 → 2 → 3 (claims)
        got = s.connection.execute("SELECT runtime, format, spec FROM measurements ORDER BY id"
                                   ).fetchall()
        assert [(r, f) for r, f, _ in got] == [("onnxruntime", "onnx"), ("tflite", "tflite"),
                                                ("litert", "tflite"), ("imported", "")]
        assert json.loads(got[1][2])["format"] == "tflite"
        assert "format" not in json.loads(got[3][2])  # imported: no artifact ran
        (lf,) = s.connection.execute("SELECT format FROM layer_measurements").fetchone()
        assert lf == "tflite"
        idx = [r[2] for r in s.connection.execute(
            "PRAGMA index_info(measurements_resume)").fetchall()]
        assert idx[-1] == "format"
        assert s.has_measurement("v1", SHAPE, "phone", "litert", "v1", 4, format="tflite")


@pytest.mark.parametrize("runtime,expected", [("onnxruntime", "onnx"), ("tflite", "tflite")])
def test_a_spec_from_an_old_row_reads_the_migrated_format(tmp_path, runtime, expected):
    db = tmp_path / "old.db"
    with Store(db) as s:
        dev = s.add_device(DEV)
        vid = s.add_variant("m", SHAPE, table(), method="none", content_hash="v1")
        s.add_measurement(vid, dev, meas(runtime, expected, 5.0, 1.0))
    _downgrade_to_schema_1(db)
    with Store(db) as s:
        (spec,) = s.connection.execute("SELECT spec FROM measurements").fetchone()
    assert BenchSpec.from_dict(json.loads(spec)).format == expected
