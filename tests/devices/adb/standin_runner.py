"""Stand-in for ``onnxruntime_perf_test`` and ``benchmark_model`` on the loopback device.

The fake device runs this file (pushed as the runner "binary") with Python. It really
times the pushed model with onnxruntime on the host and prints the real tools' output
formats (see ``performance_runner.cc`` and ``benchmark_model.cc``) with those timings.
``--graph=`` in the arguments selects the benchmark_model format. Device paths are mapped
into the sandbox through ``$FAKE_ADB_ROOT``. ``$STANDIN_MODE``: ``ok`` (default), ``fail``
(error message, exit 1), ``crash`` (SIGSEGV), ``hang`` (sleeps).
"""

from __future__ import annotations

import os
import signal
import sys
import time

ROOT = os.environ["FAKE_ADB_ROOT"]


def host(path: str) -> str:
    return os.path.join(ROOT, path.lstrip("/"))


def g(x: float) -> str:
    """C++ ostream's default formatting of a double (6 significant digits)."""
    return f"{x:g}"


def session(model: str, threads: int):
    import numpy as np
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(host(model), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
    feed = {inp.name: np.zeros(shape, dtype=np.float32)}
    return lambda: sess.run(None, feed)


def timed(run, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        run()
        out.append(time.perf_counter() - t0)
    return out


def ort_main(argv: list[str]) -> int:
    opts: dict[str, str] = {}
    pos: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-e", "-m", "-r", "-x", "-y", "-o", "-S"):
            opts[a] = argv[i + 1]
            i += 2
        elif a.startswith("-"):
            opts[a] = ""
            i += 1
        else:
            pos.append(a)
            i += 1
    model, result = pos[0], (pos[1] if len(pos) > 1 else "")
    t0 = time.perf_counter()
    run = session(model, int(opts.get("-x", "1")))
    created = time.perf_counter() - t0
    t0 = time.perf_counter()
    run()
    first_ms = int((time.perf_counter() - t0) * 1000)
    n = int(opts.get("-r", "1000"))
    start = time.perf_counter()
    costs = timed(run, n)
    wall = time.perf_counter() - start
    total = sum(costs)
    print(f"Session creation time cost: {g(created)} s")
    print(f"First inference time cost: {first_ms} ms")
    print(f"Total inference time cost: {g(total)} s")
    print(f"Total inference requests: {n}")
    print(f"Average inference time cost: {g(total / n * 1000)} ms")
    print(f"Total inference run time: {g(wall)} s")
    print(f"Number of inferences per second: {g(n / wall)} ")
    print("Avg CPU usage: 97 %")
    print("Peak working set size: 36696064 bytes")
    s = sorted(costs)
    stats = (f"Min Latency: {g(s[0])} s\nMax Latency: {g(s[-1])} s\n"
             f"P50 Latency: {g(s[int(n * 0.5)])} s\nP90 Latency: {g(s[int(n * 0.9)])} s\n"
             f"P95 Latency: {g(s[int(n * 0.95)])} s\nP99 Latency: {g(s[int(n * 0.99)])} s\n"
             f"P999 Latency: {g(s[int(n * 0.999)])} s\n")
    name = os.path.basename(os.path.dirname(model))
    if result:
        with open(host(result), "a") as f:
            for k, c in enumerate(costs):
                f.write(f"{name},{g(c)},36696064,97,{k}\n")
            if "-s" in opts:
                f.write("\n" + stats)
    else:
        print(f"Avg CPU usage:97\nPeak working set size:36696064\nRuns:{n}")
    if "-s" in opts or not result:
        sys.stdout.write(stats)
    return 0


def stat_line(us: list[int]) -> str:
    if not us:
        return "count=0"
    if len(set(us)) == 1:
        return f"count={len(us)} curr={us[-1]}" + ("(all same)" if len(us) > 1 else "")
    n = len(us)
    avg = sum(us) / n
    std = int((sum(u * u for u in us) / n - avg * avg) ** 0.5)
    return (f"count={n} first={us[0]} curr={us[-1]} min={min(us)} max={max(us)} "
            f"avg={g(avg)} std={std}")


def tflite_main(argv: list[str]) -> int:
    flags = dict(a[2:].split("=", 1) for a in argv if a.startswith("--") and "=" in a)
    graph, threads = flags["graph"], int(flags.get("num_threads", "1"))
    warm_n, runs_n = int(flags.get("warmup_runs", "1")), int(flags.get("num_runs", "50"))
    print("INFO: STARTING!")
    print(f"INFO: Min num runs: [{runs_n}]")
    print(f"INFO: Num threads: [{threads}]")
    print(f"INFO: Min warmup runs: [{warm_n}]")
    print(f"INFO: Graph: [{graph}]")
    print(f"INFO: #threads used for CPU inference: [{threads}]")
    print(f"INFO: Loaded model {graph}")
    t0 = time.perf_counter()
    run = session(graph, threads)
    init_us = int((time.perf_counter() - t0) * 1e6)
    print(f"INFO: Initialized session in {g(init_us / 1e3)}ms.")
    print(f"INFO: Running benchmark for at least {warm_n} iterations and at least 0 seconds "
          f"but terminate if exceeding 150 seconds.")
    warm = [int(c * 1e6) for c in timed(run, warm_n)]
    print(f"INFO: {stat_line(warm)}\n")
    print(f"INFO: Running benchmark for at least {runs_n} iterations and at least 0 seconds "
          f"but terminate if exceeding 150 seconds.")
    runs = [int(c * 1e6) for c in timed(run, runs_n)]
    print(f"INFO: {stat_line(runs)}\n")
    warm_avg = sum(warm) / len(warm) if warm else 0
    print(f"INFO: Inference timings in us: Init: {init_us}, First inference: "
          f"{warm[0] if warm else 0}, Warmup (avg): {g(warm_avg)}, "
          f"Inference (avg): {g(sum(runs) / len(runs))}")
    # The fake device only checks what latbench parses; keep the per-run truth for tests.
    with open(host("/data/local/tmp/standin_tflite_runs.txt"), "a") as f:
        f.write(" ".join(map(str, runs)) + "\n")
    return 0


def main() -> int:
    mode = os.environ.get("STANDIN_MODE", "ok")
    if mode == "fail":
        print("Run failed:Load model from /nowhere failed: Protobuf parsing failed.")
        return 1
    if mode == "crash":
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGSEGV)
    if mode == "hang":
        time.sleep(30)
        return 0
    argv = sys.argv[1:]
    if any(a.startswith("--graph=") for a in argv):
        return tflite_main(argv)
    return ort_main(argv)


if __name__ == "__main__":
    sys.exit(main())
