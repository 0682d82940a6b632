"""How the server's JSON answers read in a terminal: signatures, layers, edit ops, a served model.

A leaf of plain functions (no typer, no client), shared by the commands that show the same things.
"""

from __future__ import annotations

from typing import Any


def shape(dims: list[int]) -> str:
    """`[?, 3, 32, 32]`: -1 (batch or variable) as `?`."""
    return "[" + ", ".join("?" if d == -1 else str(d) for d in dims) + "]"


def tensors(specs: list[dict[str, Any]]) -> str:
    """`input FP32 [?, 64], mask BOOL [?, 8]`."""
    return ", ".join(f"{t['name']} {t['datatype']} {shape(t['shape'])}" for t in specs)


def node_what(node: dict[str, Any]) -> str:
    """`Linear(in_features=64, out_features=128, bias=True)` for layers, `add(alpha=1)` for functions."""
    if node.get("layer"):
        layer = dict(node["layer"])
        kind = layer.pop("type", "?")
        args = ", ".join(f"{k}={v}" for k, v in layer.items() if not isinstance(v, list | dict))
        return f"{kind}({args})"
    if node.get("function"):
        args = ", ".join(f"{k}={v}" for k, v in (node.get("args") or {}).items())
        return f"{node['function']}({args})"
    return ""


def op_summary(op: dict[str, Any]) -> str:
    """One edit op in a few words: `insert Linear as extra after fc1`, `remove relu2`, `rollback to 1`, `fit fc3 on
    train (400 steps, seed 0)`."""
    kind = op.get("op", "?")
    if kind == "insert":
        where = f"after {op['after']}" if op.get("after") else f"before {op.get('before')}"
        layer = op.get("layer") or {}
        name = f" as {op['name']}" if op.get("name") else ""
        return f"insert {layer.get('type', '?')}{name} {where}"
    if kind == "rollback":
        return f"rollback to {op.get('to', op.get('version', '?'))}"
    if kind == "fit":
        trained = ", ".join(op.get("train") or [])
        return f"fit {trained} on {op.get('dataset')} ({op.get('steps', 0):,} steps, seed {op.get('seed')})"
    if kind == "replace":
        return f"replace {op.get('node')} with {(op.get('layer') or {}).get('type', '?')}"
    if "node" in op:
        return f"{kind} {op['node']}"
    return str(kind)


def served_line(info: dict[str, Any]) -> str:
    """`mine: serving version 1 (input FP32 [?, 3, 32, 32] -> logits FP32 [?, 10], 12,345 params) on cpu`."""
    return (
        f"{info['name']}: serving version {info['version']} ({tensors(info['inputs'])} -> "
        f"{tensors(info['outputs'])}, {info['params']:,} params) on {info['device']}"
    )
