"""An immutable model version: spec + modules + shapes, and the fx graph module built from them."""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from .errors import SpecError
from .shapes import _PROBE_SIZES, NodeShape, RecordedShape, propagate
from .spec import ModelSpec, OutputSpec, TensorSpec, build_graph_module, lint


@dataclass(frozen=True, eq=False)
class ModelVersion:
    """One numbered snapshot. Never mutated: an edit builds a new one that shares unchanged modules.

    Modules are kept in eval mode and on the CPU (the serving layer places device copies).
    """

    model: str
    version: int
    parent: int | None
    spec: ModelSpec
    modules: Mapping[str, nn.Module]
    shapes: Mapping[str, NodeShape]
    ops: tuple[dict[str, Any], ...] = ()
    created_at: float = field(default_factory=time.time)

    @functools.cached_property
    def graph_module(self) -> fx.GraphModule:
        return build_graph_module(self.spec, self.modules)

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return self.spec.inputs

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        return self.spec.outputs

    def params(self, node_id: str) -> int:
        m = self.modules.get(node_id)
        return sum(p.numel() for p in m.parameters()) if m is not None else 0

    def total_params(self) -> int:
        return sum(self.params(n.id) for n in self.spec.nodes)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """All tensors, keyed `<node>.<param>` as in a PyTorch state dict (`<node>.value` for a parameter node)."""
        return {f"{nid}.{k}": v for nid, m in self.modules.items() for k, v in m.state_dict().items()}

    def recorded_shapes(self) -> dict[str, RecordedShape]:
        """The shape table in the form the journal saves (see `make_version(recorded_shapes=...)`)."""
        return {n.id: self.shapes[n.id].recorded() for n in self.spec.nodes}

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Reference forward on the CPU copy (tests, warm-up); the server runs its device copy."""
        with torch.inference_mode():
            return tuple(self.graph_module(*inputs))


def _wire_datatype(datatype: str, compute: str | None) -> str:
    """What an output is on the wire: with a compute datatype, floating results go out as FP32 (precision.to_wire)."""
    return "FP32" if compute is not None and datatype in ("FP16", "BF16", "FP32", "FP64") else datatype


def make_version(
    model: str,
    version: int,
    parent: int | None,
    spec: ModelSpec,
    modules: Mapping[str, nn.Module],
    *,
    previous: ModelVersion | None = None,
    ops: tuple[dict[str, Any], ...] = (),
    check_outputs: bool = True,
    created_at: float | None = None,
    recorded_shapes: Mapping[str, RecordedShape] | None = None,
) -> ModelVersion:
    """Lint, propagate shapes (reusing `previous`'s), fill the output signature, and freeze a version.

    With `check_outputs`, declared output shapes/datatypes in `spec` must match what the graph produces.
    """
    lint(spec)
    layer_ids = {n.id for n in spec.nodes if n.has_module}
    missing = layer_ids - set(modules)
    if missing:
        raise SpecError(f"no module for layer or parameter node(s) {sorted(missing)}")
    mods = {k: modules[k].eval() for k in layer_ids}
    for m in mods.values():
        m.requires_grad_(False)
    shapes = propagate(spec, mods, previous.shapes if previous is not None else None, recorded_shapes)
    outputs = []
    for o in spec.outputs:
        s = shapes[o.node]
        if s.elements:
            raise SpecError(
                f"output {o.name!r} comes from {o.node!r}, a tuple of {len(s.elements)} tensors; "
                "select one with a getitem node",
                node=o.node,
            )
        # Dimension 0 must be the batch itself (a Flatten(start_dim=0) also varies with it, as batch*k).
        batch_ok = all(p[:1] == (b,) for p, (b, _) in zip(s.probe, _PROBE_SIZES, strict=True))
        if not s.shape or s.shape[0] != -1 or not batch_ok:
            raise SpecError(
                f"output {o.name!r} from {o.node!r} has shape {list(s.shape)}: dimension 0 must stay the batch",
                node=o.node,
            )
        if check_outputs and o.shape is not None and tuple(o.shape) != s.shape:
            raise SpecError(
                f"output {o.name!r} is declared {list(o.shape)} but node {o.node!r} produces {list(s.shape)}",
                node=o.node,
                expected=list(o.shape),
                got=list(s.shape),
            )
        wire = _wire_datatype(s.datatype, spec.compute_datatype)
        if check_outputs and o.datatype is not None and o.datatype != wire:
            raise SpecError(
                f"output {o.name!r} is declared {o.datatype} but node {o.node!r} produces {wire}",
                node=o.node,
                expected=o.datatype,
                got=wire,
            )
        outputs.append(OutputSpec(name=o.name, node=o.node, datatype=wire, shape=s.shape))
    spec = spec.model_copy(update={"outputs": tuple(outputs)})
    return ModelVersion(
        model=model,
        version=version,
        parent=parent,
        spec=spec,
        modules=MappingProxyType(mods),
        shapes=MappingProxyType(shapes),
        ops=ops,
        created_at=created_at if created_at is not None else time.time(),
    )
