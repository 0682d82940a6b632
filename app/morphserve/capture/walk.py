"""Turn an exported program into a spec: catalogue layers, allowlisted functions and parameter nodes.

The walk goes through the ATen graph in order. A marked call of a catalogue module (see marks.py) that the
catalogue can express becomes one layer node, built from the original module object, and everything inside it
is skipped; every other operation is glue and becomes a function node (aten.py), a no-op, or a refusal. A
parameter, buffer or constant that glue reads becomes a parameter node. Constants computed from constants
(`torch.arange(16)`) are folded into parameter nodes.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind
from torch.utils import _pytree as pytree

from morphserve.graph.dtypes import TORCH_TO_OIP
from morphserve.graph.spec import _ID, _RESERVED, TensorSpec

from . import aten
from .aten import Alias, Emit, Refused, is_symbolic, is_tensor, val
from .calls import NotALayer, layer_for_call
from .marks import MARK, Call
from .refusals import CaptureError, at, where_trace
from .sizes import RunTimeSizes as _Sizes

_VIEWS = {
    "view",
    "reshape",
    "_unsafe_view",
    "transpose",
    "permute",
    "t",
    "select",
    "slice",
    "expand",
    "unsqueeze",
    "squeeze",
    "alias",
    "unflatten",
    "flatten",
    "split",
    "chunk",
    "unbind",
    "diagonal",
    "as_strided",
    "narrow",
    "detach",
    "swapaxes",
    "expand_as",
    "view_as",
    "unfold",
}
_ASSIGNMENTS = {"copy_", "fill_", "zero_", "index_put_", "masked_scatter_", "scatter_", "index_copy_"}


def sanitize(path: str, fallback: str = "node") -> str:
    """A valid node id from a module path: dots become underscores (`layer4.1.conv2` -> `layer4_1_conv2`)."""
    s = re.sub(r"\W", "_", path) or fallback
    if s[0].isdigit():
        s = "_" + s
    if len(s) > 60:  # ids are at most 64 characters; keep both ends, which say the most
        s = s[:24] + "_" + s[-35:]
    if s in _RESERVED:
        s += "_"
    return s


@dataclass
class _Interval:
    call: Call
    start: int
    end: int
    layer: Any
    inputs: list[int]


class Walker:
    """One walk over one exported program; `run()` returns the spec (as JSON) and the module table."""

    def __init__(
        self,
        ep: ExportedProgram,
        root: nn.Module,
        calls: dict[tuple[str, int], Call],
        inputs: list[TensorSpec],
        name: str,
    ) -> None:
        self.ep, self.root, self.calls, self.inputs, self.name = ep, root, calls, inputs, name
        self.graph = ep.graph
        self.nodes: list[fx.Node] = list(self.graph.nodes)
        self.pos = {n: i for i, n in enumerate(self.nodes)}
        self.spec_nodes: list[dict[str, Any]] = []
        self.modules: dict[str, nn.Module] = {}
        self.env: dict[fx.Node, tuple[str, Any]] = {}
        self.taken: set[str] = set()
        self.counters: dict[str, int] = {}
        self.params: dict[str, str] = {}  # fqn -> parameter node id
        self.placeholder_fqn: dict[str, tuple[InputKind, str]] = {}
        self.user_placeholders: list[fx.Node] = []

    # -- ids --------------------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        if base not in self.taken:
            self.taken.add(base)
            return base
        k = self.counters.get(base, 0)
        while True:
            k += 1
            cand = f"{base}_{k}"
            if cand not in self.taken and _ID.match(cand):
                self.counters[base] = k
                self.taken.add(cand)
                return cand

    def add(self, node: dict[str, Any]) -> str:
        self.spec_nodes.append(node)
        node_id: str = node["id"]
        return node_id

    # -- values -----------------------------------------------------------------------------------------------
    def use(self, n: Any, consumer: fx.Node) -> str:
        """The spec id holding fx node `n`'s tensor, creating its parameter node on first use."""
        if not isinstance(n, fx.Node):
            raise CaptureError(f"{consumer.target} gets a constant where a tensor is expected{self.loc(consumer)}")
        kind, v = self.env.get(n, ("missing", None))
        if kind == "id":
            node_id: str = v
            return node_id
        if kind == "param":
            return self.parameter(v)
        if kind == "const":
            node_id = self.fresh("constant")
            self.parameter_node(node_id, v)
            self.env[n] = ("id", node_id)
            return node_id
        if kind == "tuple":
            raise CaptureError(f"a tuple of tensors is used as one tensor{self.loc(consumer)}")
        raise CaptureError(f"{consumer.target} reads {n.name}, which the capture could not express{self.loc(consumer)}")

    def parameter(self, fqn: str) -> str:
        if fqn not in self.params:
            tensor = self.ep.state_dict[fqn] if fqn in self.ep.state_dict else self.ep.constants[fqn]
            node_id = self.fresh(sanitize(fqn, "parameter"))
            self.parameter_node(node_id, tensor)
            self.params[fqn] = node_id
        return self.params[fqn]

    def parameter_node(self, node_id: str, tensor: torch.Tensor) -> None:
        from morphserve.graph.parameters import ParameterModule

        t = tensor.detach().clone().contiguous()
        if t.dtype not in TORCH_TO_OIP:
            raise CaptureError(f"parameter {node_id!r} has datatype {t.dtype}, which a spec cannot hold")
        self.add({"id": node_id, "parameter": {"shape": list(t.shape), "datatype": TORCH_TO_OIP[t.dtype]}})
        self.modules[node_id] = ParameterModule(t)

    def loc(self, n: fx.Node) -> str:
        return at(where_trace(n.meta.get("stack_trace")))

    # -- the walk ---------------------------------------------------------------------------------------------
    def run(self) -> tuple[dict[str, Any], dict[str, nn.Module]]:
        sig = self.ep.graph_signature
        for spec in sig.input_specs:
            if spec.kind != InputKind.USER_INPUT and spec.target is not None:
                self.placeholder_fqn[spec.arg.name] = (spec.kind, spec.target)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        users = [n for n in placeholders if n.name not in self.placeholder_fqn]
        if len(users) != len(self.inputs):
            raise CaptureError(f"forward takes {len(users)} tensor input(s), but {len(self.inputs)} --input were given")
        self.user_placeholders = users
        self.taken |= {t.name for t in self.inputs}
        out_names = self.output_names()
        self.taken |= set(out_names)
        for p, t in zip(users, self.inputs, strict=True):
            self.env[p] = ("id", t.name)
        for p in placeholders:
            if p.name in self.placeholder_fqn:
                self.env[p] = ("param", self.placeholder_fqn[p.name][1])
        intervals = self.layer_intervals()
        i = 0
        while i < len(self.nodes):
            n = self.nodes[i]
            iv = intervals.get(i)
            if iv is not None:
                self.emit_layer(iv)
                i = iv.end + 1
                continue
            if n.op == "call_function":
                self.glue(n)
            elif n.op == "output":
                outputs = self.outputs(n, out_names)
            i += 1
        spec = {
            "name": self.name,
            "inputs": [t.model_dump(mode="json") for t in self.inputs],
            "outputs": outputs,
            "nodes": self.spec_nodes,
        }
        return spec, self.modules

    def output_names(self) -> list[str]:
        spec = self.ep.call_spec.out_spec
        leaves = pytree.tree_unflatten(list(range(spec.num_leaves)), spec) if spec is not None else [0]
        paths = [p for p, _ in pytree.tree_flatten_with_path(leaves)[0]]
        names: list[str] = []
        for path in paths:
            keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]
            named = any(hasattr(k, "key") or hasattr(k, "name") for k in path)
            base = "_".join(keys) if named else ("output" if len(paths) == 1 else "output_" + "_".join(keys))
            name = sanitize(base, "output")
            while name in names:
                name += "_"
            names.append(name)
        return names

    def outputs(self, n: fx.Node, names: list[str]) -> list[dict[str, Any]]:
        flat = list(n.args[0]) if isinstance(n.args[0], list | tuple) else [n.args[0]]
        out = []
        for name, r in zip(names, flat, strict=True):
            if isinstance(r, fx.Node) and is_tensor(r):
                out.append({"name": name, "node": self.use(r, n)})
        if not out:
            raise CaptureError("forward returns no tensor")
        return out

    # -- catalogue layers -------------------------------------------------------------------------------------
    def layer_intervals(self) -> dict[int, _Interval]:
        marks: dict[tuple[str, int], dict[str, dict[int, fx.Node]]] = {}
        for n in self.nodes:
            if n.op == "call_function" and n.target is MARK:
                _x, path, number, index, output = n.args
                if isinstance(path, str) and isinstance(number, int) and isinstance(index, int):  # as marks.py calls it
                    marks.setdefault((path, number), {"in": {}, "out": {}})["out" if output else "in"][index] = n
        found: list[_Interval] = []
        for key, m in marks.items():
            call = self.calls.get(key)
            if call is None or not m["in"] or len(m["in"]) != call.n_inputs or len(m["out"]) != call.n_outputs:
                continue
            start = min(self.pos[x] for x in m["in"].values())
            end = max(self.pos[x] for x in m["out"].values())
            try:
                layer, inputs = layer_for_call(call)
            except NotALayer:
                continue
            found.append(_Interval(call, start, end, layer, inputs))
        found.sort(key=lambda iv: (iv.start, -iv.end))
        chosen: dict[int, _Interval] = {}
        covered = -1
        for iv in found:
            if iv.start <= covered:
                continue  # inside a call that is already one layer
            if self.self_contained(iv, marks[(iv.call.path, iv.call.number)]):
                chosen[iv.start] = iv
                covered = iv.end
        per_path: dict[str, int] = {}
        for iv in chosen.values():
            per_path[iv.call.path] = per_path.get(iv.call.path, 0) + 1
        self.layer_counts = per_path
        self.layer_seen: dict[str, int] = {}
        self.layer_modules: dict[str, nn.Module] = {}
        return chosen

    def self_contained(self, iv: _Interval, m: dict[str, dict[int, fx.Node]]) -> bool:
        """The call's interval reads only its marked inputs and its own tensors, and only its outputs leave it."""
        ins, outs = set(m["in"].values()), set(m["out"].values())
        prefix = iv.call.path + "."
        for k in range(iv.start, iv.end + 1):
            n = self.nodes[k]
            if n.op != "call_function":
                return False
            for u in n.all_input_nodes:
                if self.pos[u] >= iv.start or n in ins or is_symbolic(u):
                    continue
                fqn = self.placeholder_fqn.get(u.name, (None, ""))[1] if u.op == "placeholder" else ""
                if not fqn.startswith(prefix):
                    return False
            if n not in outs and not is_symbolic(n) and any(self.pos[u] > iv.end for u in n.users):
                return False  # (sizes may be shared: export reuses one node per symbolic expression)
        return True

    def emit_layer(self, iv: _Interval) -> None:
        from morphserve.graph.catalogue import parse_layer

        call, path = iv.call, iv.call.path
        base = sanitize(path, "layer")
        if self.layer_counts.get(path, 1) > 1:
            k = self.layer_seen.get(path, 0) + 1
            self.layer_seen[path] = k
            base = f"{base}_{k}"
        node_id = self.fresh(base)
        marks = {
            (n.args[3], n.args[4]): n
            for n in self.nodes[iv.start : iv.end + 1]
            if n.target is MARK and (n.args[1], n.args[2]) == (path, call.number)
        }
        sources = [marks[(i, False)].args[0] for i in iv.inputs]
        inputs = [self.use(s, marks[(i, False)]) for s, i in zip(sources, iv.inputs, strict=True)]
        layer = parse_layer(iv.layer.to_json())
        module = self.layer_modules.get(path)
        if module is None:  # built from the spec, as the server will: what the spec says is what runs
            module = layer.build()
            try:
                module.load_state_dict(call.module.state_dict())
            except RuntimeError as e:
                raise CaptureError(f"module {path!r}: its tensors do not fit {layer.label()}: {e}") from None
            self.layer_modules[path] = module
        self.modules[node_id] = module
        self.add({"id": node_id, "layer": layer.to_json(), "inputs": inputs})
        n_out = layer.n_outputs()
        for i in range(call.n_outputs):
            out = marks[(i, True)]
            if n_out == 1:
                self.env[out] = ("id", node_id)
            elif out.users:
                gid = self.fresh(f"{node_id}_out{i}")
                self.add({"id": gid, "function": "getitem", "inputs": [node_id], "args": {"index": i}})
                self.env[out] = ("id", gid)

    # -- glue -------------------------------------------------------------------------------------------------
    def glue(self, n: fx.Node) -> None:
        if n.target is MARK:  # a call that stays dissolved: its marks are identities
            self.env[n] = self.env.get(n.args[0], ("missing", None))  # type: ignore[arg-type]
            return
        v = n.meta.get("val")
        if isinstance(v, torch.SymInt | torch.SymFloat | torch.SymBool | int | float | bool) or v is None:
            self.env[n] = ("sym", None)  # sizes and asserts: read through meta["val"] where they are used
            return
        if n.target is operator.getitem:
            self.getitem(n)
            return
        if not isinstance(n.target, torch._ops.OpOverload):
            raise CaptureError(f"unsupported call {getattr(n.target, '__name__', n.target)}{self.loc(n)}")
        name = aten.op_name(n)
        in_place = name.endswith("_") and not name.startswith("_")
        if in_place:
            self.check_in_place(n, name)
            name = name[:-1]
        if not n.users:
            return  # dead code (asserts, unused results)
        if self.fold(n):
            return
        conv = aten.CONVERTERS.get(name)
        if conv is None:
            raise CaptureError(f"unsupported op aten.{name}{self.loc(n)}: it is not in the function allowlist")
        sizes = _Sizes(self, n)
        try:
            r = conv(aten.bind(n), sizes, n)
        except Refused as e:
            raise CaptureError(f"unsupported use of aten.{name}{self.loc(n)}: {e}") from None
        if isinstance(r, Alias):
            self.env[n] = self.env.get(r.source, ("missing", None))
            return
        self.emit(n, r, sizes)

    def emit(self, n: fx.Node, r: Emit, sizes: _Sizes) -> None:
        inputs = [self.use(x, n) for x in r.inputs] + [self.use(x, n) for x in sizes.extra]
        stack = list(n.meta.get("nn_module_stack", {}).values())
        where = stack[-1][0] if stack else ""
        base = f"{sanitize(where)}_{r.function}" if where else r.function
        node_id = self.fresh(sanitize(base))
        self.add({"id": node_id, "function": r.function, "inputs": inputs, "args": r.args})
        tuple_valued = isinstance(val(n), tuple | list)
        if r.first_of_tuple:
            self.env[n] = ("first", node_id)
        else:
            self.env[n] = ("tuple" if tuple_valued else "id", node_id)

    def getitem(self, n: fx.Node) -> None:
        src, index = n.args
        kind, v = self.env.get(src, ("missing", None))  # type: ignore[arg-type]
        if kind == "first":
            if index != 0:
                raise CaptureError(f"the indices of a max pooling are used{self.loc(n)}; only its values can be")
            self.env[n] = ("id", v)
        elif kind == "tuple":
            gid = self.fresh(f"{v}_{index}")
            self.add({"id": gid, "function": "getitem", "inputs": [v], "args": {"index": index}})
            self.env[n] = ("id", gid)
        elif kind == "const":
            self.env[n] = ("const", v[index])
        else:
            raise CaptureError(f"indexing a value the capture could not express{self.loc(n)}")

    def fold(self, n: fx.Node) -> bool:
        """Evaluate an op whose inputs are all constants (not parameters: those stay editable)."""
        args = [a for a in pytree.tree_leaves((n.args, n.kwargs)) if isinstance(a, fx.Node)]
        if any(self.env.get(a, ("", None))[0] != "const" for a in args):
            return False
        if any(is_symbolic(a) for a in args):
            return False
        concrete = pytree.tree_map(lambda a: self.env[a][1] if isinstance(a, fx.Node) else a, (n.args, n.kwargs))
        try:
            with torch.no_grad():
                self.env[n] = ("const", n.target(*concrete[0], **concrete[1]))  # type: ignore[operator]
        except Exception as e:  # noqa: BLE001 - a constant we cannot compute is the op's problem, named below
            raise CaptureError(f"cannot precompute aten.{aten.op_name(n)}{self.loc(n)}: {e}") from None
        return True

    def check_in_place(self, n: fx.Node, name: str) -> None:
        target = n.args[0]
        if name in _ASSIGNMENTS:
            raise CaptureError(
                f"in-place assignment (aten.{name}){self.loc(n)}: write it out of place (e.g. torch.where or torch.cat)"
            )
        if isinstance(target, fx.Node) and target.op == "placeholder":
            what = self.placeholder_fqn.get(target.name)
            thing = f"its input {target.name!r}" if what is None else f"{what[1]!r}"
            raise CaptureError(
                f"forward mutates {thing} in place (aten.{name}){self.loc(n)}; "
                "write `x = x + ...` instead of `x += ...`"
            )
        if isinstance(target, fx.Node):
            later = [u for u in target.users if u is not n and self.pos[u] > self.pos[n]]
            view = target.op == "call_function" and aten.op_name(target) in _VIEWS
            if later or view:
                raise CaptureError(
                    f"in-place op aten.{name} on a tensor that is {'a view' if view else 'read later'}"
                    f"{self.loc(n)}; write it out of place"
                )
