"""Shared helpers for the graph library tests: cached zoo versions, fixed inputs, and 'nothing changed' checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from morphserve.graph import LiveModel, ModelVersion, load_zoo

MODELS = ("digits", "mlp", "convnet", "resnet")

# Per model: a layer node to insert after/before (single input), a removable one-input node, a replaceable layer
# (with a same-shaped alternative config so keep_weights applies), and a layer whose weights we set.
ANCHORS: dict[str, dict[str, Any]] = {
    "digits": {
        "after": "relu1",
        "before": "fc2",
        "remove": "relu1",
        "replace": "fc2",
        "weights": "fc3",
        "replacement": {"type": "Linear", "in_features": 128, "out_features": 64},
        "wider": {"type": "Linear", "in_features": 128, "out_features": 32},
    },
    "mlp": {
        "after": "relu1",
        "before": "fc2",
        "remove": "relu2",
        "replace": "fc2",
        "weights": "fc3",
        "replacement": {"type": "Linear", "in_features": 512, "out_features": 512},
        "wider": {"type": "Linear", "in_features": 512, "out_features": 256},
    },
    "convnet": {
        "after": "relu2_1",
        "before": "conv2_2",
        "remove": "relu2_1",
        "replace": "conv2_2",
        "weights": "fc",
        "replacement": {"type": "Conv2d", "in_channels": 32, "out_channels": 32, "kernel_size": 3, "padding": "same"},
        "wider": {"type": "Conv2d", "in_channels": 32, "out_channels": 48, "kernel_size": 3, "padding": 1},
    },
    "resnet": {
        "after": "s1b1_relu1",
        "before": "s1b1_conv2",
        "remove": "s1b1_relu1",
        "replace": "s1b1_conv2",
        "weights": "fc",
        "replacement": {
            "type": "Conv2d",
            "in_channels": 16,
            "out_channels": 16,
            "kernel_size": 3,
            "padding": "same",
            "bias": False,
        },
        "wider": {
            "type": "Conv2d",
            "in_channels": 16,
            "out_channels": 24,
            "kernel_size": 3,
            "padding": 1,
            "bias": False,
        },
    },
}

_BASES: dict[str, ModelVersion] = {}


def base(name: str) -> ModelVersion:
    """Version 1 of a zoo model, loaded once per session (versions are immutable, so sharing is safe)."""
    if name not in _BASES:
        _BASES[name] = load_zoo(name)
    return _BASES[name]


def live(name: str) -> LiveModel:
    return LiveModel(base(name))


def example(v: ModelVersion, batch: int = 3, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """A fixed input batch for the version's signature (every -1 becomes `batch`)."""
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn([batch if d == -1 else d for d in t.shape], generator=g) for t in v.inputs)


def run(v: ModelVersion, x: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    return v.run(*x)


def max_diff(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...]) -> float:
    assert len(a) == len(b)
    return max(float((p - q).abs().max()) for p, q in zip(a, b, strict=True))


def shape(v: ModelVersion, node: str) -> tuple[int, ...]:
    return v.shapes[node].shape


def users(v: ModelVersion, node: str) -> list[str]:
    return [n.id for n in v.spec.nodes if node in n.inputs]


def square_layer(s: tuple[int, ...]) -> dict[str, Any]:
    """A parametrised layer that keeps shape `s` and can be an exact identity: Linear or 3x3 Conv2d."""
    if len(s) == 2:
        return {"type": "Linear", "in_features": s[1], "out_features": s[1]}
    assert len(s) == 4, s
    return {"type": "Conv2d", "in_channels": s[1], "out_channels": s[1], "kernel_size": 3, "padding": 1}


def storage_ptrs(v: ModelVersion) -> set[int]:
    return {t.untyped_storage().data_ptr() for t in v.state_dict().values()}


def new_bytes(old: ModelVersion, new: ModelVersion) -> int:
    """Bytes of tensor storage `new` holds that `old` does not."""
    seen = storage_ptrs(old)
    counted: set[int] = set()
    total = 0
    for t in new.state_dict().values():
        s = t.untyped_storage()
        if s.data_ptr() not in seen and s.data_ptr() not in counted:
            counted.add(s.data_ptr())
            total += s.nbytes()
    return total


@dataclass
class Snapshot:
    """Everything a refused edit must leave alone, captured before the attempt."""

    live: LiveModel
    current: ModelVersion
    versions: list[ModelVersion]
    spec: Any
    spec_json: dict[str, Any]
    modules: dict[str, torch.nn.Module]
    tensors: dict[str, torch.Tensor]
    x: tuple[torch.Tensor, ...]
    out: tuple[torch.Tensor, ...]

    @classmethod
    def take(cls, lm: LiveModel) -> Snapshot:
        v = lm.current
        x = example(v)
        return cls(
            live=lm,
            current=v,
            versions=list(lm.versions()),
            spec=v.spec,
            spec_json=v.spec.model_dump(mode="json"),
            modules=dict(v.modules),
            tensors={k: t.clone() for k, t in v.state_dict().items()},
            x=x,
            out=run(v, x),
        )

    def check(self) -> None:
        lm = self.live
        v = lm.current
        assert v is self.current, "LiveModel.current changed"
        assert list(lm.versions()) == self.versions, "the version list changed"
        assert v.spec is self.spec
        assert v.spec.model_dump(mode="json") == self.spec_json
        assert set(v.modules) == set(self.modules)
        for k, m in self.modules.items():
            assert v.modules[k] is m, f"module {k} was replaced"
        sd = v.state_dict()
        assert sd.keys() == self.tensors.keys()
        for k, t in self.tensors.items():
            assert torch.equal(sd[k], t), f"tensor {k} was modified"
        out = run(v, self.x)
        assert all(torch.equal(a, b) for a, b in zip(out, self.out, strict=True)), "outputs changed"
