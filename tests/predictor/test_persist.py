"""Predictor files: every kind round-trips exactly; nothing in a file can run code.

The file is a zip of a JSON envelope, ``.npy`` arrays and XGBoost JSON models. These tests
save each registered kind and compare predictions, parameters and fitted state; then feed
the loader truncated, corrupted, foreign and malicious files (object arrays, pickles that
would write a file) and check each gives one ``UserInputError`` and runs nothing.
"""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latbench.data.features import FEATURE_SCHEMA_VERSION, layer_key
from latbench.exceptions import PredictorError, UserInputError
from latbench.predictor import _persist
from latbench.predictor.base import (SAVE_FORMAT, LatencyPredictor, convert_predictor,
                                     load_predictor, save_predictor)
from latbench.predictor.flops import FlopsClusteredPredictor, FlopsPredictor
from latbench.predictor.gbm import GBMPredictor
from latbench.predictor.lut import LUTPredictor
from latbench.predictor.registry import PREDICTORS, make_predictor

from ._synth import dataset

X, Y = dataset(40, seed=1)
X_NEW, _ = dataset(12, seed=7)  # models the predictors were not fitted on


def _lut_table(tables) -> pd.DataFrame:
    rows = pd.concat(tables, ignore_index=True)
    rows = rows.assign(layer_key=[layer_key(r) for r in rows.to_dict("records")])
    rows = rows.drop_duplicates("layer_key")
    return rows.assign(latency_ms=np.maximum(rows["macs"] / 2e6, 0.01))


#: Parameters that make each registered kind fit quickly on the synthetic tables. A kind
#: added to the registry needs an entry here (the first test says so).
KIND_PARAMS = {
    "flops": {},
    "flops-clustered": {"n_clusters": 2},
    "lut": {"table": _lut_table(X)},
    "gbm": {"n_estimators": 25},
    "gbm-layer": {"n_estimators": 25, "n_rounds": 2, "layer_latency": _lut_table(X[:5])},
    "gcn": {"hidden": 8, "n_layers": 2, "max_steps": 30, "batch_size": 16},
}

#: More configurations whose state differs (fallback model, no ridge base, ...).
EXTRA = [
    ("lut", {"table": _lut_table(X[:30]), "fallback": "regressor"}),
    ("gbm", {"n_estimators": 25, "linear_base": False, "loss": "huber"}),
    ("gbm", {"n_estimators": 25, "linear_base": True, "log_target": False}),
]


def _equal(a, b) -> bool:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b)
        return True
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(
            a, b, equal_nan=a.dtype.kind in "fc")
    if isinstance(a, float) and np.isnan(a):
        return isinstance(b, float) and np.isnan(b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if type(a).__module__.startswith("xgboost"):
        return type(a) is type(b) and a.get_booster().save_raw("json") == b.get_booster().save_raw("json")
    return type(a) is type(b) and a == b


def test_every_registered_kind_has_a_round_trip_case():
    missing = sorted(set(PREDICTORS.names()) - set(KIND_PARAMS))
    assert not missing, (f"predictor kind(s) {missing} are registered but not round-tripped: "
                         "add them to KIND_PARAMS in tests/predictor/test_persist.py")


@pytest.mark.parametrize("kind,params", [*KIND_PARAMS.items(), *EXTRA],
                         ids=[*KIND_PARAMS, *(f"{k}-{i}" for i, (k, _) in enumerate(EXTRA))])
def test_each_kind_round_trips_exactly(tmp_path, kind, params):
    if kind not in PREDICTORS:
        pytest.skip(f"{kind} is not registered")
    est = make_predictor(kind, **params).fit(X, Y, device="phone")
    path = save_predictor(est, tmp_path / "p.predictor", device="phone", kind=kind)
    again, info = load_predictor(path, device="phone")
    assert type(again) is type(est)
    assert info == {"device": "phone", "kind": kind, "feature_schema_version": FEATURE_SCHEMA_VERSION,
                    "format": SAVE_FORMAT}
    np.testing.assert_array_equal(again.predict(X_NEW), est.predict(X_NEW))  # bit for bit
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    p0, p1 = est.get_params(deep=False), again.get_params(deep=False)
    assert p0.keys() == p1.keys() and all(_equal(p0[k], p1[k]) for k in p0), kind
    s0, s1 = est._get_state(), again._get_state()
    assert s0.keys() == s1.keys() and all(_equal(s0[k], s1[k]) for k in s0), kind
    # and the file holds no pickle: every member is JSON or a pickle-free .npy
    with zipfile.ZipFile(path) as zf:
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith(".npy"):
                np.load(io.BytesIO(data), allow_pickle=False)
            else:
                json.loads(data)


def test_a_loaded_predictor_saves_again_unchanged(tmp_path):
    est = GBMPredictor(n_estimators=10).fit(X, Y)
    a = save_predictor(est, tmp_path / "a", device="d")
    b = save_predictor(load_predictor(a)[0], tmp_path / "b", device="d")
    ma, mb = _members(a), _members(b)
    assert ma.keys() == mb.keys()
    assert all(ma[n] == mb[n] for n in ma if n != "predictor.json")  # arrays and trees
    np.testing.assert_array_equal(load_predictor(b)[0].predict(X_NEW), est.predict(X_NEW))


def test_nested_predictors_and_tagged_values_round_trip():
    inner = FlopsPredictor().fit(X, Y, device="d")
    value = {"base": inner, 3: (1.5, float("nan"), float("-inf")), "__odd": [np.float32(2.5)],
             "arr": np.arange(6, dtype=np.int16).reshape(2, 3), "s": np.array(["a", "bc"]),
             "frame": pd.DataFrame({"c": pd.Categorical(["x", "y", "x"]), "n": [1.0, None, 3.0]},
                                   index=[5, 6, 7])}
    w = _persist._Writer()
    doc = json.loads(json.dumps(w.encode(value, "v"), allow_nan=False))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in w.members.items():
            zf.writestr(name, data)
    with zipfile.ZipFile(buf) as zf:
        out = _persist._Reader(zf).decode(doc, "v")
    assert type(out["base"]) is FlopsPredictor
    np.testing.assert_array_equal(out["base"].predict(X), inner.predict(X))
    assert out[3][0] == 1.5 and np.isnan(out[3][1]) and out[3][2] == -np.inf
    assert type(out["__odd"][0]) is np.float32 and out["__odd"][0] == np.float32(2.5)
    for k in ("arr", "s", "frame"):
        assert _equal(value[k], out[k]), k


def test_state_the_format_cannot_hold_is_refused_when_saving(tmp_path):
    est = FlopsPredictor().fit(X, Y)
    est.helper_ = object()  # a fitted attribute of a type the file cannot hold
    path = tmp_path / "p.predictor"
    with pytest.raises(PredictorError, match="helper_.*_get_state"):
        save_predictor(est, path, device="d")
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing half-written
    est.helper_ = np.array([object()], dtype=object)
    with pytest.raises(PredictorError, match="dtype object"):
        save_predictor(est, path, device="d")


class _OwnPredictor(FlopsPredictor):
    """A predictor class outside latbench.predictor: a file could not name it safely."""


def test_a_class_outside_latbench_is_refused_when_saving(tmp_path):
    est = _OwnPredictor().fit(X, Y)
    with pytest.raises(PredictorError, match="only predictors defined in latbench.predictor"):
        save_predictor(est, tmp_path / "p.predictor", device="d")
    assert not list(tmp_path.iterdir())


def test_an_unwritable_path_is_one_line(tmp_path):
    est = FlopsPredictor().fit(X, Y)
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserInputError, match="cannot write predictor file"):
        save_predictor(est, tmp_path / "taken", device="d")
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserInputError, match="cannot write predictor file"):
        save_predictor(est, tmp_path / "file" / "p.predictor", device="d")


# ---------------------------------------------------------------- damaged and foreign files
@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    est = LUTPredictor(table=_lut_table(X), fallback="regressor").fit(X, Y)
    return save_predictor(est, tmp_path_factory.mktemp("p") / "lut.predictor", device="d",
                          kind="lut")


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {n: zf.read(n) for n in zf.namelist()}


def _rezip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    return path


def _envelope(good: Path) -> dict:
    return json.loads(_members(good)["predictor.json"])


def _refused(path: Path, match: str | None = None) -> str:
    with pytest.raises(UserInputError, match=match) as e:
        load_predictor(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.3, 0.6, 0.95, 0.999])
def test_a_truncated_file_is_one_line(tmp_path, good, fraction):
    data = good.read_bytes()
    bad = tmp_path / "cut.predictor"
    bad.write_bytes(data[: int(len(data) * fraction)])
    _refused(bad)


def test_corrupted_bytes_are_caught_by_the_checksum(tmp_path, good):
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("predictor.json")
    data[info.header_offset + 30 + len(info.filename) + 10] ^= 0xFF  # inside the envelope
    bad = tmp_path / "flip.predictor"
    bad.write_bytes(bytes(data))
    _refused(bad, "damaged")


@pytest.mark.parametrize("content", [b"", b"not a predictor", bytes(range(256)) * 4])
def test_foreign_bytes_are_one_line(tmp_path, content):
    bad = tmp_path / "x.predictor"
    bad.write_bytes(content)
    _refused(bad, "not a latbench predictor")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_predictor(tmp_path / "nope")
    with pytest.raises(UserInputError, match="not a file"):
        load_predictor(tmp_path)


@pytest.mark.parametrize("envelope", [
    b"{not json",
    b"[1, 2, 3]",
    b"\xff\xfe\x00garbage",
    json.dumps({"format": "something-else"}).encode(),
])
def test_a_wrong_envelope_is_one_line(tmp_path, good, envelope):
    members = _members(good)
    members["predictor.json"] = envelope
    _refused(_rezip(tmp_path / "bad.predictor", members))


def test_deeply_nested_json_is_one_line(tmp_path, good):
    members = _members(good)
    members["predictor.json"] = b"[" * 100_000 + b"]" * 100_000
    _refused(_rezip(tmp_path / "deep.predictor", members), "nested too deeply")
    env = _envelope(good)
    env["state"] = dict(env["state"], x_=json.loads("[" * 900 + "]" * 900))
    members["predictor.json"] = json.dumps(env).encode()
    _refused(_rezip(tmp_path / "deep.predictor", members), "nested too deeply")


def _edited(tmp_path: Path, good: Path, **changes) -> Path:
    members = _members(good)
    env = json.loads(members["predictor.json"])
    for k, v in changes.items():
        if v is _DROP:
            env.pop(k)
        else:
            env[k] = v
    members["predictor.json"] = json.dumps(env).encode()
    return _rezip(tmp_path / "edited.predictor", members)


_DROP = object()


@pytest.mark.parametrize("changes,match", [
    ({"format": "latbench-predictor/9"}, "upgrade latbench"),
    ({"device": _DROP}, "damaged"),
    ({"feature_schema_version": "3"}, "damaged"),
    ({"class": "os.system"}, "not a latbench predictor"),
    ({"class": "latbench.predictor.base.check_predictor"}, "not a latency predictor"),
    ({"class": "latbench.predictor.nowhere.Thing"}, "does not have"),
    ({"class": "tests.evil.Predictor"}, "not a latbench predictor"),
    ({"params": ["not", "a", "table"]}, "tables"),
    ({"params": {"no_such_param": 1}}, "parameters do not fit"),
    ({"state": {"__class__": 1}}, "unknown entry"),
    ({"state": {"predict": 1}}, "not a fitted attribute"),
    ({"state": {"x_": {"__pickle__": "abc"}}}, "unknown entry"),
    ({"state": {"x_": {"__array__": "../../etc/passwd"}}}, "does not hold"),
    ({"state": {"x_": {"__array__": "predictor.json"}}}, "does not hold"),
    ({"state": {"x_": {"__float__": "1e999x"}}}, "bad float"),
    ({"state": {"x_": {"__scalar__": {"dtype": "O", "value": 1}}}}, "numpy scalar"),
    ({"state": {"x_": {"__dict__": [[[1], 2]]}}}, "unhashable"),
    ({"state": {"x_": {"__xgboost__": {"class": "Booster", "params": {}, "model": "x"}}}},
     "XGBoost model class"),
    ({"state": {"x_": {"__frame__": {"columns": ["a"], "data": [], "index": {"range": [0, 1, 1]}}}}},
     "disagree"),
    ({"state": {"x_": {"__frame__": {"columns": ["a"], "index": {"range": [0, 2, 1], "name": None},
                                     "data": [{"dtype": "no-such-dtype", "values": [1, 2]}]}}}},
     "malformed table"),
])
def test_a_tampered_envelope_is_one_line(tmp_path, good, changes, match):
    _refused(_edited(tmp_path, good, **changes), match)


def test_state_that_disagrees_with_the_envelope_is_refused(tmp_path, good):
    env = _envelope(good)
    state = dict(env["state"], device_="other")
    _refused(_edited(tmp_path, good, state=state), "disagrees")


class _Bomb:
    """Unpickling this writes ``path`` (what a malicious file would do, harmlessly)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


def test_an_object_array_holding_a_pickle_bomb_is_not_unpickled(tmp_path, good):
    target = tmp_path / "pwned.txt"
    buf = io.BytesIO()
    np.save(buf, np.array([_Bomb(target)], dtype=object), allow_pickle=True)
    members = _members(good)
    array_names = sorted(n for n in members if n.startswith("arrays/"))
    for name in array_names:
        members[name] = buf.getvalue()  # every array is now an object array with a bomb
    _refused(_rezip(tmp_path / "bomb.predictor", members), "unreadable")
    assert not target.exists()


def test_an_old_style_pickle_bomb_is_refused_without_unpickling(tmp_path):
    target = tmp_path / "pwned.txt"
    bad = tmp_path / "p.pkl"
    bad.write_bytes(pickle.dumps({"format": "latbench-predictor/1", "predictor": _Bomb(target)},
                                 protocol=pickle.HIGHEST_PROTOCOL))
    msg = _refused(bad, "--trust-file")
    assert "bench predictor convert" in msg
    assert not target.exists()


def _old_file(tmp_path: Path, est: LatencyPredictor, name: str = "old.pkl") -> Path:
    """A file as latbench-predictor/1 wrote it: a pickled envelope dict."""
    path = tmp_path / name
    env = {"format": "latbench-predictor/1", "feature_schema_version": FEATURE_SCHEMA_VERSION,
           "device": "phone", "kind": "flops-clustered", "predictor": est}
    path.write_bytes(pickle.dumps(env, protocol=pickle.HIGHEST_PROTOCOL))
    return path


def test_an_old_pickle_loads_with_trust_file_and_converts(tmp_path):
    est = FlopsClusteredPredictor(n_clusters=2).fit(X, Y, device="phone")
    old = _old_file(tmp_path, est)
    with pytest.raises(UserInputError, match="trust_file=True"):
        load_predictor(old)
    again, info = load_predictor(old, device="phone", trust_file=True)
    assert info["format"] == "latbench-predictor/1" and info["kind"] == "flops-clustered"
    np.testing.assert_array_equal(again.predict(X_NEW), est.predict(X_NEW))
    new = tmp_path / "new.predictor"
    assert convert_predictor(old, new, trust_file=True)["format"] == SAVE_FORMAT
    converted, info = load_predictor(new)  # no trust needed any more
    assert info["format"] == SAVE_FORMAT and info["device"] == "phone"
    np.testing.assert_array_equal(converted.predict(X_NEW), est.predict(X_NEW))


def test_old_pickles_of_changed_classes_still_predict(tmp_path):
    # latbench-predictor/1 pickled the fitted KMeans / RidgeCV; they are read into plain arrays
    from sklearn.cluster import KMeans
    from sklearn.linear_model import RidgeCV

    fc = FlopsClusteredPredictor(n_clusters=2).fit(X, Y)
    state = fc.__dict__.copy()
    centers = state.pop("centers_")
    km = KMeans(2, n_init=1).fit(centers.reshape(-1, 1))
    state["kmeans_"] = km
    old = FlopsClusteredPredictor.__new__(FlopsClusteredPredictor)
    old.__setstate__(state)
    np.testing.assert_array_equal(old.centers_, km.cluster_centers_[:, 0])
    gbm = GBMPredictor(n_estimators=10, linear_base=True).fit(X, Y)
    state = gbm.__dict__.copy()
    ridge = RidgeCV().fit(np.ones((3, int(gbm.keep_.sum()))) * [[1], [2], [3]], [1.0, 2.0, 3.0])
    state["ridge_"] = ridge
    del state["ridge_coef_"], state["ridge_intercept_"]
    again = GBMPredictor.__new__(GBMPredictor)
    again.__setstate__(state)
    np.testing.assert_array_equal(again.ridge_coef_, ridge.coef_)
    assert again.ridge_intercept_ == float(ridge.intercept_) and np.all(np.isfinite(again.predict(X)))


def test_schema_and_device_checks_still_apply(tmp_path, good, monkeypatch):
    with pytest.raises(PredictorError, match="trained for device 'd', not 'x'"):
        load_predictor(good, device="x")
    from latbench.predictor import base

    monkeypatch.setattr(base, "FEATURE_SCHEMA_VERSION", FEATURE_SCHEMA_VERSION + 1)
    with pytest.raises(PredictorError, match="retrain"):
        load_predictor(good)
