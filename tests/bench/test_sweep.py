"""``run_sweep``: every variant measured once, committed at once, resumable after a crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

import latbench.compress.export as export_mod
import latbench.devices.registry as registry
from latbench.bench.sweep import (SweepConfig, SweepEvent, Target, default_config,
                                  load_sweep_config, plan_sweep, run_sweep)
from latbench.exceptions import ExportError
from latbench.data.features import layer_key, layer_table
from latbench.data.store import Store
from latbench.devices.cpu import CpuDevice
from latbench.devices.profiles import ENV_VAR
from latbench.exceptions import DeviceError, UserInputError
from latbench.models import resolve_model

SHAPE = (1, 3, 16, 16)


class FFTReal(nn.Module):
    """A layer the ONNX exporter cannot export (aten::fft_fft2)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.fft.fft2(x).real


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, 10),
    ).eval()
    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    torch.save(net, path)
    return str(path)


def config(model: str, **kw) -> SweepConfig:
    base = dict(random_plans=1, threads=1, warmup=1, repeats=3, seed=0)
    base.update(kw)
    return SweepConfig((Target(model, SHAPE, ("tucker2", "svd"), (0.5,)),), **base)


def expected_keys(cfg: SweepConfig) -> set[str]:
    return {v.key for v in plan_sweep(cfg, resolver(cfg))}


def resolver(cfg: SweepConfig):
    """What the sweep resolves models with (file models are keyed by their content)."""
    return lambda spec: resolve_model(spec, seed=cfg.seed, trust_file=cfg.trust_file)


def stored(db: Path, device: str = "cpu") -> pd.DataFrame:
    """One row per measurement on ``device``: the variant's content hash, runtime and threads."""
    con = sqlite3.connect(db)
    try:
        return pd.read_sql(
            "SELECT v.content_hash, m.runtime, m.runtime_version, m.threads FROM measurements m "
            "JOIN variants v ON v.id=m.variant_id JOIN devices d ON d.id=m.device_id WHERE d.name=?",
            con, params=(device,))
    finally:
        con.close()


def assert_each_once(db: Path, keys: set[str], device: str = "cpu") -> None:
    rows = stored(db, device)
    assert not rows.duplicated(["content_hash", "runtime", "runtime_version", "threads"]).any()
    assert set(rows["content_hash"]) == keys and len(rows) == len(keys)


class FlakyCpu(CpuDevice):
    """A CPU device that is 'lost' on its ``fail_at``-th measurement."""

    def __init__(self, fail_at: int | None) -> None:
        super().__init__("flaky", threads=1)
        self.fail_at = fail_at
        self.calls = 0

    def measure(self, artifact, spec, **kw):
        self.calls += 1
        if self.calls == self.fail_at:
            raise DeviceError("device 'flaky' went away (adb: device offline)")
        return super().measure(artifact, spec, **kw)


# --------------------------------------------------------------------------- sweeping
@pytest.mark.slow
def test_sweep_measures_each_variant_once_and_commits_each_at_once(model: str, tmp_path: Path) -> None:
    cfg = config(model)
    keys = expected_keys(cfg)
    db = tmp_path / "lat.db"
    events: list[tuple[SweepEvent, int]] = []

    def on_event(ev: SweepEvent) -> None:  # what another process sees at this moment
        events.append((ev, len(stored(db)) if db.exists() else 0))

    summary = run_sweep(cfg, "cpu", db, progress=on_event)
    assert (summary.measured, summary.skipped, summary.failed) == (len(keys), 0, 0)
    assert len(keys) >= 4  # original, tucker2@0.5, svd@0.5, a random plan
    assert_each_once(db, keys)
    assert [ev.done for ev, _ in events] == list(range(1, len(keys) + 1))
    assert all(ev.total == len(keys) and ev.status == "measured" and ev.median_ms > 0
               and ev.phase == "variants" for ev, _ in events)
    assert [seen for _, seen in events] == [ev.done for ev, _ in events]  # committed as measured
    assert all(v > 0 for v in summary.seconds.values())
    with Store(db) as store:
        methods = store.connection.execute("SELECT method FROM variants").fetchall()
    assert sorted(m for (m,) in methods) == ["mixed", "none", "svd", "tucker2"]


@pytest.mark.slow
def test_rerun_skips_what_is_stored_for_that_device_runtime_and_threads(model: str, tmp_path: Path) -> None:
    cfg = config(model, random_plans=0)
    db = tmp_path / "lat.db"
    first = run_sweep(cfg, "cpu", db)
    again = run_sweep(cfg, "cpu", db)
    assert (again.measured, again.skipped) == (0, first.measured)
    assert_each_once(db, expected_keys(cfg))
    # another thread count is another measurement key: measured anew, not skipped
    other = run_sweep(config(model, random_plans=0, threads=2), "cpu", db)
    assert (other.measured, other.skipped) == (first.measured, 0)
    assert len(stored(db)) == 2 * first.measured


@pytest.mark.slow
def test_per_layer_measures_every_distinct_layer_once_and_resumes_from_stored_tables(
        model: str, tmp_path: Path) -> None:
    cfg = config(model, random_plans=0)
    db = tmp_path / "lat.db"
    run_sweep(cfg, "cpu", db)  # variants only
    with Store(db) as store:
        tables = [store.variant_layers(k, SHAPE) for k in expected_keys(cfg)]
    want = {layer_key(r) for t in tables for r in t.to_dict("records")
            if r["op"] in ("conv", "dwconv", "linear", "maxpool", "avgpool")}
    # the resumed sweep compresses nothing, yet finds every layer through the stored tables
    events: list[SweepEvent] = []
    summary = run_sweep(replace_cfg(cfg, per_layer=True), "cpu", db, progress=events.append)
    assert summary.skipped == len(tables) and summary.measured == 0
    assert summary.layers_measured == len(want) and summary.layers_failed == 0
    with Store(db) as store:
        got = [k for (k,) in store.connection.execute("SELECT layer_key FROM layer_measurements")]
    assert sorted(got) == sorted(want)
    layer_events = [e for e in events if e.phase == "layers"]
    assert len(layer_events) == len(want) and all(e.label.startswith("layer ") for e in layer_events)
    # ... and a rerun measures no layer twice
    again = run_sweep(replace_cfg(cfg, per_layer=True), "cpu", db)
    assert (again.layers_measured, again.layers_skipped) == (0, len(want))
    with Store(db) as store:
        assert store.counts()["layer_measurements"] == len(want)


def replace_cfg(cfg: SweepConfig, **kw) -> SweepConfig:
    from dataclasses import replace

    return replace(cfg, **kw)


@pytest.mark.slow
def test_an_export_failure_is_recorded_and_the_sweep_goes_on(
        model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_mod.export_onnx
    calls = []

    def export_once_broken(net, shape, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise ExportError("ONNX export of Sequential failed: operator 'aten::weird' unsupported")
        return real(net, shape, path, **kw)

    monkeypatch.setattr(export_mod, "export_onnx", export_once_broken)
    cfg = config(model, random_plans=0)
    db = tmp_path / "lat.db"
    events: list[SweepEvent] = []
    summary = run_sweep(cfg, "cpu", db, progress=events.append)
    assert (summary.measured, summary.failed) == (2, 1)
    assert [e.status for e in events] == ["measured", "failed", "measured"]
    assert "aten::weird" in events[1].error
    with Store(db) as store:
        f = store.failures()
    assert list(f["stage"]) == ["export"] and "aten::weird" in f["error"][0]
    assert f["device"][0] == "cpu" and f["source_model"][0] == model
    assert f["content_hash"][0] == plan_sweep(cfg, resolver(cfg))[1].key
    # the failed variant is tried again on a rerun (export works now)
    monkeypatch.setattr(export_mod, "export_onnx", real)
    again = run_sweep(cfg, "cpu", db)
    assert (again.measured, again.skipped) == (1, 2)
    assert_each_once(db, expected_keys(cfg))


def test_a_bug_in_latbench_stops_the_sweep_with_its_traceback_and_keeps_what_was_measured(
        model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = export_mod.export_onnx
    calls = []

    def export_with_a_bug(net, shape, path, **kw):
        calls.append(path)
        if len(calls) == 2:
            raise ZeroDivisionError("a bug, not a bad variant")
        return real(net, shape, path, **kw)

    monkeypatch.setattr(export_mod, "export_onnx", export_with_a_bug)
    db = tmp_path / "lat.db"
    with pytest.raises(ZeroDivisionError):
        run_sweep(config(model, random_plans=0), "cpu", db)
    with Store(db) as store:
        assert store.failures().empty  # not recorded as a failed variant
        assert len(store.measured_hashes("cpu")) == 1  # the first variant is kept


def test_a_model_that_cannot_be_exported_fails_alone(model: str, tmp_path: Path) -> None:
    bad = tmp_path / "fft.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), FFTReal()).eval(), bad)
    cfg = SweepConfig((Target(str(bad), SHAPE, ("svd",), (0.5,)),
                       Target(model, SHAPE, ("svd",), (0.5,))), threads=1, warmup=1, repeats=3,
                      trust_file=True)  # FFTReal is this test's own class: full unpickling
    db = tmp_path / "lat.db"
    summary = run_sweep(cfg, "cpu", db)
    assert (summary.measured, summary.failed) == (2, 2)
    with Store(db) as store:
        f = store.failures()
    assert set(f["stage"]) == {"export"} and set(f["source_model"]) == {str(bad)}
    assert all("fft" in e for e in f["error"])
    assert set(stored(db)["content_hash"]) == {v.key for v in plan_sweep(cfg, resolver(cfg))
                                               if v.model == model}


@pytest.mark.slow
def test_a_lost_device_stops_the_sweep_keeps_what_was_measured_and_a_rerun_resumes(
        model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = config(model)
    keys = expected_keys(cfg)
    db = tmp_path / "lat.db"
    monkeypatch.setattr(registry, "get_device", lambda name, devices_file=None: FlakyCpu(fail_at=3))
    with pytest.raises(DeviceError) as err:
        run_sweep(cfg, "flaky", db)
    msg = str(err.value)
    assert "went away" in msg and "2 new measurements" in msg and "rerun" in msg and "\n" not in msg
    assert len(stored(db, "flaky")) == 2
    with Store(db) as store:
        assert list(store.failures()["stage"]) == ["measure"]
    monkeypatch.setattr(registry, "get_device", lambda name, devices_file=None: FlakyCpu(fail_at=None))
    summary = run_sweep(cfg, "flaky", db)
    assert (summary.skipped, summary.measured) == (2, len(keys) - 2)
    assert_each_once(db, keys, "flaky")


def test_a_lost_device_during_per_layer_measurements_keeps_them_too(
        model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = SweepConfig((Target(model, SHAPE, ("svd",), (0.5,)),), per_layer=True, threads=1,
                      warmup=1, repeats=3)
    db = tmp_path / "lat.db"
    # two variants, then the 2nd layer measurement loses the device
    monkeypatch.setattr(registry, "get_device", lambda name, devices_file=None: FlakyCpu(fail_at=4))
    with pytest.raises(DeviceError, match="per-layer measurements stopped at 1/"):
        run_sweep(cfg, "flaky", db)
    with Store(db) as store:
        assert store.counts()["layer_measurements"] == 1
    monkeypatch.setattr(registry, "get_device", lambda name, devices_file=None: FlakyCpu(fail_at=None))
    summary = run_sweep(cfg, "flaky", db)
    assert summary.skipped == 2 and summary.layers_skipped == 1 and summary.layers_measured >= 1
    with Store(db) as store:
        assert store.counts()["layer_measurements"] == summary.layers_measured + 1


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("target, device, fragment", [
    (Target("resnet1888", SHAPE), "cpu", "unknown model"),
    (Target("MODEL", SHAPE, ("tuckr2",)), "cpu", "unknown"),
    (Target("MODEL", SHAPE), "pixel99", "unknown device"),
])
def test_unknown_model_method_or_device_fails_before_anything_is_written(
        model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: Target, device: str,
        fragment: str) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.chdir(tmp_path)
    if target.model == "MODEL":
        target = Target(model, target.input_shape, target.methods, target.ranks)
    db = tmp_path / "lat.db"
    with pytest.raises(UserInputError, match=fragment):
        run_sweep(SweepConfig((target,), repeats=3, warmup=1), device, db)
    assert not db.exists()


@pytest.mark.parametrize("kw, fragment", [
    (dict(repeats=0), "--repeats"), (dict(warmup=-1), "--warmup"),
    (dict(threads=0), "--threads"), (dict(random_plans=-2), "--random-plans"),
])
def test_bad_options_are_user_errors(model: str, tmp_path: Path, kw: dict, fragment: str) -> None:
    with pytest.raises(UserInputError, match=fragment):
        run_sweep(config(model, **kw), "cpu", tmp_path / "lat.db")
    assert not (tmp_path / "lat.db").exists()


# --------------------------------------------------------------------------- the store's side
def test_store_variant_layers_and_layer_latency(model: str, tmp_path: Path, monkeypatch) -> None:
    # A device that does not expose the graph it executes: the store keeps the module's table
    # (the cpu device's own executed tables are tested below).
    monkeypatch.setattr(CpuDevice, "executed_graph", lambda self, *a, **k: None)
    cfg = SweepConfig((Target(model, SHAPE, ("svd",), (0.5,)),), per_layer=True, threads=1,
                      warmup=1, repeats=3)
    db = tmp_path / "lat.db"
    run_sweep(cfg, "cpu", db)
    original = plan_sweep(cfg, resolver(cfg))[0]
    want = layer_table(resolve_model(model), SHAPE)
    with Store(db) as store:
        got = store.variant_layers(original.key, SHAPE)
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
        assert store.variant_layers(original.key, (1, 3, 32, 32)) is None
        assert store.variant_layers("nope", SHAPE) is None
        rows = pd.read_sql("SELECT layer_key, median_ms, runtime, runtime_version, threads "
                           "FROM layer_measurements", store.connection)
        r = rows.iloc[0]
        args = (r["layer_key"], "cpu", r["runtime"], r["runtime_version"])
        assert store.layer_latency_ms(*args, 1) == pytest.approx(r["median_ms"])
        assert store.layer_latency_ms(*args, 2) is None
        assert store.layer_latency_ms("op=conv|nothing", "cpu", r["runtime"], r["runtime_version"], 1) is None
        # a newer measurement of the same layer wins
        from latbench.bench.layers import measure_layer
        row = next(x for x in want.to_dict("records") if layer_key(x) == r["layer_key"])
        m = measure_layer(CpuDevice(threads=1), row, tmp_path, threads=1, warmup=0, repeats=1)
        from dataclasses import replace
        newer = replace(m, samples_s=(1.234,), timestamp=time.time() + 10)
        store.add_layer_measurement(store.device_id("cpu"), row, newer)
        assert store.layer_latency_ms(*args, 1) == pytest.approx(1234.0)


def test_sweep_on_the_cpu_stores_the_graph_onnxruntime_executes(model: str, tmp_path: Path) -> None:
    cfg = SweepConfig((Target(model, SHAPE, ("svd",), (0.5,)),), threads=1, warmup=1, repeats=3,
                      random_plans=0)
    db = tmp_path / "lat.db"
    run_sweep(cfg, "cpu", db)
    original = plan_sweep(cfg, resolver(cfg))[0]
    with Store(db) as store:
        got = store.variant_layers(original.key, SHAPE)
    module = layer_table(resolve_model(model), SHAPE)
    assert set(got["graph"]) == {"onnxruntime:all:CPUExecutionProvider"}
    # BatchNorm folded, ReLUs fused into the convolutions that precede them: no bn/act rows.
    assert not got["op"].isin(["bn", "act"]).any()
    assert (got["op"] == "conv").sum() == (module["op"] == "conv").sum() == 3
    assert got.loc[got["op"] == "conv", "fused"].tolist() == ["relu", "relu", ""]
    # The x86 NCHWc kernels compute on channels padded to their block (24 → 32): the MACs are
    # the work they do, 3·16·9·16² + 16·32·9·8² + 32·32·9·8² (+ the linear layer's 240).
    conv = got[got["op"] == "conv"]
    if conv["out_channels"].tolist() == [16, 32, 32]:
        assert conv["macs"].tolist() == [110592, 294912, 589824]
    else:  # a build without NCHWc: the module's own convolutions
        assert conv["macs"].tolist() == module.loc[module["op"] == "conv", "macs"].tolist()
    assert got.loc[got["op"] == "linear", "macs"].tolist() == [240]


# --------------------------------------------------------------------------- config
def test_sweep_config_file(model: str, tmp_path: Path) -> None:
    p = tmp_path / "sweep.toml"
    p.write_text(f"""
random_plans = 3
repeats = 7
per_layer = true
[[models]]
name = "{model}"
inputs = ["1x3x16x16", "1x3x24x24"]
methods = ["svd"]
ranks = "0.25:0.75:0.25"
[[models]]
name = "nb201:|nor_conv_3x3~0|+|skip_connect~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|"
""")
    cfg = load_sweep_config(p, repeats=5, seed=None)
    assert [(t.model == model, t.input_shape) for t in cfg.targets] == [
        (True, (1, 3, 16, 16)), (True, (1, 3, 24, 24)), (False, (1, 3, 32, 32))]
    assert cfg.targets[0].methods == ("svd",) and cfg.targets[0].ranks == (0.25, 0.5, 0.75)
    assert cfg.targets[2].methods == ("tucker2", "cp", "svd")
    assert (cfg.random_plans, cfg.repeats, cfg.per_layer, cfg.seed) == (3, 5, True, 0)


@pytest.mark.parametrize("text, fragment", [
    (None, "does not exist"),
    ("models = [", "not valid TOML"),
    ("repeats = 3", "at least one [[models]]"),
    ("[[models]]\ninput = '1x3x8x8'", "needs a name"),
    ("random_plan = 3\n[[models]]\nname='x'", "unknown option 'random_plan'"),
    ("[[models]]\nname='x'\nrank='0.5'", "unknown key 'rank'"),
    ("repeats = 'many'\n[[models]]\nname='x'", "repeats = 'many' should be an int"),
    ("[[models]]\nname='x'\nranks='0.9:0.1:0.1'", "empty"),
    ("[[models]]\nname='x'\ninput='1x3x0'", "bad input shape"),
])
def test_bad_sweep_config_is_one_clear_user_error(tmp_path: Path, text: str | None, fragment: str) -> None:
    p = tmp_path / "sweep.toml"
    if text is not None:
        p.write_text(text)
    with pytest.raises(UserInputError) as err:
        load_sweep_config(p)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_default_sweep_is_resnet18_at_224_with_tucker2_and_svd() -> None:
    cfg = default_config()
    assert [(t.model, t.input_shape) for t in cfg.targets] == [("resnet18", (1, 3, 224, 224))]
    # CP is opt-in: its ALS made the default sweep take 12 minutes instead of about 4.5
    assert cfg.targets[0].methods == ("tucker2", "svd") and cfg.random_plans > 0
    assert default_config(repeats=4, threads=None).repeats == 4


# --------------------------------------------------------------------------- kill -9
@pytest.mark.slow
def test_a_killed_sweep_resumes_with_no_duplicate_and_no_lost_row(model: str, tmp_path: Path) -> None:
    db = tmp_path / "lat.db"
    args = ["sweep", "--model", model, "--input", "1x3x16x16", "--methods", "tucker2,svd",
            "--ranks", "0.25,0.5,0.75", "--random-plans", "2", "--threads", "1", "--warmup", "1",
            "--repeats", "40", "--db", str(db), "--json"]
    cmd = [sys.executable, "-c", "from latbench.cli import main; main()", *args]
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if db.exists() and len(_safe_stored(db)) >= 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = stored(db)
    cfg = SweepConfig((Target(model, SHAPE, ("tucker2", "svd"), (0.25, 0.5, 0.75)),), random_plans=2)
    keys = expected_keys(cfg)
    assert 1 <= len(before) < len(keys)  # killed mid-sweep
    rerun = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    import json

    summary = json.loads(rerun.stdout)
    assert summary["skipped"] == len(before) and summary["measured"] == len(keys) - len(before)
    assert_each_once(db, keys)
    with Store(db) as store:
        assert store.counts()["variants"] == len(keys)


def _safe_stored(db: Path) -> pd.DataFrame:
    try:
        return stored(db)
    except (sqlite3.DatabaseError, pd.errors.DatabaseError):  # schema not created yet
        return pd.DataFrame()


def test_ctrl_c_keeps_every_committed_row_and_a_rerun_finishes(model: str, tmp_path: Path) -> None:
    cfg = config(model, random_plans=0)
    db = tmp_path / "lat.db"

    def interrupt_after_two(ev: SweepEvent) -> None:
        if ev.done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, "cpu", db, progress=interrupt_after_two)
    assert len(stored(db)) == 2
    summary = run_sweep(cfg, "cpu", db)
    assert (summary.skipped, summary.measured) == (2, 1)
    assert_each_once(db, expected_keys(cfg))


def test_each_model_and_its_eigendecompositions_are_released_before_the_next(tmp_path: Path) -> None:
    import gc
    import weakref

    from latbench.compress import _linalg

    paths = []
    for tag, width in (("a", 16), ("b", 24)):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                            nn.Conv2d(width, width, 3, padding=1), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(width, 10)).eval()
        net.tag = tag  # survives torch.save, deepcopy and compression
        paths.append(str(tmp_path / f"{tag}.pt"))
        torch.save(net, paths[-1])
    cfg = SweepConfig(tuple(Target(p, SHAPE, ("tucker2", "svd"), (0.25, 0.5)) for p in paths),
                      threads=1, warmup=1, repeats=3, adaptive=False)
    order = [Path(v.model).stem for v in plan_sweep(cfg, resolver(cfg))]
    seen: list[tuple[str, set[str], bool]] = []
    caches: dict[str, weakref.ref] = {}

    def on_event(ev: SweepEvent) -> None:
        tag = order[ev.done - 1]
        gc.collect()
        alive = {getattr(o, "tag", None) for o in gc.get_objects() if isinstance(o, nn.Module)}
        if _linalg._CACHE is not None:
            caches.setdefault(tag, weakref.ref(_linalg._CACHE))
        seen.append((tag, alive - {None}, caches["a"]() is not None))

    summary = run_sweep(cfg, "cpu", tmp_path / "lat.db", progress=on_event)
    assert summary.measured == len(order) == 10
    assert [t for t, _, _ in seen] == order
    a_events = [(alive, cache_a) for t, alive, cache_a in seen if t == "a"]
    assert all(alive == {"a"} and cache_a for alive, cache_a in a_events[:-1])
    # a model's last event comes once it is released: no module, no cached eigendecomposition
    assert a_events[-1] == (set(), False)
    assert all(alive <= {"b"} and not cache_a for t, alive, cache_a in seen if t == "b")
    assert {"b"} in [alive for t, alive, _ in seen if t == "b"]
    assert _linalg._CACHE is None
