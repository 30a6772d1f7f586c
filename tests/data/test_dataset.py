"""load_dataset: the contract the predictors code against."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.data.dataset import MODEL_ID_COLUMNS, Dataset, load_dataset, model_feature_names
from latbench.data.export import export_table, flat_table
from latbench.data.features import LAYER_COLUMNS, layer_key, model_features
from latbench.data.nb201_import import NB201Featurizer, import_nb201
from latbench.data.store import Store
from latbench.exceptions import UserInputError

DEV_CSV = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"


def _measurement(ms: float) -> Measurement:
    spec = BenchSpec(artifact_sha256="h", device="cpu", runtime="onnxruntime", runtime_version="1.20",
                     provider="CPUExecutionProvider", threads=1, input_shape=(1, 3, 32, 32))
    info = DeviceInfo(name="cpu", kind="cpu")
    return Measurement(spec=spec, samples_s=(ms / 1e3,) * 3, info_before=info, info_after=info,
                       timestamp=1.0)


@pytest.fixture(scope="module")
def db(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    """40 NB201 rows on two imported devices, plus one measured variant with a layer latency."""
    tmp = tmp_path_factory.mktemp("ds")
    src = pd.read_csv(DEV_CSV).sample(40, random_state=1)
    csv = tmp / "nb.csv"
    src.to_csv(csv, index=False)
    path = tmp / "lat.db"
    import_nb201(csv, latency_column="sd855_cpu_kryo485_int8_ms", device="sd855", db_path=path)
    import_nb201(csv, latency_column="desktop_cpu_i7_7820x_fp32_ms", device="i7", db_path=path, limit=10)
    table = NB201Featurizer().table(src["arch"].iloc[0])
    with Store(path) as s:
        d = s.add_device(DeviceInfo(name="cpu", kind="cpu"))
        v = s.add_variant("resnet_tiny", (1, 3, 32, 32), table.head(5), plan={"x": ["svd", 2]},
                          method="svd", content_hash="art")
        s.add_measurement(v, d, _measurement(2.5))
        s.add_layer_measurement(d, table.iloc[1], _measurement(0.25))
    return path, src


def test_models_columns_and_values(db):
    path, src = db
    ds = load_dataset(path)
    assert isinstance(ds, Dataset)
    assert list(ds.models.columns) == MODEL_ID_COLUMNS + model_feature_names()
    assert len(ds.models) == 40 + 10 + 1
    sd = ds.models[ds.models["device"] == "sd855"]
    assert sd["source_model"].tolist() == ["nb201:" + a for a in src["arch"]]
    assert sd["latency_ms"].tolist() == pytest.approx(src["sd855_cpu_kryo485_int8_ms"].tolist())
    assert set(sd["input_shape"]) == {"1x3x32x32"} and set(sd["method"]) == {"none"}
    # Model features are those of the network's own layer table.
    f = NB201Featurizer()
    expected = model_features(f.table(src["arch"].iloc[3]))
    row = sd.iloc[3]
    assert {k: row[k] for k in expected} == pytest.approx(expected)
    assert ds.models["measurement_id"].is_unique


def test_layers_and_layer_tables_match_the_featuriser(db):
    path, src = db
    ds = load_dataset(path, device="sd855")
    assert list(ds.layers.columns) == ["variant_id", "layer_index"] + LAYER_COLUMNS
    f = NB201Featurizer()
    ids = ds.models["variant_id"].tolist()
    tables = ds.layer_tables(ids[::-1])  # any order, in the order asked
    for arch, t in zip(src["arch"].tolist()[::-1], tables):
        pd.testing.assert_frame_equal(t, f.table(arch))
    assert len(ds.layers) == sum(len(t) for t in tables)
    first = ds.layers[ds.layers["variant_id"] == ids[0]]
    assert first["layer_index"].tolist() == list(range(len(first)))


def test_layer_tables_repeat_ids_and_reject_unknown(db):
    ds = load_dataset(db[0], device="sd855")
    vid = int(ds.models["variant_id"].iloc[0])
    a, b = ds.layer_tables([vid, vid])
    pd.testing.assert_frame_equal(a, b)
    with pytest.raises(UserInputError, match="is not in this dataset"):
        ds.layer_tables([10_000_000])


def test_device_filter_and_unknown_device(db):
    ds = load_dataset(db[0], device="i7")
    assert set(ds.models["device"]) == {"i7"} and len(ds.models) == 10
    assert ds.layers["variant_id"].nunique() == 10
    assert ds.layer_latency.empty and list(ds.layer_latency.columns) == \
        ["device", "layer_key", "latency_ms"] + LAYER_COLUMNS
    with pytest.raises(UserInputError, match="device 'nope' is not in .*devices: sd855, i7, cpu"):
        load_dataset(db[0], device="nope")


def test_layer_latency_rows(db):
    ds = load_dataset(db[0], device="cpu")
    ll = ds.layer_latency
    assert len(ll) == 1 and ll["latency_ms"].iloc[0] == pytest.approx(0.25)
    assert ll["layer_key"].iloc[0] == layer_key(ll.iloc[0])
    measured = ds.models.iloc[0]
    assert (measured["method"], measured["latency_ms"]) == ("svd", pytest.approx(2.5))
    assert len(ds.layer_tables([measured["variant_id"]])[0]) == 5


def test_missing_database_is_a_user_error(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_dataset(tmp_path / "none.db")


def test_empty_database_gives_empty_frames_with_columns(tmp_path):
    Store(tmp_path / "e.db").close()
    ds = load_dataset(tmp_path / "e.db")
    assert ds.models.empty and list(ds.models.columns) == MODEL_ID_COLUMNS + model_feature_names()
    assert ds.layers.empty and ds.layer_tables([]) == []


def test_export_flat_table_csv_and_parquet(db, tmp_path):
    path, _ = db
    flat = flat_table(path)
    assert len(flat) == 51
    for c in ("device", "device_kind", "content_hash", "plan", "runtime", "threads", "source",
              "latency_ms", "p90_ms", "confident", "macs", "n_conv3x3"):
        assert c in flat.columns
    svd = flat[flat["method"] == "svd"].iloc[0]
    assert svd["plan"] == '{"x":["svd",2]}' and bool(svd["confident"]) is True
    assert flat[flat["device"] == "sd855"]["confident"].isna().all()  # unknown for imports
    assert export_table(path, tmp_path / "o.csv", "csv") == 51
    assert export_table(path, tmp_path / "o.parquet", "parquet") == 51
    back = pd.read_parquet(tmp_path / "o.parquet")
    assert back["latency_ms"].tolist() == pytest.approx(flat["latency_ms"].tolist())
    assert len(pd.read_csv(tmp_path / "o.csv")) == 51
    with pytest.raises(UserInputError, match="unknown export format 'xlsx'"):
        export_table(path, tmp_path / "o.x", "xlsx")


def test_variant_without_layers_keeps_numeric_layer_columns(tmp_path):
    from latbench.data.features import layer_table
    from torch import nn

    db = tmp_path / "l.db"
    with Store(db) as s:
        d = s.add_device(DeviceInfo(name="cpu", kind="cpu"))
        empty = layer_table(nn.Identity(), (1, 3, 4, 4))
        full = layer_table(nn.Sequential(nn.Conv2d(3, 2, 1)), (1, 3, 4, 4))
        s.add_measurement(s.add_variant("id", (1, 3, 4, 4), empty, content_hash="e"), d, _measurement(1.0))
        s.add_measurement(s.add_variant("conv", (1, 3, 4, 4), full, content_hash="f"), d, _measurement(2.0))
    ds = load_dataset(db)
    assert ds.layers["macs"].dtype == "int64" and len(ds.layers) == 1
    by_model = dict(zip(ds.models["source_model"], ds.models["variant_id"]))
    empty_t, full_t = ds.layer_tables([by_model["id"], by_model["conv"]])
    assert empty_t.empty and list(empty_t.columns) == LAYER_COLUMNS
    assert full_t["macs"].tolist() == [2 * 16 * 3]


def test_tables_of_an_older_feature_schema_load_as_chains_with_a_warning(db, tmp_path):
    import shutil
    import sqlite3

    path = tmp_path / "old.db"
    shutil.copy(db[0], path)
    with sqlite3.connect(path) as conn:  # as a latbench before schema 3 would have stored it
        conn.execute("UPDATE layer_tables SET feature_schema_version = 2")
    with pytest.warns(UserWarning, match="feature schema 2"):
        ds = load_dataset(path)
    assert len(ds.models) == len(load_dataset(db[0]).models)


def test_schema_3_tables_load_as_module_graphs_at_batch_1_with_a_warning(tmp_path):
    from latbench.data.features import layer_table
    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    table = layer_table(net, (1, 3, 8, 8)).drop(columns=["fused", "graph", "batch"])
    path = tmp_path / "v3.db"
    with Store(path) as s:  # as latbench stored tables under feature schema 3
        d = s.add_device(DeviceInfo(name="cpu", kind="cpu"))
        v = s.add_variant("tiny", (1, 3, 8, 8), table, content_hash="t3")
        s.add_measurement(v, d, _measurement(1.0))
        s.add_layer_measurement(d, table.iloc[0], _measurement(0.5))
        s.connection.execute("UPDATE layer_tables SET feature_schema_version = 3")
    with pytest.warns(UserWarning, match="feature schema 3.*which graph they describe"):
        ds = load_dataset(path)
    assert list(ds.layers.columns) == ["variant_id", "layer_index"] + LAYER_COLUMNS
    assert set(ds.layers["graph"]) == {"torch"} and set(ds.layers["fused"]) == {""}
    assert ds.layers["batch"].tolist() == [1, 1]
    assert ds.layer_latency["graph"].tolist() == ["torch"] and ds.layer_latency["batch"].tolist() == [1]


@pytest.mark.parametrize("dropped, said, not_said", [
    # schema 4 as the compress line wrote it: MACs by FlopCounterMode and 'uncounted', no graph
    (["fused", "graph", "batch"], "which graph they describe", "'uncounted'"),
    # schema 4 as the predict line wrote it: graph/fused/batch, no 'uncounted'
    (["uncounted"], "'uncounted' column", "which graph"),
])
def test_both_schema_4_tables_load_with_defaults_and_a_warning_naming_what_they_lack(
        tmp_path, dropped, said, not_said):
    import warnings

    from latbench.data.features import FEATURE_SCHEMA_VERSION, layer_table
    from torch import nn

    assert FEATURE_SCHEMA_VERSION == 5
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    table = layer_table(net, (2, 3, 8, 8)).drop(columns=dropped)
    path = tmp_path / "v4.db"
    with Store(path) as s:
        d = s.add_device(DeviceInfo(name="cpu", kind="cpu"))
        v = s.add_variant("tiny", (2, 3, 8, 8), table, content_hash="t4")
        s.add_measurement(v, d, _measurement(1.0))
        s.add_layer_measurement(d, table.iloc[0], _measurement(0.5))
        s.connection.execute("UPDATE layer_tables SET feature_schema_version = 4")
    with warnings.catch_warnings(record=True) as got:
        warnings.simplefilter("always")
        ds = load_dataset(path)
    msg = " ".join(str(w.message) for w in got)
    assert "feature schema 4" in msg and said in msg and not_said not in msg
    assert list(ds.layers.columns) == ["variant_id", "layer_index"] + LAYER_COLUMNS
    assert set(ds.layers["uncounted"]) == {""} and set(ds.layers["graph"]) == {"torch"}
    # a column the table kept keeps its value (batch 2), a dropped one takes its default (1)
    assert ds.layers["batch"].tolist() == ([1, 1] if "batch" in dropped else [2, 2])
    assert ds.layer_latency["uncounted"].tolist() == [""]
    assert ds.layer_latency["graph"].tolist() == ["torch"]


def test_current_tables_load_without_a_warning(tmp_path):
    import warnings

    from latbench.data.features import layer_table
    from torch import nn

    table = layer_table(nn.Sequential(nn.Conv2d(3, 4, 3)), (1, 3, 8, 8))
    path = tmp_path / "v5.db"
    with Store(path) as s:
        d = s.add_device(DeviceInfo(name="cpu", kind="cpu"))
        s.add_measurement(s.add_variant("tiny", (1, 3, 8, 8), table, content_hash="t5"), d,
                          _measurement(1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_dataset(path)
