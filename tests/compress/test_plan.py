"""Plan: JSON round trip, stable hash, rule matching, clear errors."""

import json

import pytest

from latbench.compress.plan import Plan, Rule
from latbench.compress.ranks import parse_rank_spec
from latbench.exceptions import UserInputError


def test_plan_round_trips_through_json_and_keeps_its_hash(tmp_path):
    plan = Plan.from_layers({"layer1.0.conv1": ("tucker2", (8, 16)), "fc": ("svd", 32),
                             "layer2.*": ("cp", 0.25)})
    path = tmp_path / "plan.json"
    plan.save(path)
    again = Plan.load(path)
    assert again == plan
    assert again.hash == plan.hash
    assert json.loads(path.read_text())["layers"]["layer1.0.conv1"] == {"method": "tucker2", "rank": [8, 16]}


def test_hash_changes_with_content():
    assert Plan.uniform("svd", 0.5).hash != Plan.uniform("svd", 0.25).hash
    assert Plan.uniform("svd", 0.5).hash != Plan.uniform("tucker2", 0.5).hash


@pytest.mark.parametrize("text, stored", [("0.5", 0.5), ("16", 16), ("16,32", (16, 32)),
                                          ("ratio=3", "ratio=3"), ("evbmf:0.6", "evbmf:0.6")])
def test_parsed_rank_specs_are_stored_naturally(text, stored):
    assert Plan.uniform("tucker2", parse_rank_spec(text)).rules[0].rank == stored


def test_exact_names_beat_globs_and_first_glob_wins():
    plan = Plan((Rule("*", "svd", 0.5), Rule("layer1.conv", "tucker2", 0.25), Rule("layer*", "cp", 0.1)))
    assert plan.rule_for("layer1.conv").method == "tucker2"
    assert plan.rule_for("layer2.conv").method == "svd"
    assert Plan((Rule("a.*", "cp", 1),)).rule_for("b.x") is None


def test_short_forms_are_accepted():
    plan = Plan.from_dict({"conv1": ["svd", 4], "fc": "keep"})
    assert plan.rule_for("conv1").rank == 4
    assert plan.rule_for("fc").method == "keep"


@pytest.mark.parametrize("doc", [{"layers": {"x": {"rank": 3}}}, {"layers": {"x": {"method": "svd"}}},
                                 {"layers": {"x": {"method": "svd", "rank": None}}}, {"layers": []}])
def test_malformed_plans_are_clear_errors(doc):
    with pytest.raises(UserInputError):
        Plan.from_dict(doc)


def test_missing_or_broken_plan_file(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        Plan.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserInputError, match="not valid JSON"):
        Plan.load(bad)
