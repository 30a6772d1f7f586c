"""What a search writes: report.html is HTML (tables, the plot inline), report.md the same
content, search.json every key; and the fidelity check on its own."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest

from latbench.search.assembly import FRONT_SHORTFALL, fidelity_check
from latbench.search.report import write_search_outputs
from latbench.search.search import search

from fakes import MacDevice, MacPredictor


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[dict] = []
        self.text: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs.append(dict(attrs))
        if tag not in ("meta", "img", "br"):
            self.open.append(tag)

    def handle_endtag(self, tag):
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
        self.open.pop()

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def written(digits, tmp_path_factory):
    d = digits.data
    res = search(digits.net, MacDevice(speed=lambda k: 1.5 if k >= 3 else 1.0), speedup=1.3,
                 input_shape=d.input_shape, calib=d.x_val[:64], predictor=MacPredictor(),
                 fractions=(0.1, 0.2, 0.3, 0.5, 0.7, 0.85), repeats=3, warmup=0, front_points=4)
    out = tmp_path_factory.mktemp("report")
    return res, write_search_outputs(res, out), out


def test_report_html_is_html_with_tables_and_the_plot_inline(written):
    res, paths, _ = written
    text = open(paths["html"]).read()
    parser = Tags()
    parser.feed(text)
    parser.close()
    assert parser.open == []  # every element closed, in order
    assert "pre" not in parser.tags  # not Markdown pasted in a <pre>
    assert parser.tags.count("table") >= 5  # verification, rounds, baseline, choices, front, uniform
    assert parser.tags.count("h2") >= 5 and "h1" in parser.tags
    th = " ".join(parser.text)
    for heading in ("Rounds", "Verification back to back with the original",
                    "Against uniform ranks at the same measured latency", "Per-layer choices",
                    "Latency-fidelity Pareto front", "Notes"):
        assert heading in th
    imgs = [a for t, a in zip(parser.tags, parser.attrs) if t == "img"]
    assert len(imgs) == 1 and imgs[0]["src"].startswith("data:image/png;base64,")
    png = base64.b64decode(imgs[0]["src"].split(",", 1)[1])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert "**" not in text and "|---" not in text  # no Markdown left in it
    # The rows are the result's: one per round, the verified latency in the summary.
    rows_of_rounds = th.split("Rounds")[1]
    assert all(f"{r.measured_ms:.4g}" in rows_of_rounds for r in res.rounds)
    assert f"{res.measured_ms:.4g}" in th


def test_report_md_says_the_same_in_markdown(written):
    res, paths, _ = written
    md = open(paths["markdown"]).read()
    assert md.startswith("# Rank search: ")
    assert "## Rounds" in md and "## Verification back to back with the original" in md
    assert md.count("| round |") == 1 and f"| {len(res.rounds)} |" in md
    assert "speed moved during the search" in md  # the drift note reaches the report


def test_search_json_keeps_every_key_and_adds_the_verification(written):
    res, paths, _ = written
    doc = json.loads(open(paths["json"]).read())
    for key in ("budget_ms", "predicted_ms", "measured_ms", "met", "rounds", "fidelity", "plan",
                "original_ms", "speedup", "notes", "uniform_baseline", "front", "uniform",
                "original_ms_start", "measured_ms_at_start", "verification", "original_drift",
                "fidelity_check", "cost_check", "budget_speedup", "requested_speedup"):
        assert key in doc, key
    assert doc["speedup"] == pytest.approx(doc["original_ms"] / doc["measured_ms"])
    assert doc["original_drift"]["moved"] == pytest.approx(0.5)
    assert {"original_ms", "judged_ms", "remeasured"} <= set(doc["rounds"][0])


FRONT = [{"predicted_ms": 5.0, "fidelity": 0.6}, {"predicted_ms": 8.0, "fidelity": 0.9}]
UNIFORM = [{"predicted_ms": 7.0, "fidelity": 0.7, "method": "svd"}]


@pytest.mark.parametrize("fid, front_flag, uniform_flag", [
    (0.88, False, False), (0.9 - FRONT_SHORTFALL * 1.01, True, False), (0.65, True, True),
])
def test_the_fidelity_check_against_the_front_and_the_predicted_uniform(fid, front_flag, uniform_flag):
    doc, notes = fidelity_check(fid, 1.0, FRONT, UNIFORM, None, budget_ms=8.5)
    assert doc["front_fidelity_at_budget"] == 0.9
    assert doc["worse_than_front"] is front_flag and doc["worse_than_uniform"] is uniform_flag
    assert doc["uniform_source"] == "predicted within the budget, not measured"
    assert len(notes) == front_flag + uniform_flag


def test_the_fidelity_check_prefers_the_measured_baseline():
    doc, notes = fidelity_check(0.8, 1.0, FRONT, UNIFORM, {"fidelity_at_equal_latency": 0.85},
                                budget_ms=8.5)
    assert doc["uniform_fidelity"] == 0.85 and doc["uniform_source"] == "measured at equal latency"
    assert doc["worse_than_uniform"] and any("uniform-rank baseline's 0.85" in n for n in notes)


def test_the_fidelity_check_without_a_front_point_within_the_budget_says_nothing():
    doc, notes = fidelity_check(0.1, 1.0, FRONT, UNIFORM, None, budget_ms=4.0)
    assert doc["front_fidelity_at_budget"] is None and doc["uniform_fidelity"] is None
    assert not doc["worse_than_front"] and not doc["worse_than_uniform"] and notes == []


def test_search_json_is_strict_json_when_a_figure_is_undefined(written, tmp_path):
    # An undefined figure (NaN fidelity of a degenerate model) is null, not a bare NaN token
    # that jq and JavaScript reject.
    import dataclasses

    res, _, _ = written
    paths = write_search_outputs(dataclasses.replace(res, fidelity=float("nan")), tmp_path)

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    doc = json.loads(open(paths["json"]).read(), parse_constant=refuse)
    assert doc["fidelity"] is None and doc["measured_ms"] == pytest.approx(res.measured_ms)
