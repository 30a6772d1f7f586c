"""``bench compress``: decompose a model's layers and export the variant."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP, console, parse_shape, print_json

__all__ = ["register"]

METHOD_HELP = ("Decomposition: svd (Linear, Conv1d/2d/3d), cur (Linear, 1x1 convs), tucker2 "
               "(Conv1d/2d/3d; re-compresses its own blocks, MUSCO), cp, cp3 or tt (Conv2d). "
               "Depthwise and transposed convs are left as they are (listed as skipped). "
               "ron (Reduced-Order Network: the network from the first --layers match on, "
               "needs --calibration).")
RANK_HELP = ("Rank: an int (16), a tuple (16,32), a fraction of channels (0.5), "
             "a target parameter compression (ratio=3: the largest rank whose replacement keeps "
             "at most 1/3 of the layer's parameters), or evbmf / evbmf:W. "
             "ron: the subspace dimension of every stage (16) or one per stage (16,16,8).")


def compress_cmd(
    model: str = typer.Argument(..., help="torchvision name, nb201:<arch>, a torch.save-d module, "
                                "or NAME@STATE_DICT.pt."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help=METHOD_HELP),
    rank: Optional[str] = typer.Option(None, "--rank", "-r", help=RANK_HELP),
    layers: str = typer.Option("*", "--layers", help="Glob over layer names, e.g. 'layer*.conv2'."),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="A plan JSON instead of --method/--rank."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Write the variant here: .onnx (ONNX) or .tflite (TFLite, through "
                            "litert-torch: pip install \"latbench\\[tflite]\")."),
    save: Optional[Path] = typer.Option(None, "--save", help="torch.save the compressed nn.Module here."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights and of randomised methods."),
    calibration: Optional[str] = typer.Option(
        None, "--calibration",
        help="Inputs from the model's data: a torch.save-d tensor (N, ...) file, or digits[:N]. "
             "ron needs them; other methods measure the output error on them."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """Compress MODEL by low-rank decomposition and report params, MACs and errors per layer."""
    import torch

    from latbench.compress.model import compress_model
    from latbench.compress.plan import Plan
    from latbench.compress.ranks import parse_rank_spec
    from latbench.exceptions import UserInputError
    from latbench.models import default_input_shape, resolve_model

    if plan_file is not None:
        if method or rank:
            raise UserInputError("give either --plan or --method/--rank, not both")
        plan = Plan.load(plan_file)
    else:
        if not method or rank is None:
            raise UserInputError("give --method and --rank (or --plan PLAN.json); see bench compress --help")
        plan = Plan.uniform(method, parse_rank_spec(rank), layers)
    shape = parse_shape(input_shape) if input_shape else default_input_shape(model)
    calib = None
    if calibration is not None:
        from latbench.compress.ron import load_calibration

        calib = load_calibration(calibration, shape)
    net = resolve_model(model, seed=seed, trust_file=trust_file)
    result = compress_model(net, plan, input_shape=shape, seed=seed, calibration=calib)
    if not result.layers:
        if result.skipped:
            name, why = result.skipped[0]
            raise UserInputError(
                f"no layer of {model!r} was compressed: {len(result.skipped)} matched but "
                f"{method or 'the plan'} left them as they were (e.g. {name or '(the model)'}: "
                f"{why})")
        raise UserInputError(f"no layer of {model!r} matched {layers!r} for {method or 'the plan'}; "
                             "list the layer names with --layers '*' or check the glob")
    doc = result.to_dict()
    if save is not None:
        save.parent.mkdir(parents=True, exist_ok=True)
        torch.save(result.model, save)
        doc["saved"] = str(save)
    if out is not None:
        from latbench.compress.export import export_model

        art = export_model(result.model, shape, out)
        doc[art.format] = {"path": str(art.path), "sha256": art.sha256}
    if as_json:
        print_json(doc)
        return
    _print_table(doc, model)


def _print_table(doc: dict, model: str) -> None:
    from rich.table import Table

    table = Table(title=f"{model}: {len(doc['layers'])} layers compressed")
    ron = any("error_bound" in r.get("details", {}) for r in doc["layers"])
    cols = ["layer", "method", "rank", "params", "MACs", "rel. error"]
    if ron:  # the stage's DEIM figures on the calibration data (see latbench.compress.ron)
        cols += ["projection", "DEIM interp. ≤ bound"]
    for col in cols:
        table.add_column(col, justify="left" if col in ("layer", "method") else "right")
    for r in doc["layers"]:
        row = [
            r["name"] or "(the model)", r["method"], "×".join(map(str, r["rank"])),
            f"{r['params_before']:,} → {r['params_after']:,}",
            f"{r['macs_before'] / 1e6:,.2f}M → {r['macs_after'] / 1e6:,.2f}M",
            f"{r['rel_error']:.4f}",
        ]
        if ron:
            d = r.get("details", {})
            row += ([f"{d['projection_error']:.4f}",
                     f"{d['interpolation_error']:.4f} ≤ {d['error_bound']:.3f}"] if r["rank"] else ["", ""])
        table.add_row(*row)
    console.print(table)
    console.print(
        f"params {doc['params_before']:,} → {doc['params_after']:,} "
        f"({doc['params_before'] / max(doc['params_after'], 1):.2f}×), "
        f"MACs {doc['macs_before'] / 1e6:,.1f}M → {doc['macs_after'] / 1e6:,.1f}M "
        f"({doc['macs_before'] / max(doc['macs_after'], 1):.2f}×), "
        f"output error {doc['output_rel_error']:.4f}, decomposition {doc['seconds']:.2f} s"
    )
    if doc["skipped"]:
        console.print(f"{len(doc['skipped'])} matched layers left as they were "
                      f"(e.g. {doc['skipped'][0]['name'] or '(the model)'}: "
                      f"{doc['skipped'][0]['reason']})")
    for key in ("onnx", "tflite", "saved"):
        if key in doc:
            console.print(f"wrote {doc[key] if key == 'saved' else doc[key]['path']}")


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)
