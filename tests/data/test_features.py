"""The featuriser: hand-computed values for small layers, ResNet-18 totals, meta tensors."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn

from latbench.data.features import (
    LAYER_COLUMNS, count_params, layer_key, layer_table, model_features, parse_inputs,
)


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


# ---------------------------------------------------------------- functional ops (schema 2)
def test_resnet18_has_exactly_eight_residual_adds():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        t = layer_table(model, (1, 3, 224, 224))
    finally:
        torch.set_num_threads(threads)
    adds = t[t["op"] == "add"]
    # BasicBlock's ``out += identity`` (in-place add_), once per block, after its bn2.
    assert adds["name"].tolist() == [f"layer{s}.{b}.add#0" for s in (1, 2, 3, 4) for b in (0, 1)]
    assert model_features(t)["n_add"] == 8
    # Synthetic names are unique and never a module's (a module called twice, like the
    # blocks' relu, still appears twice).
    assert adds["name"].is_unique and not set(adds["name"]) & {n for n, _ in model.named_modules()}
    names = t["name"].tolist()
    for n in adds["name"]:  # execution order: after bn2 (and downsample), before the relu
        i = names.index(n)
        assert names[i - 1] in (n.replace("add#0", "bn2"), n.replace("add#0", "downsample.1"))
        assert names[i + 1] == n.replace("add#0", "relu")
    first = adds.iloc[0]  # layer1.0: 64 × 56 × 56 fp32 operands
    assert (first.in_channels, first.out_channels, first.in_h, first.out_h) == (64, 64, 56, 56)
    assert (first.macs, first.params, first.weight_bytes) == (0, 0, 0)
    assert first.act_in_bytes == 2 * 64 * 56 * 56 * 4 and first.act_out_bytes == 64 * 56 * 56 * 4
    # Nothing else changed: the module rows are those of schema 1.
    rest = model_features(t[t["op"] != "add"])
    assert rest["macs"] == 1_814_073_344 and rest["n_layers"] == len(t) - 8


@pytest.mark.parametrize("k", [1, 2, 3])
def test_nb201_node_with_k_live_incoming_edges_gives_k_minus_1_adds(k):
    from latbench.models.nb201 import InferCell

    # k edges into node 3 (skip edges: no module row, so only the sums remain).
    edges = [("nor_conv_1x1", 0, 1), ("nor_conv_1x1", 1, 2)][: k - 1]
    edges += [("skip_connect", s, 3) for s in range(k)]
    t = layer_table(InferCell(edges, 4), (1, 4, 6, 6))
    adds = t[t["op"] == "add"]
    assert adds["name"].tolist() == [f"add#{j}" for j in range(k - 1)]
    assert (adds["act_in_bytes"] == 2 * 4 * 36 * 4).all()
    assert (t["op"] == "conv").sum() == k - 1


def test_functional_ops_outside_leaf_modules_only():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y = torch.add(self.a(x), x)
            y = y + 1.0  # a scalar add is not a branch merge: not listed
            y = y * 0.5  # mul is not listed
            return torch.cat([y, self.b(x)], dim=1)

    class AddInside(nn.Module):  # an unknown leaf: its own add is part of its row
        def forward(self, x):
            return x + x

    t = layer_table(nn.Sequential(Block(), AddInside()), (1, 2, 3, 3))
    assert t["name"].tolist() == ["0.a", "0.add#0", "0.b", "0.concat#0", "1"]
    assert t["op"].tolist() == ["conv", "add", "conv", "concat", "addinside"]
    cat = t.iloc[3]
    assert (cat.in_channels, cat.out_channels) == (4, 4)
    assert cat.act_in_bytes == 2 * (2 * 9 * 4) and cat.act_out_bytes == 4 * 9 * 4


def test_hooks_and_modes_leave_no_state_behind():
    model = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sequential(nn.ReLU()))

    def count():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())

    before = count()
    layer_table(model, (1, 2, 2, 2))
    assert count() == before
    assert torch._C._len_torch_function_stack() == 0

    class Boom(nn.Module):
        def forward(self, x):
            raise ValueError("boom")

    model.append(Boom())
    with pytest.raises(ValueError, match="boom"):
        layer_table(model, (1, 2, 2, 2))
    assert count() == before
    assert torch._C._len_torch_function_stack() == 0
    # Functional ops after the call are not recorded anywhere (and do not fail).
    assert (torch.ones(2) + torch.ones(2)).tolist() == [2.0, 2.0]


def test_inputs_follow_tensors_through_views_skips_and_merges():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)
            self.skip, self.drop = nn.Identity(), nn.Dropout(0.1)
            self.fc = nn.Linear(4 * 9, 3)

        def forward(self, x):
            h = self.a(x)  # row 0, reads the model input
            y = self.b(self.drop(h))  # row 1, reads row 0 through dropout
            z = self.skip(h) + y  # row 2 (add), reads rows 0 and 1
            cat = torch.cat([z, y * 2.0], dim=1)  # row 3 (concat): rows 2 and 1 (mul passes on)
            return self.fc(torch.flatten(cat, 1))  # row 4 through flatten

    t = layer_table(Net(), (1, 2, 3, 3))
    assert t["op"].tolist() == ["conv", "conv", "add", "concat", "linear"]
    assert t["inputs"].tolist() == ["", "0", "0,1", "1,2", "3"]
    assert parse_inputs("1,2") == [1, 2] and parse_inputs("") == [] and parse_inputs(None) == []


def test_inputs_of_in_place_residual_and_shared_input():
    import torchvision

    t = layer_table(torchvision.models.resnet18(), (1, 3, 32, 32))
    rows = {n: i for i, n in reversed(list(enumerate(t["name"])))}  # first row of each name
    add = t.iloc[rows["layer1.0.add#0"]]
    # The residual reads the max-pool output (the block input) and the second BN.
    assert add["inputs"] == f"{rows['maxpool']},{rows['layer1.0.bn2']}"
    # A downsampling block's two branches both read the previous block's output.
    down = t.iloc[rows["layer2.0.downsample.0"]]
    conv1 = t.iloc[rows["layer2.0.conv1"]]
    assert down["inputs"] == conv1["inputs"] != ""
    # Every row but the first reads something, and only earlier rows.
    for i, v in enumerate(t["inputs"]):
        srcs = parse_inputs(v)
        assert (i == 0) == (srcs == []) and all(s < i for s in srcs)


# ------------------------------------------------ every compute op counted (schema 4)
def _flop_counter_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.eval()(torch.zeros(shape))
    return fc.get_total_flops() // 2


def test_conv1d_is_a_height_one_conv_with_its_macs():
    # 8→16, k=5, stride 2, pad 2 on length 100 → length 50
    r = _one(nn.Conv1d(8, 16, 5, stride=2, padding=2), (1, 8, 100))
    assert (r.op, r.in_channels, r.out_channels) == ("conv", 8, 16)
    assert (r.kernel_h, r.kernel_w, r.stride_h, r.stride_w, r.pad_h, r.pad_w) == (1, 5, 1, 2, 0, 2)
    assert (r.in_h, r.in_w, r.out_h, r.out_w) == (1, 100, 1, 50)
    assert r.macs == 16 * 50 * 8 * 5 and r.params == 16 * 8 * 5 + 16 and r.uncounted == ""
    dw = _one(nn.Conv1d(6, 6, 3, groups=6), (2, 6, 10))
    assert dw.op == "dwconv" and dw.macs == 2 * 6 * 8 * 3


def test_conv3d_and_transposed_convs_count_their_macs():
    r = _one(nn.Conv3d(3, 8, 3, padding=(0, 1, 1)), (1, 3, 6, 8, 8))
    assert r.op == "conv3d" and (r.kernel_h, r.kernel_w, r.pad_h, r.out_h) == (3, 3, 1, 8)
    assert r.macs == 8 * (4 * 8 * 8) * 3 * 27
    # a transposed conv multiplies every input element by every weight of its group
    t = _one(nn.ConvTranspose2d(4, 8, 3, stride=2, padding=1, output_padding=1), (1, 4, 5, 5))
    assert t.op == "convtranspose" and (t.out_h, t.out_w, t.stride_h) == (10, 10, 2)
    assert t.macs == 4 * 25 * 8 * 9
    t1 = _one(nn.ConvTranspose1d(4, 6, 4, stride=2, groups=2), (1, 4, 7))
    assert t1.macs == 4 * 7 * (6 // 2) * 4


def test_a_conv1d_model_counts_and_matches_torchs_counter():
    model = nn.Sequential(nn.Conv1d(12, 64, 7, padding=3), nn.BatchNorm1d(64), nn.ReLU(),
                          nn.Conv1d(64, 128, 5, stride=2, padding=2), nn.ReLU(),
                          nn.Conv1d(128, 128, 3, padding=1, groups=128), nn.AdaptiveAvgPool1d(1),
                          nn.Flatten(), nn.Linear(128, 5))
    t = layer_table(model, (1, 12, 250))
    expected = 64 * 250 * 12 * 7 + 128 * 125 * 64 * 5 + 128 * 125 * 3 + 5 * 128
    assert t["macs"].sum() == expected == _flop_counter_macs(model, (1, 12, 250))
    assert t["op"].tolist()[:6] == ["conv", "bn", "act", "conv", "act", "dwconv"]


def test_functional_conv_with_its_own_parameter():
    class Leaf(nn.Module):  # no children: one row of its own type, its MACs and weight
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4, 3, 3))

        def forward(self, x):
            return F.conv2d(x, self.w, padding=1)

    class Block(nn.Module):  # children too: the functional conv is a row of its own
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 4, 3, 3))
            self.bn = nn.BatchNorm2d(6)

        def forward(self, x):
            return self.bn(F.conv2d(x, self.w, stride=2, groups=2))

    import torch.nn.functional as F

    t = layer_table(nn.Sequential(Leaf(), Block()), (1, 4, 9, 9))
    assert t["name"].tolist() == ["0", "1.conv#0", "1.bn"]
    leaf, conv = t.iloc[0], t.iloc[1]
    assert (leaf.op, leaf.macs, leaf.params) == ("leaf", 8 * 81 * 4 * 9, 8 * 4 * 9)
    assert (conv.op, conv.in_channels, conv.out_channels, conv.groups) == ("conv", 8, 6, 2)
    assert (conv.kernel_h, conv.stride_h, conv.out_h, conv.params) == (3, 2, 4, 6 * 4 * 9)
    assert conv.macs == 6 * 16 * 4 * 9 and conv.inputs == "0"


def test_matmul_attention_and_attention_modules_are_counted():
    import torch.nn.functional as F

    class Attn(nn.Module):
        def __init__(self):
            super().__init__()
            self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)

        def forward(self, x):
            a = torch.softmax(torch.matmul(self.q(x), self.k(x).transpose(-1, -2)), -1)
            return a @ self.v(x)

    t = layer_table(Attn(), (2, 10, 16))
    assert t["op"].tolist() == ["linear", "linear", "matmul", "linear", "matmul"]
    assert t["macs"].tolist() == [2 * 10 * 16 * 16] * 2 + [2 * 10 * 10 * 16] + [2 * 10 * 16 * 16] \
        + [2 * 10 * 10 * 16]
    assert t.iloc[2].inputs == "0,1" and t.iloc[4].inputs == "2,3"

    class Sdpa(nn.Module):
        def forward(self, x):
            q = x.unflatten(-1, (2, 8)).transpose(1, 2)  # (batch, heads, length, 8)
            return F.scaled_dot_product_attention(q, q, q)

    (row,) = layer_table(nn.Sequential(nn.Identity(), Sdpa()), (2, 10, 16)).itertuples()
    assert (row.op, row.macs) == ("sdpa", 2 * 2 * 10 * 10 * (8 + 8))  # Q Kᵀ and A V
    enc = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True)
    t = layer_table(enc, (2, 10, 16))
    proj = 2 * 10 * 16 * 48 + 2 * 10 * 16 * 16  # in-projection (q, k, v) and out-projection
    assert t.loc[t["op"] == "attention", "macs"].tolist() == [proj + 2 * 2 * 10 * 10 * 16]
    assert t["macs"].sum() == proj + 2 * 2 * 10 * 10 * 16 + 2 * (2 * 10 * 16 * 32)


def test_lstm_counts_its_gate_projections():
    # per step and sequence: 4 gates × hidden × (input + hidden) MACs
    r = _one(nn.LSTM(8, 16, batch_first=True), (2, 7, 8))
    assert (r.op, r.in_channels, r.out_channels) == ("lstm", 8, 16)
    assert r.macs == 2 * 7 * 4 * 16 * (8 + 16) and r.uncounted == ""
    g = _one(nn.GRU(8, 16, batch_first=True), (2, 7, 8))
    assert g.macs == 2 * 7 * 3 * 16 * (8 + 16)


def test_compute_no_formula_covers_is_flagged_never_a_silent_zero():
    class Spectrum(nn.Module):
        def forward(self, x):
            return torch.fft.rfft(x).abs()

    t = layer_table(nn.Sequential(nn.Linear(8, 8), Spectrum()), (2, 8))
    assert t["uncounted"].tolist() == ["", "aten._fft_r2c"]
    q = torch.ao.nn.quantized.dynamic.Linear(8, 4)
    (row,) = layer_table(q, (2, 8)).itertuples()
    assert row.uncounted == "quantized.linear_dynamic" and row.macs == 0
    # interpolation kernels are not matrix products
    up = _one(nn.Upsample(scale_factor=2, mode="bilinear"), (1, 2, 4, 4))
    assert (up.macs, up.uncounted) == (0, "")


@pytest.mark.parametrize("name, shape", [("resnet18", (1, 3, 32, 32)), ("mobilenet_v2", (1, 3, 32, 32)),
                                         ("squeezenet1_0", (1, 3, 64, 64))])
@pytest.mark.slow
def test_table_macs_equal_torchs_flop_counter_on_torchvision_models(name, shape):
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.get_model(name, weights=None)
    t = layer_table(model, shape)
    assert t["macs"].sum() == _flop_counter_macs(model, shape)
    assert (t["uncounted"] == "").all()


def test_root_rows_select_everything():
    from latbench.data.features import rows_of

    t = layer_table(nn.Conv2d(2, 3, 1), (1, 2, 4, 4))
    assert t["name"].tolist() == [""] and rows_of(t, "").all()


@pytest.mark.parametrize("shape", [(3, 8), (1, 2, 8, 8), (1, 3, 8), (1, 3, 1, 1, 1)])
def test_check_runs_names_a_shape_the_model_does_not_take(shape):
    from latbench.data.features import check_runs
    from latbench.exceptions import UserInputError

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(UserInputError, match=r"^net does not run on input .*; give the input shape"):
        check_runs(net, shape, "net")


def test_check_runs_passes_a_good_shape_and_leaves_modes_alone():
    from latbench.data.features import check_runs

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net.train()
    net[1].eval()
    check_runs(net, (1, 3, 8, 8))
    assert net.training and net[0].training and not net[1].training
