"""Measurement statistics are numpy's statistics of the raw samples."""

from __future__ import annotations

import numpy as np
import pytest

from latbench.measure.measurement import DEFAULT_CONFIDENCE_THRESHOLD, Measurement
from latbench.measure.spec import BenchSpec, DeviceInfo

SPEC = BenchSpec("ab" * 32, "cpu", "onnxruntime", "1.0", "CPUExecutionProvider", 2, (1, 3, 8, 8))
INFO = DeviceInfo("cpu", "cpu", model="test cpu")


def make(samples_s, **kw) -> Measurement:
    return Measurement(SPEC, tuple(samples_s), INFO, INFO, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_statistics_match_numpy_in_ms(seed: int) -> None:
    rng = np.random.default_rng(seed)
    s = rng.lognormal(mean=-5, sigma=0.3, size=int(rng.integers(5, 200)))
    m = make(s)
    ms = s * 1e3
    assert m.samples_ms == pytest.approx(ms.tolist())
    assert m.median_ms == pytest.approx(np.median(ms))
    assert m.mean_ms == pytest.approx(np.mean(ms))
    assert m.std_ms == pytest.approx(np.std(ms))
    assert m.min_ms == pytest.approx(np.min(ms))
    assert m.p10_ms == pytest.approx(np.percentile(ms, 10))
    assert m.p90_ms == pytest.approx(np.percentile(ms, 90))
    q75, q25 = np.percentile(ms, [75, 25])
    assert m.iqr_ms == pytest.approx(q75 - q25)
    assert m.relative_iqr == pytest.approx((q75 - q25) / np.median(ms))


def test_order_statistics_are_ordered() -> None:
    m = make(np.random.default_rng(7).exponential(0.01, 101))
    assert m.min_ms <= m.p10_ms <= m.median_ms <= m.p90_ms
    assert m.iqr_ms >= 0


def test_confident_when_relative_iqr_below_threshold() -> None:
    tight = make([0.010, 0.0101, 0.0100, 0.0099, 0.0100])
    loose = make([0.010, 0.020, 0.005, 0.015, 0.030])
    assert tight.confident and tight.relative_iqr < DEFAULT_CONFIDENCE_THRESHOLD
    assert not loose.confident


def test_custom_threshold_changes_the_confidence_verdict() -> None:
    s = [0.010, 0.011, 0.012, 0.013, 0.014]  # relative IQR = 0.002/0.012 ≈ 0.167
    assert not make(s).confident
    assert make(s, confidence_threshold=0.2).confident


def test_zero_median_is_never_confident() -> None:
    m = make([0.0, 0.0, 0.0])
    assert m.relative_iqr == float("inf") and not m.confident


def test_empty_samples_are_refused() -> None:
    with pytest.raises(ValueError):
        make([])


def test_throttled_reads_state_before_and_after() -> None:
    hot = DeviceInfo("p", "adb", state={"throttled": True})
    assert Measurement(SPEC, (0.01,), INFO, hot).throttled
    assert not make([0.01]).throttled


def test_summary_and_dict_round_trip() -> None:
    m = make([0.01, 0.02, 0.03], extra={"stop_reason": "repeats"})
    d = m.to_dict()
    assert d["median_ms"] == pytest.approx(20.0) and d["n_samples"] == 3
    back = Measurement.from_dict(d)
    assert back == m
    assert back.extra == {"stop_reason": "repeats"}
    assert back.summary() == m.summary()
