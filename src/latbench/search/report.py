"""Write a search's outputs: the model (.onnx, .pt), plan.json, search.json, a report with a plot."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from latbench.search.result import SearchResult

__all__ = ["write_search_outputs"]


def _pareto_png(result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if result.front:
        pts = sorted(result.front, key=lambda p: p["predicted_ms"])
        ax.plot([p["predicted_ms"] for p in pts], [p["fidelity"] for p in pts], "-o", ms=3,
                label="searched plans: Pareto front (predicted latency)")
    for m in sorted({u["method"] for u in result.uniform}):
        pts = sorted((u for u in result.uniform if u["method"] == m), key=lambda u: u["predicted_ms"])
        ax.plot([u["predicted_ms"] for u in pts], [u["fidelity"] for u in pts], "--s", ms=3,
                alpha=0.7, label=f"uniform {m} (predicted latency)")
    ax.axvline(result.budget_ms, color="red", lw=1, label="budget")
    ax.axvline(result.original_ms, color="grey", lw=1, ls=":", label="original")
    for r in result.rounds:
        ax.scatter([r.measured_ms], [r.fidelity], marker="x", color="black", zorder=5)
        ax.annotate(f"round {r.index}", (r.measured_ms, r.fidelity), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    if result.baseline:
        b = result.baseline["measured"]
        ax.scatter([d["measured_ms"] for d in b], [d["fidelity"] for d in b], marker="D",
                   color="tab:orange", zorder=5, label="uniform, measured")
    ax.set_xlabel("latency (ms): lines predicted, markers measured")
    ax.set_ylabel(f"fidelity ({result.fidelity_name})")
    ax.set_title(f"{result.model_name} on {result.device}: latency vs fidelity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(result: SearchResult) -> str:
    d = result.to_dict()
    lines = [
        f"# Rank search: {result.model_name} on {result.device}",
        "",
        f"- input {'x'.join(map(str, result.input_shape))}; costs from {result.cost_source}",
        f"- budget: **{result.budget_ms:.4g} ms** (original {result.original_ms:.4g} ms measured)",
        f"- final: predicted {result.predicted_ms:.4g} ms, measured **{result.measured_ms:.4g} ms** "
        f"({'met' if result.met else 'NOT met'}; speed-up {d['speedup']:.2f}x)",
        f"- fidelity ({result.fidelity_name}): **{result.fidelity:.4f}** (original "
        f"{result.original_fidelity:.4f}"
        + (f"; before fine-tuning {result.fidelity_before_finetune:.4f}"
           if result.fidelity_before_finetune is not None else "") + f"); relative output error "
        f"{result.output_rel_error:.4f}",
        f"- params {result.params_before:,} -> {result.params_after:,}; MACs "
        f"{result.macs_before / 1e6:,.2f}M -> {result.macs_after / 1e6:,.2f}M",
        f"- search time (without device measurements): {result.search_seconds:.1f} s"
        + (f" ({result.prepare_seconds:.1f} s of it preparing candidates, damages and costs)"
           if result.prepare_seconds else " (candidates, damages and costs reused)"),
        "",
        "## Rounds",
        "",
        "| round | predicted budget (ms) | predicted (ms) | measured (ms) | met | fidelity | params | MACs |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result.rounds:
        lines.append(f"| {r.index} | {r.target_ms:.4g} | {r.predicted_ms:.4g} | {r.measured_ms:.4g} | "
                     f"{'yes' if r.met else 'no'} | {r.fidelity:.4f} | {r.params:,} | {r.macs:,} |")
    if result.baseline:
        b = result.baseline
        eq = b.get("fidelity_at_equal_latency")
        lines += ["", "## Against uniform ranks at the same measured latency", "",
                  "| plan | measured (ms) | fidelity |", "|---|---|---|",
                  f"| searched | {result.measured_ms:.4g} | {_final_fid(result):.4f} |"]
        for p in b["measured"]:
            lines.append(f"| uniform {b['method']} @ {p['fraction']:g} | {p['measured_ms']:.4g} | "
                         f"{p['fidelity']:.4f} |")
        lines.append("" if eq is None else
                     f"\nUniform {b['method']} interpolated at {b['at_latency_ms']:.4g} ms: "
                     f"fidelity **{eq:.4f}** (searched: {_final_fid(result):.4f}).")
        if eq is None:
            lines.append("\nThe measured uniform plans do not bracket the searched plan's latency; "
                         "the nearest is shown.")
    lines += ["", "## Per-layer choices", "", "| layer | method | rank |", "|---|---|---|"]
    for name, c in result.choices.items():
        lines.append(f"| {name} | {c['method']} | {c['rank'] if c['rank'] is not None else ''} |")
    lines += ["", "## Latency-fidelity Pareto front (predicted latency)", "",
              "| predicted (ms) | estimated damage | fidelity |", "|---|---|---|"]
    for p in sorted(result.front, key=lambda p: p["predicted_ms"]):
        lines.append(f"| {p['predicted_ms']:.4g} | {p['estimated_damage']:.4g} | {p['fidelity']:.4f} |")
    lines += ["", "## Uniform-rank plans (predicted latency)", "",
              "| method | fraction | predicted (ms) | fidelity |", "|---|---|---|---|"]
    for u in result.uniform:
        lines.append(f"| {u['method']} | {u['fraction']:g} | {u['predicted_ms']:.4g} | {u['fidelity']:.4f} |")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


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
    paths["json"].write_text(json.dumps(doc, indent=2, default=str) + "\n")
    md = _markdown(result)
    paths["markdown"].write_text(md)
    _pareto_png(result, paths["plot"])
    img = base64.b64encode(paths["plot"].read_bytes()).decode()
    paths["html"].write_text(
        "<!doctype html><html><head><meta charset='utf-8'><title>latbench search</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}</style></head><body>"
        f"<pre style='white-space:pre-wrap'>{html.escape(md)}</pre>"
        f"<img alt='latency vs damage' src='data:image/png;base64,{img}'></body></html>\n")
    return {k: str(v) for k, v in paths.items()}
