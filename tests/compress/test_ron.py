"""Reduced-Order Network (compress.ron): exact at full rank, DEIM's bound, errors, export."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from latbench.compress.model import compress_model
from latbench.compress.plan import Plan
from latbench.compress.ron import (ReducedOrderNet, SparseRows, SpatialRows, load_calibration,
                                   reduce_order)
from latbench.data.features import layer_table
from latbench.exceptions import UserInputError
from latbench.models.digits import DigitsCNN


class Residual(nn.Module):
    """conv-BN-act, conv-relu-maxpool, a residual conv with a functional activation, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 2, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(2)
        self.a1 = nn.LeakyReLU(0.1)
        self.c2 = nn.Conv2d(2, 3, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.c3 = nn.Conv2d(3, 3, 3, padding=1)
        self.fc = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.a1(self.bn1(self.c1(x)))
        x = self.pool(F.relu(self.c2(x)))
        x = F.leaky_relu(self.c3(x) + x, 0.2)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def residual_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    net = Residual()
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
        net.bn1.weight.uniform_(0.5, 1.5)
    return net.eval()


def calib(n: int, shape=(1, 6, 6), seed: int = 1) -> torch.Tensor:
    return torch.randn((n,) + shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_rank_reduction_reproduces_the_network_on_new_inputs(seed):
    net = residual_net(seed)
    res = reduce_order(net, (72, 27, 27), calib(200, seed=seed))
    assert [s.name for s in res.stages] == ["a1", "pool", "leaky_relu", "readout"]
    assert [s.window for s in res.stages[:3]] == [1, 4, 1]  # relu + max-pool fused in one stage
    x = calib(16, seed=99)
    with torch.no_grad():
        ref, out = net(x), res.model(x)
    assert torch.allclose(out, ref, atol=1e-4 * float(ref.abs().max()))
    for s in res.stages:
        assert s.projection_error < 1e-6 and s.propagated_error < 1e-4


@pytest.mark.parametrize("rank", [2, 5, 12])
def test_deim_interpolation_error_never_exceeds_its_bound(rank):
    res = reduce_order(residual_net(), rank, calib(150))
    for s in res.stages[:-1]:
        n, r = s.n, s.rank[0]
        assert s.interpolation_error <= s.error_bound * (1 + 1e-9) + 1e-12
        assert s.deim_constant <= math.sqrt(1 + 1.05 ** 2 * r * (n - r)) + 1e-9  # MaxVol's guarantee
        assert 0 < s.projection_error < 1
    # the first stage reads exact inputs: its propagated error is DEIM's alone
    assert res.stages[0].propagated_error == pytest.approx(res.stages[0].interpolation_error, rel=1e-4)


@pytest.mark.slow
def test_errors_shrink_as_the_rank_grows():
    x = calib(150)
    errs = [reduce_order(residual_net(), r, x).stages[0].projection_error for r in (2, 8, 32, 72)]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-6


@pytest.mark.slow
def test_tail_from_a_named_layer_keeps_the_head_and_reads_its_output_sparsely():
    torch.manual_seed(0)
    net = DigitsCNN(width=2).eval()
    x = calib(200, shape=(1, 16, 16))
    res = reduce_order(net, 128, x, start="features.3*")
    assert res.start == "features.3.0"
    assert [s.name for s in res.stages] == ["features.4", "features.5.2", "readout"]
    # ReLU leaves some of the 128 values of a stage dead on all inputs: fewer directions, said so
    for s in res.stages[:2]:
        assert s.rank[0] == 128 or any("capped at the" in note for note in s.notes)
    assert res.stages[0].modules == ("features.3.0", "features.3.1", "features.3.2", "features.4")
    assert res.stages[-1].modules == ("pool", "fc")
    with torch.no_grad():
        assert torch.allclose(res.model(x[:8]), net(x[:8]), atol=1e-4)
    first = res.model.stages[0].linears[0]
    # each of the 32 sampled outputs of the pool reads 4 positions × (4 channels × 3 × 3) inputs
    r0 = res.stages[0].rank[0]
    # each pooled output reads 4 positions × a 3×3 window of the 4-channel input, channels as one block
    assert isinstance(first, SpatialRows) and tuple(first.index.shape) == (r0 * 4, 9)
    assert tuple(first.weight.shape) == (r0 * 4, 9, 4)
    table = layer_table(res.model, (1, 1, 16, 16))
    assert int(table.loc[table["name"] == "stages.0.linears.0", "macs"].iloc[0]) == r0 * 4 * 9 * 4
    assert any(n.startswith("head.features.1") for n in table["name"])


def test_the_original_model_is_untouched():
    net = residual_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    reduce_order(net, 4, calib(50))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.a1.negative_slope == 0.1 and not net.training


class WithLayerNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 8)
        self.act = nn.ReLU()
        self.fc3 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc3(self.act(self.fc2(self.norm(self.fc1(x)))))


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        if x.sum() > 0:
            return self.fc(x)
        return x


def test_bad_input_is_one_clear_error():
    x = torch.randn(40, 8)
    net = WithLayerNorm().eval()
    with pytest.raises(UserInputError, match="LayerNorm at 'norm'.*after it"):
        reduce_order(net, 4, x)
    res = reduce_order(net, 8, x, start="fc2")  # after it: fine, and exact at full rank
    assert torch.allclose(res.model(x), net(x), atol=1e-5)
    with pytest.raises(UserInputError, match="matches no layer.*fc2"):
        reduce_order(net, 4, x, start="fc22")
    with pytest.raises(UserInputError, match="at least that many calibration samples"):
        reduce_order(net, 4, x[:3], start="fc2")
    with pytest.raises(UserInputError, match="int rank"):
        reduce_order(net, 0.5, x, start="fc2")
    with pytest.raises(UserInputError, match="2 ranks for 1"):
        reduce_order(net, (4, 4), x, start="fc2")
    with pytest.raises(UserInputError, match="does not fit the network"):
        reduce_order(net, 4, torch.randn(40, 5), start="fc2")
    with pytest.raises(UserInputError, match="torch.fx can trace"):
        reduce_order(Branchy(), 2, torch.randn(10, 4))
    with pytest.raises(UserInputError, match="NaN"):
        reduce_order(net, 4, torch.full((40, 8), float("nan")), start="fc2")


def test_compress_model_reports_each_stage_with_its_errors():
    net, x = residual_net(), calib(120)
    with pytest.raises(UserInputError, match="needs calibration data"):
        compress_model(net, Plan.uniform("ron", 4), input_shape=(1, 1, 6, 6))
    with pytest.raises(UserInputError, match="input_shape is"):
        compress_model(net, Plan.uniform("ron", 4), calibration=x)  # default 1×3×224×224
    two = Plan.from_dict({"layers": {"c1": {"method": "ron", "rank": 4},
                                     "fc": {"method": "svd", "rank": 2}}})
    with pytest.raises(UserInputError, match="only rule"):
        compress_model(net, two, input_shape=(1, 1, 6, 6), calibration=x)
    res = compress_model(net, Plan.uniform("ron", 4), input_shape=(1, 1, 6, 6), calibration=[x[:60], x[60:]])
    assert isinstance(res.model, ReducedOrderNet)
    assert [r.name for r in res.layers] == ["a1", "pool", "leaky_relu", "readout"]
    first = res.layers[0]
    assert first.method == "ron" and first.rank == (4,)
    assert first.macs_before == 2 * 36 * 9 and first.params_before == 2 * 9 + 2 + 4  # conv + BN
    assert first.macs_after == 4 * 9  # 4 sampled outputs, each a 3×3 window of the 1-channel input
    d = res.to_dict()["layers"][1]["details"]
    assert d["interpolation_error"] <= d["error_bound"] and d["window"] == 4
    with torch.no_grad():
        ref, out = net(x), res.model(x)
    assert res.output_rel_error == pytest.approx(float(torch.linalg.norm(ref - out) / torch.linalg.norm(ref)),
                                                 rel=1e-4)
    assert res.macs_after < res.macs_before


def test_calibration_probes_the_output_error_of_other_methods():
    net, x = residual_net(), calib(80)
    res = compress_model(net, Plan.uniform("svd", 1, "fc"), input_shape=(1, 1, 6, 6), calibration=x)
    with torch.no_grad():
        ref, out = net(x[:64]), res.model(x[:64])
    assert res.output_rel_error == pytest.approx(float(torch.linalg.norm(ref - out) / torch.linalg.norm(ref)),
                                                 rel=1e-5)


def test_load_calibration_reads_tensors_safely_and_knows_the_digits(tmp_path):
    good = tmp_path / "x.pt"
    torch.save([torch.randn(5, 1, 6, 6), torch.randn(3, 1, 6, 6)], good)
    assert tuple(load_calibration(str(good), (1, 1, 6, 6)).shape) == (8, 1, 6, 6)
    with pytest.raises(UserInputError, match="per sample"):
        load_calibration(str(good), (1, 3, 6, 6))
    unsafe = tmp_path / "obj.pt"
    torch.save({"x": Residual()}, unsafe)  # a pickled module: weights_only refuses to run it
    with pytest.raises(UserInputError, match="weights_only=True"):
        load_calibration(str(unsafe), (1, 1, 6, 6))
    with pytest.raises(UserInputError, match="does not exist"):
        load_calibration(str(tmp_path / "none.pt"), (1, 1, 6, 6))
    d = load_calibration("digits:10", (1, 1, 16, 16))
    assert tuple(d.shape) == (10, 1, 16, 16)
    with pytest.raises(UserInputError, match="1×S×S"):
        load_calibration("digits", (1, 3, 32, 32))


def sparse_head_net() -> tuple[nn.Module, torch.Tensor, tuple[int, ...]]:
    """A reduced DigitsCNN whose first stage reads a conv's rows by position (SpatialRows)."""
    torch.manual_seed(0)
    net = DigitsCNN(width=2).eval()
    x = calib(60, shape=(1, 16, 16))
    model = reduce_order(net, 6, x, start="features.3*").model
    assert isinstance(model.stages[0].linears[0], SpatialRows)
    return model, x, (1, 1, 16, 16)


def test_sparse_rows_of_a_flat_input_gather_single_values():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(256, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    with torch.no_grad():
        net[0].weight[:, 5:] = 0.0  # every row reads 5 of the 256 inputs
    x = torch.randn(50, 256)
    model = reduce_order(net, 8, x).model
    first = model.stages[0].linears[0]
    assert isinstance(first, SparseRows) and tuple(first.index.shape) == (8, 5)
    assert torch.allclose(model(x), net(x), atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["residual", "sparse"])
def test_exported_reduced_network_runs_in_onnxruntime_and_on_the_simulated_device(tmp_path, which):
    import onnxruntime as ort

    from latbench.compress.export import export_onnx
    from latbench.devices.simulated import SimulatedDevice

    if which == "residual":
        x, shape = calib(100), (1, 1, 6, 6)
        model = reduce_order(residual_net(), 6, x).model
    else:
        model, x, shape = sparse_head_net()
    art = export_onnx(model, shape, tmp_path / "ron.onnx")
    sess = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x[:1].numpy()})[0]
    np.testing.assert_allclose(got, model(x[:1]).detach().numpy(), atol=1e-5)
    dev = SimulatedDevice()
    m = dev.measure(art, dev.make_spec(art, threads=1, warmup=1, repeats=3))
    assert m.median_ms > 0


_TFLITE_CHECK = """
import sys, numpy as np, torch, litert_torch
from ai_edge_litert.interpreter import Interpreter
model = torch.load(sys.argv[1], weights_only=False).eval()
x = torch.load(sys.argv[2], weights_only=True)
litert_torch.convert(model, (x,)).export(sys.argv[3])
it = Interpreter(model_path=sys.argv[3])
it.allocate_tensors()
it.set_tensor(it.get_input_details()[0]["index"], x.numpy())
it.invoke()
got = it.get_tensor(it.get_output_details()[0]["index"])
print("maxdiff", float(np.abs(got - model(x).detach().numpy()).max()))
"""


@pytest.mark.slow
def test_reduced_network_converts_to_tflite_with_litert_torch(tmp_path):
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("litert_torch") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("litert-torch / ai-edge-litert not installed")
    model, x, _ = sparse_head_net()
    torch.save(model, tmp_path / "ron.pt")
    torch.save(x[:1].clone(), tmp_path / "x.pt")
    # In a child process: the converter loads JAX/TensorFlow, whose threads make later forks unsafe.
    done = subprocess.run([sys.executable, "-c", _TFLITE_CHECK, str(tmp_path / "ron.pt"), str(tmp_path / "x.pt"),
                           str(tmp_path / "ron.tflite")], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    diff = float(done.stdout.split("maxdiff")[-1])
    assert diff < 1e-4 and (tmp_path / "ron.tflite").stat().st_size > 0


def test_reduced_network_runs_on_cuda_where_there_is_one(tmp_path):
    from latbench.compress.export import export_onnx
    from latbench.devices.cuda import CudaDevice

    dev = CudaDevice()
    ok, why = dev.available()
    if not ok:
        pytest.skip(f"no CUDA device: {why}")
    art = export_onnx(reduce_order(residual_net(), 6, calib(100)).model, (1, 1, 6, 6), tmp_path / "r.onnx")
    assert dev.measure(art, dev.make_spec(art, threads=1, warmup=2, repeats=5)).median_ms > 0
