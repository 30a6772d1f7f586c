"""Runner output parsers against verbatim outputs of onnxruntime_perf_test and benchmark_model."""

from __future__ import annotations

from pathlib import Path

import pytest

from latbench.devices.adb import parsers
from latbench.devices.adb.parsers import TfliteStat
from latbench.exceptions import RunnerOutputError

FIX = Path(__file__).parent / "fixtures"


def read(name: str) -> str:
    return (FIX / name).read_text()


def test_ort_summary_converts_ms_and_s_to_seconds():
    s = parsers.parse_ort_summary(read("ort_perf_test_acl.txt"))
    assert s["average_s"] == pytest.approx(17.735e-3)
    assert s["first_inference_s"] == pytest.approx(20e-3)
    assert s["session_creation_s"] == pytest.approx(0.0273071)
    assert s["p50_s"] == pytest.approx(0.0167086)
    assert s["p999_s"] == pytest.approx(0.0232702)
    assert s["min_s"] == pytest.approx(0.0159831)
    assert s["requests"] == 8
    assert s["peak_working_set_bytes"] == 35299328


def test_ort_summary_ignores_provider_banner_lines():
    s = parsers.parse_ort_summary(read("ort_perf_test_k1.txt"))
    assert s["average_s"] == pytest.approx(82.3382e-3)
    assert s["p90_s"] == pytest.approx(0.0838817)
    assert s["inferences_per_s"] == pytest.approx(12.1435)


def test_ort_summary_without_average_is_an_error():
    with pytest.raises(RunnerOutputError, match="Average inference time cost"):
        parsers.parse_ort_summary("Run failed:Load model from x failed\n")


def test_ort_result_file_gives_per_run_seconds_in_run_order():
    samples = parsers.parse_ort_result_file(read("ort_perf_test_result_file.txt"))
    assert samples == [0.0167086, 0.0159831, 0.0232702, 0.0161]


def test_ort_result_file_orders_by_run_index_and_allows_commas_in_model_name():
    text = "a,b,0.2,1,2,1\na,b,0.1,1,2,0\n"
    assert parsers.parse_ort_result_file(text) == [0.1, 0.2]


def test_ort_result_file_without_runs_is_an_error():
    with pytest.raises(RunnerOutputError):
        parsers.parse_ort_result_file("\nMin Latency: 0.1 s\n")


def test_tflite_stats_reads_warmup_and_timed_lines_with_scientific_avg():
    stats = parsers.parse_tflite_stats(read("tflite_benchmark_model_mobilenet.txt"))
    assert [s.count for s in stats] == [1, 50]
    warm, timed = stats
    assert warm.curr == 3512391 and warm.first is None
    assert timed.first == 2990275 and timed.curr == 2913402
    assert timed.min == 2727568 and timed.max == 3189954
    assert timed.avg == pytest.approx(2.95034e6) and timed.std == 109798


def test_tflite_stats_reads_logcat_prefix_and_percentiles():
    (stat,) = parsers.parse_tflite_stats(read("tflite_benchmark_model_logcat.txt"))
    assert stat.count == 25 and stat.avg == 145528
    assert stat.percentiles == {"p5": 140545, "median": 141253, "p95": 187533}


@pytest.mark.parametrize("name,init,first,warm,inf", [
    ("tflite_benchmark_model_mobilenet.txt", 17187, 3512391, 3.51239e6, 2.95034e6),
    ("tflite_benchmark_model_yolov5.txt", 16242, 360262, 304586, 249684),
    ("tflite_benchmark_model_logcat.txt", 92318, 187533, 211669, 145528),
])
def test_tflite_summary_converts_microseconds_to_seconds(name, init, first, warm, inf):
    s = parsers.parse_tflite_summary(read(name))
    assert s["init_s"] == pytest.approx(init * 1e-6)
    assert s["first_inference_s"] == pytest.approx(first * 1e-6)
    assert s["warmup_avg_s"] == pytest.approx(warm * 1e-6)
    assert s["inference_avg_s"] == pytest.approx(inf * 1e-6)


def test_tflite_summary_missing_is_an_error():
    with pytest.raises(RunnerOutputError, match="Inference timings"):
        parsers.parse_tflite_summary("count=1 curr=5\n")


def test_tflite_short_forms_give_exact_runs():
    one, same = parsers.parse_tflite_stats("count=1 curr=3512391\ncount=3 curr=7(all same)\n")
    assert parsers.tflite_stat_samples_us(one) == [3512391]
    assert parsers.tflite_stat_samples_us(same) == [7, 7, 7]


@pytest.mark.parametrize("runs", [[5, 3, 4], [3, 5, 4], [3, 4, 5], [5, 4, 3], [4, 9, 4],
                                  [1000, 1234, 1100], [2, 7]])
def test_tflite_up_to_three_runs_are_reconstructed_in_order(runs):
    n = len(runs)
    avg = sum(runs) / n
    line = (f"count={n} first={runs[0]} curr={runs[-1]} min={min(runs)} max={max(runs)} "
            f"avg={avg:g} std=1")
    (stat,) = parsers.parse_tflite_stats(line)
    assert parsers.tflite_stat_samples_us(stat) == pytest.approx(runs, rel=1e-5)


def test_tflite_more_than_three_runs_are_not_guessed():
    (stat,) = parsers.parse_tflite_stats(read("tflite_benchmark_model_yolov5.txt"))
    with pytest.raises(RunnerOutputError, match="at most 3"):
        parsers.tflite_stat_samples_us(stat)


def test_tflite_middle_run_uses_median_when_ends_are_extremes():
    stat = TfliteStat(count=3, curr=9.0, first=1.0, min=1.0, max=9.0, avg=None,
                      percentiles={"median": 4.0})
    assert parsers.tflite_stat_samples_us(stat) == [1.0, 4.0, 9.0]
