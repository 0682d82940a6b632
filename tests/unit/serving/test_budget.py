"""The memory budget: creations and edits are sized on the meta device before anything is allocated, and refused
with the bytes needed and allowed."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from morphserve.graph import load_zoo, parse_layer, parse_spec
from morphserve.graph.version import make_version
from morphserve.graph.zoo import chain_spec, digits_spec
from morphserve.serving import budget as budget_module
from morphserve.serving.budget import MemoryBudget, layer_bytes, module_bytes, node_bytes
from morphserve.serving.errors import ModelTooLargeError
from morphserve.settings import Settings, memory_limit

F32 = 4
#: digits: 64->128->64->10, weights and biases in FP32.
DIGITS_BYTES = ((64 * 128 + 128) + (128 * 64 + 64) + (64 * 10 + 10)) * F32


def _linear(i: int, o: int) -> dict[str, Any]:
    return {"type": "Linear", "in_features": i, "out_features": o}


def test_module_bytes_counts_parameters_and_buffers() -> None:
    assert module_bytes(nn.Linear(3, 5)) == (15 + 5) * F32
    bn = nn.BatchNorm1d(7)  # weight, bias; running mean, running var (FP32) and num_batches_tracked (int64)
    assert module_bytes(bn) == 4 * 7 * F32 + 8
    assert module_bytes(nn.ReLU()) == 0
    assert module_bytes(nn.Linear(3, 5).to(torch.float16)) == (15 + 5) * 2


def test_a_layer_is_sized_on_the_meta_device_without_allocating(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[torch.device] = []
    real = budget_module.module_bytes

    def spy(m: nn.Module) -> int:
        built.extend(p.device for p in m.parameters())
        return real(m)

    monkeypatch.setattr(budget_module, "module_bytes", spy)
    budget_module._LAYER_BYTES.clear()  # a cached size would not build anything
    # 16384 x 16383 FP32 is 1 GiB: sized in no time and with no memory, because nothing real is allocated.
    size = layer_bytes(parse_layer(_linear(16383, 16384)))
    assert size == (16383 * 16384 + 16384) * F32
    assert built and all(d.type == "meta" for d in built)


def test_nodes_are_sized_by_kind() -> None:
    spec = parse_spec(
        {
            "name": "kinds",
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [{"name": "y", "node": "mul"}],
            "nodes": [
                {"id": "fc", "layer": _linear(3, 3), "inputs": ["x"]},
                {"id": "gamma", "parameter": {"shape": [3], "datatype": "FP64"}},
                {"id": "mul", "function": "mul", "inputs": ["fc", "gamma"]},
            ],
        }
    )
    sizes = {n.id: node_bytes(n) for n in spec.nodes}
    assert sizes == {"fc": (9 + 3) * F32, "gamma": 3 * 8, "mul": 0}


def test_a_spec_within_the_limit_passes_and_one_over_it_is_refused_naming_both_sizes() -> None:
    spec = parse_spec(digits_spec())
    MemoryBudget(DIGITS_BYTES).check_spec(spec)  # exactly at the limit is allowed
    with pytest.raises(ModelTooLargeError) as e:
        MemoryBudget(DIGITS_BYTES - 1).check_spec(spec, "model 'big'")
    assert e.value.fields == {
        "needed_bytes": DIGITS_BYTES,
        "limit_bytes": DIGITS_BYTES - 1,
        "weights_bytes": DIGITS_BYTES,
        "activation_bytes": 0,  # a new model's activations are sized once it is built (check_version)
    }
    msg = str(e.value)
    assert msg.startswith("model 'big' needs")
    assert f"{DIGITS_BYTES:,} bytes" in msg and f"{DIGITS_BYTES - 1:,} bytes" in msg and "--max-model-bytes" in msg


def test_an_edit_is_sized_as_the_version_it_would_make() -> None:
    digits = load_zoo("digits")
    assert sum(module_bytes(m) for m in digits.modules.values()) == DIGITS_BYTES
    insert = {"op": "insert", "after": "relu1", "layer": _linear(128, 128)}
    inserted = DIGITS_BYTES + (128 * 128 + 128) * F32
    MemoryBudget(inserted).check_edit(digits, [insert])
    with pytest.raises(ModelTooLargeError) as e:
        MemoryBudget(inserted - 1).check_edit(digits, [insert])
    assert e.value.fields["needed_bytes"] == inserted and "the edited model" in str(e.value)

    # Replacing fc1 (64->128) by a same-shaped layer costs nothing more; removing fc3 frees its bytes.
    fc3 = (64 * 10 + 10) * F32
    ops = [{"op": "replace", "node": "fc1", "layer": _linear(64, 128)}, {"op": "remove", "node": "fc3"}]
    MemoryBudget(DIGITS_BYTES - fc3).check_edit(digits, ops)
    with pytest.raises(ModelTooLargeError) as e:
        MemoryBudget(DIGITS_BYTES - fc3 - 1).check_edit(digits, ops)
    assert e.value.fields["needed_bytes"] == DIGITS_BYTES - fc3

    # Two inserts are two new layers, not one counted twice over the same key.
    MemoryBudget(DIGITS_BYTES + 2 * (128 * 128 + 128) * F32).check_edit(digits, [insert, insert])
    with pytest.raises(ModelTooLargeError):
        MemoryBudget(DIGITS_BYTES + 2 * (128 * 128 + 128) * F32 - 1).check_edit(digits, [insert, insert])


def test_a_layer_inserted_and_removed_by_one_edit_costs_nothing() -> None:
    digits = load_zoo("digits")
    insert = {"op": "insert", "after": "relu1", "name": "extra", "layer": _linear(128, 128)}
    MemoryBudget(DIGITS_BYTES).check_edit(digits, [insert, {"op": "remove", "node": "extra"}])
    replaced = [insert, {"op": "replace", "node": "extra", "layer": _linear(128, 128)}]
    MemoryBudget(DIGITS_BYTES + (128 * 128 + 128) * F32).check_edit(digits, replaced)  # counted once, not twice


def test_ops_it_cannot_parse_are_left_to_the_edit_validation() -> None:
    digits = load_zoo("digits")
    MemoryBudget(1).check_edit(digits, [{"op": "no-such-op"}])  # no ModelTooLargeError: apply_edit says what is wrong
    with pytest.raises(ModelTooLargeError):
        MemoryBudget(1).check_edit(digits, [{"op": "remove", "node": "relu1"}])  # a valid op: sized as usual


def test_a_version_counts_a_module_shared_by_two_nodes_once() -> None:
    spec = parse_spec(chain_spec(depth=2, width=8))  # fc0 and fc1, both Linear(8, 8)
    shared = nn.Linear(8, 8)
    v = make_version("chain", 1, None, spec, {"fc0": shared, "relu0": nn.ReLU(), "fc1": shared})
    one = (8 * 8 + 8) * F32
    MemoryBudget(one).check_version(v, "chain", activations=False)
    with pytest.raises(ModelTooLargeError, match="^restored chain needs") as e:
        MemoryBudget(one - 1).check_version(v, "restored chain", activations=False)
    assert e.value.fields["needed_bytes"] == one
    # with its activations (a forward at the batch size), the same version needs more
    with pytest.raises(ModelTooLargeError) as e:
        MemoryBudget(one).check_version(v, "chain")
    assert e.value.fields["activation_bytes"] > 0 and e.value.fields["weights_bytes"] == one


def test_without_max_model_bytes_the_limit_is_half_the_memory_not_unlimited() -> None:
    assert Settings(max_model_bytes=None).model_bytes_limit == memory_limit() // 2
    assert Settings(max_model_bytes=12345).model_bytes_limit == 12345
