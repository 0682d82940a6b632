"""Views of a version: the stable JSON description, DOT text, and the diff between two versions."""

from __future__ import annotations

from typing import Any, Literal

import graphviz
from pydantic import BaseModel, Field

from .spec import TensorSpec, is_id
from .version import ModelVersion


class ElementDescription(BaseModel):
    shape: list[int]
    datatype: str


class NodeDescription(BaseModel):
    id: str
    kind: Literal["input", "layer", "function", "parameter", "output"]
    layer: dict[str, Any] | None = Field(default=None, description="the catalogue spec, for layers")
    function: str | None = Field(default=None, description="the function name, for functions")
    args: dict[str, Any] | None = None
    parameter: dict[str, Any] | None = Field(default=None, description="shape and datatype, for parameter nodes")
    inputs: list[str] = Field(default_factory=list)
    shape: list[int] = Field(
        description="output shape; -1 marks the batch and other variable dimensions "
        "(for a tuple-valued node, its first element's)"
    )
    datatype: str
    elements: list[ElementDescription] | None = Field(
        default=None, description="for a node whose result is a tuple (read through getitem): each element"
    )
    params: int = 0
    size: bool = Field(
        default=False, description="a size node: a number computed from input shapes when the graph runs, no tensor"
    )
    path: str | None = Field(
        default=None,
        description="the node's module path, dot-separated, its own name last "
        "(e.g. `encoder.layer.0.attention.query`), where import recorded one",
    )


class Edge(BaseModel):
    source: str
    target: str


class Totals(BaseModel):
    nodes: int
    params: int


class GraphDescription(BaseModel):
    """The documented, stable JSON form of one version's computation graph."""

    model: str
    version: int
    parent: int | None
    created_at: float
    ops: list[dict[str, Any]]
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    nodes: list[NodeDescription]
    edges: list[Edge]
    totals: Totals
    compute_datatype: str = Field("FP32", description="what the layers compute in (inputs and outputs are cast)")


def describe(v: ModelVersion) -> GraphDescription:
    nodes: list[NodeDescription] = []
    edges: list[Edge] = []
    for t in v.spec.inputs:
        nodes.append(NodeDescription(id=t.name, kind="input", shape=list(t.shape), datatype=t.datatype))
    for n in v.spec.nodes:
        s = v.shapes[n.id]
        nodes.append(
            NodeDescription(
                id=n.id,
                kind=n.kind,
                layer=n.layer.to_json() if n.layer is not None else None,
                function=n.function,
                args=dict(n.args) if n.function is not None and n.args else None,
                parameter=n.parameter.to_json() if n.parameter is not None else None,
                inputs=list(n.inputs),
                shape=list(s.shape),
                datatype=s.datatype,
                elements=[ElementDescription(shape=list(e.shape), datatype=e.datatype) for e in s.elements] or None,
                params=v.params(n.id),
                size=s.is_scalar,
                path=getattr(n, "path", None),  # recorded by import (issue 23); absent from older specs
            )
        )
        edges.extend(Edge(source=i, target=n.id) for i in n.inputs)
    outputs = [TensorSpec(name=o.name, datatype=o.datatype or "FP32", shape=o.shape or (-1,)) for o in v.outputs]
    for o in v.outputs:
        nodes.append(
            NodeDescription(
                id=o.name, kind="output", inputs=[o.node], shape=list(o.shape or ()), datatype=o.datatype or "FP32"
            )
        )
        edges.append(Edge(source=o.node, target=o.name))
    return GraphDescription(
        model=v.model,
        version=v.version,
        parent=v.parent,
        created_at=v.created_at,
        ops=list(v.ops),
        inputs=list(v.spec.inputs),
        outputs=outputs,
        nodes=nodes,
        edges=edges,
        totals=Totals(nodes=len(nodes), params=v.total_params()),
        compute_datatype=v.spec.compute_datatype or "FP32",
    )


_STYLE = {
    "input": {"shape": "oval", "style": "filled", "fillcolor": "#d8ecff"},
    "output": {"shape": "oval", "style": "filled", "fillcolor": "#dff5df"},
    "layer": {"shape": "box", "style": "rounded,filled", "fillcolor": "#fff6d5"},
    "function": {"shape": "diamond", "style": "filled", "fillcolor": "#f0e6ff"},
    "parameter": {"shape": "note", "style": "filled", "fillcolor": "#ffe6e6"},
}


def to_dot(v: ModelVersion, highlight: set[str] | None = None) -> str:
    """DOT text with each node's id, layer config and output shape on its label."""
    g = graphviz.Digraph(name=f"{v.model}_v{v.version}")
    g.attr(rankdir="TB", label=f"{v.model} v{v.version}", fontname="Helvetica")
    g.attr("node", fontname="Helvetica", fontsize="10")
    d = describe(v)
    by_id = {n.id: n for n in v.spec.nodes}
    # DOT ids of our own: wire names are any printable text (`input:0` would read as a port, a quote or a
    # backslash as DOT syntax), and an output may share its name with the node it comes from.
    dot_id: dict[tuple[str, bool], str] = {}
    used: set[str] = set()
    for i, n in enumerate(d.nodes):
        name = n.id if is_id(n.id) and n.id not in used else f"_n{i}"
        used.add(name)
        dot_id[(n.id, n.kind == "output")] = name
    for n in d.nodes:
        what = ""
        if n.kind in ("layer", "parameter"):
            what = "\n" + by_id[n.id].label()
        elif n.kind == "function":
            what = f"\n{n.function}({', '.join(f'{k}={a}' for k, a in (n.args or {}).items())})"
        params = f"\n{n.params:,} params" if n.params else ""
        style = dict(_STYLE[n.kind])
        if highlight and n.id in highlight:
            style.update(color="#d62728", penwidth="2")
        label = f"{n.id}{what}".replace("\\", "\\\\") + f"\n{n.datatype} {n.shape}{params}"
        g.node(dot_id[(n.id, n.kind == "output")], label=label, **style)
    for node in v.spec.nodes:
        for source in node.inputs:
            g.edge(dot_id[(source, False)], dot_id[(node.id, False)])
    for o in v.outputs:
        g.edge(dot_id[(o.node, False)], dot_id[(o.name, True)])
    text: str = g.source  # graphviz has no type hints
    return text


def to_svg(dot: str) -> bytes:
    """Render DOT with graphviz's `dot` binary (raises graphviz.ExecutableNotFound when it is missing)."""
    svg: bytes = graphviz.Source(dot).pipe(format="svg")  # graphviz has no type hints
    return svg


Change = Literal["layer", "function", "parameter", "inputs", "weights", "shape"]


class NodeChange(BaseModel):
    id: str
    changes: list[Change]
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


class GraphDiff(BaseModel):
    """What changed from version `from_version` to `to_version`."""

    model: str
    from_version: int
    to_version: int
    added: list[str]
    removed: list[str]
    changed: list[NodeChange]
    outputs_changed: bool


def diff(a: ModelVersion, b: ModelVersion) -> GraphDiff:
    na = {n.id: n for n in a.spec.nodes}
    nb = {n.id: n for n in b.spec.nodes}
    changed: list[NodeChange] = []
    for nid in na.keys() & nb.keys():
        x, y = na[nid], nb[nid]
        what: list[Change] = []
        if x.layer != y.layer:
            what.append("layer")
        if x.function != y.function or x.args != y.args:
            what.append("function")
        if x.parameter != y.parameter:
            what.append("parameter")
        if x.inputs != y.inputs:
            what.append("inputs")
        if "layer" not in what and a.modules.get(nid) is not b.modules.get(nid):
            what.append("weights")
        if a.shapes[nid].shape != b.shapes[nid].shape:
            what.append("shape")
        if what:
            changed.append(
                NodeChange(
                    id=nid,
                    changes=what,
                    before={
                        "layer": x.layer.to_json() if x.layer else None,
                        "inputs": list(x.inputs),
                        "shape": list(a.shapes[nid].shape),
                    },
                    after={
                        "layer": y.layer.to_json() if y.layer else None,
                        "inputs": list(y.inputs),
                        "shape": list(b.shapes[nid].shape),
                    },
                )
            )
    order = {n.id: i for i, n in enumerate(b.spec.nodes)}
    changed.sort(key=lambda c: order.get(c.id, 0))
    return GraphDiff(
        model=b.model,
        from_version=a.version,
        to_version=b.version,
        added=[n for n in nb if n not in na],
        removed=[n for n in na if n not in nb],
        changed=changed,
        outputs_changed=[(o.shape, o.datatype) for o in a.outputs] != [(o.shape, o.datatype) for o in b.outputs],
    )
