"""The built-in models, defined as specs like any user model so they can be exported and edited the same way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from safetensors.torch import load_file

from .errors import NotFoundError, SpecError
from .spec import ModelSpec, parse_spec
from .version import ModelVersion

WEIGHTS_DIR = Path(__file__).parent / "weights"


def _lin(i: int, o: int) -> dict[str, Any]:
    return {"type": "Linear", "in_features": i, "out_features": o}


def _chain(
    name: str, input_shape: list[int], layers: list[tuple[str, dict[str, Any]]], datatype: str = "FP32"
) -> dict[str, Any]:
    nodes, prev = [], "input"
    for nid, layer in layers:
        nodes.append({"id": nid, "layer": layer, "inputs": [prev]})
        prev = nid
    return {
        "name": name,
        "inputs": [{"name": "input", "datatype": datatype, "shape": input_shape}],
        "outputs": [{"name": "output", "node": prev}],
        "nodes": nodes,
    }


def digits_spec() -> dict[str, Any]:
    """MLP for scikit-learn's 8x8 digits: 64 -> 128 -> 64 -> 10 logits (weights trained by scripts/train_digits.py)."""
    return _chain(
        "digits",
        [-1, 64],
        [
            ("fc1", _lin(64, 128)),
            ("relu1", {"type": "ReLU"}),
            ("fc2", _lin(128, 64)),
            ("relu2", {"type": "ReLU"}),
            ("fc3", _lin(64, 10)),
        ],
    )


def mlp_spec(hidden: int = 512, depth: int = 2, in_features: int = 784, classes: int = 10) -> dict[str, Any]:
    layers: list[tuple[str, dict[str, Any]]] = []
    width = in_features
    for i in range(1, depth + 1):
        layers += [(f"fc{i}", _lin(width, hidden)), (f"relu{i}", {"type": "ReLU"})]
        width = hidden
    layers.append((f"fc{depth + 1}", _lin(width, classes)))
    return _chain("mlp", [-1, in_features], layers)


def chain_spec(depth: int = 100, width: int = 64) -> dict[str, Any]:
    """`depth` square Linear layers with ReLUs in between: the benchmark's graph of a chosen size."""
    layers: list[tuple[str, dict[str, Any]]] = []
    for i in range(depth):
        layers.append((f"fc{i}", _lin(width, width)))
        if i < depth - 1:
            layers.append((f"relu{i}", {"type": "ReLU"}))
    return _chain("chain", [-1, width], layers)


def convnet_spec(
    width: float = 0.25, image: int = 32, classes: int = 10, convs: tuple[int, ...] = (2, 2, 3, 3)
) -> dict[str, Any]:
    """VGG-style: stages of Conv2d(3x3, padding=1)+ReLU, widths doubling (64·width upwards), max-pooled between
    stages, then global average pooling and a Linear classifier. (The article's stack as written fed a 3-channel
    image into a 64-channel conv and never pooled before the classifier; this version runs.)"""
    layers: list[tuple[str, dict[str, Any]]] = []
    cin, c = 3, max(1, round(64 * width))
    for s, n in enumerate(convs, start=1):
        for j in range(1, n + 1):
            layers.append(
                (
                    f"conv{s}_{j}",
                    {"type": "Conv2d", "in_channels": cin, "out_channels": c, "kernel_size": 3, "padding": 1},
                )
            )
            layers.append((f"relu{s}_{j}", {"type": "ReLU"}))
            cin = c
        layers.append((f"pool{s}", {"type": "MaxPool2d", "kernel_size": 2}))
        c *= 2
    layers += [
        ("gap", {"type": "AdaptiveAvgPool2d", "output_size": 1}),
        ("flatten", {"type": "Flatten"}),
        ("fc", _lin(cin, classes)),
    ]
    return _chain("convnet", [-1, 3, image, image], layers)


def resnet_spec(
    width: int = 16, blocks: tuple[int, ...] = (2, 2), image: int = 32, classes: int = 10
) -> dict[str, Any]:
    """A small residual CNN: a real DAG, with skip connections joined by `add` nodes."""
    nodes: list[dict[str, Any]] = []

    def layer(nid: str, spec: dict[str, Any], src: str) -> str:
        nodes.append({"id": nid, "layer": spec, "inputs": [src]})
        return nid

    def conv(nid: str, cin: int, cout: int, src: str, k: int = 3, stride: int = 1) -> str:
        return layer(
            nid,
            {
                "type": "Conv2d",
                "in_channels": cin,
                "out_channels": cout,
                "kernel_size": k,
                "stride": stride,
                "padding": k // 2,
                "bias": False,
            },
            src,
        )

    x = conv("stem", 3, width, "input")
    x = layer("stem_bn", {"type": "BatchNorm2d", "num_features": width}, x)
    x = layer("stem_relu", {"type": "ReLU"}, x)
    cin = width
    for s, n in enumerate(blocks, start=1):
        cout = width * 2 ** (s - 1)
        for b in range(1, n + 1):
            p, stride = f"s{s}b{b}", (2 if s > 1 and b == 1 else 1)
            skip = x
            y = conv(f"{p}_conv1", cin, cout, x, stride=stride)
            y = layer(f"{p}_bn1", {"type": "BatchNorm2d", "num_features": cout}, y)
            y = layer(f"{p}_relu1", {"type": "ReLU"}, y)
            y = conv(f"{p}_conv2", cout, cout, y)
            y = layer(f"{p}_bn2", {"type": "BatchNorm2d", "num_features": cout}, y)
            if stride != 1 or cin != cout:
                skip = conv(f"{p}_down", cin, cout, x, k=1, stride=stride)
            nodes.append({"id": f"{p}_add", "function": "add", "inputs": [y, skip]})
            x = layer(f"{p}_relu2", {"type": "ReLU"}, f"{p}_add")
            cin = cout
    x = layer("gap", {"type": "AdaptiveAvgPool2d", "output_size": 1}, x)
    x = layer("flatten", {"type": "Flatten"}, x)
    x = layer("fc", _lin(cin, classes), x)
    return {
        "name": "resnet",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, image, image]}],
        "outputs": [{"name": "output", "node": x}],
        "nodes": nodes,
    }


ZOO: dict[str, Callable[..., dict[str, Any]]] = {
    "digits": digits_spec,
    "mlp": mlp_spec,
    "convnet": convnet_spec,
    "resnet": resnet_spec,
    "chain": chain_spec,
}


def zoo_spec(name: str, **options: Any) -> ModelSpec:
    if name not in ZOO:
        raise NotFoundError(f"no zoo model {name!r}; the zoo has {', '.join(ZOO)}")
    try:
        data = ZOO[name](**options)
    except (TypeError, ValueError) as e:
        raise SpecError(f"zoo model {name!r}: bad options {options}: {e}") from None
    return parse_spec(data)


def load_zoo(name: str, *, as_name: str | None = None, seed: int = 0, **options: Any) -> ModelVersion:
    """Version 1 of a zoo model: seeded random weights, or the shipped trained weights for `digits`."""
    from .bundle import from_spec

    spec = zoo_spec(name, **options)
    weights_file = WEIGHTS_DIR / f"{name}.safetensors"
    tensors = load_file(weights_file) if weights_file.exists() and not options else None
    return from_spec(spec, tensors, name=as_name or name, seed=seed)
