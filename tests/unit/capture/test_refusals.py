"""What cannot be one graph gets one short line naming the construct and the file:line of the user's code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from morphserve.capture import CaptureError, capture, load_module

USER_FILE = Path(__file__).parent / "userfiles" / "refused.py"


def _line(tag: str) -> int:
    for i, text in enumerate(USER_FILE.read_text().splitlines(), start=1):
        if text.rstrip().endswith(f"# <- HERE {tag}"):
            return i
    raise AssertionError(tag)


@pytest.mark.parametrize(
    ("attr", "tag", "construct"),
    [
        ("Branchy", "control_flow", "data-dependent control flow"),
        ("Spectral", "unsupported_op", "unsupported op aten._fft_r2c.default"),
        ("UsesFunction", "autograd_function", "custom autograd Function Double"),
        ("MutatesInput", "input_mutation", "forward mutates its input 'x' in place"),
    ],
)
def test_refusal_names_the_construct_and_the_line(attr: str, tag: str, construct: str) -> None:
    module = load_module(f"{USER_FILE}:{attr}")
    with pytest.raises(CaptureError) as ei:
        capture(module, ["x:FP32:-1,4"])
    msg = ei.value.message
    assert construct in msg, msg
    assert re.search(rf"refused\.py:{_line(tag)}\b", msg), msg
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 400


def test_a_dimension_the_model_fixes_cannot_be_variable() -> None:
    class Fixed(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.reshape(2, -1)  # only works for a batch of 2

    with pytest.raises(CaptureError, match=r"dimension 0 of input 'x' cannot vary"):
        capture(Fixed(), ["x:FP32:-1,4"])


@pytest.mark.parametrize(
    ("source", "needle"),
    [
        ("nope", "expected path/to/file.py:ATTR or package.module:ATTR"),
        (f"{USER_FILE}:Missing", "has no attribute 'Missing'"),
        (f"{USER_FILE}:not_a_module", "is a int, not an nn.Module"),
        ("no/such/file.py:x", "no such file"),
        ("no_such_package_xyz.mod:x", "cannot import 'no_such_package_xyz.mod'"),
    ],
)
def test_bad_sources_are_one_line_errors(source: str, needle: str) -> None:
    with pytest.raises(CaptureError, match=re.escape(needle)):
        load_module(source)


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("x:FP32", "expected NAME:DATATYPE:SHAPE"),
        ("x:FP99:-1,4", "expected NAME:DATATYPE:SHAPE"),
        ("x:FP32:4,4", "dimension 0 is the batch"),
    ],
)
def test_bad_input_specs(spec: str, needle: str) -> None:
    with pytest.raises(CaptureError, match=needle):
        capture(load_module(f"{USER_FILE}:good"), [spec])


def test_wrong_number_of_inputs() -> None:
    with pytest.raises(CaptureError, match="forward"):
        capture(load_module(f"{USER_FILE}:make_good"), ["x:FP32:-1,4", "y:FP32:-1,4"])


def test_sources_load_modules_and_factories() -> None:
    assert isinstance(load_module(f"{USER_FILE}:good"), torch.nn.Module)
    assert isinstance(load_module(f"{USER_FILE}:make_good"), torch.nn.Module)
    assert isinstance(load_module(f"{USER_FILE}:Good"), torch.nn.Module)  # a class is a zero-argument callable
    assert isinstance(load_module("tests.models.sequence:AudioCNN"), torch.nn.Module)
