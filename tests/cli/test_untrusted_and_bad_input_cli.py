"""Untrusted files and bad input on the command line: one ``error:`` line, exit code 2, no
traceback, and nothing from a crafted file runs unless ``--trust-file`` is given."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from clirun import bench
from latbench.devices.profiles import ENV_VAR

SMALL = ("--input", "1x3x8x8")


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


class _Bomb:
    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (exec, (f"open({self.path!r}, 'w').write('pwned')",))


class TinyOwnNet(nn.Module):
    """A network class of the user's own: loadable whole only with --trust-file."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).mean(dim=(2, 3)))


# ------------------------------------------------------------------ model files
@pytest.mark.parametrize("command", [
    ("compress", "{m}", "--method", "svd", "--rank", "0.5", *SMALL),
    ("sweep", "--model", "{m}", "--methods", "svd", "--ranks", "0.5", *SMALL, "--db", "lat.db"),
    ("search", "{m}", "--speedup", "1.5", *SMALL),
])
def test_a_crafted_model_file_is_refused_and_not_run(capsys, tmp_path, command):
    target = tmp_path / "pwned.txt"
    model = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _Bomb(target)}, model)
    code, _, err = bench(capsys, *(a.format(m=model) for a in command))
    one_error_line(code, err, "--trust-file", "builtins.exec")
    assert not target.exists() and not (tmp_path / "lat.db").exists()


def test_own_classes_need_trust_file_then_compress_and_sweep_work(capsys, tmp_path):
    model = tmp_path / "own.pt"
    torch.save(TinyOwnNet().eval(), model)
    code, _, err = bench(capsys, "compress", str(model), "--method", "svd", "--rank", "0.5",
                         "--layers", "fc", *SMALL, "--json")
    one_error_line(code, err, "TinyOwnNet", "--trust-file")
    code, out, err = bench(capsys, "compress", str(model), "--method", "svd", "--rank", "0.5",
                           "--layers", "fc", *SMALL, "--json", "--trust-file")
    assert code == 0, err
    assert json.loads(out)["layers"][0]["name"] == "fc"
    sweep = ("sweep", "--model", str(model), "--methods", "svd", "--ranks", "0.5", *SMALL,
             "--threads", "1", "--warmup", "1", "--repeats", "3", "--fixed-repeats",
             "--random-plans", "0",
             "--db", str(tmp_path / "lat.db"), "--json")
    code, _, err = bench(capsys, *sweep)
    one_error_line(code, err, "--trust-file")
    code, out, err = bench(capsys, *sweep, "--trust-file")
    assert code == 0, err
    assert json.loads(out)["measured"] == 2  # the original and its SVD variant


def test_a_state_dict_with_its_architecture_needs_no_trust(capsys, tmp_path):
    weights = tmp_path / "w.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 8, 3)).state_dict(), weights)
    code, _, err = bench(capsys, "compress", str(weights), "--method", "svd", "--rank", "0.5",
                         *SMALL)
    one_error_line(code, err, "state dict", "@")
    from latbench.models import resolve_model

    torch.save(resolve_model("resnet18", seed=4).state_dict(), weights)
    code, out, err = bench(capsys, "compress", f"resnet18@{weights}", "--method", "svd",
                           "--rank", "0.5", "--layers", "fc", "--input", "1x3x32x32", "--json")
    assert code == 0, err and json.loads(out)["params_before"] == 11_689_512


@pytest.mark.parametrize("command", [("compress",), ("sweep",), ("search",),
                                     ("predictor", "predict"), ("predictor", "convert")])
def test_help_documents_trust_file(capsys, command):
    code, out, _ = bench(capsys, *command, "--help")
    assert code == 0 and "--trust-file" in out


# ------------------------------------------------------------------ predictor files
@pytest.fixture
def old_predictor(tmp_path: Path) -> Path:
    """A predictor file as latbench-predictor/1 wrote it (a pickle)."""
    from latbench.data.features import FEATURE_SCHEMA_VERSION, layer_table
    from latbench.models import resolve_model
    from latbench.predictor.flops import FlopsPredictor

    tables = [layer_table(resolve_model(n), (1, 3, 32, 32)) for n in ("resnet18", "vgg11",
                                                                       "mobilenet_v2")]
    est = FlopsPredictor().fit(tables, [5.0, 9.0, 3.0], device="phone")
    path = tmp_path / "old.pkl"
    path.write_bytes(pickle.dumps({"format": "latbench-predictor/1", "device": "phone",
                                   "feature_schema_version": FEATURE_SCHEMA_VERSION,
                                   "kind": "flops", "predictor": est}))
    return path


@pytest.mark.slow
def test_an_old_pickled_predictor_needs_trust_file_or_convert(capsys, tmp_path, old_predictor):
    predict = ("predictor", "predict", "--predictor", str(old_predictor), "resnet18",
               "--input", "1x3x32x32", "--json")
    code, _, err = bench(capsys, *predict)
    one_error_line(code, err, "--trust-file", "bench predictor convert")
    code, out, err = bench(capsys, *predict, "--trust-file")
    assert code == 0, err
    before = json.loads(out)["latency_ms"]
    new = tmp_path / "new.predictor"
    code, _, err = bench(capsys, "predictor", "convert", str(old_predictor), "--out", str(new))
    one_error_line(code, err, "--trust-file")
    code, out, err = bench(capsys, "predictor", "convert", str(old_predictor), "--out", str(new),
                           "--trust-file")
    assert code == 0 and "latbench-predictor/2" in out, err
    code, out, err = bench(capsys, "predictor", "predict", "--predictor", str(new), "resnet18",
                           "--input", "1x3x32x32", "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"] == before and json.loads(out)["device"] == "phone"


def test_a_predictor_pickle_bomb_is_refused_by_predict_and_search(capsys, tmp_path):
    target = tmp_path / "pwned.txt"
    bomb = tmp_path / "p.pkl"
    bomb.write_bytes(pickle.dumps(_Bomb(target)))
    code, _, err = bench(capsys, "predictor", "predict", "--predictor", str(bomb), "resnet18")
    one_error_line(code, err, "--trust-file")
    code, _, err = bench(capsys, "search", "resnet18", "--speedup", "1.5", "--predictor", str(bomb),
                         *SMALL)
    one_error_line(code, err, "--trust-file")
    code, _, err = bench(capsys, "predictor", "predict", "--predictor", str(tmp_path / "no"),
                         "resnet18")
    one_error_line(code, err, "does not exist")
    assert not target.exists()


# ------------------------------------------------------------------ bad input
def _tiny_onnx(path: Path) -> Path:
    from latbench.compress.export import export_onnx

    export_onnx(nn.Sequential(nn.Conv2d(3, 4, 3)).eval(), (1, 3, 8, 8), path)
    return path


@pytest.mark.parametrize("content,fragment", [(b"", "no bytes"), (b"\x08\x07", "no graph"),
                                              (b"garbage!", "not a readable ONNX model")])
def test_an_empty_or_broken_onnx_is_one_line(capsys, tmp_path, content, fragment):
    model = tmp_path / "m.onnx"
    model.write_bytes(content)
    code, _, err = bench(capsys, "run", str(model), "--device", "cpu")
    one_error_line(code, err, fragment)


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "0", "-1"])
def test_run_refuses_a_max_time_that_is_not_a_positive_number(capsys, tmp_path, value):
    model = _tiny_onnx(tmp_path / "m.onnx")
    code, _, err = bench(capsys, "run", str(model), "--device", "cpu", "--adaptive",
                         "--max-time", value)
    one_error_line(code, err, "max_time_s")


@pytest.mark.parametrize("line,fragment", [
    ("timeout_s = inf", "timeout_s must be a finite number of seconds (positive), got inf"),
    ("timeout_s = nan", "timeout_s must be a finite number of seconds (positive), got nan"),
    ("timeout_s = -inf", "timeout_s must be"),
    ("io_timeout_s = nan", "io_timeout_s must be"),
    ("auth_timeout_s = 0", "auth_timeout_s must be"),
    ("cooldown_poll_s = -1", "cooldown_poll_s must be a finite number of seconds (positive)"),
    ("cooldown_poll_s = 0.0", "cooldown_poll_s must be"),
    ("cooldown_timeout_s = -5", "cooldown_timeout_s must be a finite number of seconds (0 or more)"),
    ("cooldown_timeout_s = inf", "cooldown_timeout_s must be"),
    ("cooldown_temp_c = nan", "cooldown_temp_c must be a finite number of °C"),
    ("throttle_temp_c = inf", "throttle_temp_c must be"),
])
def test_adb_profile_numbers_must_be_finite_and_in_range(capsys, tmp_path, line, fragment):
    devices = tmp_path / "devices.toml"
    devices.write_text(f'[pixel]\nkind = "adb"\nhost = "127.0.0.1:1"\n'
                       f'runner = "/data/local/tmp/onnxruntime_perf_test"\n{line}\n')
    model = str(_tiny_onnx(tmp_path / "m.onnx"))
    for command in (("devices", "check", "pixel"), ("run", model, "--device", "pixel")):
        code, _, err = bench(capsys, *command, "--devices", str(devices))
        one_error_line(code, err, "'pixel'", fragment)


def test_a_non_utf8_devices_file_is_one_line(capsys, tmp_path):
    devices = tmp_path / "devices.toml"
    devices.write_bytes('[pixel]\nkind = "adb"\ndescription = "caf\u00e9"\n'.encode("latin-1"))
    model = str(_tiny_onnx(tmp_path / "m.onnx"))
    for command in (("devices", "list"), ("devices", "check", "pixel"),
                    ("run", model, "--device", "pixel")):
        code, _, err = bench(capsys, *command, "--devices", str(devices))
        one_error_line(code, err, "not UTF-8", "devices.toml")


def test_a_non_utf8_devices_file_found_implicitly_is_one_line(capsys, tmp_path):
    (tmp_path / "devices.toml").write_bytes(b"[cpu]\nthreads = 1 # \xff\n")
    code, _, err = bench(capsys, "devices", "list")
    one_error_line(code, err, "not UTF-8")


def test_a_non_utf8_sweep_config_is_one_line(capsys, tmp_path):
    config = tmp_path / "sweep.toml"
    config.write_bytes(b'[[models]]\nname = "resnet18" # \xe9t\xe9\n')
    code, _, err = bench(capsys, "sweep", "--config", str(config), "--db", "lat.db")
    one_error_line(code, err, "sweep config", "not UTF-8")
    code, _, err = bench(capsys, "sweep", "--config", str(tmp_path), "--db", "lat.db")
    one_error_line(code, err, "cannot read sweep config")
    assert not (tmp_path / "lat.db").exists()


def test_a_non_utf8_plan_is_one_line(capsys, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_bytes(b'{"layers": {"fc": {"method": "svd", "rank": 8}}, "note": "\xe9"}')
    code, _, err = bench(capsys, "compress", "resnet18", "--plan", str(plan), *SMALL)
    one_error_line(code, err, "plan file", "not UTF-8")
    code, _, err = bench(capsys, "compress", "resnet18", "--plan", str(tmp_path), *SMALL)
    one_error_line(code, err, "cannot read plan file")
