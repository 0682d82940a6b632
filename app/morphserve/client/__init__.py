"""Python client for a morphserve server: `Client` (blocking) and `AsyncClient` (asyncio), both on httpx.

Every operation is written once, as a *sans-I/O* generator that yields `_Req` objects and receives
`httpx.Response`s; `Client` and `AsyncClient` only differ in the driver that sends them. That keeps the two
clients from drifting apart (same paths, same encoding, same errors) without duplicating protocol code.

Inference uses the Open Inference Protocol route with Triton's binary tensor extension: tensors travel as raw
little-endian bytes after a small JSON header, which is an order of magnitude cheaper than JSON number lists for
both sides. Server errors become typed exceptions (`NotFound`, `Conflict`, ...) that keep the server's
structured fields (`op`, `node`, `expected`, `got`), so callers can react to them without parsing messages.

Usage::

    from morphserve.client import Client

    with Client("http://127.0.0.1:8000", token="secret") as c:
        r = c.infer("digits", np.zeros((1, 64), np.float32))
        print(r.version, r.output.argmax(1))
        c.insert("digits", {"type": "Linear", "in_features": 128, "out_features": 128}, after="fc1", init="identity")

Edits can be staged (`stage=True`: committed, not current) and rolled out with shadow traffic, a canary and
gates that promote or abort on their own::

        v = c.replace("digits", "fc3", {"type": "Linear", "in_features": 64, "out_features": 10}, stage=True)
        c.start_rollout("digits", v["version"], shadow=1.0, gates={"min_requests": 500, "min_agreement": 0.99})
        print(c.wait_rollout("digits").state)   # "promoted" or "aborted", with .reason and .evidence

Layers can be trained in the server, on a dataset it holds (`put_dataset`, or labels for earlier requests by their
request id: `feedback`); a fit job commits a staged version, which a rollout (or `promote`) makes current::

        job = c.fit("digits", ["fc3"], "train", steps=400, lr=0.02, batch_size=64, eval="heldout")
        done = c.wait_job("digits", job.id)    # .state, .version (staged), .loss_curve, .eval_before/.eval_after

The package: `errors` (typed exceptions), `wire` (encodings and the sans-I/O request), `ops` (the operations),
`rollouts` (typed rollout and dataset answers), `jobs` (typed fit jobs and feedback answers), `sync` and `aio`
(the two drivers), `events` (following a model's event stream).
"""

from __future__ import annotations

from morphserve.client.aio import AsyncClient
from morphserve.client.errors import (
    Conflict,
    InvalidRequest,
    MorphserveError,
    NotFound,
    Unauthorized,
    Unavailable,
    Unreachable,
)
from morphserve.client.events import Event
from morphserve.client.jobs import FeedbackResult, Job
from morphserve.client.rollouts import Dataset, GateState, RoleStats, Rollout
from morphserve.client.sync import Client
from morphserve.client.wire import InferResult

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Dataset",
    "Event",
    "FeedbackResult",
    "GateState",
    "InferResult",
    "InvalidRequest",
    "Job",
    "MorphserveError",
    "NotFound",
    "RoleStats",
    "Rollout",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
]
