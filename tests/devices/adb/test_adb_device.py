"""AdbDevice end to end against the loopback device and the stand-in runners."""

from __future__ import annotations

from dataclasses import replace

import pytest

from latbench.measure.measurement import Measurement
from latbench.devices.adb import AdbDevice
from latbench.exceptions import DeviceError, UserInputError

from adb_testdata import sysfs


@pytest.fixture
def ort_device(make_fake, profile):
    fake = make_fake()
    dev = AdbDevice.from_profile("phone", profile(fake))
    yield fake, dev
    dev.close()


def runner_commands(fake) -> list[str]:
    return [c for c in fake.commands if "taskset" in c]


def test_ort_measure_pins_threads_parses_samples_and_caches_pushes(ort_device, onnx_model):
    fake, dev = ort_device
    spec = dev.make_spec(onnx_model, warmup=2, repeats=5)
    seen: list[tuple[int, int]] = []
    m = dev.measure(onnx_model, spec, progress=lambda d, t: seen.append((d, t)))
    assert isinstance(m, Measurement)
    assert spec.runtime == "onnxruntime" and spec.provider == "cpu" and spec.threads == 2
    assert spec.runtime_version.startswith("onnxruntime_perf_test sha256:")
    # warm-up runs are dropped from the runner's per-run result file
    assert len(m.samples_s) == 5 and all(0 < s < 1 for s in m.samples_s)
    assert m.extra["recorded_runs"] == 7 and m.extra["dropped_warmup_runs"] == 2
    assert m.extra["average_s"] > 0 and "p50_s" in m.extra
    (cmd,) = runner_commands(fake)
    assert " taskset f0 /data/local/tmp/latbench/onnxruntime_perf_test-" in cmd
    assert " -x 2 " in cmd and " -r 7 " in cmd and " -e cpu " in cmd
    assert seen == [(7, 7)]
    assert len(m.extra["pushed"]) == 2
    # identity and state before and after
    for info in (m.info_before, m.info_after):
        assert info.kind == "adb" and info.model == "Pixel 6" and info.soc == "Google Tensor"
        assert info.os == "Android 14 (SDK 34)" and info.abi == "arm64-v8a"
        assert info.fingerprint.startswith("google/oriole")
        assert info.state["pinned_cpus"] == [4, 5, 6, 7] and info.state["throttled"] is False
        assert info.state["battery_level_pct"] == 87.0
    assert m.info_before.runtime_versions == {"onnxruntime": spec.runtime_version}
    # a second measurement pushes nothing, even over a new connection
    dev.close()
    m2 = dev.measure(onnx_model, spec)
    assert m2.extra["pushed"] == [] and len(fake.pushed) == 2
    assert len(runner_commands(fake)) == 2


def test_tflite_measure_reconstructs_every_run(make_fake, profile, runners, onnx_model):
    fake = make_fake()
    dev = AdbDevice.from_profile("phone", profile(fake, runner=str(runners["tflite"]),
                                                  cpus="30", threads=1))
    spec = dev.make_spec(onnx_model, warmup=1, repeats=4)
    m = dev.measure(onnx_model, spec)
    dev.close()
    assert spec.runtime == "tflite"
    cmds = runner_commands(fake)
    assert len(cmds) == 2  # ceil(4 / 3) calls
    assert "taskset 30 " in cmds[0] and "--num_threads=1" in cmds[0]
    assert "--num_runs=3" in cmds[0] and "--num_runs=1" in cmds[1]
    assert "--warmup_runs=1" in cmds[0] and "--graph=/data/local/tmp/latbench/model-" in cmds[0]
    truth = [int(x) for line in fake.sandbox.host("/data/local/tmp/standin_tflite_runs.txt")
             .read_text().split("\n") for x in line.split()]
    assert m.samples_s == pytest.approx([t * 1e-6 for t in truth], rel=1e-4)
    assert m.extra["calls"] == 2 and len(m.extra["init_s"]) == 2


def test_default_cpus_are_the_fastest_cores_and_threads_follow(make_fake, profile, onnx_model):
    fake = make_fake()
    p = profile(fake)
    del p["cpus"], p["threads"]
    dev = AdbDevice.from_profile("phone", p)
    spec = dev.make_spec(onnx_model, warmup=0, repeats=2)
    assert dev.cpu_mask == "f0" and spec.threads == 4
    dev.close()


def test_capped_hot_run_is_flagged_throttled_after_a_timed_out_cooldown(make_fake, profile,
                                                                       onnx_model):
    fake = make_fake(sysfs=sysfs(capped=True, cpu_temp_mc=70000))
    dev = AdbDevice.from_profile("phone", profile(fake, cooldown_temp_c=60.0,
                                                  cooldown_timeout_s=0.01, cooldown_poll_s=0.01))
    m = dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    dev.close()
    assert m.throttled and m.info_after.state["throttled"] is True
    reasons = m.info_before.state["throttle_reasons"]
    assert "cpu4 capped at 1200000 of 2400000 kHz" in reasons
    assert "did not cool under 60.0 °C" in reasons
    assert m.extra["cooldown"]["cooled"] is False and m.extra["cooldown"]["temp_c"] == 70.0


@pytest.mark.parametrize("mode,match", [
    ("fail", r"failed with exit status 1: Run failed:Load model"),
    ("crash", r"crashed \(signal 11\)"),
])
def test_runner_failures_are_device_errors(make_fake, profile, onnx_model, mode, match):
    fake = make_fake(runner_env={"STANDIN_MODE": mode})
    dev = AdbDevice.from_profile("phone", profile(fake))
    with pytest.raises(DeviceError, match=match) as err:
        dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    assert "'phone'" in str(err.value)
    dev.close()


def test_runner_missing_on_device_is_a_device_error(make_fake, profile, onnx_model):
    fake = make_fake()
    dev = AdbDevice.from_profile("phone", profile(
        fake, runner="/data/local/tmp/onnxruntime_perf_test", runtime_version="1.20.0"))
    with pytest.raises(DeviceError, match="missing on the device"):
        dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    dev.close()


def test_pushed_runner_deleted_behind_our_back_is_reported(ort_device, onnx_model):
    fake, dev = ort_device
    spec = dev.make_spec(onnx_model, warmup=0, repeats=1)
    dev.measure(onnx_model, spec)
    fake.sandbox.host(dev.runner.remote_path).unlink()
    with pytest.raises(DeviceError, match="missing or not executable .*pushed again"):
        dev.measure(onnx_model, spec)
    dev.measure(onnx_model, spec)  # and it is pushed again
    assert sum("onnxruntime_perf_test" in p for p in fake.pushed) == 2


def test_runner_timeout_is_a_device_error_and_the_runner_is_stopped(make_fake, profile,
                                                                    onnx_model):
    fake = make_fake(runner_env={"STANDIN_MODE": "hang"})
    dev = AdbDevice.from_profile("phone", profile(fake, timeout_s=1.0))
    with pytest.raises(DeviceError, match=r"running onnxruntime_perf_test-\w+ timed out after 1 s"):
        dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    assert any(c.startswith("pkill -f onnxruntime_perf_test-") for c in fake.commands)
    dev.close()


def test_connection_dropped_mid_run_is_a_device_error(make_fake, profile, onnx_model):
    fake = make_fake(drop_on="taskset", drop_after_s=0.2, runner_env={"STANDIN_MODE": "hang"})
    dev = AdbDevice.from_profile("phone", profile(fake))
    with pytest.raises(DeviceError, match="dropped during running onnxruntime_perf_test"):
        dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    dev.close()


def test_unauthorised_device_fails_measure_with_the_prompt_hint(make_fake, profile, onnx_model,
                                                               tmp_path):
    fake = make_fake(authorized_keys=[], accept_new_keys=False)
    dev = AdbDevice.from_profile("phone", profile(fake, adbkey=str(tmp_path / "k")))
    with pytest.raises(DeviceError, match="unauthorised: accept the prompt on the phone"):
        dev.info()


def test_spec_for_another_runtime_or_device_is_refused(ort_device, onnx_model):
    _, dev = ort_device
    spec = dev.make_spec(onnx_model, warmup=0, repeats=1)
    with pytest.raises(UserInputError, match="runtime 'tflite'"):
        dev.measure(onnx_model, replace(spec, runtime="tflite"))
    with pytest.raises(UserInputError, match="device 'other'"):
        dev.measure(onnx_model, replace(spec, device="other"))


def test_tflite_runner_needs_a_tflite_model(make_fake, profile, runners, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from latbench.artifact import Artifact

    g = helper.make_graph([helper.make_node("Relu", ["input"], ["output"])], "g",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g), str(tmp_path / "solo.onnx"))  # no solo.tflite beside it
    art = Artifact.from_file(tmp_path / "solo.onnx")
    fake = make_fake()
    dev = AdbDevice.from_profile("phone", profile(fake, runner=str(runners["tflite"])))
    with pytest.raises(UserInputError, match=r"needs a \.tflite model"):
        dev.measure(art, dev.make_spec(art, warmup=0, repeats=1))
    dev.close()


@pytest.mark.parametrize("overrides,match", [
    ({"treads": 2}, r"unknown key 'treads' \(did you mean 'threads'"),
    ({"threads": "4"}, "threads must be int"),
    ({"cpus": "zz"}, "not a taskset mask"),
    ({"runner": "relative/missing_perf_test"}, "is not a file"),
    ({"runner": "/opt/weird_binary"}, "runner_kind"),
    ({"runner_kind": "tvm"}, "unknown runner kind 'tvm'"),
    ({"provider": "cuda"}, "no provider 'cuda'"),
    ({"remote_dir": "tmp/x"}, "absolute"),
    ({"host": "phone:port"}, "not a number"),
])
def test_bad_profiles_are_user_errors(make_fake, profile, overrides, match):
    fake = make_fake()
    with pytest.raises(UserInputError, match=match):
        AdbDevice.from_profile("phone", profile(fake, **overrides))


def test_profile_without_runner_is_a_user_error():
    with pytest.raises(UserInputError, match="needs runner"):
        AdbDevice.from_profile("phone", {"kind": "adb", "host": "127.0.0.1:1"})
