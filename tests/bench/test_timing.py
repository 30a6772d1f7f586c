"""The sampling loop: warm-up, fixed repeats, adaptive batches, caps, progress."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import numpy as np
import pytest

from latbench.measure.measurement import Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo
from latbench.measure.timing import Sampling, relative_iqr, sample, wall_clock
from latbench.exceptions import UserInputError


class Feed:
    """A fake ``timed_run`` returning the given latencies in order, then repeating the last."""

    def __init__(self, values: list[float]) -> None:
        self.values = values
        self.calls = 0

    def __call__(self) -> float:
        v = self.values[min(self.calls, len(self.values) - 1)]
        self.calls += 1
        return v


def noisy(n: int, seed: int = 0) -> list[float]:
    return np.random.default_rng(seed).uniform(0.005, 0.015, n).tolist()


def fake_clock(step_ns: int) -> "Iterator[int]":
    t = 0
    while True:
        yield t
        t += step_ns


def test_fixed_mode_takes_exactly_warmup_plus_repeats_runs() -> None:
    feed = Feed([1.0] * 3 + [0.01 * i for i in range(1, 8)])
    r = sample(feed, warmup=3, repeats=7)
    assert feed.calls == 10
    assert r.warmup_s == (1.0, 1.0, 1.0)
    assert r.samples_s == tuple(0.01 * i for i in range(1, 8))
    assert r.stop_reason == "repeats"
    assert r.elapsed_s >= 0


def test_fixed_mode_ignores_confidence() -> None:
    feed = Feed(noisy(40))
    r = sample(feed, warmup=0, repeats=40, sampling=Sampling(adaptive=False, max_repeats=5))
    assert len(r.samples_s) == 40 and r.stop_reason == "repeats"


def test_progress_is_called_after_each_timed_sample() -> None:
    calls: list[tuple[int, int]] = []
    sample(Feed([0.01]), warmup=2, repeats=4, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_adaptive_stops_at_minimum_when_already_confident() -> None:
    feed = Feed([0.01])
    r = sample(feed, warmup=1, repeats=5, sampling=Sampling(adaptive=True, batch=3))
    assert len(r.samples_s) == 5 and r.stop_reason == "confident"


def test_adaptive_adds_batches_until_confident() -> None:
    # 6 noisy samples, then steady ones: the IQR shrinks as steady samples dominate.
    values = noisy(6) + [0.010] * 200
    r = sample(Feed(values), warmup=0, repeats=6, sampling=Sampling(adaptive=True, batch=4))
    n = len(r.samples_s)
    assert r.stop_reason == "confident"
    assert n > 6 and (n - 6) % 4 == 0  # whole batches after the minimum
    assert relative_iqr(r.samples_s) < 0.05
    assert relative_iqr(r.samples_s[: n - 4]) >= 0.05  # one batch fewer was not enough


def test_adaptive_stops_at_max_repeats_when_never_confident() -> None:
    r = sample(Feed(noisy(500)), warmup=0, repeats=10,
               sampling=Sampling(adaptive=True, batch=7, max_repeats=30, max_time_s=1e9))
    assert len(r.samples_s) == 30 and r.stop_reason == "max_repeats"


def test_adaptive_stops_at_time_cap() -> None:
    clock = fake_clock(step_ns=1_000_000_000)  # every clock read advances 1 s
    r = sample(Feed(noisy(500)), warmup=0, repeats=10, clock=lambda: next(clock),
               sampling=Sampling(adaptive=True, batch=5, max_repeats=1000, max_time_s=2.5))
    assert r.stop_reason == "time_cap"
    assert 10 <= len(r.samples_s) < 1000


def test_minimum_repeats_are_taken_even_past_the_time_cap() -> None:
    clock = fake_clock(step_ns=10**12)
    r = sample(Feed(noisy(50)), warmup=0, repeats=12, clock=lambda: next(clock),
               sampling=Sampling(adaptive=True, max_time_s=0.001))
    assert len(r.samples_s) == 12 and r.stop_reason == "time_cap"


def test_adaptive_verdict_agrees_with_measurement_confidence() -> None:
    r = sample(Feed(noisy(6, seed=3) + [0.02] * 100), warmup=0, repeats=6,
               sampling=Sampling(adaptive=True, batch=2))
    spec = BenchSpec("0" * 64, "cpu", "ort", "1", "CPU", 1, (1,))
    m = Measurement(spec, r.samples_s, DeviceInfo("cpu", "cpu"), DeviceInfo("cpu", "cpu"))
    assert r.stop_reason == "confident" and m.confident


@pytest.mark.parametrize("kw", [dict(warmup=-1, repeats=1), dict(warmup=0, repeats=0)])
def test_bad_counts_are_user_errors(kw: dict) -> None:
    with pytest.raises(UserInputError):
        sample(Feed([0.01]), **kw)


def test_max_repeats_below_repeats_is_a_user_error() -> None:
    with pytest.raises(UserInputError, match="max_repeats"):
        sample(Feed([0.01]), warmup=0, repeats=20, sampling=Sampling(adaptive=True, max_repeats=5))


@pytest.mark.parametrize("kw", [dict(max_repeats=0), dict(max_time_s=0), dict(batch=0),
                                dict(threshold=0)])
def test_sampling_validates_its_fields(kw: dict) -> None:
    with pytest.raises(UserInputError):
        Sampling(**kw)


def test_collector_is_paused_during_timing_and_restored() -> None:
    seen: list[bool] = []
    assert gc.isenabled()
    sample(lambda: seen.append(gc.isenabled()) or 0.01, warmup=1, repeats=3)
    assert seen == [False] * 4
    assert gc.isenabled()


def test_collector_is_restored_when_the_run_raises() -> None:
    def boom() -> float:
        raise RuntimeError("run failed")

    with pytest.raises(RuntimeError):
        sample(boom, warmup=0, repeats=1)
    assert gc.isenabled()


def test_wall_clock_reports_clock_difference_in_seconds() -> None:
    ticks = iter([100, 2_500_100])
    calls: list[int] = []
    timed = wall_clock(lambda: calls.append(1), clock=lambda: next(ticks))
    assert timed() == pytest.approx(0.0025)
    assert calls == [1]


def test_relative_iqr_matches_numpy_and_handles_edges() -> None:
    s = noisy(50, seed=9)
    q75, q50, q25 = np.percentile(s, [75, 50, 25])
    assert relative_iqr(s) == pytest.approx((q75 - q25) / q50)
    assert relative_iqr([]) == float("inf")
    assert relative_iqr([0.0, 0.0]) == float("inf")


def test_result_extra_is_json_ready() -> None:
    import json

    r = sample(Feed([0.01]), warmup=2, repeats=2)
    d = json.loads(json.dumps(r.extra()))
    assert d["stop_reason"] == "repeats" and len(d["warmup_s"]) == 2


def test_spread_guard_is_adaptive_only_where_the_device_samples_in_process():
    from latbench.bench.run import spread_guard
    from latbench.devices.cpu import CpuDevice

    policy = spread_guard(CpuDevice(threads=1), 20)
    assert policy is not None and policy.adaptive and policy.max_repeats == 200

    from latbench.devices.base import Capabilities

    class FixedCount:  # like an adb runner: it says it takes a fixed count of runs
        capabilities = Capabilities(adaptive_sampling=False)

        def measure(self, artifact, spec, *, progress=None, sampling=None):
            raise AssertionError("not called")

    assert spread_guard(FixedCount(), 20) is None
