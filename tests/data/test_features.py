"""The featuriser: hand-computed values for small layers, ResNet-18 totals, meta tensors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from latbench.data.features import LAYER_COLUMNS, count_params, layer_key, layer_table, model_features


def _one(layer: nn.Module, shape: tuple[int, ...]) -> pd.Series:
    t = layer_table(nn.Sequential(layer), shape)
    assert len(t) == 1
    return t.iloc[0]


def test_conv_with_stride_padding_bias():
    # 3→8, 3×3, stride 2, pad 1 on 1×3×32×32 → out 16×16.
    r = _one(nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 32, 32))
    assert (r.op, r.in_channels, r.out_channels) == ("conv", 3, 8)
    assert (r.kernel_h, r.kernel_w, r.stride_h, r.stride_w, r.pad_h, r.pad_w) == (3, 3, 2, 2, 1, 1)
    assert (r.out_h, r.out_w, r.bias) == (16, 16, 1)
    assert r.macs == 8 * 16 * 16 * 3 * 3 * 3  # 55,296
    assert r.params == 8 * 3 * 9 + 8
    assert r.weight_bytes == (8 * 3 * 9 + 8) * 4
    assert r.act_in_bytes == 3 * 32 * 32 * 4 and r.act_out_bytes == 8 * 16 * 16 * 4


def test_grouped_dilated_asymmetric_conv():
    # groups=2, dilation 2, kernel 3×1, padding (2, 0): out H = 10 + 4 - 4 = 10, W = 10.
    r = _one(nn.Conv2d(4, 6, (3, 1), padding=(2, 0), dilation=2, groups=2, bias=False), (2, 4, 10, 10))
    assert (r.op, r.groups, r.dilation_h, r.dilation_w) == ("conv", 2, 2, 2)
    assert (r.kernel_h, r.kernel_w, r.pad_h, r.pad_w, r.bias) == (3, 1, 2, 0, 0)
    assert (r.out_h, r.out_w) == (10, 10)
    assert r.macs == 2 * 6 * 10 * 10 * (4 // 2) * 3 * 1  # batch 2 counts twice: 7,200
    assert r.params == 6 * 2 * 3


def test_depthwise_conv_is_dwconv():
    r = _one(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), (1, 8, 5, 5))
    assert r.op == "dwconv"
    assert r.macs == 8 * 5 * 5 * 9
    assert r.params == 72


def test_linear():
    r = _one(nn.Linear(20, 7), (3, 20))
    assert (r.op, r.in_channels, r.out_channels, r.bias) == ("linear", 20, 7, 1)
    assert r.macs == 3 * 7 * 20
    assert r.params == 20 * 7 + 7
    assert (r.in_h, r.in_w, r.out_h, r.out_w) == (1, 1, 1, 1)


def test_pool_bn_act_rows_and_skipped_modules():
    model = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU(), nn.Identity(), nn.MaxPool2d(2),
                          nn.AvgPool2d(3, stride=1, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    t = layer_table(model, (1, 4, 8, 8))
    assert t["op"].tolist() == ["bn", "act", "maxpool", "avgpool", "avgpool"]
    assert t["macs"].sum() == 0
    assert t.iloc[0].params == 8  # BN weight + bias, running stats are buffers
    mp = t.iloc[2]
    assert (mp.kernel_h, mp.stride_h, mp.out_h) == (2, 2, 4)
    ap = t.iloc[3]
    assert (ap.kernel_h, ap.stride_h, ap.pad_h, ap.out_h) == (3, 1, 1, 4)
    assert t.iloc[4].kernel_h == 4  # adaptive pool: kernel is the whole input


def test_resnet18_params_and_macs():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, busy machine: one thread is fastest for one image
    try:
        t = layer_table(model, (1, 3, 224, 224))
    finally:
        torch.set_num_threads(threads)
    f = model_features(t)
    assert count_params(model) == 11_689_512
    assert f["params"] == 11_689_512
    assert f["macs"] == 1_814_073_344
    assert f["n_conv"] == 20 and f["n_linear"] == 1


def test_meta_and_cpu_models_give_the_same_table():
    torch.manual_seed(0)
    make = lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                                 nn.Linear(4 * 6 * 6, 5))
    cpu = layer_table(make(), (1, 3, 8, 8))
    with torch.device("meta"):
        meta_model = make()
    pd.testing.assert_frame_equal(layer_table(meta_model, (1, 3, 8, 8)), cpu)


def test_layer_table_leaves_training_mode_and_columns():
    model = nn.Sequential(nn.Conv2d(1, 1, 1)).train()
    t = layer_table(model, (1, 1, 2, 2))
    assert model.training
    assert list(t.columns) == LAYER_COLUMNS


def test_model_features_sums_and_counts():
    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.Conv2d(4, 4, 3, padding=1, bias=False))
    f = model_features(layer_table(model, (1, 3, 4, 4)))
    assert f["macs"] == 4 * 16 * 3 + 4 * 16 * 4 * 9
    assert (f["n_conv1x1"], f["n_conv3x3"], f["n_layers"]) == (1, 1, 2)
    assert f["peak_act_bytes"] == (4 * 16 + 4 * 16) * 4


def test_layer_key_ignores_name_and_distinguishes_shapes():
    t = layer_table(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)), (1, 3, 9, 9))
    a, b = t.iloc[0].to_dict(), t.iloc[1].to_dict()
    assert layer_key(a) != layer_key(b)
    assert layer_key({**a, "name": "other"}) == layer_key(a)
    assert layer_key(a).startswith("op=conv|in_channels=3|out_channels=4|kernel_h=3")
