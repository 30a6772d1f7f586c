"""A compression plan (layer-name patterns → method and rank) and its JSON form.

A plan is an ordered list of rules. For each decomposable layer the first rule whose
pattern matches the layer's qualified name wins; an exact name beats any glob. The
method ``keep`` leaves a layer alone (useful to exempt a layer from a later ``*`` rule).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from latbench.exceptions import UserInputError

__all__ = ["Plan", "Rule", "RankLike", "KEEP"]

#: A rank as a user may spell it: 16, (16, 32), 0.5, "ratio=3", "evbmf", "evbmf:0.6".
RankLike = Union[int, float, str, tuple[int, ...]]

KEEP = "keep"


def _normalise_rank(rank: Any) -> RankLike:
    from latbench.compress.ranks import RankSpec

    if isinstance(rank, RankSpec):  # keep JSON natural: 0.5, 16, [16, 32], "ratio=3", "evbmf:0.6"
        if rank.kind == "fraction":
            return float(rank.value)  # type: ignore[arg-type]
        if rank.kind == "absolute":
            vals = tuple(int(v) for v in rank.value)  # type: ignore[union-attr]
            return vals[0] if len(vals) == 1 else vals
        return str(rank)
    if isinstance(rank, (list, tuple)):
        return tuple(int(r) for r in rank)
    if isinstance(rank, bool) or rank is None:
        raise UserInputError(f"bad rank {rank!r}: give an int, a tuple, a fraction, 'ratio=X' or 'evbmf'")
    if isinstance(rank, (int, float, str)):
        return rank
    raise UserInputError(f"bad rank {rank!r}: give an int, a tuple, a fraction, 'ratio=X' or 'evbmf'")


@dataclass(frozen=True)
class Rule:
    """One plan entry: layers matching ``pattern`` get ``method`` at ``rank``."""

    pattern: str
    method: str
    rank: RankLike = 0.5
    options: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def matches(self, name: str) -> bool:
        return name == self.pattern or fnmatch.fnmatchcase(name, self.pattern)

    @property
    def exact(self) -> bool:
        return not any(c in self.pattern for c in "*?[")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"method": self.method}
        if self.method != KEEP:
            d["rank"] = list(self.rank) if isinstance(self.rank, tuple) else self.rank
        if self.options:
            d["options"] = dict(self.options)
        return d


@dataclass(frozen=True)
class Plan:
    """An ordered, immutable list of :class:`Rule`; JSON round-trips and has a stable hash."""

    rules: tuple[Rule, ...]

    @classmethod
    def uniform(cls, method: str, rank: RankLike, layers: str = "*", **options: Any) -> "Plan":
        """Every layer matching ``layers`` gets ``method`` at ``rank``."""
        return cls((Rule(layers, method, _normalise_rank(rank), dict(options)),))

    @classmethod
    def from_layers(cls, choices: Mapping[str, tuple[str, RankLike]]) -> "Plan":
        """A per-layer plan from ``{layer name: (method, rank)}`` (what a search returns)."""
        return cls(tuple(Rule(n, m, _normalise_rank(r)) for n, (m, r) in choices.items()))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Plan":
        """Read ``{"layers": {pattern: {"method": m, "rank": r}}}``.

        The ``"layers"`` wrapper may be omitted, and an entry may be a ``[method, rank]`` pair.

        Raises
        ------
        UserInputError
            If an entry has no method or a malformed rank.
        """
        layers = data.get("layers", data) if isinstance(data, Mapping) else None
        if not isinstance(layers, Mapping):
            raise UserInputError("a plan is a JSON object {\"layers\": {pattern: {\"method\": ..., \"rank\": ...}}}")
        rules = []
        for pattern, entry in layers.items():
            if isinstance(entry, (list, tuple)) and len(entry) == 2:
                entry = {"method": entry[0], "rank": entry[1]}
            if isinstance(entry, str):
                entry = {"method": entry}
            if not isinstance(entry, Mapping) or "method" not in entry:
                raise UserInputError(
                    f"plan entry for {pattern!r} needs a method, e.g. {{\"method\": \"tucker2\", \"rank\": 0.5}}"
                )
            method = str(entry["method"])
            if method != KEEP and "rank" not in entry:
                raise UserInputError(f"plan entry for {pattern!r} needs a rank")
            rank = _normalise_rank(entry.get("rank", 1)) if method != KEEP else 1
            rules.append(Rule(str(pattern), method, rank, dict(entry.get("options", {}))))
        return cls(tuple(rules))

    @classmethod
    def load(cls, path: str | Path) -> "Plan":
        """Read a plan from a JSON file.

        Raises
        ------
        UserInputError
            If the file is missing or not valid JSON.
        """
        p = Path(path)
        try:
            return cls.from_dict(json.loads(p.read_bytes()))  # JSON is UTF-8 (or -16/-32)
        except FileNotFoundError:
            raise UserInputError(f"plan file {str(p)!r} does not exist") from None
        except OSError as exc:
            raise UserInputError(f"cannot read plan file {str(p)!r}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise UserInputError(f"plan file {str(p)!r} is not UTF-8 text; save it as UTF-8") from None
        except json.JSONDecodeError as exc:
            raise UserInputError(f"plan file {str(p)!r} is not valid JSON: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return {"layers": {r.pattern: r.to_dict() for r in self.rules}}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @property
    def hash(self) -> str:
        """Stable 16-hex-digit digest of the plan's content."""
        canon = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def rule_for(self, name: str) -> Rule | None:
        """The rule that applies to layer ``name`` (exact names first), or ``None``."""
        for r in self.rules:
            if r.exact and r.pattern == name:
                return r
        return next((r for r in self.rules if r.matches(name)), None)

    @property
    def methods(self) -> set[str]:
        return {r.method for r in self.rules if r.method != KEEP}

    def unmatched(self, names: Iterable[str]) -> list[str]:
        """Exact-name rules that match none of ``names`` (likely typos)."""
        names = set(names)
        return [r.pattern for r in self.rules if r.exact and r.pattern not in names]
