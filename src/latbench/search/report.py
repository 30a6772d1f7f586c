"""Write a search's outputs: the model (.onnx, .pt), plan.json, search.json, a report with a plot."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

import torch

from latbench.search.search import SearchResult

__all__ = ["write_search_outputs"]


def _pareto_png(result: SearchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    if result.front:
        ax.plot([p["predicted_ms"] for p in result.front], [p["estimated_damage"] for p in result.front],
                "-o", ms=3, label="knapsack Pareto front (predicted)")
    methods = sorted({u["method"] for u in result.uniform})
    for m in methods:
        pts = [u for u in result.uniform if u["method"] == m]
        ax.plot([u["predicted_ms"] for u in pts], [u["estimated_damage"] for u in pts], "--s", ms=3,
                alpha=0.7, label=f"uniform {m} (predicted)")
    ax.axvline(result.budget_ms, color="red", lw=1, label="budget")
    for r in result.rounds:
        ax.scatter([r.measured_ms], [r.estimated_damage], marker="x", color="black", zorder=5)
        ax.annotate(f"round {r.index}", (r.measured_ms, r.estimated_damage), fontsize=7,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("estimated damage (Σ sensitivity-scaled layer error)")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_title(f"{result.model_name} on {result.device}: latency vs damage")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _markdown(result: SearchResult) -> str:
    d = result.to_dict()
    lines = [
        f"# Rank search: {result.model_name} on {result.device}",
        "",
        f"- budget: **{result.budget_ms:.3f} ms** (original {result.original_ms:.3f} ms)",
        f"- final: predicted {result.predicted_ms:.3f} ms, measured **{result.measured_ms:.3f} ms** "
        f"({'met' if result.met else 'NOT met'}; speed-up {d['speedup']:.2f}×)",
        f"- fidelity ({result.fidelity_name}): **{result.fidelity:.4f}**; relative output error "
        f"{result.output_rel_error:.4f}",
        f"- params {result.params_before:,} → {result.params_after:,}; MACs "
        f"{result.macs_before / 1e6:,.1f}M → {result.macs_after / 1e6:,.1f}M",
        f"- search time (without device measurements): {result.search_seconds:.1f} s",
        "",
        "## Rounds",
        "",
        "| round | predicted budget (ms) | predicted (ms) | measured (ms) | met | fidelity |",
        "|---|---|---|---|---|---|",
    ]
    for r in result.rounds:
        lines.append(f"| {r.index} | {r.target_ms:.3f} | {r.predicted_ms:.3f} | {r.measured_ms:.3f} | "
                     f"{'yes' if r.met else 'no'} | {r.fidelity:.4f} |")
    if result.baseline:
        b = result.baseline
        lines += ["", "## Against the uniform-rank plan", "",
                  "| plan | measured (ms) | fidelity |", "|---|---|---|",
                  f"| searched | {result.measured_ms:.3f} | {result.fidelity:.4f} |",
                  f"| uniform {b['method']} @ {b['fraction']:g} | {b['measured_ms']:.3f} | "
                  f"{b['fidelity']:.4f} |"]
    lines += ["", "## Per-layer choices", "", "| layer | method | rank |", "|---|---|---|"]
    for name, c in result.choices.items():
        lines.append(f"| {name} | {c['method']} | {c['rank'] if c['rank'] is not None else ''} |")
    if result.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result.notes]
    return "\n".join(lines) + "\n"


def write_search_outputs(result: SearchResult, out_dir: str | Path, input_shape) -> dict[str, str]:
    """Write everything into ``out_dir``; return ``{what: path}``."""
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
    doc["uniform"] = result.uniform
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
