"""ONNX in (issue 23): `morphserve import model.onnx --input ...` converts the ONNX graph (onnx2torch) and captures it
through the same path; the served model keeps the ONNX graph's input and output names (`input.1`, `prob:0`) and
matches onnx's own export of the module. Refusals are one line."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
import pytest
import torch
from onnx import TensorProto, helper
from torch import nn

from morphserve.capture.importer import import_to_bundle
from morphserve.capture.refusals import CaptureError
from morphserve.graph import from_spec, read_bundle
from tests.forkserver import run_cli


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3))).softmax(-1)


@pytest.fixture
def net_onnx(tmp_path: Path) -> tuple[nn.Module, Path]:
    torch.manual_seed(0)
    module = Net().eval()
    path = tmp_path / "net.onnx"
    with (
        warnings.catch_warnings()
    ):  # the TorchScript exporter (quick, and what many ONNX files came from) is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(module, path)
    return module, path


def _export(module: nn.Module, path: Path) -> None:
    torch.onnx.export(
        module,
        (torch.randn(2, 3, 16, 16),),
        str(path),
        input_names=["input.1"],
        output_names=["prob:0"],
        dynamic_axes={"input.1": {0: "batch"}},
        dynamo=False,
    )


def test_an_onnx_model_imports_with_its_names(net_onnx: tuple[nn.Module, Path], tmp_path: Path) -> None:
    module, path = net_onnx
    done = import_to_bundle(str(path), ["input.1:FP32:-1,3,16,16"], tmp_path / "net.zip")
    assert done.name == "net" and done.layers >= 2
    v = from_spec(*read_bundle(tmp_path / "net.zip"))
    assert [t.name for t in v.inputs] == ["input.1"] and [o.name for o in v.outputs] == ["prob:0"]
    x = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        want = module(x)
    assert float((v.run(x)[0] - want).abs().max()) <= 1e-5
    assert any(n.layer is not None and n.layer.type == "Conv2d" for n in v.spec.nodes)


def test_the_cli_imports_onnx(net_onnx: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = net_onnx
    out = tmp_path / "cli.zip"
    r = run_cli(["import", str(path), "--input", "input.1:FP32:-1,3,16,16", "-o", str(out)], {"HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    assert f"wrote {out}: model 'net'" in r.stdout
    assert out.exists()


def test_an_operator_the_converter_lacks_is_one_line(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    graph = helper.make_graph([helper.make_node("Hardmax", ["x"], ["y"], axis=-1)], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    path = tmp_path / "hard.onnx"
    onnx.save(model, str(path))
    with pytest.raises(CaptureError) as e:
        import_to_bundle(str(path), ["x:FP32:-1,4"], tmp_path / "hard.zip")
    msg = e.value.message
    assert "hard.onnx" in msg and "Hardmax" in msg and "\n" not in msg, msg


def test_a_file_that_is_not_onnx_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"not a protobuf at all")
    with pytest.raises(CaptureError, match="is not a readable ONNX model"):
        import_to_bundle(str(path), ["x:FP32:-1,4"], tmp_path / "j.zip")
