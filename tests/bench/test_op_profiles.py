"""Per-operator profiles mapped back to layer names: builtin kernels by node, XNNPACK kernels by
kind and order, and refusals (with notes) where the profile cannot say which layer is which."""

from __future__ import annotations

import pytest

from latbench.bench.profiles import kernel_family, map_profile, module_paths
from latbench.devices.base import OpProfile, OpProfileRow


def test_module_paths_of_litert_torch_tensor_names():
    name = ("torchvision.models.resnet.ResNet/torch.nn.modules.container.Sequential_layer1/"
            "torchvision.models.resnet.BasicBlock_0/torch.nn.modules.activation.ReLU_relu;;"
            "torchvision.models.resnet.ResNet/torch.nn.modules.container.Sequential_layer1/"
            "torchvision.models.resnet.BasicBlock_0/torch.nn.modules.conv.Conv2d_conv1;2")
    assert module_paths(name) == ["layer1.0.relu", "layer1.0.conv1"]
    assert module_paths(name, {"layer1.0.conv1"}) == ["layer1.0.conv1"]


def test_module_paths_try_every_split_of_underscored_names():
    name = "m.Net/pkg.My_Block_down_1/torch.nn.modules.conv.Conv2d_conv_a;1"
    assert module_paths(name, {"down_1.conv_a"}) == ["down_1.conv_a"]
    assert module_paths("serving_default_output_0_output") == []
    assert module_paths("arith.constant") == []


@pytest.mark.parametrize("kernel,family", [
    ("Convolution (NHWC, F32) IGEMM", "conv"), ("Convolution (NHWC, QC8) DWConv", "conv"),
    ("Convolution (NHWC, QDU8, F32, QC8W) IGEMM", "conv"),
    ("Fully Connected (NC, F32) GEMM", "linear"), ("Max Pooling (NHWC, F32)", "maxpool"),
    ("Global Average Pooling (NWC, F32)", "avgpool"), ("Mean (ND) Mean", "avgpool"),
    ("Transpose (ND, X32)", None), ("Binary Elementwise (ND)", None),
])
def test_kernel_families(kernel, family):
    assert kernel_family(kernel) == family


pytest.importorskip("litert_torch", reason='TFLite export needs pip install "latbench[tflite]"')
pytest.importorskip("ai_edge_litert", reason='TFLite needs pip install "latbench[tflite]"')


@pytest.fixture(scope="module")
def net_graph(tmp_path_factory):
    from tflite_nets import SHAPE, named_net

    from latbench.artifact import read_tflite
    from latbench.compress.export import export_tflite
    from latbench.data.features import layer_table

    net = named_net()
    art = export_tflite(net, SHAPE, tmp_path_factory.mktemp("p") / "net.tflite")
    return read_tflite(art.path), layer_table(net, SHAPE)


LAYERS = {"conv1", "pool", "block.0", "block.2", "dw", "gap", "fc"}


def builtin_rows(graph, scale=1e-3):
    return [OpProfileRow(n.op, f"[{', '.join(n.outputs)}]:{n.index}", (n.index + 1) * scale,
                         (n.index + 1) * scale, 1, n.index) for n in graph.nodes]


@pytest.mark.slow
def test_builtin_rows_map_exactly_by_node(net_graph):
    graph, table = net_graph
    m = map_profile(OpProfile(tuple(builtin_rows(graph)), 5, "t"), graph, table)
    assert set(m.layers) == LAYERS and m.unmapped == [] and m.notes == []
    by_node = {n.index: n for n in graph.nodes}
    for name, t in m.layers.items():
        main = [i for i in t.nodes if by_node[i].op not in ("PAD", "PADV2")]
        assert len(main) == 1
        assert t.avg_s == pytest.approx(sum((i + 1) * 1e-3 for i in t.nodes))
        assert t.row["name"] == name
    assert {by_node[m.layers["dw"].nodes[0]].op, by_node[m.layers["gap"].nodes[0]].op,
            by_node[m.layers["fc"].nodes[0]].op} == {"DEPTHWISE_CONV_2D", "MEAN",
                                                     "FULLY_CONNECTED"}


def test_litert_tool_builtin_names_map_by_index(net_graph):
    graph, table = net_graph
    rows = [OpProfileRow(n.op, f"[Builtin]:{n.index}", 1e-3, 2e-3, 1, n.index)
            for n in graph.nodes]
    m = map_profile(OpProfile(tuple(rows), 3, "t"), graph, table)
    assert set(m.layers) == LAYERS


def xnnpack_rows(graph):
    kernels = {"CONV_2D": "Convolution (NHWC, F32) IGEMM",
               "DEPTHWISE_CONV_2D": "Convolution (NHWC, F32) DWConv",
               "FULLY_CONNECTED": "Fully Connected (NC, F32) GEMM",
               "MAX_POOL_2D": "Max Pooling (NHWC, F32)", "MEAN": "Mean (ND) Mean",
               "TRANSPOSE": "Transpose (ND, X32)"}
    rows = []
    for k, n in enumerate(graph.nodes):
        kern = kernels[n.op]
        rows.append(OpProfileRow(kern, f"Delegate/{kern}:{k}", (k + 1) * 1e-4, (k + 1) * 1e-4,
                                 1, k, delegated=True))
    return rows


def test_xnnpack_kernels_map_by_kind_and_order(net_graph):
    graph, table = net_graph
    m = map_profile(OpProfile(tuple(xnnpack_rows(graph)), 5, "t"), graph, table)
    assert set(m.layers) == LAYERS and m.notes == []
    # the k-th delegate kernel is the k-th node here: the times say which node each took
    for t in m.layers.values():
        assert t.avg_s == pytest.approx((t.nodes[0] + 1) * 1e-4)


def test_merged_delegate_rows_leave_their_family_unmapped_with_a_note(net_graph):
    graph, table = net_graph
    rows = xnnpack_rows(graph)
    first_conv = next(i for i, r in enumerate(rows) if r.node_type.startswith("Convolution"))
    rows[first_conv] = OpProfileRow(rows[first_conv].node_type, rows[first_conv].name, 1e-4,
                                    1e-4, 2, first_conv, delegated=True)
    m = map_profile(OpProfile(tuple(rows), 5, "t"), graph, table)
    assert set(m.layers) == {"pool", "gap", "fc"}
    assert set(m.unmapped) == {"conv1", "block.0", "block.2", "dw"}
    assert any("merge several operators" in n and "conv" in n for n in m.notes)


def test_kernel_counts_that_disagree_leave_the_family_unmapped(net_graph):
    graph, table = net_graph
    rows = [r for r in xnnpack_rows(graph) if not r.node_type.startswith("Fully")]
    rows.append(OpProfileRow("Fully Connected (NC, F32) GEMM", "Delegate/FC:8", 1e-4, 1e-4, 1,
                             8, True))
    rows.append(OpProfileRow("Fully Connected (NC, F32) GEMM", "Delegate/FC:9", 1e-4, 1e-4, 1,
                             9, True))
    m = map_profile(OpProfile(tuple(rows), 5, "t"), graph, table)
    assert "fc" in m.unmapped and "conv1" in m.layers
    assert any("ran 2 kernels, the model has 1" in n for n in m.notes)


def test_a_profile_of_another_model_is_not_mapped(net_graph):
    graph, table = net_graph
    rows = builtin_rows(graph)
    rows[1] = OpProfileRow("SOFTMAX", "[x]:1", 1e-3, 1e-3, 1, 1)
    rows.append(OpProfileRow("CONV_2D", "[y]:40", 1e-3, 1e-3, 1, 40))
    m = map_profile(OpProfile(tuple(rows), 5, "t"), graph, table)
    assert m.layers == {} and any("not a node of this model" in n for n in m.notes)


def test_gpu_delegate_dispatches_are_left_out_with_a_note(net_graph):
    graph, table = net_graph
    rows = [OpProfileRow("conv_constants", "Delegate/conv_constants:0", 1e-3, 1e-3, 1, 0, True)]
    m = map_profile(OpProfile(tuple(rows), 5, "t"), graph, table)
    assert m.layers == {} and set(m.unmapped) == LAYERS
    assert any("no layer kind latbench maps" in n for n in m.notes)
