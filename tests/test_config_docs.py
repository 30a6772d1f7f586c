"""docs/CONFIG.md documents every key sweep.toml and devices.toml accept (and no others)."""

from __future__ import annotations

import re
from pathlib import Path

from latbench.bench.sweep import _OPTION_TYPES
from latbench.devices.adb.device import PROFILE_OPTIONS
from latbench.devices.profiles import COMMON_OPTIONS, KIND_OPTIONS

DOC = (Path(__file__).resolve().parents[1] / "docs" / "CONFIG.md").read_text()


def _section(title: str) -> str:
    start = DOC.index(title)
    nxt = DOC.find("\n## ", start + 1)
    return DOC[start:nxt if nxt > 0 else None]


def _keys(text: str) -> set[str]:
    """First-column keys of the tables in ``text`` (`a`, `b` in one cell count as two)."""
    out: set[str] = set()
    for line in text.splitlines():
        if line.startswith("| `"):
            out |= set(re.findall(r"`([a-z_]+)`", line.split("|")[1]))
    return out


def test_every_sweep_toml_key_is_documented():
    documented = _keys(_section("## `sweep.toml`"))
    assert set(_OPTION_TYPES) | {"name", "input", "inputs", "methods", "ranks"} == documented


def test_every_devices_toml_key_is_documented():
    documented = _keys(_section("## `devices.toml`"))
    accepted = set(COMMON_OPTIONS) | set(PROFILE_OPTIONS)
    for opts in KIND_OPTIONS.values():
        accepted |= set(opts or ())
    assert accepted == documented
