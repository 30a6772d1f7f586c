"""Concurrent use (issue 15): two sweeps on one database, and two runs on one phone.

1. Two ``bench sweep`` processes started together on one database (``cpu`` device, a small
   CNN, 2 methods x 3 ranks + 2 random plans = 9 variants): counts the measurement rows per
   variant (each must be 1) and what each process measured.
2. Two ``bench run`` processes started together on the loopback phone of the tests
   (``tests/devices/adb``: a real ADB wire protocol, the ``onnxruntime_perf_test`` stand-in
   timing on this host), one with a small model, one with a 10x larger one: each median
   against the medians of the same model run alone (3 runs each), i.e. whether the device
   lock keeps their timings apart.

Prints one JSON object. Run from the repository root:
``python benchmarks/bench_concurrency.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADB_TESTS = ROOT / "tests" / "devices" / "adb"


def bench(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "from latbench.cli import main; main()", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=1800)
    if p.returncode != 0:
        raise SystemExit(f"bench failed ({p.returncode}): {err}")
    return json.loads(out)


def two_sweeps(tmp: Path, env: dict[str, str]) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(64, 64, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(64, 10)).eval()
    model = tmp / "net.pt"
    torch.save(net, model)
    db = tmp / "two.db"
    args = ["sweep", "--model", str(model), "--input", "1x3x32x32", "--methods", "tucker2,svd",
            "--ranks", "0.25,0.5,0.75", "--random-plans", "2", "--threads", "1", "--warmup", "5",
            "--repeats", "30", "--fixed-repeats", "--db", str(db), "--json"]
    t0 = time.perf_counter()
    procs = [bench(args, env) for _ in range(2)]
    docs = [finish(p) for p in procs]
    wall = time.perf_counter() - t0
    with sqlite3.connect(db) as c:
        per_variant = [n for (n,) in c.execute(
            "SELECT COUNT(*) FROM measurements GROUP BY variant_id")]
        variants = c.execute("SELECT COUNT(*) FROM variants").fetchone()[0]
    return {"variants": variants, "measurement_rows": sum(per_variant),
            "each_variant_measured_once": per_variant == [1] * variants,
            "measured_by_process": [d["measured"] for d in docs],
            "stored_by_the_other": [d["measured_elsewhere"] + d["skipped"] for d in docs],
            "wall_s": round(wall, 1)}


def two_runs_on_one_phone(tmp: Path, env: dict[str, str]) -> dict:
    sys.path.insert(0, str(ADB_TESTS))
    from adb_shell.auth.keygen import keygen
    from adb_testdata import PROPS, sysfs
    from fake_adbd import FakeAdbd

    from latbench.compress.export import export_onnx
    import torch
    from torch import nn

    torch.manual_seed(0)
    small = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU()).eval()
    big = nn.Sequential(nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(),
                        nn.Conv2d(48, 48, 3, padding=1), nn.ReLU()).eval()
    paths = {"small": export_onnx(small, (1, 3, 32, 32), tmp / "small.onnx").path,
             "big": export_onnx(big, (1, 3, 32, 32), tmp / "big.onnx").path}
    key = tmp / "adbkey"
    keygen(str(key))
    key.chmod(0o600)
    runner = tmp / "onnxruntime_perf_test"
    shutil.copyfile(ADB_TESTS / "standin_runner.py", runner)
    with FakeAdbd(tmp / "phone", props=dict(PROPS), settings={"low_power": "0"},
                  battery=(ADB_TESTS / "fixtures" / "dumpsys_battery.txt").read_text(),
                  sysfs=sysfs(), max_command_s=600.0) as fake:
        toml = tmp / "devices.toml"
        toml.write_text(f'[phone]\nkind = "adb"\nhost = "{fake.host}"\nrunner = "{runner}"\n'
                        f'adbkey = "{key}"\ncpus = "f0"\nthreads = 1\ntimeout_s = 600.0\n')

        def args(which: str) -> list[str]:
            return ["run", str(paths[which]), "--device", "phone", "--devices", str(toml),
                    "--threads", "1", "--warmup", "10", "--repeats", "50", "--json"]

        alone: dict[str, list[float]] = {"small": [], "big": []}
        for _ in range(3):
            for which in ("small", "big"):
                alone[which].append(finish(bench(args(which), env))["median_ms"])
        t0 = time.perf_counter()
        procs = {w: bench(args(w), env) for w in ("small", "big")}
        together = {w: finish(p) for w, p in procs.items()}
        wall = time.perf_counter() - t0
        runs = sorted(e for e in fake.sandbox.execs if "perf_test" in e[2])
    overlap = any(b[0] < a[1] for a, b in zip(runs, runs[1:]))
    out = {"wall_s_together": round(wall, 1), "runner_calls_overlapped": overlap}
    for w in ("small", "big"):
        med = together[w]["median_ms"]
        lo, hi = min(alone[w]), max(alone[w])
        out[w] = {"alone_median_ms": [round(x, 4) for x in alone[w]],
                  "together_median_ms": round(med, 4),
                  "together_samples": together[w]["n_samples"],
                  "ratio_to_alone": round(med / statistics.median(alone[w]), 3),
                  "within_alone_range_x1.1": lo / 1.1 <= med <= hi * 1.1}
    return out


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp),
           "XDG_CACHE_HOME": str(tmp / "cache"), "XDG_CONFIG_HOME": str(tmp / "xdg")}
    env.pop("LATBENCH_DEVICES", None)
    try:
        doc = {"two_sweeps_one_db": two_sweeps(tmp, env),
               "two_runs_one_phone": two_runs_on_one_phone(tmp, env)}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(doc, indent=1))


if __name__ == "__main__":
    main()
