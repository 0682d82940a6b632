"""Model specs for the page's scale tests and its layout benchmark (scripts/bench/ui_layout.py).

`chain(n)`: `n` layers in one line (Linear and ReLU alternating). `resnet50()`: the ResNet-50 graph as an import
of torchvision's model would name it (torch.fx node ids are module paths joined by `_`: `layer4_2_conv3`, the
residual sums `add`, `add_1`, ...), with narrow channels so that it is quick to build: 3-4-6-3 bottleneck blocks,
one downsample branch per stage, 173 nodes. `encoder(nodes)`: a transformer-shaped graph of exactly `nodes` nodes
with module-path ids four levels deep (`encoder_stage_3_layer_17_attention_q`: stages of 48 layers, each an attention
and a feed-forward block with their residual sums), narrow (width 8) so that 10,000 nodes build in a second.
"""

from __future__ import annotations

from typing import Any


def chain(n: int, width: int = 16) -> dict[str, Any]:
    nodes, prev = [], "input"
    for i in range(n):
        nid, layer = (
            (f"fc{i // 2}", {"type": "Linear", "in_features": width, "out_features": width})
            if i % 2 == 0
            else (f"act{i // 2}", {"type": "ReLU"})
        )
        nodes.append({"id": nid, "layer": layer, "inputs": [prev]})
        prev = nid
    return {
        "name": f"chain{n}",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": "output", "node": prev}],
        "nodes": nodes,
    }


def resnet50(width: int = 1, image: int = 32, classes: int = 10) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []

    def add(nid: str, layer: dict[str, Any] | None, *inputs: str, function: str | None = None) -> str:
        node: dict[str, Any] = {"id": nid, "inputs": list(inputs)}
        if layer is not None:
            node["layer"] = layer
        else:
            node["function"] = function
        nodes.append(node)
        return nid

    def conv(nid: str, cin: int, cout: int, src: str, k: int = 1, stride: int = 1) -> str:
        return add(
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

    def bn(nid: str, c: int, src: str) -> str:
        return add(nid, {"type": "BatchNorm2d", "num_features": c}, src)

    relu = {"type": "ReLU"}
    x = conv("conv1", 3, width * 16, "input", k=7, stride=2)
    x = add("relu", relu, bn("bn1", width * 16, x))
    x = add("maxpool", {"type": "MaxPool2d", "kernel_size": 3, "stride": 2, "padding": 1}, x)
    cin, adds = width * 16, 0
    for stage, blocks in enumerate((3, 4, 6, 3), start=1):
        mid = width * 16 * 2 ** (stage - 1)
        out = mid * 4
        for b in range(blocks):
            p = f"layer{stage}_{b}"
            stride = 2 if stage > 1 and b == 0 else 1
            y = add(f"{p}_relu", relu, bn(f"{p}_bn1", mid, conv(f"{p}_conv1", cin, mid, x)))
            y = add(f"{p}_relu_1", relu, bn(f"{p}_bn2", mid, conv(f"{p}_conv2", mid, mid, y, k=3, stride=stride)))
            y = bn(f"{p}_bn3", out, conv(f"{p}_conv3", mid, out, y))
            skip = x
            if b == 0:
                skip = bn(f"{p}_downsample_1", out, conv(f"{p}_downsample_0", cin, out, x, stride=stride))
            s = add("add" if adds == 0 else f"add_{adds}", None, y, skip, function="add")
            adds += 1
            x = add(f"{p}_relu_2", relu, s)
            cin = out
    x = add("avgpool", {"type": "AdaptiveAvgPool2d", "output_size": 1}, x)
    x = add("flatten", {"type": "Flatten"}, x)
    x = add("fc", {"type": "Linear", "in_features": cin, "out_features": classes}, x)
    return {
        "name": "resnet50",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3, image, image]}],
        "outputs": [{"name": "output", "node": x}],
        "nodes": nodes,
    }


def encoder(nodes: int = 10_000, width: int = 8, layers_per_stage: int = 48) -> dict[str, Any]:
    out: list[dict[str, Any]] = []

    def add(nid: str, layer: dict[str, Any] | None, *inputs: str) -> str:
        node: dict[str, Any] = {"id": nid, "inputs": list(inputs)}
        if layer is None:
            node["function"] = "add"
        else:
            node["layer"] = layer
        out.append(node)
        return nid

    lin = {"type": "Linear", "in_features": width, "out_features": width}
    norm = {"type": "LayerNorm", "normalized_shape": [width]}
    x = add("embed", lin, "input")
    per_layer = 14
    i = 0
    while len(out) + per_layer < nodes:
        p = f"encoder_stage_{i // layers_per_stage}_layer_{i % layers_per_stage}"
        q = add(f"{p}_attention_q", lin, x)
        k = add(f"{p}_attention_k", lin, x)
        v = add(f"{p}_attention_v", lin, x)
        mix = add(f"{p}_attention_mix", None, q, k)
        mix = add(f"{p}_attention_mix_1", None, mix, v)
        a = add(f"{p}_attention_out", lin, mix)
        x = add(f"{p}_norm1", norm, add(f"{p}_add", None, x, a))
        h = add(f"{p}_ffn_lin1", lin, x)
        h = add(f"{p}_ffn_act", {"type": "GELU"}, h)
        h = add(f"{p}_ffn_lin2", lin, h)
        h = add(f"{p}_ffn_dropout", {"type": "Dropout", "p": 0.1}, h)
        x = add(f"{p}_norm2", norm, add(f"{p}_add_1", None, x, h))
        i += 1
    j = 0
    while len(out) < nodes:
        x = add(f"head_{j}", lin, x)
        j += 1
    return {
        "name": f"encoder{nodes}",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, width]}],
        "outputs": [{"name": "output", "node": x}],
        "nodes": out,
    }
