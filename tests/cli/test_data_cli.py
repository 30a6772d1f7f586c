"""``bench data``: import-nb201, summary, export — exit codes and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from latbench.cli import main

DEV_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"
COL = "sd855_gpu_adreno640_int8_ms"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    code = 0
    try:
        main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def csv(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("cli") / "nb.csv"
    pd.read_csv(DEV_CSV, nrows=300).sample(25, random_state=2).to_csv(p, index=False)
    return p


def test_import_then_summary_then_export(tmp_path, csv, capsys):
    db = tmp_path / "lat.db"
    code, out, _ = run(["data", "import-nb201", str(csv), "--latency-column", COL, "--device", "gpu",
                        "--db", str(db), "--limit", "20", "--json"], capsys)
    assert code == 0
    res = json.loads(out)
    assert (res["rows"], res["imported"], res["skipped"]) == (20, 20, 0)

    code, out, _ = run(["data", "import-nb201", str(csv), "--latency-column", COL, "--device", "gpu",
                        "--db", str(db)], capsys)
    assert code == 0 and "imported 5 of 25 rows (20 already stored" in out

    code, out, _ = run(["data", "summary", "--db", str(db), "--json"], capsys)
    assert code == 0
    s = json.loads(out)
    assert s["totals"]["measurements"] == 25 and s["totals"]["failures"] == 0
    assert s["groups"] == [{"device": "gpu", "kind": "imported", "source_model": "nb201",
                            "method": "none", "n_variants": 25, "n_measurements": 25,
                            "median_latency_ms": pytest.approx(float(pd.read_csv(csv)[COL].median())),
                            "n_failures": 0}]

    code, out, _ = run(["data", "summary", "--db", str(db)], capsys)
    assert code == 0 and "gpu" in out and "measurements: 25" in out

    for fmt in ("csv", "parquet"):
        target = tmp_path / f"flat.{fmt}"
        code, out, _ = run(["data", "export", "--db", str(db), "--format", fmt, "--out", str(target)],
                           capsys)
        assert code == 0 and "wrote 25 rows" in out
        df = pd.read_csv(target) if fmt == "csv" else pd.read_parquet(target)
        assert len(df) == 25 and {"latency_ms", "macs", "plan", "source"} <= set(df.columns)


def test_missing_column_is_one_line_exit_2(tmp_path, csv, capsys):
    code, _, err = run(["data", "import-nb201", str(csv), "--latency-column", "ms", "--device", "d",
                        "--db", str(tmp_path / "l.db")], capsys)
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "its columns are: arch, desktop_cpu_i7_7820x_fp32_ms" in err


def test_summary_of_missing_db_exit_2(tmp_path, capsys):
    code, _, err = run(["data", "summary", "--db", str(tmp_path / "none.db")], capsys)
    assert code == 2 and "does not exist" in err


def test_newer_schema_is_store_error_exit_4(tmp_path, capsys):
    import sqlite3

    from latbench.data.store import Store

    db = tmp_path / "lat.db"
    Store(db).close()
    con = sqlite3.connect(db)
    con.execute("UPDATE schema_info SET value='7' WHERE key='schema_version'")
    con.commit()
    con.close()
    code, _, err = run(["data", "summary", "--db", str(db)], capsys)
    assert code == 4 and "upgrade latbench" in err


def test_export_bad_format_exit_2(tmp_path, capsys):
    from latbench.data.store import Store

    Store(tmp_path / "lat.db").close()
    code, _, err = run(["data", "export", "--db", str(tmp_path / "lat.db"), "--format", "xlsx",
                        "--out", str(tmp_path / "o.xlsx")], capsys)
    assert code == 2 and "unknown export format 'xlsx'" in err


def test_import_nb201_several_columns_reference_build_and_batch(tmp_path, csv, capsys):
    db = tmp_path / "lat.db"
    code, out, err = run(["data", "import-nb201", str(csv), "--db", str(db), "--edges", "all",
                          "--batch", "8", "--latency-column", "sd855_cpu_kryo485_int8_ms",
                          "--latency-column", "desktop_cpu_i7_7820x_fp32_ms=i7", "--limit", "6",
                          "--json"], capsys)
    assert code == 0, err
    res = json.loads(out)
    assert res["edges"] == "all" and res["input_shape"] == [8, 3, 32, 32]
    assert [d["device"] for d in res["devices"]] == ["sd855_cpu_kryo485_int8", "i7"]
    assert res["imported"] == 12 and res["layer_tables"] == 6
    code, _, err = run(["data", "import-nb201", str(csv), "--db", str(db), "--edges", "pruned",
                        "--latency-column", "sd855_cpu_kryo485_int8_ms"], capsys)
    assert code == 2 and "unknown edge convention 'pruned'" in err and "Traceback" not in err
