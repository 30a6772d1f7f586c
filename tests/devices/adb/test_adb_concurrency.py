"""Several processes on one phone (issue 15): each run has its own remote files, runs on one
physical device are serialised across the latbench processes of this host (a waiter says
so), what killed processes left on the phone is removed, pushed models do not pile up, and
runner output that cannot be the runs asked for is refused."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from latbench.concurrency import ProcessId, _start_ticks, device_lock, owner_token
from latbench.devices.adb import AdbDevice
from latbench.devices.adb import parsers
from latbench.devices.adb.runners import TfliteBenchmarkModel
from latbench.exceptions import DeviceError, RunnerOutputError

SRC = Path(__file__).resolve().parents[3] / "src"
REMOTE = "/data/local/tmp/latbench"


def devices_toml(path: Path, prof: dict) -> Path:
    lines = ["[phone]"]
    for k, v in prof.items():
        lines.append(f"{k} = {json.dumps(v)}")
    path.write_text("\n".join(lines) + "\n")
    return path


def bench_proc(args: list[str], tmp: Path, name: str) -> tuple[subprocess.Popen, Path, Path]:
    """``bench ARGS`` in a new process (this tree's sources), its stdout and stderr files."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
           "COLUMNS": "200"}
    out, err = tmp / f"{name}.out", tmp / f"{name}.err"
    proc = subprocess.Popen([sys.executable, "-c", "from latbench.cli import main; main()", *args],
                            stdout=out.open("w"), stderr=err.open("w"), env=env)
    return proc, out, err


def wait_for(cond, timeout_s: float = 120.0, what: str = "") -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def runner_execs(fake) -> list[tuple[float, float, str]]:
    return [e for e in fake.sandbox.execs if "perf_test" in e[2]]


@pytest.mark.slow
def test_two_processes_on_one_phone_are_serialised_and_each_gets_its_own_runs(
        make_fake, profile, onnx_model, tmp_path):
    fake = make_fake()
    toml = devices_toml(tmp_path / "devices.toml", profile(fake))
    run = ["run", onnx_model.path, "--device", "phone", "--devices", str(toml), "--warmup", "2",
           "--repeats", "20", "--json"]
    a = bench_proc(run, tmp_path, "a")
    b = bench_proc(run, tmp_path, "b")
    for proc, out, err in (a, b):
        assert proc.wait(timeout=300) == 0, err.read_text()
        doc = json.loads(out.read_text())
        # 20 asked, 20 stored: never the other process's runs mixed in
        assert len(doc["samples_ms"]) == 20 and doc["n_samples"] == 20
    execs = runner_execs(fake)
    assert len(execs) == 2
    (s1, e1, c1), (s2, e2, c2) = sorted(execs)
    assert e1 <= s2, "the two runners overlapped on one phone"
    # each run wrote its own result file, removed once read
    files = {c.split()[-1] for c in (c1, c2)}
    assert len(files) == 2 and all("perf_test_result-lb" in f for f in files)
    assert not [n for n in os.listdir(fake.sandbox.host(REMOTE)) if "perf_test_result" in n]


@pytest.mark.slow
def test_a_process_waits_for_the_phone_and_says_so(make_fake, profile, onnx_model, tmp_path):
    fake = make_fake()
    prof = profile(fake)
    toml = devices_toml(tmp_path / "devices.toml", prof)
    key = f"adb:{fake.host}"  # the loopback phone reports no ro.serialno
    with device_lock(key, device="phone", what="a test holding it"):
        proc, out, err = bench_proc(["run", onnx_model.path, "--device", "phone", "--devices",
                                     str(toml), "--warmup", "0", "--repeats", "3", "--json"],
                                    tmp_path, "waiter")
        wait_for(lambda: "is busy" in err.read_text() or proc.poll() is not None, what="note")
        assert proc.poll() is None, err.read_text()
        note = err.read_text()
        assert note.startswith("note: device 'phone' is busy with pid ")
        assert "a test holding it" in note and "waiting" in note
        time.sleep(0.5)
        assert runner_execs(fake) == []  # nothing ran while the phone was held
    assert proc.wait(timeout=300) == 0, err.read_text()
    assert len(runner_execs(fake)) == 1 and len(json.loads(out.read_text())["samples_ms"]) == 3


def dead_process() -> ProcessId:
    """A process of this host that ran and is gone (its pid is not reused this soon)."""
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    proc = ProcessId(socket.gethostname(), p.pid, _start_ticks(p.pid) or 0)
    p.kill()
    p.wait()
    return proc


def test_files_of_killed_runs_are_removed_and_the_rest_kept(make_fake, profile, onnx_model):
    fake = make_fake()
    dead = owner_token(dead_process())
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = owner_token(ProcessId(socket.gethostname(), live.pid,
                                      _start_ticks(live.pid) or 0))
        other_host = "lb0000beefp1s1"
        planted = {f"perf_test_result-{dead}-3.txt": "stale", f"model-{'a' * 16}-{dead}.onnx": "x",
                   f"model-{'b' * 16}-{dead}.onnx.part": "x",
                   f"perf_test_result-{alive}-1.txt": "in use",
                   f"model-{'c' * 16}-{other_host}.onnx": "x", "notes.txt": "mine"}
        for n, text in planted.items():
            fake.sandbox.write(f"{REMOTE}/{n}", text)
        with AdbDevice.from_profile("phone", profile(fake)) as dev:
            dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=2))
            left = set(os.listdir(fake.sandbox.host(REMOTE)))
        assert not any(dead in n for n in left)
        assert {f"perf_test_result-{alive}-1.txt", f"model-{'c' * 16}-{other_host}.onnx",
                "notes.txt"} <= left
    finally:
        live.kill()
        live.wait()


@pytest.mark.slow
def test_models_are_removed_after_use_unless_kept(make_fake, profile, onnx_model, tmp_path):
    from latbench.artifact import Artifact

    other_path = tmp_path / "other.onnx"
    import onnx

    m = onnx.load(onnx_model.path)  # the same graph in another file (another producer)
    m.producer_name = "other"
    onnx.save(m, str(other_path))
    other = Artifact.from_file(other_path)
    assert other.sha256 != onnx_model.sha256

    def models(fake) -> list[str]:
        return sorted(n for n in os.listdir(fake.sandbox.host(REMOTE)) if n.startswith("model-"))

    fake = make_fake()
    with AdbDevice.from_profile("phone", profile(fake)) as dev:
        spec = dev.make_spec(onnx_model, warmup=0, repeats=1)
        dev.measure(onnx_model, spec)
        dev.measure(onnx_model, spec)  # measured again: pushed once
        assert models(fake) == [f"model-{onnx_model.sha256[:16]}-{owner_token()}.onnx"]
        dev.measure(other, dev.make_spec(other, warmup=0, repeats=1))
        assert models(fake) == [f"model-{other.sha256[:16]}-{owner_token()}.onnx"]
    assert models(fake) == []  # the runner stays: a cache by content
    assert any(n.startswith("onnxruntime_perf_test-") for n in
               os.listdir(fake.sandbox.host(REMOTE)))
    assert sum("model-" in p for p in fake.pushed) == 2

    fake2 = make_fake()
    with AdbDevice.from_profile("phone", profile(fake2, keep_models=True)) as dev:
        for art in (onnx_model, other):
            dev.measure(art, dev.make_spec(art, warmup=0, repeats=1))
    assert models(fake2) == sorted(f"model-{a.sha256[:16]}.onnx" for a in (onnx_model, other))


@pytest.mark.parametrize("spoil,match", [
    ("ms", r"×1e\+03.*another unit"),
    ("short", r"holds 3 runs for the 11 asked \(1 warm-up \+ 10\)"),
    ("negative", r"run time of -"),
    ("zeros", r"run time of 0 s"),
    ("mixed", r"holds 22 runs for the 11 asked"),
])
def test_runner_output_that_cannot_be_the_runs_asked_for_is_a_device_error(
        make_fake, profile, onnx_model, spoil, match):
    fake = make_fake(runner_env={"STANDIN_RESULT": spoil})
    with AdbDevice.from_profile("phone", profile(fake)) as dev:
        with pytest.raises(DeviceError, match=match) as err:
            dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=1, repeats=10))
    assert "cannot read onnxruntime_perf_test" in str(err.value)


def test_check_samples_refuses_counts_signs_and_disagreement():
    parsers.check_samples([0.01, 0.011], 2, 0.0105)
    with pytest.raises(RunnerOutputError, match="3 timed runs for the 2 asked"):
        parsers.check_samples([0.01] * 3, 2)
    with pytest.raises(RunnerOutputError, match="not positive"):
        parsers.check_samples([0.01, float("nan")], 2)
    with pytest.raises(RunnerOutputError, match=r"disagrees with the runner's own average .*×2"):
        parsers.check_samples([0.02, 0.02], 2, 0.01)


def _tflite_output(count: int, run_us: int, summary_avg_us: float) -> str:
    return (f"count={count} first={run_us} curr={run_us} min={run_us} max={run_us} "
            f"avg={run_us} std=0\n"
            f"Inference timings in us: Init: 100, First inference: {run_us}, Warmup (avg): "
            f"{run_us}, Inference (avg): {summary_avg_us}\n")


def test_benchmark_model_counts_and_averages_are_checked():
    r = TfliteBenchmarkModel("/d/benchmark_model", runs_per_call=3)
    ok = r.parse([_tflite_output(3, 1000, 1000)], [None], warmup=0, repeats=3)
    assert ok.samples_s == pytest.approx((1e-3,) * 3)
    with pytest.raises(RunnerOutputError, match="count=2 timed runs for the 3 asked"):
        r.parse([_tflite_output(2, 1000, 1000)], [None], warmup=0, repeats=3)
    # the Stat line and the summary are not about the same runs
    with pytest.raises(RunnerOutputError, match=r"disagrees .* \(×1e\+03"):
        r.parse([_tflite_output(3, 1000, 1.0)], [None], warmup=0, repeats=3)


def test_a_timed_out_runner_is_stopped_by_a_pattern_naming_its_own_run(make_fake, profile,
                                                                       onnx_model):
    fake = make_fake(runner_env={"STANDIN_MODE": "hang"})
    with AdbDevice.from_profile("phone", profile(fake, timeout_s=1.0)) as dev:
        with pytest.raises(DeviceError, match="timed out"):
            dev.measure(onnx_model, dev.make_spec(onnx_model, warmup=0, repeats=1))
    (kill,) = [c for c in fake.commands if c.startswith("pkill -f ")]
    # another process's runner on the phone (another result file) does not match it
    assert f"perf_test_result-{owner_token()}-1.txt" in kill
