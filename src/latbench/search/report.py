"""Write a search's outputs: the model (.onnx, .pt), plan.json, search.json, a report with a plot."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from latbench.search.result import SearchResult

__all__ = ["write_search_outputs"]


def _pareto_png(result: SearchResult, path: Path) -> None:
    """Latency against fidelity, every latency at the device's speed when the search started
    (predictions are on that scale; measurements are scaled by the original around them), so
    a device that drifted during the search does not shift the markers off the lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = result.original_ms_start or result.original_ms
    to_start = start / result.original_ms  # verification window -> start of the search
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if result.front:
        pts = sorted(result.front, key=lambda p: p["predicted_ms"])
        ax.plot([p["predicted_ms"] for p in pts], [p["fidelity"] for p in pts], "-o", ms=3,
                label="searched plans: Pareto front (predicted latency)")
    for m in sorted({u["method"] for u in result.uniform}):
        pts = sorted((u for u in result.uniform if u["method"] == m), key=lambda u: u["predicted_ms"])
        ax.plot([u["predicted_ms"] for u in pts], [u["fidelity"] for u in pts], "--s", ms=3,
                alpha=0.7, label=f"uniform {m} (predicted latency)")
    ax.axvline(result.budget_ms * to_start, color="red", lw=1, label="budget")
    ax.axvline(start, color="grey", lw=1, ls=":", label="original")
    for r in result.rounds:
        x = r.judged_ms if r.judged_ms == r.judged_ms else r.measured_ms  # NaN: an old result
        ax.scatter([x], [r.fidelity], marker="x", color="black", zorder=5)
        ax.annotate(f"round {r.index}", (x, r.fidelity), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.scatter([result.measured_ms * to_start], [_final_fid(result)], marker="*", s=120,
               color="tab:red", zorder=6, label="final plan, verified back to back")
    if result.baseline:
        b = result.baseline["measured"]
        ax.scatter([d["measured_ms"] * to_start for d in b], [d["fidelity"] for d in b],
                   marker="D", color="tab:orange", zorder=5, label="uniform, measured")
    ax.set_xlabel("latency, ms at the start's speed (lines predicted, markers measured)")
    ax.set_ylabel(f"fidelity ({result.fidelity_name})")
    ax.set_title(f"{result.model_name} on {result.device}: latency vs fidelity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@dataclass
class _Section:
    """One part of the report, rendered to Markdown and to HTML alike."""

    title: str
    bullets: list[str] = field(default_factory=list)
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    after: list[str] = field(default_factory=list)  # paragraphs below the table


def _f(x: float | None, spec: str = ".4g") -> str:
    return "" if x is None else format(x, spec)


def _summary(result: SearchResult) -> _Section:
    d = result.to_dict()
    bullets = [
        f"input {'x'.join(map(str, result.input_shape))}; costs from {result.cost_source}",
        f"budget: {result.budget_ms:.4g} ms (original {result.original_ms:.4g} ms back to back with "
        f"the final plan; {result.original_ms_start or result.original_ms:.4g} ms at the start)",
        f"final: predicted {result.predicted_ms:.4g} ms, measured {result.measured_ms:.4g} ms back "
        f"to back with the original ({'met' if result.met else 'NOT met'}; speed-up "
        f"{d['speedup']:.2f}x, the budget asks {_f(result.budget_speedup, '.2f')}x)",
        f"fidelity ({result.fidelity_name}): {result.fidelity:.4f} (original "
        f"{result.original_fidelity:.4f}"
        + (f"; before fine-tuning {result.fidelity_before_finetune:.4f}"
           if result.fidelity_before_finetune is not None else "") + f"); relative output error "
        f"{result.output_rel_error:.4f}",
        f"params {result.params_before:,} -> {result.params_after:,}; MACs "
        f"{result.macs_before / 1e6:,.2f}M -> {result.macs_after / 1e6:,.2f}M",
        f"search time (without device measurements): {result.search_seconds:.1f} s"
        + (f" ({result.prepare_seconds:.1f} s of it preparing candidates, damages and costs)"
           if result.prepare_seconds else " (candidates, damages and costs reused)"),
    ]
    drift = result.original_drift
    if drift:
        bullets.append(f"the original measured {drift['min_ms']:.4g}–{drift['max_ms']:.4g} ms over "
                       f"the search ({drift['moved']:.0%} of its first {drift['first_ms']:.4g} ms, "
                       f"{len(drift['measurements_ms'])} measurements)")
    return _Section(f"Rank search: {result.model_name} on {result.device}", bullets)


def _verification(result: SearchResult) -> _Section | None:
    v = result.verification
    if not v:
        return None
    n = v.get("sequences", 1)
    k = len(v["measured_ms_each"]) // n  # plan measurements per O C … O sequence
    rows = []
    for q in range(n):
        os_ = v["original_ms_each"][q * (k + 1):(q + 1) * (k + 1)]
        cs = v["measured_ms_each"][q * k:(q + 1) * k] + [None]  # the last original closes it
        rows += [[str(q * (k + 1) + i + 1), _f(o), _f(c)] for i, (o, c) in enumerate(zip(os_, cs))]
    bullets = [f"order {v['order']} (O original, C the plan); speed-up {v['speedup']:.3f}x = "
               "1 / median of each plan median over the mean of the original's around it"]
    if v.get("spikes"):
        bullets.append("taken for bursts of load and replaced by the mean of their neighbours: "
                       + ", ".join(v["spikes"]))
    return _Section("Verification back to back with the original", bullets,
                    ["#", "original (ms)", "plan (ms, after it)"], rows)


def _rounds(result: SearchResult) -> _Section:
    rows = [[str(r.index), _f(r.target_ms), _f(r.predicted_ms), _f(r.measured_ms),
             _f(r.original_ms), _f(r.judged_ms), "yes" if r.met else "no",
             ", ".join(r.remeasured), f"{r.fidelity:.4f}", f"{r.params:,}", f"{r.macs:,}"]
            for r in result.rounds]
    return _Section("Rounds", [], ["round", "predicted budget (ms)", "predicted (ms)",
                                   "measured (ms)", "original in its window (ms)",
                                   "judged (ms, at the start's speed)", "met", "measured again",
                                   "fidelity", "params", "MACs"], rows)


def _baseline(result: SearchResult) -> _Section | None:
    b = result.baseline
    if not b:
        return None
    eq = b.get("fidelity_at_equal_latency")
    rows = [["searched", _f(result.measured_ms), f"{_final_fid(result):.4f}"]]
    rows += [[f"uniform {b['method']} @ {p['fraction']:g}", _f(p["measured_ms"]),
              f"{p['fidelity']:.4f}"] for p in b["measured"]]
    after = [f"Uniform {b['method']} interpolated at {b['at_latency_ms']:.4g} ms: fidelity "
             f"{eq:.4f} (searched: {_final_fid(result):.4f})." if eq is not None else
             "The measured uniform plans do not bracket the searched plan's latency; the nearest "
             "is shown."]
    return _Section("Against uniform ranks at the same measured latency", [],
                    ["plan", "measured (ms)", "fidelity"], rows, after)


def _sections(result: SearchResult) -> list[_Section]:
    out = [_summary(result), _verification(result), _rounds(result), _baseline(result)]
    out.append(_Section("Per-layer choices", [], ["layer", "method", "rank"],
                        [[name, c["method"], "" if c["rank"] is None else str(c["rank"])]
                         for name, c in result.choices.items()]))
    out.append(_Section("Latency-fidelity Pareto front (predicted latency)", [],
                        ["predicted (ms)", "estimated damage", "fidelity"],
                        [[_f(p["predicted_ms"]), _f(p["estimated_damage"]), f"{p['fidelity']:.4f}"]
                         for p in sorted(result.front, key=lambda p: p["predicted_ms"])]))
    out.append(_Section("Uniform-rank plans (predicted latency)", [],
                        ["method", "fraction", "predicted (ms)", "fidelity"],
                        [[u["method"], f"{u['fraction']:g}", _f(u["predicted_ms"]),
                          f"{u['fidelity']:.4f}"] for u in result.uniform]))
    if result.notes:
        out.append(_Section("Notes", list(result.notes)))
    return [s for s in out if s is not None]


def _markdown(result: SearchResult) -> str:
    lines: list[str] = []
    for i, sec in enumerate(_sections(result)):
        lines += [("# " if i == 0 else "## ") + sec.title, ""]
        lines += [f"- {b}" for b in sec.bullets] + ([""] if sec.bullets else [])
        if sec.headers:
            lines += ["| " + " | ".join(sec.headers) + " |", "|" + "---|" * len(sec.headers)]
            lines += ["| " + " | ".join(r) + " |" for r in sec.rows] + [""]
        lines += [a for p in sec.after for a in (p, "")]
    return "\n".join(lines).rstrip() + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:70em;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;"
        "padding:.25em .6em;text-align:right}th{background:#f3f3f3}td:first-child{text-align:left}"
        "img{max-width:100%}")


def _html(result: SearchResult, png: bytes) -> str:
    e = html.escape
    parts = ["<!doctype html>", "<html lang='en'><head><meta charset='utf-8'>",
             f"<title>latbench search: {e(result.model_name)} on {e(result.device)}</title>",
             f"<style>{_CSS}</style></head><body>"]
    for i, sec in enumerate(_sections(result)):
        parts.append(f"<h{1 if i == 0 else 2}>{e(sec.title)}</h{1 if i == 0 else 2}>")
        if sec.bullets:
            parts.append("<ul>" + "".join(f"<li>{e(b)}</li>" for b in sec.bullets) + "</ul>")
        if sec.headers:
            parts.append("<table><thead><tr>" + "".join(f"<th>{e(h)}</th>" for h in sec.headers)
                         + "</tr></thead><tbody>" + "".join(
                             "<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>"
                             for r in sec.rows) + "</tbody></table>")
        parts += [f"<p>{e(a)}</p>" for a in sec.after]
        if i == 0:
            img = base64.b64encode(png).decode()
            parts.append(f"<figure><img alt='latency against fidelity: Pareto front, uniform plans, "
                         f"rounds' src='data:image/png;base64,{img}'><figcaption>Latency against "
                         "fidelity: lines predicted, markers measured.</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _final_fid(result: SearchResult) -> float:
    """The searched plan's fidelity as verified (before any fine-tuning), like the baseline's."""
    return result.fidelity_before_finetune if result.fidelity_before_finetune is not None \
        else result.fidelity


def write_search_outputs(result: SearchResult, out_dir: str | Path,
                         input_shape: Sequence[int] | None = None) -> dict[str, str]:
    """Write the model (``model.onnx``, ``model.pt``), ``plan.json``, ``search.json`` and the
    report (``report.md``, ``report.html``, ``pareto.png``) into ``out_dir``.

    Returns
    -------
    dict
        ``{what: path}`` of the files written.
    """
    input_shape = tuple(input_shape) if input_shape is not None else result.input_shape
    from latbench.compress.export import export_onnx
    from latbench.jsonio import dumps

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "onnx": out / "model.onnx", "torch": out / "model.pt", "plan": out / "plan.json",
        "json": out / "search.json", "markdown": out / "report.md", "html": out / "report.html",
        "plot": out / "pareto.png",
    }
    export_onnx(result.model, input_shape, paths["onnx"])
    torch.save(result.model, paths["torch"])
    result.plan.save(paths["plan"])
    doc = result.to_dict()
    doc["front"] = result.front
    doc["uniform"] = [{k: v for k, v in u.items() if k != "choices"} for u in result.uniform]
    paths["json"].write_text(dumps(doc) + "\n")  # NaN → null: every JSON parser reads it
    paths["markdown"].write_text(_markdown(result))
    _pareto_png(result, paths["plot"])
    paths["html"].write_text(_html(result, paths["plot"].read_bytes()))
    return {k: str(v) for k, v in paths.items()}
