"""``bench layers MODEL``: the layer names ``--layers`` and plan files match, with their cost."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from latbench.cli._common import TRUST_FILE_HELP, console, parse_shape, print_json

__all__ = ["register"]


def layers_cmd(
    model: str = typer.Argument(..., help="torchvision name, nb201:<arch>, digits, a torch.save-d "
                                "module, or NAME@STATE_DICT.pt."),
    input_shape: Optional[str] = typer.Option(None, "--input", help="Input shape, e.g. 1x3x224x224 "
                                              "(MACs are counted at it)."),
    pattern: str = typer.Option("*", "--layers", help="Show only the layers this glob matches "
                                "(try the glob you mean to compress with)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the weights."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    trust_file: bool = typer.Option(False, "--trust-file", help=TRUST_FILE_HELP),
) -> None:
    """List MODEL's layers that --layers globs and plan files can name: kind, shape, MACs,
    params, and the methods that take each."""
    from fnmatch import fnmatchcase

    from latbench.compress.catalog import list_layers
    from latbench.exceptions import UserInputError
    from latbench.models import default_input_shape, resolve_model

    shape = parse_shape(input_shape) if input_shape else default_input_shape(model)
    net = resolve_model(model, seed=seed, trust_file=trust_file)
    every = list_layers(net, shape, name=model)
    rows = [r for r in every if fnmatchcase(r.name, pattern)]
    if not rows:
        raise UserInputError(f"no layer of {model} matches --layers {pattern!r}; its layers are "
                             f"{', '.join(repr(r.name) for r in every[:8])}"
                             f"{' ...' if len(every) > 8 else ''}")
    total = sum(r.macs for r in every)
    if as_json:
        print_json({"model": model, "input_shape": list(shape), "macs": total,
                    "layers": [r.as_dict() for r in rows]})
        return
    _print_table(model, shape, rows, total)


def _print_table(model: str, shape: tuple[int, ...], rows: list, total: int) -> None:
    size = "x".join(map(str, shape))
    head = ("layer", "kind", "shape", "MACs", "%MACs", "params", "methods")
    cells = [(r.name or "(the model)", r.kind, r.shape, f"{r.macs / 1e6:,.2f}M",
              f"{100 * r.macs / total:.1f}" if total else "-", f"{r.params:,}",
              ",".join(r.methods) or f"none ({_short(r.reason)})") for r in rows]
    widths = [max(len(c[i]) for c in [head, *cells]) for i in range(len(head) - 1)]
    right = (False, False, False, True, True, True)

    def line(c: tuple[str, ...]) -> str:
        return "  ".join(v.rjust(w) if r else v.ljust(w)
                         for v, w, r in zip(c, widths, right)) + "  " + c[-1]

    say = lambda text: console.print(text, markup=False, highlight=False, soft_wrap=True)  # noqa: E731
    say(f"{model} at {size}: {len(rows)} layer(s) a plan or --layers can name, "
        f"of {total / 1e6:,.1f}M MACs in the model")
    say(line(head))
    for c in cells:
        say(line(c))
    takes = [r for r in rows if r.methods]
    if takes:
        best = max(takes, key=lambda r: r.macs)
        method = next((m for m in ("tucker2", "svd") if m in best.methods), best.methods[0])
        say(f"next: bench compress {model} --layers '{best.name or '*'}' --method {method} "
            f"--rank 0.5" + ("" if shape == _default(model) else f" --input {size}"))


def _short(reason: str) -> str:
    """The first clause of a method's refusal (``a depthwise conv has ...`` → its start)."""
    text = reason.split(":")[0].split(",")[0].strip()
    return text if len(text) <= 60 else text[:57] + "..."


def _default(model: str) -> tuple[int, ...] | None:
    from latbench.exceptions import LatbenchError
    from latbench.models import default_input_shape

    try:
        return tuple(default_input_shape(model))
    except LatbenchError:
        return None


def register(app: typer.Typer) -> None:
    app.command("layers")(layers_cmd)
