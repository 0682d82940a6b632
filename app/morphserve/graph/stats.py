"""Summaries of one node: its tensors' statistics, and the versions that changed it.

What a person looks at before and after an edit: did the new layer start from identity weights, did an upload
land, is anything NaN. Statistics are computed in float64 so that they match a numpy reference regardless of the
tensor's dtype; `std` is the population standard deviation (numpy's default, ddof=0).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, get_args

import torch
from pydantic import BaseModel, Field

from .dtypes import TORCH_TO_OIP
from .errors import NotFoundError
from .version import ModelVersion

#: Statistics are computed in slices of this many elements, so a large layer never needs a float64 copy at once.
_CHUNK = 1 << 22


class TensorStats(BaseModel):
    name: str = Field(description="the parameter or buffer name within the layer, e.g. `weight`")
    kind: Literal["parameter", "buffer"]
    shape: list[int]
    dtype: str = Field(description="OIP datatype, e.g. FP32")
    numel: int
    mean: float | None = Field(description="None for an empty tensor or when non-finite values are present")
    std: float | None
    min: float | None
    max: float | None
    nonfinite: int = Field(0, description="how many elements are NaN or infinite (excluded from the statistics)")


class NodeWeights(BaseModel):
    model: str
    version: int
    node: str
    tensors: list[TensorStats]


def tensor_stats(name: str, kind: Literal["parameter", "buffer"], t: torch.Tensor) -> TensorStats:
    """Mean, std, min and max of `t` over its finite elements."""
    flat = t.detach().reshape(-1)
    count, total, total_sq, nonfinite = 0, 0.0, 0.0, 0
    lo, hi = float("inf"), float("-inf")
    for start in range(0, flat.numel(), _CHUNK):
        part = flat[start : start + _CHUNK].to(torch.float64)
        finite = torch.isfinite(part)
        nonfinite += int((~finite).sum())
        part = part[finite]
        if part.numel() == 0:
            continue
        count += part.numel()
        total += float(part.sum())
        lo, hi = min(lo, float(part.min())), max(hi, float(part.max()))
    mean = total / count if count else None
    if mean is not None:
        for start in range(0, flat.numel(), _CHUNK):  # second pass: numerically stable variance
            part = flat[start : start + _CHUNK].to(torch.float64)
            part = part[torch.isfinite(part)]
            total_sq += float(((part - mean) ** 2).sum())
    return TensorStats(
        name=name,
        kind=kind,
        shape=list(t.shape),
        dtype=TORCH_TO_OIP.get(t.dtype, str(t.dtype)),
        numel=t.numel(),
        mean=mean,
        std=(total_sq / count) ** 0.5 if count else None,
        min=lo if count else None,
        max=hi if count else None,
        nonfinite=nonfinite,
    )


def node_weights(v: ModelVersion, node: str) -> NodeWeights:
    """The statistics of every parameter and buffer of `node` in version `v` (none for functions and inputs)."""
    if node not in v.shapes and node not in {t.name for t in v.inputs} | {o.name for o in v.outputs}:
        raise NotFoundError(f"model {v.model!r} version {v.version} has no node {node!r}", node=node)
    module = v.modules.get(node)
    tensors: list[TensorStats] = []
    if module is not None:
        tensors += [tensor_stats(n, "parameter", p) for n, p in module.named_parameters()]
        tensors += [tensor_stats(n, "buffer", b) for n, b in module.named_buffers()]
    return NodeWeights(model=v.model, version=v.version, node=node, tensors=tensors)


# -- the versions that changed a node ------------------------------------------------------------------------------
Aspect = Literal["layer", "function", "inputs", "weights"]
_ASPECTS: tuple[Aspect, ...] = get_args(Aspect)


class NodeVersion(BaseModel):
    version: int
    parent: int | None
    created_at: float
    change: Literal["added", "changed", "removed"]
    what: list[Aspect] = Field(description="for `changed`: what differs from the parent version")
    ops: list[dict[str, Any]]


class NodeHistory(BaseModel):
    model: str
    node: str
    versions: list[NodeVersion] = Field(description="oldest first; version 1 counts as adding its nodes")


Fingerprint = Mapping[str, Any]
"""What identifies a node's state in one version: its spec entry (layer or function, args, inputs) and the
identity of its weights (the blob digest of the journal row: a new tensor is a new digest)."""


def spec_fingerprints(spec: Mapping[str, Any], blobs: Mapping[str, str]) -> dict[str, Fingerprint]:
    """Node fingerprints of a journal row: its spec JSON and its layers' blob digests."""
    out: dict[str, Fingerprint] = {}
    for n in spec.get("nodes", []):
        out[n["id"]] = {
            "layer": n.get("layer"),
            "function": (n.get("function"), n.get("args")),
            "inputs": list(n.get("inputs", [])),
            "weights": blobs.get(n["id"]),
        }
    return out


def node_history(
    model: str,
    node: str,
    versions: Iterable[tuple[int, int | None, float, Sequence[dict[str, Any]], Mapping[str, Fingerprint]]],
) -> NodeHistory:
    """The versions in which `node` was added, changed or removed, each compared with its parent.

    `versions` are (version, parent, created_at, ops, fingerprints) in any order; a parent that is no longer
    known (deleted by gc) compares as empty, so the node counts as added there."""
    table = {v[0]: v for v in versions}
    out: list[NodeVersion] = []
    change: Literal["added", "changed", "removed"]
    what: list[Aspect]
    for number in sorted(table):
        _, parent, created_at, ops, now = table[number]
        before = table[parent][4] if parent in table else {}
        a, b = before.get(node), now.get(node)
        if a is None and b is None:
            continue
        if a is None:
            change, what = "added", []
        elif b is None:
            change, what = "removed", []
        else:
            what = [k for k in _ASPECTS if a[k] != b[k]]
            if "layer" in what and "weights" in what:
                what.remove("weights")  # a new layer has new weights: say so once, as diff() does
            if not what:
                continue
            change = "changed"
        out.append(
            NodeVersion(version=number, parent=parent, created_at=created_at, change=change, what=what, ops=list(ops))
        )
    if not out:
        raise NotFoundError(f"model {model!r} has no node {node!r} in any known version", node=node)
    return NodeHistory(model=model, node=node, versions=out)
