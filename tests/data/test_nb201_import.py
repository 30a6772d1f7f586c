"""NAS-Bench-201 import: exact fast featuriser, idempotent import, clear CSV errors."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from latbench.data.features import layer_table
from latbench.data.nb201_import import NB201_INPUT_SHAPE, NB201Featurizer, import_nb201, read_nb201_csv
from latbench.data.store import Store
from latbench.exceptions import UserInputError
from latbench.models.nb201 import build_nb201

DEV_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"
COL = "sd855_cpu_kryo485_int8_ms"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|nor_conv_3x3~1|nor_conv_1x1~2|"
NO_LIVE_EDGE = "|none~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|"
DEAD_EDGES = "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"


@pytest.fixture(scope="module")
def sample_csv(tmp_path_factory) -> Path:
    """120 real rows (a seeded sample of the development set)."""
    df = pd.read_csv(DEV_CSV).sample(120, random_state=0)
    p = tmp_path_factory.mktemp("nb201") / "nb201_sample.csv"
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize("arch", [ALL_CONV, NO_LIVE_EDGE, DEAD_EDGES,
                                  "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|"
                                  "skip_connect~1|avg_pool_3x3~2|"])
def test_fast_featurizer_equals_layer_table_of_the_built_network(arch):
    expected = layer_table(build_nb201(arch), NB201_INPUT_SHAPE)
    pd.testing.assert_frame_equal(NB201Featurizer().table(arch), expected)


def test_fast_featurizer_equals_exact_path_on_real_architectures(sample_csv):
    archs = pd.read_csv(sample_csv)["arch"].head(8).tolist()
    fast, exact = NB201Featurizer(), NB201Featurizer(exact=True)
    for a in archs:
        pd.testing.assert_frame_equal(fast.table(a), exact.table(a))


def test_featurizer_caches_by_live_edges():
    f = NB201Featurizer()
    # Dead edges (into node 2 when node 2 does not reach the output) are not built.
    a = "|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|"
    b = "|nor_conv_3x3~0|+|avg_pool_3x3~0|none~1|+|skip_connect~0|none~1|none~2|"
    assert f.cell_key(a) == f.cell_key(b)
    assert f.table(a) is f.table(b)
    assert len(f) == 1


def test_bad_arch_string_is_a_user_error():
    with pytest.raises(UserInputError, match="bad NAS-Bench-201 architecture"):
        NB201Featurizer().table("|conv~0|+|")


def test_import_writes_variants_measurements_and_an_imported_device(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    seen = []
    r = import_nb201(sample_csv, latency_column=COL, device="sd855", db_path=db, limit=50,
                     progress=lambda done, total: seen.append((done, total)))
    assert (r.rows, r.imported, r.skipped, r.invalid) == (50, 50, 0, 0)
    assert seen[-1] == (50, 50) and len(seen) == 50
    with Store(db) as s:
        c = s.counts()
        assert c["variants"] == 50 and c["measurements"] == 50 and c["devices"] == 1
        assert c["layer_tables"] <= r.layer_tables <= 50
        dev = s.device_info("sd855")
        assert dev["kind"] == "imported"
        assert dev["info"]["state"]["latency_column"] == COL
        assert dev["info"]["state"]["source_file"].endswith("nb201_sample.csv")
        got = pd.read_sql("SELECT v.source_model, m.median_ms, m.source, v.input_shape FROM measurements m "
                          "JOIN variants v ON v.id = m.variant_id ORDER BY m.id", s.connection)
    src = pd.read_csv(sample_csv).head(50)
    assert got["source_model"].tolist() == ["nb201:" + a for a in src["arch"]]
    assert got["median_ms"].tolist() == pytest.approx(src[COL].tolist())
    assert set(got["source"]) == {"imported:nb201_sample.csv"}
    assert set(got["input_shape"]) == {"1x3x32x32"}


def test_import_is_idempotent_and_resumes(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    import_nb201(sample_csv, latency_column=COL, device="sd855", db_path=db, limit=30)
    again = import_nb201(sample_csv, latency_column=COL, device="sd855", db_path=db, limit=60)
    assert (again.imported, again.skipped) == (30, 30)
    with Store(db) as s:
        assert s.counts()["measurements"] == 60
        assert s.counts()["variants"] == 60


def test_second_device_reuses_variants(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    import_nb201(sample_csv, latency_column=COL, device="sd855", db_path=db, limit=20)
    import_nb201(sample_csv, latency_column="desktop_cpu_i7_7820x_fp32_ms", device="i7", db_path=db,
                 limit=20)
    with Store(db) as s:
        assert s.counts()["variants"] == 20 and s.counts()["measurements"] == 40


def test_same_device_name_from_another_column_is_refused(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    import_nb201(sample_csv, latency_column=COL, device="sd855", db_path=db, limit=5)
    with pytest.raises(UserInputError, match="choose another --device name"):
        import_nb201(sample_csv, latency_column="desktop_cpu_i7_7820x_fp32_ms", device="sd855",
                     db_path=db, limit=5)


def test_missing_column_lists_the_columns(tmp_path, sample_csv):
    with pytest.raises(UserInputError, match=r"no column 'latency'; its columns are: arch, desktop_cpu"):
        import_nb201(sample_csv, latency_column="latency", device="x", db_path=tmp_path / "l.db")


def test_bad_csv_inputs_are_user_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        read_nb201_csv(tmp_path / "nope.csv", "ms")
    text = tmp_path / "t.csv"
    text.write_text("arch,ms\n|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|,fast\n")
    with pytest.raises(UserInputError, match="row 2: latency 'fast'"):
        read_nb201_csv(text, "ms")
    with pytest.raises(UserInputError, match="--limit must be positive"):
        read_nb201_csv(text, "ms", limit=0)


def test_bad_arch_row_is_reported_with_its_row(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arch,ms\n|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|,1.5\n|bad|,2.0\n")
    with pytest.raises(UserInputError, match="row 3: bad NAS-Bench-201 architecture"):
        import_nb201(p, latency_column="ms", device="d", db_path=tmp_path / "l.db")


def test_missing_latency_rows_are_counted_not_imported(tmp_path):
    p = tmp_path / "t.csv"
    p.write_text("arch,ms\n|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|,\n"
                 "|none~0|+|none~0|none~1|+|skip_connect~0|none~1|skip_connect~2|,0.5\n")
    r = import_nb201(p, latency_column="ms", device="d", db_path=tmp_path / "l.db")
    assert (r.imported, r.invalid) == (1, 1)


def test_fast_featurizer_lists_node_sums_and_block_residuals():
    # ALL_CONV: nodes 2 and 3 have 2 and 3 live incoming edges → 1 + 2 adds per cell, 15 cells,
    # plus the residual add of each of the 2 reduction blocks.
    t = NB201Featurizer().table(ALL_CONV)
    assert (t["op"] == "add").sum() == 15 * 3 + 2
    # Each sum right after the edge that completes it: edges 2 (1→2), 4 (1→3), 5 (2→3).
    assert [n for n in t["name"] if n.startswith("cells.0.")][-10:] == [
        "cells.0.add#0", "cells.0.ops.3", "cells.0.ops.4.0", "cells.0.ops.4.1", "cells.0.ops.4.2",
        "cells.0.add#1", "cells.0.ops.5.0", "cells.0.ops.5.1", "cells.0.ops.5.2", "cells.0.add#2"]
    skeleton = NB201Featurizer().table(NO_LIVE_EDGE)
    assert skeleton[skeleton["op"] == "add"]["name"].tolist() == ["cells.5.add#0", "cells.11.add#0"]


# --------------------------------------------------------------------------- builds, batch, columns
REFERENCE_ARCHS = [ALL_CONV, NO_LIVE_EDGE, DEAD_EDGES, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                   "|skip_connect~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|none~0|skip_connect~1|avg_pool_3x3~2|"]


@pytest.mark.parametrize("arch", REFERENCE_ARCHS)
@pytest.mark.parametrize("batch", [1, 3])
def test_fast_featurizer_equals_the_reference_build_with_every_edge(arch, batch):
    expected = layer_table(build_nb201(arch, edges="all"), (batch, 3, 32, 32))
    got = NB201Featurizer(edges="all", batch=batch).table(arch)
    pd.testing.assert_frame_equal(got, expected)
    assert set(got["batch"]) == {batch}


def test_live_build_at_a_batch_equals_the_built_network():
    expected = layer_table(build_nb201(DEAD_EDGES), (4, 3, 32, 32))
    pd.testing.assert_frame_equal(NB201Featurizer(batch=4).table(DEAD_EDGES), expected)


def test_reference_build_runs_every_edge_with_none_as_a_zeroing_op():
    t = NB201Featurizer(edges="all").table(DEAD_EDGES)
    live = NB201Featurizer().table(DEAD_EDGES)
    # DEAD_EDGES: edges conv3x3 0→1, none 0→2, none 1→2, skip 0→3, none 1→3, conv1x1 2→3. Live:
    # skip 0→3 only (node 2 holds nothing). Every edge of the reference build runs: 3 zeroing
    # ops, 2 convolutions and 3 node sums per cell, in 15 cells.
    assert (t["op"] == "zero").sum() == 15 * 3 and (live["op"] == "zero").sum() == 0
    cells = t[t["name"].str.startswith("cells.0.")]
    assert (cells["op"] == "conv").sum() == 2 and (cells["op"] == "add").sum() == 3
    assert (live["op"] == "conv").sum() == (t["op"] == "conv").sum() - 30
    # Architectures that differ only in dead edges are one network live, two networks in full.
    other = DEAD_EDGES.replace("nor_conv_3x3~0|+", "avg_pool_3x3~0|+")
    assert NB201Featurizer().cell_key(other) == NB201Featurizer().cell_key(DEAD_EDGES)
    assert NB201Featurizer(edges="all").cell_key(other) != NB201Featurizer(edges="all").cell_key(DEAD_EDGES)


def test_bad_convention_or_batch_is_a_user_error():
    with pytest.raises(UserInputError, match="unknown edge convention 'some'"):
        NB201Featurizer(edges="some")
    with pytest.raises(UserInputError, match="--batch must be a positive integer"):
        NB201Featurizer(batch=0)


def test_several_columns_share_one_featurisation_and_name_their_devices(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    cols = ["desktop_cpu_i7_7820x_fp32_ms", "sd855_cpu_kryo485_int8_ms=cpu855",
            "sd855_gpu_adreno640_int8_ms"]
    r = import_nb201(sample_csv, latency_column=cols, db_path=db, limit=30)
    assert r.device == "desktop_cpu_i7_7820x_fp32,cpu855,sd855_gpu_adreno640_int8"
    assert [(d.device, d.column, d.imported) for d in r.devices] == [
        ("desktop_cpu_i7_7820x_fp32", "desktop_cpu_i7_7820x_fp32_ms", 30),
        ("cpu855", "sd855_cpu_kryo485_int8_ms", 30),
        ("sd855_gpu_adreno640_int8", "sd855_gpu_adreno640_int8_ms", 30)]
    assert (r.imported, r.skipped, r.invalid) == (90, 0, 0)
    src = pd.read_csv(sample_csv).head(30)
    with Store(db) as s:
        assert s.counts()["variants"] == 30 and s.counts()["measurements"] == 90
        got = pd.read_sql("SELECT d.name, v.source_model, m.median_ms FROM measurements m JOIN "
                          "variants v ON v.id = m.variant_id JOIN devices d ON d.id = m.device_id "
                          "WHERE d.name = 'cpu855' ORDER BY m.id", s.connection)
    assert got["median_ms"].tolist() == pytest.approx(src["sd855_cpu_kryo485_int8_ms"].tolist())
    again = import_nb201(sample_csv, latency_column=cols, db_path=db, limit=40)
    assert [(d.imported, d.skipped) for d in again.devices] == [(10, 30)] * 3


def test_reference_build_at_a_batch_is_its_own_variant_beside_the_live_one(tmp_path, sample_csv):
    db = tmp_path / "lat.db"
    import_nb201(sample_csv, latency_column=COL, device="live", db_path=db, limit=10)
    r = import_nb201(sample_csv, latency_column=COL + "=ref32", db_path=db, limit=10, edges="all",
                     batch=32)
    assert r.edges == "all" and r.input_shape == (32, 3, 32, 32) and r.imported == 10
    with Store(db) as s:
        v = pd.read_sql("SELECT v.source_model, v.input_shape, d.name FROM measurements m JOIN "
                        "variants v ON v.id = m.variant_id JOIN devices d ON d.id = m.device_id",
                        s.connection)
        info = s.device_info("ref32")
    ref = v[v["name"] == "ref32"]
    assert ref["source_model"].str.startswith("nb201-all:").all()
    assert set(ref["input_shape"]) == {"32x3x32x32"}
    assert v[v["name"] == "live"]["source_model"].str.startswith("nb201:").all()
    assert info["info"]["state"]["edges"] == "all" and info["info"]["state"]["batch"] == 32
    # The same column imported under another build into the same device name is refused.
    with pytest.raises(UserInputError, match="choose another --device name"):
        import_nb201(sample_csv, latency_column=COL, device="ref32", db_path=db, limit=5)


@pytest.mark.parametrize("columns, device, fragment", [
    ([], None, "at least one --latency-column"),
    (["a_ms", "b_ms"], "x", "with several columns write each as COL=DEVICE"),
    (["a_ms=x", "b_ms=x"], None, "would both fill device 'x'"),
    (["a_ms="], None, "write COL or COL=DEVICE"),
    (["a_ms=x"], "y", "names device 'x' but --device says 'y'"),
])
def test_bad_column_spellings_are_user_errors(columns, device, fragment):
    from latbench.data.nb201_import import parse_latency_columns

    with pytest.raises(UserInputError, match=fragment):
        parse_latency_columns(columns, device)


def test_column_spellings():
    from latbench.data.nb201_import import parse_latency_columns

    assert parse_latency_columns(["pixel3_ms", "x_ms=phone", "raw"]) == [
        ("pixel3_ms", "pixel3"), ("x_ms", "phone"), ("raw", "raw")]
    assert parse_latency_columns("pixel3_ms", "p3") == [("pixel3_ms", "p3")]
