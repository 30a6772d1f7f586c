"""bench compress: JSON contract, ResNet-18's parameter count, outputs, one-line errors."""

import json

import pytest
import torch

from latbench.cli import main


def run(capsys, *args):
    with pytest.raises(SystemExit) as exc:
        main(list(args))
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.slow
def test_json_report_of_resnet18_states_its_parameter_count(capsys):
    code, out, _ = run(capsys, "compress", "resnet18", "--method", "svd", "--rank", "0.25",
                       "--layers", "fc", "--json")
    assert code in (0, None)
    doc = json.loads(out)
    assert {"params_before", "params_after", "macs_before", "macs_after", "seconds", "layers"} <= set(doc)
    assert doc["params_before"] == 11_689_512
    assert doc["macs_before"] == 1_814_073_344
    (layer,) = doc["layers"]
    assert {"name", "method", "rank", "params_before", "params_after", "rel_error"} <= set(layer)
    assert layer["name"] == "fc" and layer["method"] == "svd" and layer["rank"] == [128]
    # truncated SVD of a 1000×512 linear at k=128: k(m+n)+bias parameters
    assert layer["params_after"] == 128 * (512 + 1000) + 1000
    assert doc["params_after"] == doc["params_before"] - layer["params_before"] + layer["params_after"]


@pytest.mark.slow
def test_writes_onnx_and_torch_module(capsys, tmp_path):
    arch = "nb201:|nor_conv_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|none~0|avg_pool_3x3~1|nor_conv_3x3~2|"
    onnx_path, pt_path = tmp_path / "v.onnx", tmp_path / "v.pt"
    code, out, _ = run(capsys, "compress", arch, "--method", "tucker2", "--rank", "0.5",
                       "--layers", "cells.0.*", "--out", str(onnx_path), "--save", str(pt_path))
    assert code in (0, None)
    assert onnx_path.stat().st_size > 0
    model = torch.load(pt_path, weights_only=False)
    assert any(type(m).__name__ == "LowRankSequential" for m in model.modules())
    assert "params" in out and "tucker2" in out


@pytest.mark.parametrize("args, code, text", [
    (["compress", "resnet-18", "--method", "svd", "--rank", "4"], 2, "unknown model 'resnet-18'"),
    (["compress", "resnet18", "--method", "tuker2", "--rank", "4"], 2, "did you mean 'tucker2'"),
    (["compress", "resnet18", "--method", "svd", "--rank", "0"], 2, "rank"),
    (["compress", "resnet18", "--method", "svd", "--rank", "1.5"], 2, "rank"),
    (["compress", "resnet18", "--method", "svd", "--rank", "abc"], 2, "rank"),
    (["compress", "resnet18", "--method", "svd"], 2, "--rank"),
    (["compress", "resnet18", "--method", "svd", "--rank", "4", "--input", "1x3xbig"], 2, "input shape"),
    # shapes that parse but the model does not run on: a missing dimension, wrong channels
    (["compress", "resnet18", "--method", "svd", "--rank", "4", "--input", "3x224"], 2,
     "does not run on input 3x224"),
    (["compress", "resnet18", "--method", "svd", "--rank", "4", "--input", "1x1x64x64"], 2,
     "does not run on input 1x1x64x64"),
])
def test_bad_input_is_one_line_without_traceback(capsys, args, code, text):
    got, _, err = run(capsys, *args)
    assert got == code
    assert err.startswith("error: ") and text in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_version_and_help(capsys):
    code, out, _ = run(capsys, "--version")
    assert code in (0, None) and out.startswith("latbench ")
    code, out, _ = run(capsys, "--help")
    assert "compress" in out and "sweep" in out


def test_cp_ratio_through_the_cli_reaches_the_asked_compression(capsys):
    # ResNet-18 layer1.0.conv1: Conv2d(64, 64, 3, bias=False), 36,864 parameters; cp at rank r
    # keeps r (64 + 3 + 3 + 64) = 134 r, so ratio=2 is rank 137 (18,358), not the 64-channel cap
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # CP-ALS on a shared 2-core machine: one thread is fastest
    try:
        code, out, _ = run(capsys, "compress", "resnet18", "--method", "cp", "--rank", "ratio=2",
                           "--layers", "layer1.0.conv1", "--input", "1x3x32x32", "--json")
    finally:
        torch.set_num_threads(threads)
    assert code in (0, None)
    (layer,) = json.loads(out)["layers"]
    assert layer["rank"] == [137] and layer["params_after"] == 134 * 137
    assert round(layer["params_before"] / layer["params_after"], 2) == 2.01


def test_a_saved_single_conv_compresses_through_the_cli(capsys, tmp_path):
    path = tmp_path / "conv.pt"
    torch.save(torch.nn.Conv2d(8, 16, 3), path)
    code, out, _ = run(capsys, "compress", str(path), "--method", "svd", "--rank", "4",
                       "--input", "1x8x6x6", "--out", str(tmp_path / "c.onnx"))
    assert code in (0, None)
    assert "(the model)" in out and (tmp_path / "c.onnx").stat().st_size > 0


def test_a_model_whose_matched_layers_were_all_skipped_says_why(capsys, tmp_path):
    path = tmp_path / "deconv.pt"
    torch.save(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 8, 3)), path)
    code, _, err = run(capsys, "compress", str(path), "--method", "svd", "--rank", "0.5",
                       "--input", "1x4x6x6")
    assert code == 2
    assert "1 matched but svd left them as they were" in err and "transposed convolution" in err
    assert "Traceback" not in err


def test_help_shows_the_extras_name_in_pip_install(capsys, monkeypatch):
    # rich markup would eat "[tflite]" as a style tag and tell users to `pip install "latbench"`
    monkeypatch.setenv("COLUMNS", "400")
    code, out, _ = run(capsys, "compress", "--help")
    assert code in (0, None)
    assert 'pip install "latbench[tflite]"' in out
