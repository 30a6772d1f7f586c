"""The uniform-rank baseline: one method and one fraction on every layer, scored and measured."""

from __future__ import annotations

from typing import Any

from latbench.search.plans import assemble, plan_of
from latbench.search.result import Round

__all__ = ["uniform_points", "measure_uniform", "interp"]


def interp(x: float, pts: list[tuple[float, float]]) -> float | None:
    """Linear interpolation of ``y`` at ``x`` over ``(x, y)`` points; ``None`` outside."""
    pts = sorted(pts)
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            return y0 if x1 == x0 else y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    if len(pts) == 1 and pts[0][0] == x:
        return pts[0][1]
    return None



def uniform_points(net, slots, costs, damages, original_ms, methods, fractions, fid_of) -> list[dict]:
    """Every uniform-rank plan (one method, one fraction on every layer it can shrink), scored.

    A layer the method cannot decompose, or would not make smaller at that fraction, is
    kept — exactly what ``Plan.uniform(method, fraction)`` does through ``compress_model``.
    """
    from latbench.compress._base import METHODS
    from latbench.compress.ranks import resolve_rank

    out = []
    seen: set[tuple[int, ...]] = set()
    for m in methods:
        method = METHODS.get(m)
        for f in sorted(fractions):
            picks = []
            for slot in slots:
                j = 0
                if method.supports(slot.layer) is None:
                    rank = tuple(resolve_rank(float(f), slot.layer, method))
                    j = next((i for i, c in enumerate(slot.candidates)
                              if c.method == m and tuple(c.rank) == rank), 0)
                picks.append(j)
            key = tuple(picks)
            if not any(picks) or key in seen:
                continue
            seen.add(key)
            fid, err = fid_of(assemble(net, slots, picks))
            out.append(dict(method=m, fraction=float(f),
                            predicted_ms=original_ms + sum(cg[j] for cg, j in zip(costs, picks)),
                            estimated_damage=float(sum(dg[j] for dg, j in zip(damages, picks))),
                            fidelity=fid, output_rel_error=err, choices=list(picks),
                            plan=plan_of(slots, picks).to_dict()))
    return out


def measure_uniform(net, slots, uniform, final: Round, meter: Any) -> dict:
    """Measure the strongest uniform family around the final plan's measured latency.

    The family (method) is the one with the best fidelity interpolated at the final plan's
    predicted ms. Its points are measured outward from the one predicted closest to the final
    plan's prediction until two measured points bracket its measured latency (at most 6).
    """
    fams = sorted({u["method"] for u in uniform})

    def family_score(m: str) -> float:
        pts = [(u["predicted_ms"], u["fidelity"]) for u in uniform if u["method"] == m]
        v = interp(final.predicted_ms, pts)
        if v is None:  # outside the family's reach: judge it by its nearest point
            v = min(pts, key=lambda p: abs(p[0] - final.predicted_ms))[1] - 1.0
        return v

    fam = max(fams, key=family_score)
    pts = sorted((u for u in uniform if u["method"] == fam), key=lambda u: u["predicted_ms"])
    # Start where the prediction (biased alike for both plans) puts the final plan.
    i = min(range(len(pts)), key=lambda k: abs(pts[k]["predicted_ms"] - final.predicted_ms))
    measured: dict[int, float] = {}
    for _ in range(6):
        if i in measured or not 0 <= i < len(pts):
            break
        u = pts[i]
        measured[i] = meter(assemble(net, slots, u["choices"]), f"uniform{i}")
        below = [k for k in measured if measured[k] <= final.measured_ms]
        above = [k for k in measured if measured[k] > final.measured_ms]
        if below and above:
            break
        i = i + 1 if not above else i - 1  # slower plans sit at higher predicted latency
    done = [dict(fraction=pts[k]["fraction"], predicted_ms=pts[k]["predicted_ms"],
                 measured_ms=measured[k], fidelity=pts[k]["fidelity"],
                 output_rel_error=pts[k]["output_rel_error"]) for k in sorted(measured)]
    at_equal = interp(final.measured_ms, [(d["measured_ms"], d["fidelity"]) for d in done])
    nearest = min(done, key=lambda d: abs(d["measured_ms"] - final.measured_ms))
    return dict(method=fam, fraction=nearest["fraction"], measured_ms=nearest["measured_ms"],
                fidelity=nearest["fidelity"], output_rel_error=nearest["output_rel_error"],
                fidelity_at_equal_latency=at_equal, at_latency_ms=final.measured_ms,
                searched_fidelity=final.fidelity, measured=done)
