"""``bench sweep --device <phone> --per-layer`` end to end against the loopback phone and the
benchmark_model stand-in: variants exported as ``.tflite``, pushed once each, measured and
stored; each variant's per-operator profile stored as layer measurements that a ``lut``
predictor trains on; a rerun skips everything."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch

from latbench.cli import main
from latbench.devices.profiles import ENV_VAR


def bench(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main([*args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def phone(make_fake, runners, adbkey, tmp_path, monkeypatch):
    pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')
    pytest.importorskip("ai_edge_litert", reason='TFLite needs pip install "latbench[tflite]"')
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))

    def make(generation: str = "tflite", provider: str = "cpu") -> tuple[object, Path]:
        fake = make_fake(runner_env={"STANDIN_GENERATION": generation})
        f = tmp_path / f"devices-{generation}-{provider}.toml"
        f.write_text(f'[pixel]\nkind = "adb"\nhost = "{fake.host}"\nrunner = "{runners["tflite"]}"\n'
                     f'adbkey = "{adbkey}"\ncpus = "30"\nthreads = 1\nprovider = "{provider}"\n'
                     'io_timeout_s = 5.0\nauth_timeout_s = 2.0\ntimeout_s = 60.0\n')
        return fake, f

    return make


@pytest.fixture(scope="module")
def net_path(tmp_path_factory) -> str:
    from tflite_nets import named_net

    p = tmp_path_factory.mktemp("sweep") / "named.pt"
    torch.save(named_net(), p)
    return str(p)


def sweep(capsys, devices: Path, net: str, db: Path) -> dict:
    code, out, err = bench(capsys, "sweep", "--device", "pixel", "--devices", str(devices),
                           "--model", net, "--input", "1x3x16x16", "--methods", "svd",
                           "--ranks", "0.5", "--random-plans", "0", "--warmup", "1",
                           "--repeats", "3", "--per-layer", "--db", str(db), "--json",
                           "--trust-file")  # the test's own module class, saved whole
    assert code == 0, err
    return json.loads(out)


@pytest.mark.parametrize("generation,provider", [("tflite", "cpu"), ("litert", "cpu"),
                                                 ("tflite", "builtin")])
@pytest.mark.slow
def test_phone_sweep_stores_variants_and_layer_profiles(capsys, phone, net_path, tmp_path,
                                                       generation, provider):
    fake, devices = phone(generation, provider)
    db = tmp_path / "lat.db"
    doc = sweep(capsys, devices, net_path, db)
    assert doc["measured"] == 2 and doc["failed"] == 0
    assert doc["layers_profiled"] >= 2 * 7 and doc["layers_measured"] == 0
    # every variant exported as .tflite and pushed once; the runner pushed once
    pushed = [p for p in fake.pushed if "/model-" in p]
    assert len(pushed) == 2 and all(".tflite" in p for p in pushed)
    profiling = "--use_profiler=true" if generation == "litert" else "--enable_op_profiling=true"
    assert sum(profiling in c for c in fake.commands) == 2
    con = sqlite3.connect(db)
    rows = con.execute("SELECT runtime, format, provider FROM measurements").fetchall()
    assert set(rows) == {("litert" if generation == "litert" else "tflite", "tflite", provider)}
    layer_rows = con.execute("SELECT source, format, layer FROM layer_measurements").fetchall()
    assert layer_rows and all(s.startswith("op_profile:") and f == "tflite"
                              for s, f, _ in layer_rows)
    names = {json.loads(layer)["name"] for _, _, layer in layer_rows}
    assert {"pool", "gap", "dw"} <= names and any(n.startswith("fc") for n in names)
    failures = con.execute("SELECT stage, error FROM failures").fetchall()
    assert failures == []
    con.close()

    # the lut predictor trains from this one phone sweep
    code, out, err = bench(capsys, "predictor", "train", "--db", str(db), "--device", "pixel",
                           "--kind", "lut", "--out", str(tmp_path / "lut.pkl"))
    assert code == 0, err

    # a rerun skips everything: nothing pushed, measured or profiled again
    n_cmds = len(fake.commands)
    again = sweep(capsys, devices, net_path, db)
    assert again["measured"] == 0 and again["skipped"] == 2 and again["layers_profiled"] == 0
    assert not any("taskset" in c for c in fake.commands[n_cmds:])


@pytest.mark.slow
def test_onnx_and_tflite_measurements_of_one_variant_sit_side_by_side(capsys, phone, net_path,
                                                                      tmp_path):
    import pandas as pd

    _, devices = phone()
    db = tmp_path / "both.db"
    code, _, err = bench(capsys, "sweep", "--device", "cpu", "--model", net_path, "--input",
                         "1x3x16x16", "--methods", "svd", "--ranks", "0.5", "--random-plans",
                         "0", "--warmup", "0", "--repeats", "2", "--fixed-repeats", "--trust-file", "--db",
                         str(db), "--json")
    assert code == 0, err
    code, _, err = bench(capsys, "sweep", "--device", "litert", "--model", net_path, "--input",
                         "1x3x16x16", "--methods", "svd", "--ranks", "0.5", "--random-plans",
                         "0", "--warmup", "0", "--repeats", "2", "--fixed-repeats", "--trust-file", "--db",
                         str(db), "--json")
    assert code == 0, err
    code, out, err = bench(capsys, "data", "export", "--db", str(db), "--out",
                           str(tmp_path / "x.csv"))
    assert code == 0, err
    df = pd.read_csv(tmp_path / "x.csv")
    assert len(df) == 4
    pairs = df.groupby("variant_id")["format"].apply(sorted).tolist()
    assert pairs == [["onnx", "tflite"], ["onnx", "tflite"]]
    assert set(df["runtime"]) == {"onnxruntime", "litert"}


@pytest.mark.slow
def test_device_lost_while_profiling_keeps_the_measurement_and_resumes(
        make_fake, runners, adbkey, net_path, tmp_path, monkeypatch):
    pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')
    from latbench.bench.sweep import SweepConfig, Target, run_sweep
    from latbench.data.store import Store
    from latbench.exceptions import DeviceError

    monkeypatch.delenv(ENV_VAR, raising=False)
    fake = make_fake(drop_on="--enable_op_profiling", drop_after_s=0.0)
    f = tmp_path / "devices.toml"
    f.write_text(f'[pixel]\nkind = "adb"\nhost = "{fake.host}"\nrunner = "{runners["tflite"]}"\n'
                 f'adbkey = "{adbkey}"\ncpus = "30"\nthreads = 1\nio_timeout_s = 5.0\n'
                 'auth_timeout_s = 2.0\ntimeout_s = 60.0\n')
    cfg = SweepConfig((Target(net_path, (1, 3, 16, 16), ("svd",), (0.5,)),), per_layer=True,
                      warmup=0, repeats=2, trust_file=True)
    db = tmp_path / "lat.db"
    with pytest.raises(DeviceError, match=r"sweep stopped after 1 new measurements"):
        run_sweep(cfg, "pixel", db, devices_file=f)
    with Store(db) as s:
        assert s.counts()["measurements"] == 1 and s.counts()["layer_measurements"] == 0
        stages = list(s.failures()["stage"])
        assert stages == ["profile"]
    fake.drop_on = None  # the phone is back
    summary = run_sweep(cfg, "pixel", db, devices_file=f)
    assert summary.measured == 1 and summary.skipped == 1  # the first one: profiled only
    assert summary.layers_profiled >= 7
