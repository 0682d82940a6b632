"""Edits: a list of ops applied atomically to a version, giving exactly one new version or an `EditError`.

Ops (edit_ops.py) rewrite a draft of the spec (ids and wiring) and the module table (edit_draft.py); then the
candidate is linted and shape-propagated on fake tensors, reusing the parent's shapes for every node the edit did
not touch. Nothing is shared with the caller until the whole list has succeeded, so a failed edit leaves no trace.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import catalogue as c
from .edit_draft import Draft
from .edit_ops import BaseOp, CastOp, InsertOp, Op, RemoveOp, ReplaceOp, SetWeightsOp, TensorData
from .errors import EditError, GraphError, NotFoundError, UnknownNodeError
from .version import ModelVersion, make_version

__all__ = [
    "MAX_OPS",
    "CastOp",
    "InsertOp",
    "Op",
    "RemoveOp",
    "ReplaceOp",
    "SetWeightsOp",
    "TensorData",
    "apply_edit",
    "op_json",
    "parse_ops",
    "recast",
]

MAX_OPS = 256
_OPS: TypeAdapter[list[Op]] = TypeAdapter(list[Op])


def parse_ops(data: Any) -> list[Op]:
    """Validate a JSON list of ops; an EditError names the op index and field."""
    if isinstance(data, list) and all(isinstance(o, BaseOp) for o in data):
        ops = list(data)
    else:
        if isinstance(data, list):
            for i, o in enumerate(data):
                if isinstance(o, dict) and "layer" in o:
                    try:
                        c.parse_layer(o["layer"], where=f"ops.{i}.layer")
                    except GraphError as e:
                        raise EditError(e.message, op=i) from None
        try:
            ops = _OPS.validate_python(data)
        except ValidationError as e:
            first = e.errors()[0]["loc"]
            raise EditError(c.format_validation_error(e, "ops"), op=first[0] if first else None) from None
    if not ops:
        raise EditError("an edit needs at least one op")
    if len(ops) > MAX_OPS:
        raise EditError(f"an edit has at most {MAX_OPS} ops, got {len(ops)}")
    return ops


def op_json(op: Op) -> dict[str, Any]:
    """How an op is recorded in the version history (weights summarised, not copied)."""
    return op.record()


def recast(v: ModelVersion, datatype: str) -> ModelVersion:
    """`v` itself (same number, parent and history) computing in `datatype`: how a model is created or loaded in
    half precision. Live models change datatype with the `cast` op instead, as a new version."""
    if (None if datatype == "FP32" else datatype) == v.spec.compute_datatype:
        return v
    draft = Draft(v)
    CastOp.model_validate({"datatype": datatype}).apply(draft)
    return make_version(
        v.model, v.version, v.parent, draft.spec(v.spec.name), draft.modules, ops=v.ops, created_at=v.created_at
    )


def apply_edit(
    base: ModelVersion, ops: list[Op] | list[dict[str, Any]], *, version: int, allow_output_change: bool = False
) -> ModelVersion:
    """The version that `ops` make of `base`, numbered `version`; `base` is never modified.

    Raises EditError naming the op index, the node and the reason.
    """
    parsed = parse_ops(ops)
    draft = Draft(base)
    created: dict[int, str] = {}  # op index -> the node it inserted (names may be generated)
    for i, op in enumerate(parsed):
        try:
            made = op.apply(draft)
        except GraphError as e:
            cls = UnknownNodeError if isinstance(e, NotFoundError) else EditError
            raise cls(f"op {i}: {op.describe()}: {e.message}", **{**e.fields, "op": i}) from None
        if made is not None:
            created[i] = made
    try:
        spec = draft.spec(base.spec.name)
    except ValidationError as e:  # a node the ops left invalid (a layer given fewer inputs than it reads)
        loc = e.errors()[0]["loc"]
        node = draft.nodes[loc[1]].id if len(loc) >= 2 and loc[0] == "nodes" and isinstance(loc[1], int) else None
        idx = _op_of_node(parsed, node, created)
        prefix = f"op {idx}: {parsed[idx].describe()}: " if idx is not None else ""
        raise EditError(prefix + c.format_validation_error(e), node=node, op=idx) from None
    try:
        candidate = make_version(
            base.model,
            version,
            base.version,
            spec,
            draft.modules,
            previous=base,
            ops=tuple(op_json(o) for o in parsed),
            check_outputs=False,
        )
    except GraphError as e:
        node = e.fields.get("node")
        idx = _op_of_node(parsed, node, created)
        prefix = f"op {idx}: {parsed[idx].describe()}: " if idx is not None else ""
        raise EditError(prefix + e.message, **{**e.fields, "op": idx}) from None
    if not allow_output_change:
        for old, new in zip(base.outputs, candidate.outputs, strict=True):
            if (old.shape, old.datatype) != (new.shape, new.datatype):
                raise EditError(
                    f"the edit changes output {old.name!r} from {old.datatype} {list(old.shape or [])} to "
                    f"{new.datatype} {list(new.shape or [])}; set allow_output_change to accept that",
                    node=old.node,
                    expected=list(old.shape or []),
                    got=list(new.shape or []),
                )
    return candidate


def _op_of_node(ops: list[Op], node: str | None, created: dict[int, str]) -> int | None:
    """The last op that touched `node` (a shape error surfaces at the node, but the op caused it)."""
    if node is None:
        return None
    for i in range(len(ops) - 1, -1, -1):
        if ops[i].touches(node, created.get(i)):
            return i
    return len(ops) - 1
