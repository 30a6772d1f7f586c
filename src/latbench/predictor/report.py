"""Render an evaluation report: PNG plots and a metrics table into one HTML page.

:func:`build_report` computes (train/test evaluations, learning curves) and
:func:`render_report` draws; estimators never draw. Plots use matplotlib's Agg backend
and are embedded in ``index.html`` as base64 and also written beside it.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from latbench.predictor.evaluate import (MIN_TEST_MEASUREMENTS, Evaluation, device_data,
                                         evaluate_predictor, learning_curve)
from latbench.predictor.metrics import METRIC_KEYS

__all__ = ["ReportData", "build_report", "render_report", "metrics_markdown", "write_report"]

DEFAULT_KINDS = ("flops", "flops-clustered", "lut", "gbm", "gbm-layer")


@dataclass
class ReportData:
    """What a report shows, for one device."""

    device: str
    evaluations: list[Evaluation]
    curve: pd.DataFrame
    models: pd.DataFrame
    skipped: dict[str, str]
    #: Warnings about the data, shown on the page (and warned when the report is built).
    notes: list[str] = field(default_factory=list)


#: Share of a device's measurements kept for testing when it has fewer than ``train_size``.
TEST_SHARE = 0.3

#: A device with fewer measurements than this cannot be trained and tested on at all.
MIN_REPORT_MEASUREMENTS = 4


def build_report(dataset, *, device: str, train_size: int = 900, seed: int = 0,
                 kinds: tuple[str, ...] = DEFAULT_KINDS,
                 curve_sizes: tuple[int, ...] = (50, 100, 200, 500, 900),
                 progress: Callable[[str, int, int], None] | None = None) -> ReportData:
    """Evaluate each kind on ``device`` (kinds that cannot run, e.g. ``lut`` without a
    per-layer table, are listed in ``skipped`` with the reason).

    A device with no more than ``train_size`` measurements is split 70/30 instead (a
    note says so); too few test or training measurements give notes too
    (:func:`latbench.predictor.evaluate.small_data_notes`). Each note is also warned
    (:mod:`warnings`) as the report is built.

    Parameters
    ----------
    progress : callable, optional
        ``progress(stage, done, total)`` after each evaluation and learning-curve kind.

    Raises
    ------
    UserInputError
        If the device has fewer than :data:`MIN_REPORT_MEASUREMENTS` measurements.
    """
    import math
    import warnings

    from latbench.exceptions import LatbenchError, UserInputError

    data = device_data(dataset, device)
    n = len(data.models)
    if n < MIN_REPORT_MEASUREMENTS:
        raise UserInputError(
            f"device {device!r} has {n} measurement(s): too few to train and test a predictor "
            f"(at least {MIN_REPORT_MEASUREMENTS}, better {MIN_TEST_MEASUREMENTS * 4}); measure "
            f"more variants, e.g. `bench sweep --device {device} --random-plans 30`")
    notes: list[str] = []
    if train_size >= n:
        asked, train_size = train_size, n - max(1, math.ceil(TEST_SHARE * n))
        notes.append(f"{device} has {n} measurements, not more than --train-size {asked}: "
                     f"trained on {train_size} and tested on the other {n - train_size} "
                     f"({TEST_SHARE:.0%})")
    evals, skipped, ok = [], {}, []
    sizes = [s for s in curve_sizes if s < n]
    total = len(kinds) + (len(kinds) if sizes else 0)
    for i, kind in enumerate(kinds, start=1):
        if progress is not None:
            progress(f"{device}: {kind}", i - 1, total)
        try:
            ev = evaluate_predictor(data, device=device, kind=kind, train_size=train_size,
                                    seed=seed)
            evals.append(ev)
            ok.append(kind)
            notes.extend(x for x in ev.notes if x not in notes)
        except LatbenchError as exc:
            skipped[kind] = str(exc)
    curve = pd.DataFrame()
    if ok and sizes:
        parts = []
        for j, kind in enumerate(ok, start=len(kinds) + 1):
            if progress is not None:
                progress(f"{device}: learning curve of {kind}", j - 1, total)
            parts.append(learning_curve(data, device=device, kinds=[kind], sizes=sizes,
                                        seeds=(seed,)))
        curve = pd.concat(parts, ignore_index=True)
    if progress is not None:
        progress(f"{device}: done", total, total)
    for note in notes:
        warnings.warn(note, stacklevel=2)
    return ReportData(device, evals, curve, data.models, skipped, notes)


def metrics_markdown(reports: list[ReportData]) -> str:
    """LETI-style table: predictor × device with ±10 %, ±5 %, R², ρ, MAPE."""
    lines = ["| predictor | device | n_train | ±10 % | ±5 % | R² | Spearman ρ | Kendall τ | MAPE % |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in reports:
        for e in r.evaluations:
            m = e.metrics
            lines.append(f"| {e.kind} | {e.device} | {e.n_train} | {m['acc10']:.3f} | "
                         f"{m['acc5']:.3f} | {m['r2']:.3f} | {m['spearman']:.3f} | "
                         f"{m['kendall']:.3f} | {m['mape']:.2f} |")
    notes = [n for r in reports for n in r.notes]
    if notes:
        lines.append("")
        lines.extend(f"> note: {n}" for n in notes)
    return "\n".join(lines) + "\n"


def _plots(r: ReportData) -> dict[str, bytes]:
    import io

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}

    def save(name: str, fig) -> None:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        out[name] = buf.getvalue()

    if r.evaluations:
        k = len(r.evaluations)
        fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.5), squeeze=False)
        for ax, e in zip(axes[0], r.evaluations):
            ax.scatter(e.y_test, e.y_pred, s=3, alpha=0.4)
            lo, hi = float(min(e.y_test.min(), e.y_pred.min())), float(max(e.y_test.max(), e.y_pred.max()))
            ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
            ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="g", alpha=0.1)
            ax.set_title(f"{e.kind}: ±10% {e.metrics['acc10']:.2f}")
            ax.set_xlabel("measured (ms)")
            ax.set_ylabel("predicted (ms)")
        save("pred_vs_measured.png", fig)
        fig, axes = plt.subplots(1, k, figsize=(3.6 * k, 3.0), squeeze=False)
        for ax, e in zip(axes[0], r.evaluations):
            err = 100.0 * (e.y_pred / e.y_test - 1.0)
            ax.hist(np.clip(err, -50, 50), bins=60)
            ax.axvline(-10, color="r", lw=0.8)
            ax.axvline(10, color="r", lw=0.8)
            ax.set_title(e.kind)
            ax.set_xlabel("error (%)")
        save("error_hist.png", fig)
    if len(r.curve):
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for kind, g in r.curve.groupby("kind"):
            g = g.groupby("n_train")["acc10"].mean()
            ax.plot(g.index, g.values, "o-", label=kind)
        ax.set_xscale("log")
        ax.set_xlabel("training models")
        ax.set_ylabel("share within ±10%")
        ax.legend(fontsize=7)
        save("learning_curve.png", fig)
    m = r.models
    if "method" in m.columns and (m["method"].astype(str) != "none").any() and "rank" in m.columns:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for method, g in m[m["method"].astype(str) != "none"].groupby("method"):
            ax.plot(g["rank"], g["latency_ms"], "o", ms=3, label=str(method))
        ax.set_xlabel("rank")
        ax.set_ylabel("latency (ms)")
        ax.legend(fontsize=7)
        save("latency_vs_rank.png", fig)
    if {"source_model", "method", "macs"}.issubset(m.columns) and (m["method"].astype(str) != "none").any():
        base = m[m["method"].astype(str) == "none"].groupby("source_model")[["latency_ms", "macs"]].median()
        comp = m[(m["method"].astype(str) != "none") & m["source_model"].isin(base.index)]
        if len(comp):
            b = base.loc[comp["source_model"]]
            fig, ax = plt.subplots(figsize=(5, 3.5))
            ax.plot(b["macs"].to_numpy() / comp["macs"].to_numpy(),
                    b["latency_ms"].to_numpy() / comp["latency_ms"].to_numpy(), "o", ms=3)
            ax.set_xlabel("MAC reduction (×)")
            ax.set_ylabel("realised speedup (×)")
            save("speedup_vs_mac_reduction.png", fig)
    return out


def render_report(reports: list[ReportData]) -> tuple[str, str, dict[str, bytes]]:
    """(HTML page, Markdown metrics table, PNG files by name) for the given device reports."""
    md = metrics_markdown(reports)
    files: dict[str, bytes] = {}
    parts = ["<!doctype html><html><head><meta charset='utf-8'><title>latbench report</title>",
             "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}</style></head><body>",
             "<h1>latbench predictor report</h1>"]
    for r in reports:
        parts.append(f"<h2>{html.escape(r.device)}</h2><table><tr><th>predictor</th><th>n_train</th>"
                     + "".join(f"<th>{k}</th>" for k in METRIC_KEYS) + "</tr>")
        for e in r.evaluations:
            parts.append(f"<tr><td>{html.escape(e.kind)}</td><td>{e.n_train}</td>"
                         + "".join(f"<td>{e.metrics[k]:.3f}</td>" for k in METRIC_KEYS) + "</tr>")
        parts.append("</table>")
        for note in r.notes:
            parts.append(f"<p class='note'><b>note:</b> {html.escape(note)}</p>")
        for kind, why in r.skipped.items():
            parts.append(f"<p>skipped {html.escape(kind)}: {html.escape(why)}</p>")
        for name, png in _plots(r).items():
            fname = f"{_safe(r.device)}_{name}"
            files[fname] = png
            parts.append(f"<h3>{html.escape(name[:-4].replace('_', ' '))}</h3>"
                         f"<img alt='{fname}' src='data:image/png;base64,"
                         f"{base64.b64encode(png).decode()}'>")
    parts.append("<h2>Metrics (Markdown)</h2><pre>" + html.escape(md) + "</pre></body></html>")
    return "".join(parts), md, files


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def write_report(dataset, out_dir: str | Path, *, devices: list[str], train_size: int = 900,
                 seed: int = 0, kinds: tuple[str, ...] = DEFAULT_KINDS,
                 progress: Callable[[str, int, int], None] | None = None) -> Path:
    """Build, render and write ``index.html``, ``metrics.md`` and the PNGs into ``out_dir``.

    ``progress(stage, done, total)`` is called as :func:`build_report` goes (see there) and
    once more with the stage ``"plots"`` before rendering.

    Raises
    ------
    UserInputError
        If ``out_dir`` is an existing file or cannot be created (checked before any work),
        or a device has too few measurements (:func:`build_report`).
    """
    from latbench.exceptions import UserInputError

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {str(out)!r} is a file: give a folder for index.html, "
                             "metrics.md and the plots")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"cannot create the report folder {str(out)!r}: "
                             f"{exc.strerror or exc}") from None
    reports = [build_report(dataset, device=d, train_size=train_size, seed=seed, kinds=kinds,
                            progress=progress)
               for d in devices]
    if progress is not None:
        progress("plots", 0, 1)
    page, md, files = render_report(reports)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "metrics.md").write_text(md)
    (out / "index.html").write_text(page)
    return out / "index.html"
