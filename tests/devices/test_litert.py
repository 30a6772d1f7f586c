"""The built-in ``litert`` device: LiteRT interpreter on this CPU, same protocol as ``cpu``."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from latbench.artifact import Artifact
from latbench.bench.run import measure_artifact, run_model
from latbench.devices.litert import LiteRtDevice
from latbench.devices.registry import get_device, list_devices
from latbench.exceptions import MissingExtraError, UserInputError
from latbench.measure.timing import Sampling


def test_missing_extra_is_named_by_runtime_identity_and_listing(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "version", missing)
    dev = LiteRtDevice()
    with pytest.raises(MissingExtraError, match=r'the litert device needs ai-edge-litert.*'
                                                r'pip install "latbench\[tflite\]"'):
        dev.runtime_identity(1)
    rows = {r.profile.name: r for r in list_devices()}
    assert rows["litert"].available is False and "latbench[tflite]" in rows["litert"].note


def test_bad_options_are_user_errors():
    with pytest.raises(UserInputError, match="threads must be at least 1"):
        LiteRtDevice(threads=0)
    with pytest.raises(UserInputError, match=r"unknown delegate 'xnnpak' \(did you mean 'xnnpack'"):
        LiteRtDevice(delegate="xnnpak")


pytest.importorskip("ai_edge_litert", reason='the litert device needs pip install "latbench[tflite]"')
pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Artifact:
    from latbench.compress.export import export_tflite

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    return export_tflite(net.eval(), (1, 3, 16, 16), tmp_path_factory.mktemp("m") / "tiny.tflite")


def test_measure_keeps_raw_samples_and_says_what_ran(tflite_model):
    dev = get_device("litert")
    spec = dev.make_spec(tflite_model, threads=1, warmup=2, repeats=7)
    assert (spec.runtime, spec.provider, spec.threads, spec.format) == ("litert", "XNNPACK", 1,
                                                                         "tflite")
    m = dev.measure(tflite_model, spec)
    assert len(m.samples_s) == 7 and all(s > 0 for s in m.samples_s)
    assert m.extra["stop_reason"] == "repeats" and len(m.extra["warmup_s"]) == 2
    info = m.info_before
    assert info.kind == "litert" and info.runtime_versions["litert"] == spec.runtime_version
    assert info.fingerprint == m.info_after.fingerprint and len(info.fingerprint) == 16


def test_adaptive_sampling_stops_by_its_rules(tflite_model):
    dev = LiteRtDevice(threads=1)
    sampling = Sampling(adaptive=True, max_repeats=12, max_time_s=30, batch=5, threshold=1e-9)
    m = measure_artifact(dev, tflite_model, warmup=1, repeats=3, sampling=sampling)
    assert m.extra["stop_reason"] == "max_repeats" and len(m.samples_s) == 12


def test_builtin_kernels_are_another_provider(tflite_model):
    dev = LiteRtDevice(delegate="none", threads=1)
    m = measure_artifact(dev, tflite_model, warmup=0, repeats=2)
    assert m.spec.provider == "builtin" and m.extra["delegate"] == "none"


def test_onnx_model_is_refused_with_the_format_to_export(tmp_path):
    from latbench.compress.export import export_onnx

    art = export_onnx(nn.Conv2d(3, 4, 3), (1, 3, 8, 8), tmp_path / "m.onnx")
    with pytest.raises(UserInputError, match="runs tflite models, not onnx .*export the model as "
                                             "tflite"):
        LiteRtDevice().make_spec(art)


def test_spec_of_another_format_or_provider_is_refused(tflite_model):
    dev = LiteRtDevice(threads=1)
    spec = dev.make_spec(tflite_model, warmup=0, repeats=1)
    with pytest.raises(UserInputError, match="it is for a onnx model"):
        dev.measure(tflite_model, replace(spec, format="onnx"))
    with pytest.raises(UserInputError, match="provider 'builtin'"):
        dev.measure(tflite_model, replace(spec, provider="builtin"))


def test_profile_options_and_listing(tmp_path, tflite_model):
    f = tmp_path / "devices.toml"
    f.write_text('[lite1]\nkind = "litert"\nthreads = 1\ndelegate = "none"\n'
                 '[litert]\nthreads = 2\n')
    dev = get_device("lite1", f)
    assert isinstance(dev, LiteRtDevice) and dev.threads == 1 and dev.delegate == "none"
    assert get_device("litert", f).threads == 2
    rows = {r.profile.name: r for r in list_devices(f)}
    assert rows["litert"].available is True and "LiteRT" in rows["litert"].note
    f.write_text('[lite2]\nkind = "litert"\ngraph_optimization = "all"\n')
    with pytest.raises(UserInputError, match="unknown key 'graph_optimization'"):
        get_device("lite2", f)


def test_bench_run_times_a_tflite_file(tflite_model):
    m = run_model(tflite_model.path, "litert", threads=1, warmup=1, repeats=3)
    assert m.spec.format == "tflite" and len(m.samples_s) == 3


def test_model_with_another_input_shape_is_refused(tflite_model):
    dev = LiteRtDevice(threads=1)
    art = replace(tflite_model, input_shape=(1, 3, 32, 32))
    with pytest.raises(UserInputError, match=r"takes input \(1, 3, 16, 16\)"):
        dev.measure(art, dev.make_spec(art, warmup=0, repeats=1))
