"""Turn a lowered exported program into a spec: catalogue layers, Core ATen functions, size and parameter nodes.

The walk goes through the Core ATen graph in order. A marked call of a catalogue module (see marks.py) that the
catalogue can express becomes one layer node, built from the original module object, and everything inside it
is skipped; every other operation is glue and becomes a function node naming the operator (`aten.add.Tensor`)
with its arguments by the operator's schema, a no-op, or a refusal naming the operator and the line. A run-time
size an operator takes becomes size nodes (sizes.py). A parameter or buffer the glue reads becomes a parameter
node named by its path; constants computed from constants are folded.

Weights shared by two modules (a language-model head tied to the embedding) stay one tensor: neither module
becomes a layer of its own, and both uses read the one parameter node, so an edit of it changes both, as tying
means, and nothing is untied silently.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.export import ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind
from torch.utils import _pytree as pytree

from morphserve.graph.dtypes import TORCH_TO_OIP
from morphserve.graph.functions import OPSET, AtenOp, Ref
from morphserve.graph.functions.opset import refusal
from morphserve.graph.spec import _RESERVED, TensorSpec, is_id

from .adapters import adapter_for
from .calls import NotALayer, layer_for_call
from .marks import MARK, OPAQUE, Call
from .refusals import CaptureError, at, where_trace
from .sizes import SizeNodes

#: Calls that check or assert and produce nothing a served graph needs.
_SKIP = {
    "aten._assert_tensor_metadata.default",
    "aten._assert_scalar.default",
    "aten.sym_constrain_range_for_size.default",
    "aten.sym_constrain_range.default",
    "aten._assert_async.msg",
    "aten._assert_async.default",
}
#: Output paths that are a model's cache, not its answer (dropped, and said so).
CACHES = ("past_key_values", "cache_params", "mems", "present_key_values")


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


def op_name(target: Any) -> str:
    """`aten.add.Tensor` for an operator overload (what a spec node names)."""
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._overloadpacket.__name__}.{target._overloadname}"
    return str(getattr(target, "__name__", target))


def is_tensor(v: Any) -> bool:
    return isinstance(v, fx.Node) and isinstance(v.meta.get("val"), torch.Tensor)


def is_symbolic(v: Any) -> bool:
    return isinstance(v, fx.Node) and isinstance(v.meta.get("val"), torch.SymInt | torch.SymFloat | torch.SymBool)


def val(n: Any) -> Any:
    return n.meta.get("val") if isinstance(n, fx.Node) else n


@dataclass
class _Interval:
    call: Call
    start: int
    end: int
    layer: Any
    inputs: list[int]


class Walker:
    """One walk over one lowered program; `run()` returns the spec (as JSON) and the module table.

    `placeholders` maps each user-input placeholder's name to the wire name of its `--input`; `notes` collects
    one-line remarks for the user (caches dropped, weights kept tied)."""

    def __init__(
        self,
        ep: ExportedProgram,
        root: nn.Module,
        calls: dict[tuple[str, int], Call],
        inputs: list[TensorSpec],
        placeholders: dict[str, str],
        name: str,
        notes: list[str],
        prefix: str = "",
    ) -> None:
        self.ep, self.root, self.calls, self.inputs, self.name = ep, root, calls, inputs, name
        self.prefix = prefix  # what the exported paths start with (the capture's wrapper), stripped from names
        self.placeholder_inputs = placeholders
        self.notes = notes
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
        self.tied = self.tied_modules()
        self.sizes: SizeNodes | None = None
        self.live = self.live_nodes()

    def live_nodes(self) -> set[fx.Node]:
        """The nodes the outputs depend on (sizes are rebuilt from expressions, so what only asserts read is not)."""
        live: set[fx.Node] = set()
        stack = [n for n in self.nodes if n.op == "output"]
        while stack:
            n = stack.pop()
            if n in live:
                continue
            live.add(n)
            stack.extend(u for u in n.all_input_nodes if u not in live)
        return live

    # -- ids --------------------------------------------------------------------------------------------------
    def fresh(self, base: str) -> str:
        """An unused node id from `base` (a module path or a name), with `_1`, `_2`, ... when taken."""
        if not is_id(base):
            base = sanitize(base)
        if base not in self.taken:
            self.taken.add(base)
            return base
        stem = base if len(base) <= 58 else base[:22] + "_" + base[-35:]  # room for the suffix in 64 characters
        k = self.counters.get(stem, 0)
        while True:
            k += 1
            cand = f"{stem}_{k}"
            if cand not in self.taken and is_id(cand):
                self.counters[stem] = k
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
            raise CaptureError(
                f"{op_name(consumer.target)} gets a constant where a tensor is expected{self.loc(consumer)}"
            )
        kind, v = self.env.get(n, ("missing", None))
        if kind == "id":
            node_id: str = v
            return node_id
        if kind == "param":
            return self.parameter(v)
        if kind == "const":
            node_id = self.fresh("constant")
            if v.numel() == 0 and v.dtype in TORCH_TO_OIP:  # an empty constant: a parameter node holds >= 1 element
                args = {"size": list(v.shape), "fill_value": 0, "dtype": TORCH_TO_OIP[v.dtype]}
                self.add({"id": node_id, "function": "aten.full.default", "inputs": [], "args": args})
            else:
                self.parameter_node(node_id, v)
            self.env[n] = ("id", node_id)
            return node_id
        if kind == "tuple":
            raise CaptureError(f"a tuple of tensors is used as one tensor{self.loc(consumer)}")
        raise CaptureError(
            f"{op_name(consumer.target)} reads {n.name}, which the capture could not express{self.loc(consumer)}"
        )

    def strip(self, path: str) -> str:
        """A path of the exported program as a path of the user's module."""
        if path + "." == self.prefix:
            return ""
        return path[len(self.prefix) :] if path.startswith(self.prefix) else path

    def parameter(self, fqn: str) -> str:
        if fqn not in self.params:
            tensor = self.ep.state_dict[fqn] if fqn in self.ep.state_dict else self.ep.constants[fqn]
            node_id = self.fresh(sanitize(self.strip(fqn), "parameter"))
            self.parameter_node(node_id, tensor, self.strip(fqn))
            self.params[fqn] = node_id
        return self.params[fqn]

    def parameter_node(self, node_id: str, tensor: torch.Tensor, path: str = "") -> None:
        from morphserve.graph.parameters import ParameterModule

        t = tensor.detach().clone().contiguous()
        if t.dtype not in TORCH_TO_OIP:
            raise CaptureError(f"parameter {node_id!r} has datatype {t.dtype}, which a spec cannot hold")
        shape = {"shape": list(t.shape), "datatype": TORCH_TO_OIP[t.dtype]}
        self.add({"id": node_id, "parameter": shape, **_path(path)})
        self.modules[node_id] = ParameterModule(t)

    def size_node(self, function: str, inputs: list[str], args: dict[str, Any]) -> str:
        if function == "aten.sym_size.int":
            base = f"{inputs[0]}_size{args['dim']}"
        else:
            base = "size_" + function.split(".")[-1]
        node_id = self.fresh(base)
        return self.add({"id": node_id, "function": function, "inputs": inputs, "args": args})

    def loc(self, n: fx.Node) -> str:
        return at(where_trace(n.meta.get("stack_trace")))

    # -- the walk ---------------------------------------------------------------------------------------------
    def run(self, wire_outputs: Sequence[str] | None = None) -> tuple[dict[str, Any], dict[str, nn.Module]]:
        """The spec and module table; `wire_outputs` (an ONNX model's output names) name the outputs in order."""
        sig = self.ep.graph_signature
        for spec in sig.input_specs:
            if spec.kind != InputKind.USER_INPUT and spec.target is not None:
                self.placeholder_fqn[spec.arg.name] = (spec.kind, spec.target)
        placeholders = [n for n in self.nodes if n.op == "placeholder"]
        users = [n for n in placeholders if n.name not in self.placeholder_fqn]
        self.user_placeholders = users
        self.taken |= {t.name for t in self.inputs}
        for p in users:
            wire = self.placeholder_inputs.get(p.name)
            if wire is None:
                raise CaptureError(f"forward takes a tensor argument {p.name!r} that no --input names")
            self.env[p] = ("id", wire)
        for p in placeholders:
            if p.name in self.placeholder_fqn:
                kind, fqn = self.placeholder_fqn[p.name]
                self.env[p] = ("const", self.ep.constants[fqn]) if kind == InputKind.CONSTANT_TENSOR else ("param", fqn)
        self.sizes = SizeNodes([(p, self.placeholder_inputs[p.name]) for p in users], self.size_node)
        self.check_mutations()
        out_names = self.output_names()
        if wire_outputs is not None and len(wire_outputs) == sum(1 for n in out_names if n is not None):
            given = iter(wire_outputs)
            out_names = [None if n is None else next(given) for n in out_names]
        self.taken |= {name for name in out_names if name is not None}
        intervals = self.layer_intervals()
        outputs: list[dict[str, Any]] = []
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

    def check_mutations(self) -> None:
        """A forward that changes its inputs or buffers in place is refused: a served model must not change state."""
        out_node = next(n for n in reversed(self.nodes) if n.op == "output")
        values = {n.name: n for n in out_node.args[0] if isinstance(n, fx.Node)}  # type: ignore[union-attr]
        for spec in self.ep.graph_signature.output_specs:
            if spec.kind == OutputKind.USER_INPUT_MUTATION:
                name = self.placeholder_inputs.get(str(spec.target), str(spec.target))
                where = self.loc(values[spec.arg.name]) if spec.arg.name in values else ""
                raise CaptureError(
                    f"forward mutates its input {name!r} in place{where}; write `x = x * ...` instead of `x *= ...`"
                )
            if spec.kind == OutputKind.BUFFER_MUTATION:
                where = self.loc(values[spec.arg.name]) if spec.arg.name in values else ""
                raise CaptureError(
                    f"forward changes its buffer {self.strip(str(spec.target))!r} in place{where} (a running statistic "
                    "or a counter); a served model must not keep state: call model.eval() or compute it out of place"
                )

    def output_names(self) -> list[str | None]:
        """The wire name of each user output (None for one that is dropped: a cache, or not a tensor)."""
        spec = self.ep.call_spec.out_spec
        leaves = pytree.tree_unflatten(list(range(spec.num_leaves)), spec) if spec is not None else [0]
        paths = [p for p, _ in pytree.tree_flatten_with_path(leaves)[0]]
        names: list[str | None] = []
        dropped = []
        for path in paths:
            keys = [str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", "")))) for k in path]
            if any(k in CACHES for k in keys):
                names.append(None)
                dropped.append(keys[0])
                continue
            named = any(hasattr(k, "key") or hasattr(k, "name") for k in path)
            base = "_".join(keys) if named else ("output" if len(paths) == 1 else "output_" + "_".join(keys))
            name = base[:128] or "output"
            while name in names:
                name += "_"
            names.append(name)
        if dropped:
            self.notes.append(f"the model's cache outputs ({', '.join(dict.fromkeys(dropped))}) are not served")
        return names

    def outputs(self, n: fx.Node, names: list[str | None]) -> list[dict[str, Any]]:
        flat = list(n.args[0]) if isinstance(n.args[0], list | tuple) else [n.args[0]]
        user = [
            a
            for a, s in zip(flat, self.ep.graph_signature.output_specs, strict=True)
            if s.kind == OutputKind.USER_OUTPUT
        ]
        out = []
        for name, r in zip(names, user, strict=True):
            if name is not None and isinstance(r, fx.Node) and is_tensor(r):
                out.append({"name": name, "node": self.use(r, n)})
        if not out:
            raise CaptureError("forward returns no tensor")
        return out

    # -- catalogue layers -------------------------------------------------------------------------------------
    def tied_modules(self) -> set[str]:
        """Paths of modules whose weights are used more than once: two modules sharing a parameter (a head tied
        to the embedding), or one module with parameters called more than once (ALBERT's shared layers). Their
        parameters become parameter nodes read by every use, so the weights stay one tensor and an edit of them
        changes every use; a layer node each would be a copy each, untied by the first edit."""
        owners: dict[int, dict[int, str]] = {}
        names: dict[int, str] = {}
        for path, module in self.root.named_modules():
            for pname, p in module.named_parameters(recurse=False):
                owners.setdefault(id(p), {})[id(module)] = path
                names.setdefault(id(p), f"{path}.{pname}" if path else pname)
        tied: set[str] = set()
        for key, by_module in owners.items():
            if len(by_module) > 1:
                paths = list(by_module.values())
                tied |= set(paths)
                self.notes.append(
                    f"{names[key]} is shared by {' and '.join(paths)}: kept as one parameter read by each "
                    "(an edit of it changes every use; to untie, insert a layer of your own)"
                )
        calls: dict[str, int] = {}
        for path, _number in self.calls:
            calls[path] = calls.get(path, 0) + 1
        repeated = [
            path
            for path, count in calls.items()
            if count > 1 and path not in tied and any(True for _ in self.root.get_submodule(path).parameters())
        ]
        if repeated:
            tied |= set(repeated)
            shown = ", ".join(repeated[:3]) + (f" and {len(repeated) - 3} more" if len(repeated) > 3 else "")
            self.notes.append(
                f"{shown} {'is' if len(repeated) == 1 else 'are'} called more than once with the same weights: "
                "kept as one set of parameter nodes read by each call"
            )
        return tied

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
            # (lowering drops the marks of results nobody reads: a missing output mark is an unused result)
            if call is None or not m["in"] or len(m["in"]) != call.n_inputs or not m["out"]:
                continue
            if call.path in self.tied:
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
                if not self.strip(fqn).startswith(prefix):
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
            adapter = adapter_for(call.module)
            try:
                module.load_state_dict(
                    adapter.state_dict(call.module) if adapter is not None else call.module.state_dict()
                )
            except RuntimeError as e:
                raise CaptureError(f"module {path!r}: its tensors do not fit {layer.label()}: {e}") from None
            self.layer_modules[path] = module
        self.modules[node_id] = module
        self.add({"id": node_id, "layer": layer.to_json(), "inputs": inputs, **_path(self.strip(path))})
        n_out = layer.n_outputs()
        for i in range(call.n_outputs):
            out = marks.get((i, True))
            if out is None:
                continue
            if n_out == 1:
                self.env[out] = ("id", node_id)
            elif out.users:
                gid = self.fresh(f"{node_id}_out{i}")
                self.add(
                    {
                        "id": gid,
                        "function": "getitem",
                        "inputs": [node_id],
                        "args": {"index": i},
                        **_path(self.strip(path)),
                    }
                )
                self.env[out] = ("id", gid)

    # -- glue -------------------------------------------------------------------------------------------------
    def glue(self, n: fx.Node) -> None:
        if n.target is MARK:  # a call that stays dissolved: its marks are identities
            self.env[n] = self.env.get(n.args[0], ("missing", None))  # type: ignore[arg-type]
            return
        name = op_name(n.target)
        if name in _SKIP or n not in self.live:
            return  # asserts, and what only they read (`assert lengths.max().item() <= n`): dead code
        v = n.meta.get("val")
        if isinstance(v, torch.SymInt | torch.SymFloat | torch.SymBool | int | float | bool) or v is None:
            self.env[n] = ("sym", None)  # sizes: rebuilt from their expressions where they are used
            return
        if n.target is operator.getitem:
            self.getitem(n)
            return
        if n.target is OPAQUE:
            raise CaptureError(
                f"{n.args[1]!r} (a recurrent or pooling module) is called in a way its catalogue layer cannot "
                f"express{self.loc(n)}; call it with its tensor arguments only"
            )
        if not isinstance(n.target, torch._ops.OpOverload):
            what = getattr(n.target, "__name__", str(n.target))
            raise CaptureError(
                f"unsupported call {what}{self.loc(n)}: control flow (torch.cond, loops over tensors) and Python "
                "functions cannot be served"
            )
        if n.target.namespace != "aten":
            raise CaptureError(
                f"unsupported op {name}{self.loc(n)}: a custom operator (a kernel of its own) cannot be served; "
                "write it with torch operations"
            )
        if self.fold(n):
            return
        entry = OPSET.get(name)
        if entry is None:
            raise CaptureError(f"unsupported op {name}{self.loc(n)}: {refusal(name)}")
        self.emit(n, name)

    def emit(self, n: fx.Node, name: str) -> None:
        entry = OPSET[name]
        inputs: list[str] = []

        def ref(node_id: str) -> Ref:
            if node_id not in inputs:
                inputs.append(node_id)
            return Ref(inputs.index(node_id))

        def convert(v: Any) -> Any:
            if isinstance(v, fx.Node):
                if is_tensor(v):
                    return ref(self.use(v, n))
                value = val(v)
                if isinstance(value, torch.SymInt | torch.SymFloat | torch.SymBool):
                    assert self.sizes is not None
                    out = self.sizes.value(value, self.loc(n))
                    return ref(out) if isinstance(out, str) else out
                if isinstance(value, bool | int | float):
                    return value
                raise CaptureError(f"{name} reads {v.name}, which the capture could not express{self.loc(n)}")
            if isinstance(v, torch.SymInt | torch.SymFloat | torch.SymBool):
                assert self.sizes is not None
                out = self.sizes.value(v, self.loc(n))
                return ref(out) if isinstance(out, str) else out
            if isinstance(v, list | tuple):
                return [convert(x) for x in v]
            if isinstance(v, torch.dtype) and v not in TORCH_TO_OIP:
                raise CaptureError(f"unsupported use of {name}{self.loc(n)}: datatype {v}, which a spec cannot hold")
            return v

        values: dict[str, Any] = {}
        schema = n.target._schema  # type: ignore[union-attr]
        for i, a in enumerate(schema.arguments):
            if i < len(n.args):
                values[a.name] = convert(n.args[i])
            elif a.name in n.kwargs:
                values[a.name] = convert(n.kwargs[a.name])
        entry = self.numbers_for_tensors(n, entry, values, ref)
        name = entry.name
        args = entry.to_json(values)
        try:
            entry.parse(inputs, args)
        except ValueError as e:
            raise CaptureError(f"unsupported use of {name}{self.loc(n)}: {e}") from None
        stack = list(n.meta.get("nn_module_stack", {}).values())
        where = self.strip(stack[-1][0]) if stack else ""
        short = name.split(".")[1]
        node_id = self.fresh(f"{where}_{short}" if where else short)
        self.add({"id": node_id, "function": name, "inputs": inputs, "args": args, **_path(where)})
        self.env[n] = ("tuple" if entry.returns == "tuple" else "id", node_id)

    def numbers_for_tensors(
        self, n: fx.Node, entry: AtenOp, values: dict[str, Any], ref: Callable[[str], Ref]
    ) -> AtenOp:
        """A number where the schema takes a Tensor (export passes `add.Tensor(x, 0)`): the operator's Scalar
        overload where it has one, else a constant 0-dim tensor (how PyTorch wraps a number)."""
        numbers = [p.name for p in entry.params if p.kind == "tensor" and isinstance(values.get(p.name), int | float)]
        if not numbers:
            return entry
        packet = entry.op._overloadpacket
        for overload in packet.overloads():  # type: ignore[no-untyped-call]
            other = OPSET.get(f"aten.{packet.__name__}.{overload}")
            if other is None or [p.name for p in other.params] != [p.name for p in entry.params]:
                continue
            kinds = {p.name: p.kind for p in other.params}
            if all(kinds[k] == "scalar" for k in numbers) and all(
                kinds[p.name] == p.kind for p in entry.params if p.name not in numbers
            ):
                return other
        for k in numbers:
            v = values[k]
            dtype = torch.bool if isinstance(v, bool) else torch.int64 if isinstance(v, int) else torch.float32
            node_id = self.fresh("constant")
            self.parameter_node(node_id, torch.tensor(v, dtype=dtype))
            values[k] = ref(node_id)
        return entry

    def getitem(self, n: fx.Node) -> None:
        src, index = n.args
        kind, v = self.env.get(src, ("missing", None))  # type: ignore[arg-type]
        if kind == "tuple":
            gid = self.fresh(f"{v}_{index}")
            where = next((x.get("path", "") for x in reversed(self.spec_nodes) if x["id"] == v), "")
            self.add({"id": gid, "function": "getitem", "inputs": [v], "args": {"index": index}, **_path(where)})
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
        if "rand" in op_name(n.target):
            return False
        concrete = pytree.tree_map(lambda a: self.env[a][1] if isinstance(a, fx.Node) else a, (n.args, n.kwargs))
        try:
            with torch.no_grad():
                result = n.target(*concrete[0], **concrete[1])  # type: ignore[operator]
        except Exception as e:  # noqa: BLE001 - a constant we cannot compute is the op's problem, named below
            raise CaptureError(f"cannot precompute {op_name(n.target)}{self.loc(n)}: {e}") from None
        self.env[n] = ("const", result)
        return True


def _path(path: str) -> dict[str, str]:
    """A node's `path` field: the module path it came from (none for the root module, or one too long to show)."""
    return {"path": path} if path and len(path) <= 256 else {}
