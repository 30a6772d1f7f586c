"""The search end to end on a fake device whose latency is a known function of MACs."""

from __future__ import annotations

import math
import re

import pytest
import torch

from latbench.exceptions import DeviceError, PredictorError, UserInputError
from latbench.search.policy import VERIFY_PAIRS
from latbench.search.search import search

from fakes import MacDevice, MacPredictor, onnx_macs

FAST = dict(fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.85), calib=32, repeats=3, warmup=0, baseline=False,
            front_points=2)


def run(digits, device, **kw):
    d = digits.data
    args = dict(FAST, input_shape=d.input_shape, calib=d.x_val[:64])
    args.update(kw)
    return search(digits.net, device, **args)


def orig_macs(digits) -> int:
    from latbench.data.features import layer_table

    return int(layer_table(digits.net, digits.data.input_shape)["macs"].sum())


def test_over_budget_rounds_tighten_until_the_budget_is_met(digits):
    big = orig_macs(digits)
    # Latency falls slower than MACs (∝ MACs^0.6): any MAC-based prediction is too optimistic.
    dev = MacDevice(overhead_ms=0.0, factor=lambda m: (big / max(m, 1)) ** 0.4)
    res = run(digits, dev, speedup=1.3, predictor=MacPredictor(overhead_ms=0.0))
    first = res.rounds[0]
    assert not first.met and first.measured_ms > res.budget_ms
    assert len(res.rounds) >= 2
    assert res.rounds[1].target_ms < first.target_ms  # tightened by the observed error
    assert res.met and res.measured_ms <= res.budget_ms
    assert res.notes == [] or all("no plan met" not in n for n in res.notes)
    # Every round's measured latency is the device's function of its plan's MACs.
    for r in res.rounds:
        assert r.measured_ms == pytest.approx(dev.latency_ms(r.macs), rel=1e-6)
    assert res.to_dict()["rounds"][0]["index"] == 1


def test_too_conservative_plans_are_loosened(digits):
    big = orig_macs(digits)
    # Latency falls faster than MACs: the first plan lands far under the budget.
    dev = MacDevice(overhead_ms=0.0, factor=lambda m: (max(m, 1) / big) ** 0.5)
    res = run(digits, dev, speedup=1.25, predictor=MacPredictor(overhead_ms=0.0), slack=0.1)
    first = res.rounds[0]
    assert first.met and first.measured_ms < 0.9 * res.budget_ms
    assert len(res.rounds) >= 2 and res.rounds[1].target_ms > first.target_ms
    assert res.met
    assert res.measured_ms > first.measured_ms


def test_layer_costs_measured_on_the_device_need_one_round_when_exact(digits):
    dev = MacDevice()  # linear in MACs: per-layer measured costs add up exactly
    res = run(digits, dev, speedup=1.3, slack=0.1)
    assert res.cost_source.startswith("layers measured")
    assert res.met
    assert res.measured_ms >= 0.9 * res.budget_ms
    assert res.rounds[0].predicted_ms == pytest.approx(res.rounds[0].measured_ms, rel=1e-3)


def test_budget_below_the_fastest_reachable_latency_is_refused_with_that_latency(digits):
    dev = MacDevice()
    with pytest.raises(UserInputError) as info:
        run(digits, dev, budget_ms=0.01, predictor=MacPredictor())
    msg = str(info.value)
    assert "fastest reachable latency" in msg and "\n" not in msg
    fastest = float(re.search(r"about ([0-9.]+) ms measured", msg).group(1))
    original = dev.latency_ms(orig_macs(digits))
    assert 0.01 < fastest < original
    assert dev.calls == 2  # the original, then the fastest plan, to confirm the prediction


def test_a_budget_the_prediction_calls_too_low_is_searched_if_the_device_reaches_it(digits):
    # The predictor (linear in MACs) thinks the fastest plan is slow; the device is faster.
    big = orig_macs(digits)
    dev = MacDevice(overhead_ms=0.0, factor=lambda m: (max(m, 1) / big) ** 0.5)
    pred = MacPredictor(overhead_ms=0.0)
    linear = MacDevice(overhead_ms=0.0)
    with pytest.raises(UserInputError, match="measured") as info:
        run(digits, linear, budget_ms=1e-6, predictor=pred)
    r = float(re.search(r"about ([0-9.e-]+) ms measured", str(info.value)).group(1)) / \
        linear.latency_ms(big)  # the fastest plan's share of the MACs
    speedup = (1 / r) ** 1.25  # beyond what MACs promise (1/r), within the device's (1/r^1.5)
    res = run(digits, dev, speedup=speedup, predictor=pred)
    assert res.met and any("searched" in n for n in res.notes)


@pytest.mark.parametrize("kw, needle", [
    (dict(device="phone"), "trained for device 'phone'"),
    (dict(schema=99), "feature schema 99"),
])
def test_a_predictor_for_another_device_or_schema_is_refused(digits, kw, needle):
    dev = MacDevice()
    with pytest.raises(PredictorError, match=needle):
        run(digits, dev, speedup=1.3, predictor=MacPredictor(**kw))
    assert dev.calls == 0  # refused before any measurement


def test_bad_budgets_are_user_errors(digits):
    for kw in (dict(), dict(budget_ms=1.0, speedup=2.0), dict(budget_ms=-1.0), dict(speedup=0.5)):
        with pytest.raises(UserInputError):
            run(digits, MacDevice(), **kw)


@pytest.mark.parametrize("shape", [(3, 32, 32), (1, 3, 32, 32), (1, 1, 32)])
def test_an_input_shape_the_model_does_not_run_on_is_a_user_error(digits, shape):
    dev = MacDevice()
    with pytest.raises(UserInputError, match="does not run on input .*--input"):
        run(digits, dev, speedup=1.3, input_shape=shape)
    assert dev.calls == 0  # refused before any measurement (not a failed export, exit 1)


def test_device_failure_keeps_the_rounds_so_far(digits):
    big = orig_macs(digits)
    dev = MacDevice(overhead_ms=0.0, factor=lambda m: (big / max(m, 1)) ** 0.4, fail_after=2)
    with pytest.raises(DeviceError) as info:
        run(digits, dev, speedup=1.3, predictor=MacPredictor(overhead_ms=0.0))
    msg = str(info.value)
    assert "went away" in msg and "round 1:" in msg and "search results so far" in msg
    partial = info.value.partial
    assert len(partial["rounds"]) == 1 and math.isfinite(partial["original_ms"])


@pytest.mark.slow
def test_digits_searched_plan_beats_uniform_at_equal_latency(digits):
    """Real accuracy: the knapsack's plan against uniform ranks at the same measured latency."""
    acc = digits.accuracy
    dev = MacDevice()
    from latbench.search.candidates import DEFAULT_FRACTIONS

    res = run(digits, dev, speedup=1.3, fidelity_fn=acc, slack=0.1, fractions=DEFAULT_FRACTIONS,
              baseline=True, front_points=6)
    assert res.met
    assert res.fidelity == pytest.approx(acc(res.model))
    base = res.baseline
    assert base is not None and base["fidelity_at_equal_latency"] is not None
    lat = [d["measured_ms"] for d in base["measured"]]
    assert min(lat) <= res.measured_ms <= max(lat)  # the uniform plans bracket the searched one
    # Searched plan: no worse than uniform ranks at equal latency, with a margin to spare
    # (0.89 against 0.58 on this seed), and not far from the original's 0.93.
    assert res.fidelity >= base["fidelity_at_equal_latency"] + 0.05
    assert res.fidelity >= res.original_fidelity - 0.15
    # The report's front and uniform points carry real accuracy too.
    assert all(0.0 <= p["fidelity"] <= 1.0 for p in res.front + res.uniform)


def test_finetune_callback_is_applied_to_the_final_model(digits):
    seen = []

    def finetune(model):
        seen.append(model)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.0)
        return None

    res = run(digits, MacDevice(), speedup=1.3, finetune=finetune)
    assert seen and seen[0] is res.model
    assert res.fidelity_before_finetune is not None and res.baseline is None
    # The final model owns its weights: fine-tuning it cannot touch the original network.
    ids = {id(p) for p in digits.net.parameters()}
    assert not any(id(p) in ids for p in res.model.parameters())


def test_onnx_macs_of_the_fake_device_counts_convolutions(tmp_path):
    from latbench.compress.export import export_onnx

    conv = torch.nn.Conv2d(4, 6, 3, padding=1, bias=False)
    art = export_onnx(conv, (1, 4, 5, 5), tmp_path / "c.onnx")
    assert onnx_macs(art.path) == 6 * 5 * 5 * 4 * 9


def test_a_searcher_prepares_once_and_answers_several_budgets(digits, monkeypatch):
    import latbench.search.search as mod
    from latbench.search.search import Searcher

    calls = []
    real = mod.generate_candidates
    monkeypatch.setattr(mod, "generate_candidates", lambda *a, **k: calls.append(1) or real(*a, **k))
    d = digits.data
    dev = MacDevice()
    s = Searcher(digits.net, dev, input_shape=d.input_shape, calib=d.x_val[:64],
                 predictor=MacPredictor(), fractions=FAST["fractions"], repeats=3, warmup=0)
    kw = dict(baseline=False, front_points=2)
    loose, tight = s.search(speedup=1.2, **kw), s.search(speedup=2.0, **kw)
    assert len(calls) == 1  # candidates, damages and costs were made once
    assert loose.prepare_seconds > 0 and tight.prepare_seconds == 0.0
    assert loose.met and tight.met
    assert tight.measured_ms < loose.measured_ms
    assert tight.fidelity <= loose.fidelity + 1e-9
    # The same search through the one-budget function gives the same plan.
    again = run(digits, dev, speedup=2.0, predictor=MacPredictor())
    assert again.plan.to_dict() == tight.plan.to_dict()
    with pytest.raises(UserInputError, match="exactly one"):
        s.search()


@pytest.mark.parametrize("over", [1.01, 1.04, 1.09])
def test_a_near_miss_is_measured_again_and_the_lower_median_kept(digits, over):
    # The first timing of the first plan hits a burst of load that puts it just over the budget
    # (within the 10 % slack), whatever plan the knapsack picked: the burst is set from the
    # budget, not from the plan (a fixed +8 % had left some plans under the budget, so the
    # test depended on which plan the trained net gave).
    big = orig_macs(digits)
    dev = MacDevice()
    plain = lambda m: dev.overhead_ms + dev.ms_per_mmac * m / 1e6
    budget = plain(big) / 1.3
    dev.factor = lambda m: over * budget / plain(m) if dev.calls == 2 else 1.0  # call 1: the original
    res = run(digits, dev, speedup=1.3, slack=0.1, predictor=MacPredictor())
    first = res.rounds[0]
    assert res.budget_ms == pytest.approx(budget, rel=1e-9)
    assert dev.log[1][1] == pytest.approx(over * budget, rel=1e-9)  # the burst: a near miss
    assert dev.log[2][0] == dev.log[1][0]  # the same plan, measured again
    # original, round 1, round 1 again; then the final plan verified back to back with the
    # original (O C O C ... O)
    assert dev.calls == 3 + 2 * VERIFY_PAIRS + 1
    assert [m for m, _ in dev.log[3:]] == [big] + [first.macs, big] * VERIFY_PAIRS
    assert first.remeasured == ("plan",)
    assert first.met and first.measured_ms == pytest.approx(dev.latency_ms(first.macs), rel=1e-6)
    assert len(res.rounds) == 1 and res.met
