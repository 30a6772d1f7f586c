"""The end of a sweep: a results table read back from the store, noisy measurements flagged
(in the table, in JSON, with advice) and the next commands to run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from fakes import MacDevice
from torch import nn

from clirun import bench
from latbench.bench.results import noisy_advice, suggest_next, sweep_results
from latbench.bench.sweep import SweepConfig, Target
from latbench.devices.profiles import ENV_VAR
from latbench.measure.measurement import NOISY_RELATIVE_IQR, Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo

SIM = ("--device", "sim", "--threads", "1", "--warmup", "1", "--repeats", "9", "--fixed-repeats")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4)).eval()
    path = tmp_path_factory.mktemp("results") / "net.pt"
    torch.save(net, path)
    return str(path)


def use_device(monkeypatch: pytest.MonkeyPatch, **kw) -> list[MacDevice]:
    made: list[MacDevice] = []

    def get(name, devices_file=None):
        made.append(MacDevice(name="sim", **kw))
        return made[-1]

    monkeypatch.setattr("latbench.devices.registry.get_device", get)
    return made


def sweep_args(model: str, *extra: str) -> tuple[str, ...]:
    return ("sweep", "--model", model, "--methods", "svd", "--ranks", "0.25,0.5", "--random-plans",
            "0", "--input", "1x3x16x16", *SIM, "--db", "lat.db", *extra)


def test_the_table_gives_each_variants_median_and_speedup_from_the_store(capsys, monkeypatch, model):
    use_device(monkeypatch)  # noiseless: latency = 0.05 ms + 1 ms per million MACs of the ONNX file
    code, out, err = bench(capsys, *sweep_args(model, "--json"))
    assert code == 0, err
    doc = json.loads(out)
    rows = {r["label"]: r for r in doc["results"]}
    assert list(rows) == ["original", "svd@0.25", "svd@0.5"]
    assert doc["noisy"] == 0 and not any(r["noisy"] for r in rows.values())
    assert doc["noisy_advice"] is None
    orig = rows["original"]
    for r in rows.values():
        assert r["median_ms"] == pytest.approx(0.05 + r["macs"] / 1e6, rel=0.02)
        assert r["speedup"] == pytest.approx(orig["median_ms"] / r["median_ms"])
        assert r["n_samples"] == 9 and r["relative_iqr"] == pytest.approx(0, abs=1e-9)
    assert rows["svd@0.25"]["speedup"] > rows["svd@0.5"]["speedup"] > 1
    assert doc["next"][0].startswith("bench search ") and "--device sim" in doc["next"][0]
    assert "--input 1x3x16x16 --threads 1 " in doc["next"][0]
    # a rerun measures nothing and shows the same table, read from the store
    code, out2, _ = bench(capsys, *sweep_args(model, "--json"))
    doc2 = json.loads(out2)
    assert doc2["skipped"] == 3 and doc2["results"] == doc["results"]


def test_the_text_output_ends_with_the_table_the_summary_and_the_next_command(capsys, monkeypatch,
                                                                           model):
    use_device(monkeypatch)
    code, out, err = bench(capsys, *sweep_args(model))
    assert code == 0 and err == ""
    lines = out.strip().splitlines()
    assert lines[0].split()[:6] == ["model", "variant", "MACs", "median", "ms", "IQR/med"]
    assert [ln.split()[1] for ln in lines[1:4]] == ["original", "svd@0.25", "svd@0.5"]
    assert lines[1].split()[-1] == "1.00x"
    assert "sim: 3 variants measured, 0 already stored, 0 failed" in lines[4]
    assert lines[5].startswith("next: bench search ") and "--speedup" in lines[5]
    assert lines[6].startswith("then: bench predictor train --db lat.db --device sim --kind flops")
    assert "run this sweep again with --random-plans 30" in lines[7]
    assert "noisy" not in out


def test_noisy_measurements_are_flagged_with_advice(capsys, monkeypatch, model):
    use_device(monkeypatch, noise=0.5, seed=3)  # lognormal σ = 0.5: IQR/median ≈ 0.7 expected
    code, out, err = bench(capsys, *sweep_args(model))
    assert code == 0, err
    # the flag is what the stored samples say, also in JSON (a rerun reads the same rows)
    code, js, _ = bench(capsys, *sweep_args(model, "--json"))
    doc = json.loads(js)
    n = doc["noisy"]
    assert n >= 2 and n == sum(r["relative_iqr"] >= NOISY_RELATIVE_IQR for r in doc["results"])
    assert doc["noisy_advice"].startswith(f"{n} of 3 measurements on sim are noisy")
    assert out.count("  noisy") == n
    advice = next(ln for ln in out.splitlines() if ln.startswith("noisy: "))
    assert f"{n} of 3 measurements on sim are noisy" in advice
    assert "quiet machine" in advice and "--threads" in advice and "--repeats" in advice


def test_a_failed_variant_is_shown_as_not_measured(capsys, monkeypatch, model):
    import latbench.compress.export as export_mod
    from latbench.exceptions import ExportError

    use_device(monkeypatch)
    real, calls = export_mod.export_model, []

    def export_model(*a, **k):  # the third variant (svd@0.5) cannot be exported
        calls.append(1)
        if len(calls) == 3:
            raise ExportError("the exporter refused it")
        return real(*a, **k)

    monkeypatch.setattr(export_mod, "export_model", export_model)
    code, out, _ = bench(capsys, *sweep_args(model))
    assert code == 0
    row = next(ln for ln in out.splitlines() if " svd@0.5 " in f" {ln} ")
    assert row.split()[-2:] == ["not", "measured"] and " - " in row
    assert "1 failed" in out
    assert "failures are stored with their reasons: bench data summary --db lat.db" in out


def _m(samples_ms: list[float]) -> Measurement:
    spec = BenchSpec(artifact_sha256="0" * 64, device="d", runtime="r", runtime_version="1",
                     provider="p", threads=1, input_shape=(1, 3, 8, 8))
    info = DeviceInfo(name="d", kind="cpu")
    return Measurement(spec, tuple(s / 1e3 for s in samples_ms), info, info)


def test_a_measurement_is_noisy_from_ten_percent_iqr_over_median():
    assert not _m([10, 10.2, 10.4, 10.6, 10.8]).noisy  # IQR 0.4 / 10.4 ≈ 4 %
    assert _m([9, 10, 10, 11, 12]).noisy  # IQR 1 / 10 = 10 %
    assert _m([9, 10, 10, 11, 12]).summary()["noisy"] is True
    assert not _m([9.6, 10, 10, 10.5, 11]).noisy  # 5 %: not confident, not noisy either
    assert not _m([9.6, 10, 10, 10.5, 11]).confident


def test_advice_follows_the_options_that_were_used(tmp_path):
    from latbench.bench.results import VariantResult

    rows = [VariantResult("m", "original", "none", (1, 3, 8, 8), 1e6, 2.0, 0.5, 10, 1.0, True),
            VariantResult("m", "svd@0.5", "svd", (1, 3, 8, 8), 5e5, 1.0, 0.05, 10, 2.0, False)]
    text = noisy_advice(rows, device="cpu", threads=4, adaptive=False)
    assert text.startswith("1 of 2 measurements on cpu are noisy") and "up to 25%" in text
    assert "--threads 1 on a loaded machine" in text and "drop --fixed-repeats" in text
    assert noisy_advice(rows[1:], device="cpu", threads=1, adaptive=True) is None


def test_results_and_next_steps_of_a_config_read_only_the_store(tmp_path, monkeypatch, model):
    use_device(monkeypatch)
    from latbench.bench.sweep import run_sweep

    cfg = SweepConfig((Target(model, (1, 3, 16, 16), ("svd",), (0.5,)),), per_layer=True,
                      threads=1, warmup=1, repeats=3, adaptive=False)
    before = sweep_results(cfg, "sim", tmp_path / "x.db")
    assert [r.median_ms for r in before] == [None, None]  # nothing stored yet
    run_sweep(cfg, "sim", tmp_path / "x.db")
    after = sweep_results(cfg, "sim", tmp_path / "x.db")
    assert all(r.median_ms and r.macs for r in after)
    assert sweep_results(cfg, "other", tmp_path / "x.db")[0].median_ms is None
    steps = suggest_next(cfg, after, device="sim", db=tmp_path / "x.db")
    assert "--kind lut" in steps[1]  # layers were measured alone


def test_the_noisy_flag_is_in_the_exported_table_and_the_store_summary(capsys, monkeypatch, model):
    use_device(monkeypatch, noise=0.5, seed=3)
    code, js, _ = bench(capsys, *sweep_args(model, "--json"))
    n = json.loads(js)["noisy"]
    code, out, _ = bench(capsys, "data", "export", "--db", "lat.db", "--out", "lat.csv")
    assert code == 0
    import pandas as pd

    df = pd.read_csv("lat.csv")
    assert int(df["noisy"].sum()) == n
    assert (df["noisy"] == (df["iqr_ms"] >= NOISY_RELATIVE_IQR * df["latency_ms"])).all()
    code, out, _ = bench(capsys, "data", "summary", "--db", "lat.db", "--json")
    assert json.loads(out)["noisy"] == {"sim": n}
    code, out, _ = bench(capsys, "data", "summary", "--db", "lat.db")
    assert f"noisy: {n} of 3 measurements on sim have IQR/median ≥ 10%" in out


def test_imported_latencies_are_neither_noisy_nor_quiet(tmp_path):
    from latbench.data.export import flat_table
    from latbench.data.nb201_import import import_nb201

    csv = Path(__file__).resolve().parents[1] / "fixtures" / "nb201_sample.csv"
    import_nb201(str(csv), latency_column="sd855_cpu_kryo485_int8_ms", device="sd855",
                 db_path=tmp_path / "nb.db", limit=5)
    assert flat_table(tmp_path / "nb.db")["noisy"].isna().all()
