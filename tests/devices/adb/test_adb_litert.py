"""benchmark_model phones over the loopback device with real ``.tflite`` files: both tool
generations told apart by ``--help``, their flags, per-operator profiles mapped to layers,
and perf_test's releases through the same loopback."""

from __future__ import annotations

import pytest

from latbench.devices.adb import AdbDevice
from latbench.exceptions import DeviceError, OpProfileError, UserInputError

LAYERS = {"conv1", "pool", "block.0", "block.2", "dw", "gap", "fc"}


def runner_commands(fake) -> list[str]:
    return [c for c in fake.commands if "taskset" in c]


def device(make_fake, profile, runners, generation="tflite", **overrides):
    fake = make_fake(runner_env={"STANDIN_GENERATION": generation})
    opts = dict(runner=str(runners["tflite"]), cpus="30", threads=1)
    return fake, AdbDevice.from_profile("phone", profile(fake, **{**opts, **overrides}))


def truth_us(fake) -> list[int]:
    text = fake.sandbox.host("/data/local/tmp/standin_tflite_runs.txt").read_text()
    return [int(x) for line in text.split("\n") for x in line.split()]


@pytest.mark.slow
def test_classic_tool_times_a_real_tflite_file(make_fake, profile, runners, tflite_net):
    fake, dev = device(make_fake, profile, runners)
    spec = dev.make_spec(tflite_net, warmup=1, repeats=5)
    m = dev.measure(tflite_net, spec)
    dev.close()
    assert (spec.runtime, spec.format) == ("tflite", "tflite")
    assert m.samples_s == pytest.approx([t * 1e-6 for t in truth_us(fake)], rel=1e-4)
    assert any(c.endswith(" --help; echo __rc=$?") or " --help" in c for c in fake.commands)
    cmds = runner_commands(fake)
    assert len(cmds) == 2 and "--use_cpu" not in cmds[0]
    assert m.extra["generation"] == "tflite" and len(m.extra["inference_avg_s"]) == 2
    assert [p for p in m.extra["pushed"] if p.endswith(".tflite")]


def test_litert_tool_is_told_apart_by_its_help_and_gets_its_flags(make_fake, profile, runners,
                                                                  tflite_net):
    fake, dev = device(make_fake, profile, runners, generation="litert")
    spec = dev.make_spec(tflite_net, warmup=1, repeats=4)
    m = dev.measure(tflite_net, spec)
    dev.close()
    assert spec.runtime == "litert" and m.extra["generation"] == "litert"
    cmds = runner_commands(fake)
    assert "--use_cpu=true" in cmds[0] and "--use_gpu=false" in cmds[0]
    assert "--num_threads=1" in cmds[0]
    assert m.samples_s == pytest.approx([t * 1e-6 for t in truth_us(fake)], rel=1e-4)
    assert m.info_before.runtime_versions.keys() == {"litert"}
    assert m.extra["inference_avg_mean_s"] > 0


def test_litert_gpu_provider_asks_for_the_gpu_accelerator(make_fake, profile, runners):
    fake, dev = device(make_fake, profile, runners, generation="litert", provider="gpu")
    assert dev.resolve_runner().providers["gpu"] == ("--use_gpu=true", "--use_npu=false")
    assert dev.runtime_identity().provider == "gpu"
    dev.close()


def test_profile_that_names_the_other_generation_is_refused(make_fake, profile, runners):
    fake, dev = device(make_fake, profile, runners, generation="litert", runner_kind="tflite")
    with pytest.raises(DeviceError, match=r"runner_kind = 'tflite' but .* is the benchmark_model "
                                          r"\(LiteRT\).*set runner_kind = \"litert\""):
        dev.runtime_identity()
    dev.close()


def test_provider_the_detected_generation_lacks_is_a_user_error(make_fake, profile, runners):
    fake, dev = device(make_fake, profile, runners, generation="litert", provider="nnapi")
    with pytest.raises(UserInputError, match=r"benchmark_model \(LiteRT\).*no provider 'nnapi'"):
        dev.runtime_identity()
    dev.close()


def test_a_binary_that_is_no_benchmark_model_is_refused(make_fake, profile, runners, tmp_path):
    fake = make_fake()
    other = tmp_path / "benchmark_model"
    other.write_text("print('hello')\n")
    dev = AdbDevice.from_profile("phone", profile(fake, runner=str(other), cpus="30"))
    with pytest.raises(DeviceError, match="lists neither the classic"):
        dev.runtime_identity()
    dev.close()


@pytest.mark.parametrize("generation,provider,delegated", [
    ("tflite", "cpu", True), ("tflite", "builtin", False), ("litert", "cpu", True)])
def test_op_profiles_of_both_generations_map_to_every_layer(make_fake, profile, runners,
                                                            tflite_net, generation, provider,
                                                            delegated):
    from tflite_nets import SHAPE, named_net

    from latbench.artifact import read_tflite
    from latbench.bench.profiles import map_profile
    from latbench.data.features import layer_table

    fake, dev = device(make_fake, profile, runners, generation=generation, provider=provider)
    spec = dev.make_spec(tflite_net, warmup=1, repeats=3)
    prof = dev.profile_ops(tflite_net, spec)
    dev.close()
    assert prof.runs == 3 and prof.info_before is not None
    assert any(r.delegated for r in prof.rows) is delegated
    flag = "--use_profiler=true" if generation == "litert" else "--enable_op_profiling=true"
    assert flag in prof.extra["command"] and "--num_runs=3" in prof.extra["command"]
    m = map_profile(prof, read_tflite(tflite_net.path), layer_table(named_net(), SHAPE))
    assert set(m.layers) == LAYERS and m.notes == []
    assert all(t.avg_s > 0 for t in m.layers.values())


def test_runner_that_prints_no_profile_is_an_op_profile_error(make_fake, profile, runners,
                                                              tflite_net, monkeypatch):
    from latbench.devices.adb.runners import TfliteBenchmarkModel

    fake, dev = device(make_fake, profile, runners)
    monkeypatch.setattr(TfliteBenchmarkModel, "profile_flags", ())  # as a build without it
    with pytest.raises(OpProfileError, match="no 'Operator-wise Profiling Info' table"):
        dev.profile_ops(tflite_net, dev.make_spec(tflite_net, warmup=0, repeats=1))
    dev.close()


def test_perf_test_cannot_profile_operators(make_fake, profile, onnx_model):
    fake = make_fake()
    dev = AdbDevice.from_profile("phone", profile(fake))
    assert dev.capabilities.op_profiles is False
    with pytest.raises(UserInputError, match="does not profile operators"):
        dev.profile_ops(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    dev.close()


# --------------------------------------------------------- perf_test releases, end to end
@pytest.mark.parametrize("fmt", ["total", "early"])
def test_perf_test_releases_are_read_through_the_loopback(make_fake, profile, onnx_model, fmt):
    fake = make_fake(runner_env={"STANDIN_ORT_FORMAT": fmt})
    dev = AdbDevice.from_profile("phone", profile(fake))
    m = dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=1, repeats=4))
    dev.close()
    assert len(m.samples_s) == 4 and m.extra["average_s"] > 0


@pytest.mark.parametrize("fmt,match", [
    ("unknown", r"not supported\); latbench reads onnxruntime_perf_test of ONNX Runtime 1\.0"),
    ("ns", "another unit"),
])
def test_perf_test_output_of_unknown_releases_is_refused(make_fake, profile, onnx_model, fmt,
                                                         match):
    fake = make_fake(runner_env={"STANDIN_ORT_FORMAT": fmt})
    dev = AdbDevice.from_profile("phone", profile(fake))
    with pytest.raises(DeviceError, match=match):
        dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=1, repeats=2))
    dev.close()
