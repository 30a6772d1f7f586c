"""Runner parsers across the releases people still run: every format each tool printed is
read, anything else is refused with a message that says what latbench reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from latbench.devices.adb import parsers
from latbench.devices.adb.runners import LiteRtBenchmarkModel, TfliteBenchmarkModel
from latbench.exceptions import RunnerOutputError

FIX = Path(__file__).parent / "fixtures"


def read(name: str) -> str:
    return (FIX / name).read_text()


# ------------------------------------------------------------------ onnxruntime_perf_test
def test_ort_2025_summary_with_total_is_read():
    s = parsers.parse_ort_summary(read("ort_perf_test_total.txt"))
    assert s["average_s"] == pytest.approx(98.961997e-3)
    assert s["requests"] == 5 and s["p50_s"] == pytest.approx(0.0995086)
    assert s["first_inference_s"] == pytest.approx(0.196)


def test_ort_first_releases_summary_and_result_file_are_read():
    s = parsers.parse_ort_summary(read("ort_perf_test_early.txt"))
    assert s["average_s"] == pytest.approx(20.3e-3)
    assert s["total_inference_s"] == pytest.approx(0.0812) and s["requests"] == 4
    runs = parsers.parse_ort_result_file(read("ort_perf_test_early_result_file.txt"))
    assert runs == [0.0203, 0.0199, 0.0214, 0.0196]
    parsers.check_ort_result_units(runs, s)  # consistent: no error


def test_ort_vendor_build_total_cpu_usage_is_read():
    text = (read("ort_perf_test_total.txt").replace("Avg CPU usage: 11 %", "Total CPU usage: 382 %")
            .replace("Avg CPU usage:11\n", ""))
    assert parsers.parse_ort_summary(text)["cpu_usage_pct"] == 382


@pytest.mark.parametrize("text,why", [
    ("Mean latency = 12.5 ms over 10 runs\nP50 Latency: 0.0125 s\n", "not supported"),
    ("Session creation time cost: 0.2 s\n", "did not finish"),
])
def test_ort_unknown_summary_is_refused_naming_the_releases_read(text, why):
    with pytest.raises(RunnerOutputError, match=why) as e:
        parsers.parse_ort_summary(text)
    assert "ONNX Runtime 1.0 and later" in str(e.value)


def test_ort_result_file_in_another_unit_is_refused():
    summary = {"average_s": 0.02}
    with pytest.raises(RunnerOutputError, match=r"×1\.02e\+09\): this build writes its result file in another unit"):
        parsers.check_ort_result_units([2.0e7, 2.1e7], summary)
    parsers.check_ort_result_units([0.019, 0.021], summary)


# ------------------------------------------------------------------------ benchmark_model
@pytest.mark.parametrize("name,expected", [
    ("tflite_1_12_benchmark_model.txt",
     {"warmup_avg_s": 0.146161, "init_s": 0.004452, "inference_avg_s": 0.137722}),
    ("tflite_app_logcat_1_x.txt",
     {"warmup_avg_s": 0.091471, "init_s": 0.004108, "inference_avg_s": 0.0806601}),
    ("tflite_benchmark_model_mobilenet.txt",
     {"init_s": 0.017187, "first_inference_s": 3.512391, "warmup_avg_s": 3.51239,
      "inference_avg_s": 2.95034}),
    ("litert_benchmark_model.txt",
     {"init_s": 0.03841, "first_inference_s": 0.01482, "warmup_avg_s": 0.01482,
      "inference_avg_s": 0.01225, "inference_min_s": 0.01211, "inference_max_s": 0.01239}),
])
def test_tflite_summaries_of_every_generation(name, expected):
    got = parsers.parse_tflite_summary(read(name))
    assert got == pytest.approx(expected)


def test_tflite_1_12_stat_lines_without_prefix_give_the_runs():
    warm, timed = parsers.parse_tflite_stats(read("tflite_1_12_benchmark_model.txt"))
    assert warm.count == 1 and warm.curr == 146161
    assert timed.count == 50 and timed.avg == 137722 and timed.percentiles == {}


def test_op_profile_timings_lines_are_not_timing_phases():
    # "Timings (microseconds): count=50 ..." closes every op-profile table; it is not a run.
    stats = parsers.parse_tflite_stats(read("tflite_2_8_op_profiling_mobilenet.txt"))
    assert [s.count for s in stats] == [1, 50]
    assert stats[-1].curr == 2913402


def test_litert_tool_stat_lines_with_percentiles_give_three_exact_runs():
    stats = parsers.parse_tflite_stats(read("litert_benchmark_model.txt"))
    assert [s.count for s in stats] == [1, 3]
    assert parsers.tflite_stat_samples_us(stats[-1]) == [12251, 12390, 12107]


def test_unknown_summary_is_refused_naming_what_is_read():
    with pytest.raises(RunnerOutputError, match="TensorFlow Lite 1.12 and later"):
        parsers.parse_tflite_summary("count=3 first=1 curr=2 min=1 max=3 avg=2 std=1\n"
                                     "Mean: 2 us\n")


def test_litert_tool_before_july_2025_has_no_summary_and_is_still_read():
    text = read("litert_benchmark_model.txt")
    text = text[:text.index("INFO: \n========== BENCHMARK")]
    res = LiteRtBenchmarkModel("/x/benchmark_model").parse([text], [None], warmup=1, repeats=3)
    assert res.samples_s == pytest.approx([0.012251, 0.012390, 0.012107])
    with pytest.raises(RunnerOutputError):
        TfliteBenchmarkModel("/x/benchmark_model").parse([text], [None], warmup=1, repeats=3)


@pytest.mark.parametrize("name,kind", [("benchmark_model_help_classic.txt", "tflite"),
                                       ("benchmark_model_help_litert.txt", "litert")])
def test_generation_is_told_from_help(name, kind):
    assert parsers.detect_benchmark_model(read(name)) == kind


def test_help_of_something_else_is_refused():
    with pytest.raises(RunnerOutputError, match="neither the classic"):
        parsers.detect_benchmark_model("Usage: onnxruntime_perf_test [options...] model_path\n")


def test_ignored_flags_are_refused():
    with pytest.raises(RunnerOutputError, match="ignored --use_npu=true"):
        parsers.check_consumed_flags("WARN: Unconsumed cmdline flags: --use_npu=true\n",
                                     "benchmark_model (TFLite)")
    parsers.check_consumed_flags(read("tflite_benchmark_model_mobilenet.txt"), "x")


# ------------------------------------------------------------------ per-operator profiles
def test_tf_2_8_profile_with_start_column_is_read_in_run_order():
    rows = parsers.parse_op_profile(read("tflite_2_8_op_profiling_mobilenet.txt"))
    assert len(rows) == 31  # the regular runs' table, not the initialisation's
    first = rows[0]
    assert first.node_type == "CONV_2D" and first.node_index == 0 and not first.delegated
    assert first.first_s == pytest.approx(87.754e-3) and first.avg_s == pytest.approx(60.957e-3)
    assert rows[27].node_type == "AVERAGE_POOL_2D" and rows[27].node_index == 27
    assert rows[-1].name == "[MobilenetV1/Predictions/Reshape_1]:30"
    assert all(r.times_called == 1 for r in rows)


def test_xnnpack_profile_without_start_column_marks_delegate_rows():
    rows = parsers.parse_op_profile(read("tflite_xnnpack_op_profiling_excerpt.txt"))
    assert [r.delegated for r in rows[:3]] == [False, True, True]
    conv = rows[1]
    assert conv.node_type == "Convolution (NHWC, QC8) IGEMM" and conv.node_index == 0
    assert conv.avg_s == pytest.approx(0.407e-3)
    assert rows[2].times_called == 13  # several partitions merged under one name
    assert rows[-1].node_type == "Add (ND, QS8)"


def test_csv_profile_is_read_with_commas_in_the_node_type():
    rows = parsers.parse_op_profile(read("tflite_op_profiling_csv.txt"))
    assert [r.node_type for r in rows] == ["TRANSPOSE", "Convolution (NHWC, F32) IGEMM",
                                           "Fully Connected (NC, F32) GEMM"]
    assert rows[0].name == "[serving_default_args_0, transposed]:0"
    assert rows[1].delegated and rows[1].avg_s == pytest.approx(0.3987e-3)


def test_litert_profiler_summary_is_read_and_counts_become_per_run():
    text = read("litert_benchmark_model.txt")
    rows = parsers.parse_op_profile(text)
    assert [r.name for r in rows] == ["[Builtin]:3", "[Delegate]:2", "[Delegate]:0"]
    assert rows[1].node_type == "Convolution (NHWC, F32) IGEMM" and rows[1].delegated
    assert rows[0].node_index == 3 and not rows[0].delegated
    assert rows[0].times_called == 3  # as printed: over every run
    per_run = LiteRtBenchmarkModel("/x/benchmark_model").parse_profile(text, runs=3)
    assert [r.times_called for r in per_run] == [1, 1, 1]


def test_output_without_profile_gives_no_rows_and_the_runner_refuses():
    assert parsers.parse_op_profile(read("tflite_benchmark_model_mobilenet.txt")) == []
    with pytest.raises(RunnerOutputError, match="no 'Operator-wise Profiling Info'"):
        TfliteBenchmarkModel("/x/benchmark_model").parse_profile(
            read("tflite_benchmark_model_mobilenet.txt"), runs=50)


def test_profile_table_of_an_unknown_layout_is_refused():
    text = ("Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Run Order ==============================\n"
            "\t[op]\t[ms]\n\tCONV_2D\t1.0\n")
    with pytest.raises(RunnerOutputError, match="header"):
        parsers.parse_op_profile(text)
