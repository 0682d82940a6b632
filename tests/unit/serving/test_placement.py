"""Placement: on the CPU a version runs as it is; elsewhere each layer is copied to the device once and shared by the
versions that share it (exercised on PyTorch's meta device, which needs no GPU); the warm-up gates what may serve."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from types import SimpleNamespace
from typing import cast

import pytest
import torch

from morphserve.graph import EditError, ModelVersion, apply_edit, load_zoo
from morphserve.serving import placement as placement_module
from morphserve.serving.placement import Placement, resolve_device, warm_up

from .helpers import two_inputs

META = torch.device("meta")


class Recorder:
    """A runnable that records what it was called with, and fails when told to."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.calls: list[list[tuple[tuple[int, ...], torch.dtype, torch.device]]] = []
        self.fail = fail

    def __call__(self, *args: torch.Tensor) -> Sequence[torch.Tensor]:
        self.calls.append([(tuple(a.shape), a.dtype, a.device) for a in args])
        if self.fail is not None:
            raise self.fail
        return args


def _fake_version(v: ModelVersion, runnable: Recorder) -> ModelVersion:
    """`v`'s signature over another runnable: what the CPU placement reads of a version is these two."""
    return cast(ModelVersion, SimpleNamespace(inputs=v.inputs, graph_module=runnable))


def test_on_the_cpu_a_version_runs_its_own_graph_module() -> None:
    digits = load_zoo("digits")
    p = Placement(torch.device("cpu"))
    assert p.place(digits) is digits.graph_module
    assert p.prepare(digits) is digits.graph_module


def test_the_warm_up_runs_one_row_of_zeros_of_each_input_in_signature_order() -> None:
    v = two_inputs()
    rec = Recorder()
    warm_up(v, rec, torch.device("cpu"))
    cpu = torch.device("cpu")
    assert rec.calls == [[((1, 32), torch.float32, cpu), ((1, 1), torch.int64, cpu)]]  # -1 beyond the batch: 32


def test_prepare_warms_up_and_a_failing_forward_is_an_edit_error_that_says_why() -> None:
    v = two_inputs()
    ok = Recorder()
    runnable: object = Placement(torch.device("cpu")).prepare(_fake_version(v, ok))
    assert runnable is ok
    assert len(ok.calls) == 1
    bad = Recorder(fail=RuntimeError("mat1 and mat2 shapes cannot be multiplied\nand a long traceback"))
    with pytest.raises(EditError, match="failed its warm-up forward: mat1 and mat2 shapes cannot be multiplied$"):
        Placement(torch.device("cpu")).prepare(_fake_version(v, bad))
    assert len(bad.calls) == 1


def test_a_real_version_warms_up_on_the_cpu() -> None:
    v = two_inputs()
    runnable = Placement(torch.device("cpu")).prepare(v)
    (y,) = runnable(torch.tensor([[-1.0, 2.0]]), torch.tensor([[3]]))
    assert torch.equal(y, torch.tensor([[3.0, 5.0]]))


def test_off_the_cpu_layers_are_copied_once_and_shared_by_versions_that_share_them() -> None:
    v1 = load_zoo("digits")
    p = Placement(META)
    r1 = p.prepare(v1)  # the warm-up runs on the meta device too
    fc1 = r1.get_submodule("fc1")
    assert fc1 is not v1.modules["fc1"] and fc1.weight.device.type == "meta"
    assert v1.modules["fc1"].weight.device.type == "cpu"  # the version's own module stays where it was
    v2 = apply_edit(
        v1,
        [{"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}],
        version=2,
    )
    r2 = p.place(v2)
    assert r2.get_submodule("fc1") is fc1  # unchanged layer: the same device copy, not uploaded again
    assert r2.get_submodule("fc3") is not r1.get_submodule("fc3")  # the replaced layer got its own
    assert p.place(v1).get_submodule("fc3") is r1.get_submodule("fc3")


def test_retain_frees_the_copies_no_resident_version_uses() -> None:
    v1 = load_zoo("digits")
    v2 = apply_edit(
        v1,
        [{"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 10}}],
        version=2,
    )
    p = Placement(META)
    r1, r2 = p.place(v1), p.place(v2)
    p.retain([v2])  # v1 evicted: its own fc3 copy goes, the layers it shares with v2 stay
    again = p.place(v1)
    assert again.get_submodule("fc3") is not r1.get_submodule("fc3")
    assert again.get_submodule("fc1") is r1.get_submodule("fc1") is r2.get_submodule("fc1")
    assert p.place(v2).get_submodule("fc3") is r2.get_submodule("fc3")
    p.retain([])
    assert p.place(v2).get_submodule("fc1") is not r2.get_submodule("fc1")


def test_the_device_is_resolved_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu", 3) == torch.device("cpu")
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device(name)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == torch.device("cuda")
    assert [resolve_device("cuda", i) for i in range(4)] == [torch.device(f"cuda:{i % 2}") for i in range(4)]
    assert resolve_device("cuda:1", 0) == torch.device("cuda:1")  # explicit: taken as given
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto", 5) == torch.device("cuda")


def test_the_warm_up_runs_off_the_serving_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    @contextlib.contextmanager
    def side_stream() -> Iterator[None]:
        seen.append("enter")
        yield
        seen.append("leave")

    monkeypatch.setattr(placement_module, "ops_for", lambda device: SimpleNamespace(side_stream=side_stream))

    def runnable(*args: torch.Tensor) -> Sequence[torch.Tensor]:
        seen.append("forward")
        return args

    warm_up(two_inputs(), runnable, torch.device("cpu"))
    assert seen == ["enter", "forward", "leave"]
