"""Invalid edits leave nothing behind (issue 7, item 3): a hypothesis state machine over the HTTP app.

The machine keeps its own model of `digits` — the chain of nodes of every version (id, output width, kind) — and
applies random sequences of valid and invalid edits through the edit routes (the general `edits` route and the
layer sugar): unknown nodes, shape mismatches, bad layer arguments, `init: identity` where no identity exists,
output changes without `allow_output_change`, stale `if_version` / `If-Match`, duplicate names, rollbacks to
versions that do not exist, and lists whose valid first ops are followed by an invalid one; next to valid
identity inserts (Identity, Dropout, square Linear, BatchNorm1d, ReLU after a ReLU), removes, replaces,
set_weights, rollbacks and dry runs.

After each rejected edit: the predicted 4xx with the one JSON error shape, and the version, the graph JSON
(`GET /v1/models/digits/graph`), the version history and the outputs on a fixed input are exactly as before.
After each accepted edit: the version is the next number, the graph's nodes are the ones the model predicts,
an inference succeeds on the new version, function-preserving edits kept the outputs, and a rollback brought
back exactly the outputs of the version it rolled back to.
"""

from __future__ import annotations

import collections
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from safetensors.numpy import save as save_safetensors

from morphserve.main import create_app
from morphserve.settings import Settings
from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import X, assert_error

M = "/v1/models/digits"
EDITS = f"{M}/edits"
STATS: collections.Counter[str] = collections.Counter()


@dataclass(frozen=True)
class Node:
    id: str
    width: int  # features of its output
    kind: str  # fc (the original Linears) | relu | act (another activation) | identity | linear_id


DIGITS = (
    Node("fc1", 128, "fc"),
    Node("relu1", 128, "relu"),
    Node("fc2", 64, "fc"),
    Node("relu2", 64, "relu"),
    Node("fc3", 10, "fc"),
)
REMOVABLE = ("relu", "act", "identity", "linear_id")
ACTIVATIONS = ("ReLU", "Tanh", "Sigmoid", "SiLU")
BAD_LAYERS: list[tuple[str, dict[str, Any]]] = [
    ("zero width", {"type": "Linear", "in_features": 0, "out_features": 8}),
    ("negative width", {"type": "Linear", "in_features": -3, "out_features": 8}),
    ("string width", {"type": "Linear", "in_features": "wide", "out_features": 8}),
    ("unknown type", {"type": "Transformer9000"}),
    ("no type", {"in_features": 4}),
    ("extra argument", {"type": "ReLU", "inplace_please": True}),
    ("dropout p > 1", {"type": "Dropout", "p": 1.5}),
    ("conv kernel 0", {"type": "Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 0}),
    ("layer not an object", "Linear"),  # type: ignore[list-item]
]

VALID = ["insert_identity", "remove", "replace", "set_weights", "rollback", "dry_run"]
INVALID = [
    "unknown_node",
    "shape_mismatch",
    "bad_weights",
    "bad_layer_args",
    "impossible_identity",
    "output_change_without_flag",
    "stale_base",
    "duplicate_name",
    "rollback_to_nowhere",
    "valid_ops_then_an_invalid_one",
]


class EditMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self._tmp = tempfile.TemporaryDirectory(prefix="morphserve-sm-")
        app = create_app(
            Settings(models=["digits"], admin_token=TOKEN, state_dir=Path(self._tmp.name) / "state", fsync=False)
        )
        self.c = TestClient(app, headers=AUTH)
        self.c.__enter__()
        self.version = 1
        self.chains: dict[int, tuple[Node, ...]] = {1: DIGITS}
        self.outputs: dict[int, np.ndarray] = {}
        self.names = 0
        self.snap = self._snapshot()
        self.outputs[1] = self.snap[3]
        STATS["examples"] += 1

    def teardown(self) -> None:
        self.c.__exit__(None, None, None)
        self._tmp.cleanup()

    # -- the model -------------------------------------------------------------------------------------------
    @property
    def chain(self) -> tuple[Node, ...]:
        return self.chains[self.version]

    def ids(self) -> list[str]:
        return [n.id for n in self.chain]

    def width_of(self, anchor: str) -> int:
        return 64 if anchor == "input" else next(n.width for n in self.chain if n.id == anchor)

    def fresh(self) -> str:
        self.names += 1
        return f"n{self.names}"

    def _snapshot(self) -> tuple[int, str, int, np.ndarray]:
        """(version, graph JSON, number of versions in the history, outputs on X) as the server reports them."""
        info = self.c.get(M)
        graph = self.c.get(f"{M}/graph")
        hist = self.c.get(f"{M}/versions")
        out = self.c.post(f"{M}/infer", json={"inputs": X.tolist()})
        for r in (info, graph, hist, out):
            assert r.status_code == 200, (r.request.url, r.status_code, r.text[:300])
        version = info.json()["version"]
        assert out.json()["model_version"] == version == hist.json()["current"]
        assert graph.headers["etag"] == f'"{version}"'
        outputs = np.asarray(out.json()["outputs"], dtype=np.float32)
        assert outputs.shape == (3, 10) and np.isfinite(outputs).all()
        return version, graph.text, len(hist.json()["versions"]), outputs

    # -- one attempt, checked ----------------------------------------------------------------------------------
    def _send(self, method: str, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        if method == "DELETE":
            return self.c.request("DELETE", path, headers=headers)
        if isinstance(body, bytes):
            return self.c.request(
                method, path, content=body, headers={"Content-Type": "application/octet-stream", **(headers or {})}
            )
        return self.c.request(method, path, json=body, headers=headers)

    def reject(
        self, what: str, status: int, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> None:
        r = self._send(method, path, body, headers)
        assert_error(r, status)
        after = self._snapshot()
        before = self.snap
        assert after[0] == before[0], f"{what}: version changed from {before[0]} to {after[0]}"
        assert after[1] == before[1], f"{what}: the graph changed"
        assert after[2] == before[2], f"{what}: the history grew"
        assert np.array_equal(after[3], before[3]), f"{what}: outputs changed"
        STATS[f"rejected {what}"] += 1
        STATS["steps"] += 1

    def accept(
        self,
        what: str,
        method: str,
        path: str,
        body: Any,
        chain: tuple[Node, ...],
        *,
        preserves: bool = False,
        rollback_to: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        r = self._send(method, path, body, headers)
        assert r.status_code == 200, (what, body, r.status_code, r.text[:500])
        assert (r.json()["previous_version"], r.json()["version"]) == (self.version, self.version + 1), r.json()
        before = self.snap
        self.version += 1
        self.chains[self.version] = chain
        self.snap = self._snapshot()  # includes an inference that must succeed on the new version
        assert self.snap[0] == self.version
        graph_ids = [n["id"] for n in json.loads(self.snap[1])["nodes"] if n["kind"] not in ("input", "output")]
        assert graph_ids == self.ids(), (what, graph_ids, self.ids())
        assert self.snap[2] == before[2] + 1
        self.outputs[self.version] = self.snap[3]
        if preserves:
            np.testing.assert_allclose(self.snap[3], before[3], rtol=1e-4, atol=1e-5, err_msg=what)
        if rollback_to is not None:
            np.testing.assert_array_equal(self.snap[3], self.outputs[rollback_to], err_msg=what)
        # the explicit-version route agrees with the current one
        oip = {"inputs": [{"name": "input", "shape": [3, 64], "datatype": "FP32", "data": X.reshape(-1).tolist()}]}
        v = self.c.post(f"/v2/models/digits/versions/{self.version}/infer", json=oip)
        assert v.status_code == 200 and v.json()["model_version"] == str(self.version), v.text
        STATS[f"accepted {what}"] += 1
        STATS["steps"] += 1

    # -- valid edits -------------------------------------------------------------------------------------------
    def insert_identity(self, data: st.DataObject) -> None:
        before = data.draw(st.booleans(), label="before")
        if before:
            target = data.draw(st.sampled_from(self.ids()), label="before node")
            pos = self.ids().index(target)
            anchor_node = self.chain[pos - 1] if pos else None
        else:
            anchor = data.draw(st.sampled_from(["input", *self.ids()]), label="after node")
            pos = 0 if anchor == "input" else self.ids().index(anchor) + 1
            anchor_node = self.chain[pos - 1] if pos else None
        width = anchor_node.width if anchor_node else 64
        kinds = ["Identity", "Dropout", "Linear", "BatchNorm1d"] + (
            ["ReLU"] if anchor_node and anchor_node.kind == "relu" else []
        )
        kind = data.draw(st.sampled_from(kinds), label="layer")
        layer: dict[str, Any] = {
            "Identity": {"type": "Identity"},
            "Dropout": {"type": "Dropout", "p": 0.5},
            "ReLU": {"type": "ReLU"},
            "Linear": {"type": "Linear", "in_features": width, "out_features": width},
            "BatchNorm1d": {"type": "BatchNorm1d", "num_features": width},
        }[kind]
        name = self.fresh()
        node = Node(name, width, {"ReLU": "relu", "Linear": "linear_id"}.get(kind, "identity"))
        op: dict[str, Any] = {"layer": layer, "name": name, "init": "identity"}
        op.update({"before": target} if before else {"after": anchor})
        chain = self.chain[:pos] + (node,) + self.chain[pos:]
        if data.draw(st.booleans(), label="sugar route"):
            self.accept("identity insert", "POST", f"{M}/layers", op, chain, preserves=True)
        else:
            self.accept("identity insert", "POST", EDITS, {"ops": [{"op": "insert", **op}]}, chain, preserves=True)

    def remove(self, data: st.DataObject) -> None:
        candidates = [n for n in self.chain if n.kind in REMOVABLE]
        if not candidates:
            return
        node = data.draw(st.sampled_from(candidates), label="node")
        chain = tuple(n for n in self.chain if n.id != node.id)
        preserves = node.kind in ("identity", "linear_id")
        if data.draw(st.booleans(), label="sugar route"):
            self.accept("remove", "DELETE", f"{M}/layers/{node.id}", None, chain, preserves=preserves)
        else:
            self.accept(
                "remove", "POST", EDITS, {"ops": [{"op": "remove", "node": node.id}]}, chain, preserves=preserves
            )

    def replace(self, data: st.DataObject) -> None:
        acts = [n for n in self.chain if n.kind in ("relu", "act")]
        if acts and data.draw(st.booleans(), label="activation"):
            node = data.draw(st.sampled_from(acts), label="node")
            new = data.draw(st.sampled_from(ACTIVATIONS), label="activation type")
            chain = tuple(
                Node(n.id, n.width, "relu" if new == "ReLU" else "act") if n.id == node.id else n for n in self.chain
            )
            self.accept("replace activation", "PUT", f"{M}/layers/{node.id}", {"layer": {"type": new}}, chain)
        else:  # a Linear by the same Linear, keeping its weights: same function
            node = data.draw(st.sampled_from([n for n in self.chain if n.kind == "fc"]), label="node")
            fan_in = {"fc1": 64, "fc2": 128, "fc3": 64}[node.id]
            ops = [
                {
                    "op": "replace",
                    "node": node.id,
                    "keep_weights": True,
                    "layer": {"type": "Linear", "in_features": fan_in, "out_features": node.width},
                }
            ]
            self.accept("replace keep_weights", "POST", EDITS, {"ops": ops}, self.chain, preserves=True)

    def set_weights(self, data: st.DataObject) -> None:
        node = data.draw(st.sampled_from(["fc1", "fc2", "fc3"]), label="node")
        seed = data.draw(st.integers(0, 1000), label="seed")
        width = self.width_of(node)
        bias = np.random.default_rng(seed).normal(0, 0.1, width).round(4).tolist()
        ops = [{"op": "set_weights", "node": node, "tensors": {"bias": {"shape": [width], "data": bias}}}]
        self.accept("set_weights", "POST", EDITS, {"ops": ops, "if_version": self.version}, self.chain)

    def rollback(self, data: st.DataObject) -> None:
        to = data.draw(st.integers(1, self.version), label="to")
        self.accept("rollback", "POST", f"{M}/rollback", {"version": to}, self.chains[to], rollback_to=to)

    def dry_run(self, data: st.DataObject) -> None:
        """A valid edit as a dry run: 200 with the would-be graph, and nothing changes."""
        anchor = data.draw(st.sampled_from(self.ids()), label="after")
        r = self.c.post(
            EDITS, json={"ops": [{"op": "insert", "after": anchor, "layer": {"type": "Identity"}}], "dry_run": True}
        )
        assert r.status_code == 200 and r.json()["dry_run"] is True and r.json()["graph"], r.text
        after = self._snapshot()
        assert after[:3] == self.snap[:3] and np.array_equal(after[3], self.snap[3]), "a dry run changed the model"
        STATS["dry run (nothing changes)"] += 1
        STATS["steps"] += 1

    # -- invalid edits -----------------------------------------------------------------------------------------
    def unknown_node(self, data: st.DataObject) -> None:
        ghost = f"ghost{data.draw(st.integers(0, 9), label='ghost')}"
        how = data.draw(
            st.sampled_from(
                ["remove", "remove sugar", "insert after", "insert before", "replace", "set_weights", "weights sugar"]
            ),
            label="how",
        )
        ident = {"type": "Identity"}
        bias = {"bias": {"shape": [10], "data": [0.0] * 10}}
        if how == "remove sugar":
            self.reject("unknown node", 404, "DELETE", f"{M}/layers/{ghost}")
        elif how == "replace":
            self.reject("unknown node", 404, "PUT", f"{M}/layers/{ghost}", {"layer": ident})
        elif how == "weights sugar":
            self.reject(
                "unknown node",
                404,
                "PUT",
                f"{M}/layers/{ghost}/weights",
                save_safetensors({"bias": np.zeros(10, np.float32)}),
            )
        else:
            op = {
                "remove": {"op": "remove", "node": ghost},
                "insert after": {"op": "insert", "after": ghost, "layer": ident},
                "insert before": {"op": "insert", "before": ghost, "layer": ident},
                "set_weights": {"op": "set_weights", "node": ghost, "tensors": bias},
            }[how]
            self.reject("unknown node", 404, "POST", EDITS, {"ops": [op]})

    def shape_mismatch(self, data: st.DataObject) -> None:
        how = data.draw(st.sampled_from(["insert", "remove fc", "replace"]), label="how")
        if how == "insert":  # a Linear whose input width is wrong, or whose output width breaks its reader
            anchor = data.draw(st.sampled_from(self.ids()), label="after")
            w = self.width_of(anchor)
            wrong = data.draw(st.sampled_from([w + 1, max(1, w // 2), 3]), label="width")
            layer = data.draw(
                st.sampled_from(
                    [
                        {"type": "Linear", "in_features": wrong, "out_features": wrong},
                        {"type": "Linear", "in_features": w, "out_features": wrong + w},
                    ]
                )
            )
            self.reject(
                "shape mismatch", 422, "POST", EDITS, {"ops": [{"op": "insert", "after": anchor, "layer": layer}]}
            )
        elif how == "remove fc":  # fc1 / fc2 change the width their reader gets
            node = data.draw(st.sampled_from(["fc1", "fc2"]), label="node")
            self.reject("shape mismatch", 422, "POST", EDITS, {"ops": [{"op": "remove", "node": node}]})
        else:
            self.reject(
                "shape mismatch",
                422,
                "PUT",
                f"{M}/layers/fc2",
                {"layer": {"type": "Linear", "in_features": 128, "out_features": 32}},
            )

    def bad_weights(self, data: st.DataObject) -> None:
        """Wrong shapes, too few values, a tensor the layer does not have, the wrong dtype."""
        node = data.draw(st.sampled_from(["fc1", "fc2", "fc3"]), label="node")
        w = self.width_of(node)
        bad = data.draw(
            st.sampled_from(
                [
                    {"bias": {"shape": [w + 1], "data": [0.0] * (w + 1)}},
                    {"weight": {"shape": [2, 2], "data": [[0.0, 1.0], [1.0, 0.0]]}},
                    {"bias": {"shape": [w], "data": [0.0] * 3}},
                    {"gamma": {"shape": [w], "data": [0.0] * w}},
                    {"bias": {"shape": [w], "data": [0.0] * w, "datatype": "FP64"}},
                ]
            ),
            label="tensors",
        )
        self.reject("bad weights", 422, "POST", EDITS, {"ops": [{"op": "set_weights", "node": node, "tensors": bad}]})

    def bad_layer_args(self, data: st.DataObject) -> None:
        bad = data.draw(st.sampled_from(BAD_LAYERS), label="bad layer")
        anchor = data.draw(st.sampled_from(self.ids()), label="node")
        route = data.draw(st.sampled_from(["edits insert", "edits replace", "layers", "layers put"]), label="route")
        if route == "edits insert":
            self.reject(
                "bad layer args", 422, "POST", EDITS, {"ops": [{"op": "insert", "after": anchor, "layer": bad[1]}]}
            )
        elif route == "edits replace":
            self.reject(
                "bad layer args", 422, "POST", EDITS, {"ops": [{"op": "replace", "node": anchor, "layer": bad[1]}]}
            )
        elif route == "layers":
            self.reject("bad layer args", 422, "POST", f"{M}/layers", {"after": anchor, "layer": bad[1]})
        else:
            self.reject("bad layer args", 422, "PUT", f"{M}/layers/{anchor}", {"layer": bad[1]})

    def impossible_identity(self, data: st.DataObject) -> None:
        not_relu = [n for n in self.chain if n.kind != "relu"]
        how = data.draw(st.sampled_from(["relu", "linear", "batchnorm"]), label="how")
        if how == "relu":  # ReLU is an identity only on non-negative input
            anchor = data.draw(st.sampled_from(["input", *(n.id for n in not_relu)]), label="after")
            layer: dict[str, Any] = {"type": "ReLU"}
        else:
            anchor = data.draw(st.sampled_from(["input", *self.ids()]), label="after")
            w = self.width_of(anchor)
            layer = (
                {"type": "Linear", "in_features": w, "out_features": w + 1}
                if how == "linear"
                else {"type": "BatchNorm1d", "num_features": w, "track_running_stats": False}
            )
        self.reject(
            "impossible identity",
            422,
            "POST",
            EDITS,
            {"ops": [{"op": "insert", "after": anchor, "layer": layer, "init": "identity"}]},
        )

    def output_change_without_flag(self, data: st.DataObject) -> None:
        last = self.chain[-1]
        how = data.draw(st.sampled_from(["replace head", "remove head", "append"]), label="how")
        if how == "replace head":
            ops = [{"op": "replace", "node": "fc3", "layer": {"type": "Linear", "in_features": 64, "out_features": 5}}]
        elif how == "remove head":
            ops = [{"op": "remove", "node": "fc3"}]
        else:  # a Linear after the last node that widens the output
            ops = [
                {
                    "op": "insert",
                    "after": last.id,
                    "layer": {"type": "Linear", "in_features": last.width, "out_features": last.width + 2},
                }
            ]
        self.reject("output change without the flag", 422, "POST", EDITS, {"ops": ops})

    def stale_base(self, data: st.DataObject) -> None:
        stale = data.draw(st.sampled_from([v for v in range(1, self.version + 3) if v != self.version]), label="base")
        op = {"op": "insert", "after": "relu1" if "relu1" in self.ids() else "fc1", "layer": {"type": "Identity"}}
        if data.draw(st.booleans(), label="If-Match"):
            self.reject("stale version", 409, "POST", EDITS, {"ops": [op]}, headers={"If-Match": f'"{stale}"'})
        else:
            self.reject("stale version", 409, "POST", EDITS, {"ops": [op], "if_version": stale})

    def duplicate_name(self, data: st.DataObject) -> None:
        name = data.draw(st.sampled_from(["input", *self.ids()]), label="name")
        self.reject(
            "duplicate name",
            422,
            "POST",
            EDITS,
            {"ops": [{"op": "insert", "after": self.ids()[-1], "name": name, "layer": {"type": "Identity"}}]},
        )

    def rollback_to_nowhere(self, data: st.DataObject) -> None:
        to = data.draw(st.integers(self.version + 1, self.version + 50), label="to")
        self.reject("rollback to a missing version", 404, "POST", f"{M}/rollback", {"version": to})

    def valid_ops_then_an_invalid_one(self, data: st.DataObject) -> None:
        """The first ops would succeed alone; the last fails: the whole list is refused, atomically."""
        ops: list[dict[str, Any]] = []
        for _ in range(data.draw(st.integers(1, 3), label="valid ops")):
            anchor = data.draw(st.sampled_from(self.ids()), label="after")
            ops.append({"op": "insert", "after": anchor, "layer": {"type": "Identity"}, "init": "identity"})
        ops.append({"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [9.0] * 10}}})
        last, status = data.draw(
            st.sampled_from(
                [
                    ({"op": "remove", "node": "ghost"}, 404),
                    (
                        {
                            "op": "insert",
                            "after": "fc1",
                            "layer": {"type": "Linear", "in_features": 3, "out_features": 3},
                        },
                        422,
                    ),
                    (
                        {
                            "op": "replace",
                            "node": "fc3",
                            "layer": {"type": "Linear", "in_features": 64, "out_features": 4},
                        },
                        422,
                    ),
                    ({"op": "frobnicate"}, 422),
                ]
            ),
            label="invalid op",
        )
        self.reject("valid ops then an invalid one", status, "POST", EDITS, {"ops": [*ops, last]})

    # -- the rules: one valid edit, one invalid edit, or a dry run (each draws its kind) ----------------------------
    @rule(data=st.data())
    def valid_edit(self, data: st.DataObject) -> None:
        getattr(self, data.draw(st.sampled_from(VALID), label="valid edit"))(data)

    @rule(data=st.data())
    def invalid_edit(self, data: st.DataObject) -> None:
        getattr(self, data.draw(st.sampled_from(INVALID), label="invalid edit"))(data)

    @invariant()
    def server_agrees_with_the_model(self) -> None:
        """Asked afresh after every step (not the snapshot the step took): the server's current version, and the
        length of its history, are the machine's (every accepted edit and rollback added exactly one version)."""
        hist = self.c.get(f"{M}/versions")
        assert hist.status_code == 200, hist.text
        assert hist.json()["current"] == self.version, (hist.json()["current"], self.version)
        assert [v["version"] for v in hist.json()["versions"]] == list(range(1, self.version + 1))


@pytest.mark.slow  # 625 steps of edits over HTTP (~80 s): CI runs it, `-m "not slow"` skips it
def test_invalid_edits_leave_nothing_behind() -> None:
    STATS.clear()
    t0 = time.monotonic()
    run_state_machine_as_test(
        EditMachine,
        settings=settings(
            max_examples=25,
            stateful_step_count=25,
            derandomize=True,
            database=None,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
    seconds = time.monotonic() - t0
    accepted = sum(n for k, n in STATS.items() if k.startswith("accepted"))
    rejected = sum(n for k, n in STATS.items() if k.startswith("rejected"))
    detail = ", ".join(f"{k}: {n}" for k, n in sorted(STATS.items()) if k not in ("steps", "examples"))
    print(
        f"\n[state machine] examples: {STATS['examples']}, steps: {STATS['steps']} ({accepted} accepted edits, "
        f"{rejected} rejected); {seconds:.1f} s\n  {detail}"
    )
    # every kind of refusal and every kind of valid edit was really tried (derandomized: the same run every time)
    kinds = [
        "unknown node",
        "shape mismatch",
        "bad weights",
        "bad layer args",
        "impossible identity",
        "output change without the flag",
        "stale version",
        "duplicate name",
        "rollback to a missing version",
        "valid ops then an invalid one",
    ]
    assert all(STATS[f"rejected {k}"] > 0 for k in kinds), STATS
    for k in ["identity insert", "remove", "replace activation", "replace keep_weights", "set_weights", "rollback"]:
        assert STATS[f"accepted {k}"] > 0, (k, STATS)
    assert accepted >= 20 and rejected >= 50, STATS
