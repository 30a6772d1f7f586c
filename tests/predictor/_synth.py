"""Synthetic layer tables with a planted latency relation (shared by the predictor tests)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from latbench.data.features import LAYER_COLUMNS


def conv_row(c_in: int, c_out: int, k: int, hw: int, stride: int = 1, op: str = "conv") -> dict:
    out = hw // stride
    groups = c_in if op == "dwconv" else 1
    macs = out * out * c_out * (c_in // groups) * k * k
    params = c_out * (c_in // groups) * k * k
    return dict(name="x", op=op, in_channels=c_in, out_channels=c_out, kernel_h=k, kernel_w=k,
                stride_h=stride, stride_w=stride, pad_h=k // 2, pad_w=k // 2, dilation_h=1,
                dilation_w=1, groups=groups, bias=0, in_h=hw, in_w=hw, out_h=out, out_w=out,
                macs=macs, params=params, weight_bytes=4 * params, act_in_bytes=4 * c_in * hw * hw,
                act_out_bytes=4 * c_out * out * out)


def elem_row(op: str, c: int, hw: int) -> dict:
    r = conv_row(c, c, 1, hw)
    r.update(op=op, macs=0, params=0, weight_bytes=0, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0)
    return r


def random_table(rng: np.random.Generator) -> pd.DataFrame:
    rows = [conv_row(3, 16, 3, 32)]
    c, hw = 16, 32
    for stage in range(3):
        for _ in range(int(rng.integers(1, 5))):
            k = int(rng.choice([1, 3, 5]))
            rows += [conv_row(c, c, k, hw), elem_row("bn", c, hw), elem_row("act", c, hw)]
            if rng.random() < 0.3:
                rows.append(elem_row("avgpool", c, hw))
        if stage < 2:
            rows.append(conv_row(c, 2 * c, 3, hw, stride=2))
            c, hw = 2 * c, hw // 2
    return pd.DataFrame(rows, columns=LAYER_COLUMNS)


def planted_latency(t: pd.DataFrame) -> float:
    """A roofline-like additive truth: per layer max(macs/2e6, bytes/1e6) ms + 0.05 ms each."""
    moved = t["act_in_bytes"] + t["act_out_bytes"] + t["weight_bytes"]
    return float(np.maximum(t["macs"] / 2e6, moved / 1e6).sum() + 0.05 * len(t) + 0.5)


def dataset(n: int, seed: int = 0, noise: float = 0.0) -> tuple[list[pd.DataFrame], np.ndarray]:
    rng = np.random.default_rng(seed)
    X = [random_table(rng) for _ in range(n)]
    y = np.array([planted_latency(t) for t in X]) * (1 + noise * rng.standard_normal(n))
    return X, y
