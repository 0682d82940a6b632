"""API fuzzing (issue 7, item 1): schemathesis against the app's own OpenAPI schema, every operation.

Every generated request (schemathesis' coverage and fuzzing phases, positive and negative data, sent with the
admin token) must get no 5xx and a response that conforms to the declared schema: status code, content type,
headers, body. Where the schema lied, the schema was fixed in app/api, not here.

- Deterministic: hypothesis `derandomize=True`, no example database, operations in schema order, so CI
  cannot flake and a failure reproduces.
- One app per module, in-process; the module fixture owns its registry (schemathesis' ASGI lifespan is
  answered by a wrapper, so it never starts or closes a second one).
- Path parameters are steered to real objects most of the time (`digits`, its nodes, its live version, the
  models the fuzz may create), and the inference and edit routes get a realistic body half of the time,
  so the fuzz reaches past the 404s and 422s into accepted edits and real inference.
- `DELETE /v1/models/{model}` is fuzzed like the rest: when a case removes `digits`, the test re-creates it
  so the cases after it still reach a live model.
- The counts (cases generated, requests sent, statuses, per operation) are printed by `test_fuzz_counts`,
  which also fails if an operation got fewer than MIN_TRIED fuzzing cases or never succeeded.
"""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (pip install schemathesis)")

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.main import create_app  # noqa: E402
from app.serving.metrics import Metrics  # noqa: E402
from app.serving.registry import Registry  # noqa: E402
from app.serving.sources import ZooSource  # noqa: E402
from app.settings import Settings  # noqa: E402
from tests.conftest import AUTH, TOKEN  # noqa: E402

MAX_EXAMPLES = 50
MIN_TRIED = 40  # every operation with inputs must have had at least this many fuzzing cases
#: Not `negative_data_rejection`: FastAPI ignores unknown query parameters (which OpenAPI allows), so "?=0"
#: on any GET would count as a schema-violating request accepted.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
MODEL = "digits"
EXTRA_MODELS = ["fz0", "fz1"]  # what the fuzz may create (POST /v1/models), so at most two more workers
NODES = ["fc1", "relu1", "fc2", "relu2", "fc3", "x", "output"]

#: (operation, phase) -> cases generated / requests sent; operation -> status -> count.
SENT: collections.Counter[tuple[str, str]] = collections.Counter()
#: schemathesis' coverage phase enumerates boundary and type-violating values of every field; for the layer
#: routes (a union of ~20 layer specs) that is ~12,700 cases each, over a minute apiece. Every coverage case is
#: generated, and the first COVERAGE_CAP of an operation plus every COVERAGE_STRIDE-th after them are sent.
COVERAGE_CAP = 150
COVERAGE_STRIDE = 40
GENERATED: collections.Counter[tuple[str, str]] = collections.Counter()
STATUSES: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)


class _OwnedLifespan:
    """The app, with the ASGI lifespan answered here: the registry belongs to the module fixture, so
    schemathesis' long-lived lifespan (one per app, ended at interpreter exit) never closes it."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return None


def _settings(state_dir: Path) -> Settings:
    # keep_versions bounds what a long run of accepted edits accumulates; fsync off keeps edits fast.
    return Settings(models=[MODEL], admin_token=TOKEN, state_dir=state_dir, fsync=False, keep_versions=8,
                    max_body_mb=1.0, request_timeout_s=10.0)  # fmt: skip


# The schema is the app's own: build a throw-away app (no registry, nothing started) just to render it.
_SCHEMA_APP = create_app(_settings(Path("/nonexistent-morphserve-fuzz")))
#: The server-sent event streams never end, so an in-process call would wait forever on them: they are tested
#: against a real server instead (tests/e2e/test_events.py: headers, 404s, resumption, bad Last-Event-IDs).
STREAMS = r"/events$"
schema = schemathesis.openapi.from_dict(_SCHEMA_APP.openapi()).exclude(path_regex=STREAMS)


@schema.hook
def flatmap_path_parameters(context: Any, path_parameters: dict[str, Any]) -> Any:
    """Most cases aim at real objects: `digits` (or a model the fuzz may create), its nodes, its versions."""
    if not path_parameters:
        return st.just(path_parameters)
    real: dict[str, Any] = {}
    for key, value in path_parameters.items():
        if key == "model":
            real[key] = st.sampled_from([MODEL, MODEL, *EXTRA_MODELS, value])
        elif key == "node":
            real[key] = st.sampled_from([*NODES, value])
        elif key == "version":
            # the first versions, the one live when the case is drawn (resident, so infer can succeed), or fuzz
            typ = int if isinstance(value, int) else str
            real[key] = st.one_of(st.sampled_from([typ(1), typ(2), value]), st.builds(lambda t=typ: t(_latest())))
        else:
            real[key] = st.just(value)
    return st.fixed_dictionaries(real)


_REGISTRY: list[Registry] = []  # the module fixture's, for the hooks


def _latest() -> int:
    """The live version of `digits` right now (read when a case is drawn)."""
    return _REGISTRY[0].current(MODEL).version if _REGISTRY and MODEL in _REGISTRY[0].names() else 1


# -- realistic bodies ----------------------------------------------------------------------------------------
# Schema-driven bodies for the inference and edit routes are almost never valid for a real model (a random
# LayerSpec, a random tensor), so the fuzz would only ever see 4xx there. Half of the fuzzing cases of these
# operations get a body drawn from the strategies below instead: well-formed for `digits`, with random
# sizes, values, nodes and flags, so that accepted edits, inference on edited versions and binary outputs
# are fuzzed too (and checked against the schema like the rest).
FLOAT = st.floats(-8, 8, allow_nan=False, width=32)
ROWS = st.integers(1, 3).flatmap(lambda n: st.lists(st.lists(FLOAT, min_size=64, max_size=64), min_size=n,
                                                    max_size=n))  # fmt: skip
LAYER = st.sampled_from([{"type": "Identity"}, {"type": "ReLU"}, {"type": "Tanh"}, {"type": "Dropout", "p": 0.0},
                         {"type": "Linear", "in_features": 64, "out_features": 64},
                         {"type": "Linear", "in_features": 64, "out_features": 10},
                         {"type": "Linear", "in_features": 128, "out_features": 128}])  # fmt: skip
NODE = st.sampled_from(NODES)


def _oip_body(rows: list[list[float]], datatype: str, binary: bool, rid: str) -> dict[str, Any]:
    return {"id": rid, "parameters": {"binary_data_output": binary},
            "inputs": [{"name": "input", "shape": [len(rows), 64], "datatype": datatype,
                        "data": [v for r in rows for v in r]}]}  # fmt: skip


def _weights(shapes: dict[str, tuple[int, ...]], dtype: Any) -> bytes:
    import torch
    from safetensors.torch import save

    return save({k: torch.zeros(v, dtype=dtype) for k, v in shapes.items()})


def _realistic(label: str) -> st.SearchStrategy[tuple[Any, str, str | None]] | None:
    import torch

    json_ = "application/json"
    op = st.one_of(
        st.fixed_dictionaries({"op": st.just("insert"), "after": NODE, "layer": LAYER,
                               "init": st.sampled_from(["identity", "default"])}),
        st.fixed_dictionaries({"op": st.just("remove"), "node": NODE}),
        st.fixed_dictionaries({"op": st.just("replace"), "node": NODE, "layer": LAYER}),
        st.builds(lambda c: {"op": "set_weights", "node": "fc3", "tensors": {
            "weight": {"shape": [10, 64], "data": [0.0] * 640}, "bias": {"shape": [10], "data": [c] * 10}}}, FLOAT),
    )  # fmt: skip
    flag = st.booleans()
    bodies: dict[str, st.SearchStrategy[Any]] = {
        "POST /v1/models/{model}/infer": st.builds(lambda x: {"inputs": x}, ROWS),
        "POST /v2/models/{model}/infer": st.builds(_oip_body, ROWS, st.sampled_from(["FP32", "FP32", "FP64"]), flag,
                                                   st.text(max_size=8)),
        "POST /v1/models/{model}/edits": st.fixed_dictionaries(
            {"ops": st.lists(op, min_size=1, max_size=2), "dry_run": flag, "allow_output_change": flag}),
        "POST /v1/models/{model}/layers": st.fixed_dictionaries(
            {"after": NODE, "layer": LAYER, "init": st.sampled_from(["identity", "default"]),
             "allow_output_change": flag}),
        # (node, body): a layer that fits the node it replaces half of the time, anything from LAYER otherwise
        "PUT /v1/models/{model}/layers/{node}": st.one_of(
            st.sampled_from([("relu1", {"layer": {"type": "Identity"}}), ("relu2", {"layer": {"type": "Tanh"}}),
                             ("fc3", {"layer": {"type": "Linear", "in_features": 64, "out_features": 10},
                                      "keep_weights": True})]),
            st.tuples(NODE, st.fixed_dictionaries({"layer": LAYER, "keep_weights": flag,
                                                   "allow_output_change": flag}))),
        # the live version (always there: a rollback to it is a no-op version), its parent (unless gc took it), any
        "POST /v1/models/{model}/rollback": st.fixed_dictionaries({"version": st.one_of(
            st.builds(lambda: _latest()), st.builds(lambda: max(1, _latest() - 1)), st.integers(1, 12))}),
        "POST /v1/models": st.fixed_dictionaries(
            {"name": st.sampled_from(["fz0", "fz1", MODEL]), "zoo": st.sampled_from(["mlp", "chain", "nope"])}),
    }  # fmt: skip
    bodies["POST /v2/models/{model}/versions/{version}/infer"] = bodies["POST /v2/models/{model}/infer"]
    if label == "PUT /v1/models/{model}/layers/{node}/weights":
        files = [("fc3", _weights({"weight": (10, 64), "bias": (10,)}, torch.float32)),  # right for fc3
                 ("fc2", _weights({"weight": (64, 128), "bias": (64,)}, torch.float32)),  # right for fc2
                 (None, _weights({"weight": (10, 64), "bias": (11,)}, torch.float32)),  # wrong shape
                 (None, _weights({"weight": (10, 64), "bias": (10,)}, torch.float64)),  # wrong dtype
                 (None, _weights({"gamma": (10,)}, torch.float32))]  # wrong name  # fmt: skip
        return st.sampled_from(files).map(lambda nb: (nb[1], "application/octet-stream", nb[0]))
    body = bodies.get(label)
    if body is None:
        return None
    if label == "PUT /v1/models/{model}/layers/{node}":
        return body.map(lambda nb: (nb[1], json_, nb[0]))
    return body.map(lambda b: (b, json_, None))


@schema.hook
def flatmap_case(context: Any, case: Any) -> Any:
    realistic = _realistic(_label(case))
    if realistic is None:
        return st.just(case)

    def with_body(drawn: tuple[Any, str, str | None], if_match: str | None) -> Any:
        case.body, case.media_type, node = drawn
        if node is not None and case.path_parameters:  # the body was drawn for this node
            case.path_parameters = {**case.path_parameters, "model": MODEL, "node": node}
        # a generated If-Match is almost never a version number (400): keep it out, or use the wildcard
        headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "if-match"}
        if if_match is not None:
            headers["If-Match"] = if_match
        case.headers = headers
        return case

    return st.one_of(st.just(case), st.builds(with_body, realistic, st.sampled_from([None, "*"])))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Registry]]:
    settings_ = _settings(tmp_path_factory.mktemp("fuzz") / "state")
    registry = Registry(settings_, Metrics())
    registry.load_from_settings()
    app = create_app(settings_, registry)
    _REGISTRY[:] = [registry]
    try:
        yield _OwnedLifespan(app), registry
    finally:
        registry.close()


def _label(case: Any) -> str:
    return f"{case.operation.method.upper()} {case.operation.path}"


@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None, print_blob=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
def test_fuzz(case: Any, served: tuple[Any, Registry]) -> None:
    app, registry = served
    label, phase = _label(case), case.meta.phase.name.value if case.meta else "?"
    GENERATED[(label, phase)] += 1
    n = GENERATED[(label, phase)]
    if phase == "coverage" and n > COVERAGE_CAP and n % COVERAGE_STRIDE:
        return  # see COVERAGE_CAP
    response = case.call_and_validate(app=app, headers=AUTH, checks=CHECKS)
    SENT[(label, phase)] += 1
    STATUSES[label][response.status_code] += 1
    if MODEL not in registry.names():  # a fuzzed DELETE /v1/models/digits: bring it back for what follows
        registry.add(MODEL, ZooSource(MODEL))


def _has_inputs(operation: dict[str, Any]) -> bool:
    return bool(operation.get("parameters") or operation.get("requestBody"))


def test_fuzz_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Runs after the fuzz (same module, file order): every operation was fuzzed with enough examples, and
    the fuzz got past the 404s. Prints the counts per operation for the closing note."""
    paths = _SCHEMA_APP.openapi()["paths"]
    operations = {f"{m.upper()} {p}": op for p, ops in paths.items() for m, op in ops.items()
                  if not re.search(STREAMS, p)}  # fmt: skip
    total = sum(SENT.values())
    with capsys.disabled():
        print(f"\nschemathesis fuzz: {total} requests sent over {len(operations)} operations "
              f"({sum(GENERATED.values())} cases generated)")  # fmt: skip
        print("   fuzzing  coverage(sent/generated)  operation  [status x count]")
        for label in sorted(operations):
            statuses = " ".join(f"{s}x{n}" for s, n in sorted(STATUSES[label].items()))
            sent, generated = SENT[(label, "coverage")], GENERATED[(label, "coverage")]
            print(f"  {SENT[(label, 'fuzzing')]:8d}  {sent:6d}/{generated:<6d}            {label}  [{statuses}]")
    few = {label: SENT[(label, "fuzzing")] for label, op in operations.items()
           if SENT[(label, "fuzzing")] < (MIN_TRIED if _has_inputs(op) else 1)}  # fmt: skip
    assert not few, f"operations fuzzed fewer than {MIN_TRIED} times: {few}"
    reached = {label for label in operations if any(s < 300 for s in STATUSES[label])}
    never = set(operations) - reached  # every operation must have succeeded at least once
    assert not never, sorted(never)
