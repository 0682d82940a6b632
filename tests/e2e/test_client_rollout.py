"""The client's staged versions, rollouts and datasets against a real `morphserve serve` subprocess (issue 25).

One server per module; each test works on its own copy of `digits` (`fresh`), so tests stay independent in any
order. The gates are the server's own monitor thread: tests send traffic until the rollout has ended (bounded),
then read the outcome; nothing waits on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_numpy

from morphserve.client import (
    AsyncClient,
    Client,
    Conflict,
    Dataset,
    GateState,
    InvalidRequest,
    NotFound,
    Rollout,
)
from tests.conftest import TOKEN, ServerProcess, serve_module
from tests.digits import digits

FRESH_HEAD = {"type": "Linear", "in_features": 64, "out_features": 10}
IDENTITY_128 = {"type": "Linear", "in_features": 128, "out_features": 128}
_names = itertools.count()
#: Small enough that a test can exceed it cheaply; the body limit (--max-body-mb, 64) is far above it.
DATASET_LIMIT_MB = 1


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--max-dataset-mb", str(DATASET_LIMIT_MB))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture
def fresh(client: Client) -> Iterator[str]:
    """A private copy of `digits` (trained weights, version 1) that the test may edit and roll out freely."""
    name = f"roll_{next(_names)}"
    client.add_model(name, zoo="digits")
    yield name
    with contextlib.suppress(NotFound):
        client.delete_model(name)


def reference(x: np.ndarray) -> np.ndarray:
    from morphserve.graph import load_zoo

    return load_zoo("digits").run(torch.from_numpy(x))[0].numpy()


def drive(client: Client, model: str, x: np.ndarray, limit: int) -> list[int]:
    """Send rows of `x` one request at a time until the rollout has ended (at most `limit` requests); the versions
    that answered, in order."""
    versions: list[int] = []
    for i in range(limit):
        versions.append(client.infer(model, x[i % len(x) : i % len(x) + 1]).version)
        if i % 10 == 9 and not client.rollout(model).running:
            return versions
    raise AssertionError(f"the rollout of {model} was still running after {limit} requests: {client.rollout(model)}")


# -- staged versions ------------------------------------------------------------------------------------------------
def test_stage_on_every_edit_method_commits_without_moving_the_current_version(client: Client, fresh: str) -> None:
    x, _ = digits(4)
    want = reference(x)
    head = {"weight": np.zeros((10, 64), np.float32), "bias": np.arange(10, dtype=np.float32)}
    made = [
        client.insert(fresh, IDENTITY_128, after="relu1", init="identity", stage=True),
        client.replace(fresh, "fc3", FRESH_HEAD, seed=7, stage=True),
        client.remove(fresh, "relu2", stage=True),
        client.edit(fresh, [{"op": "remove", "node": "relu1"}], stage=True),
        client.rollback(fresh, 1, stage=True),
        client.set_weights(fresh, "fc3", head, stage=True),
    ]
    assert [r["version"] for r in made] == [2, 3, 4, 5, 6, 7]
    assert all(r["staged"] and r["live_at"] is None and r["previous_version"] == 1 for r in made), made
    info = client.model(fresh)
    assert (info["version"], info["latest"]) == (1, 7)
    served = client.infer(fresh, x)
    assert served.version == 1 and np.allclose(served.output, want, atol=1e-5)
    weights = client.infer(fresh, x, version=7)  # a staged version serves requests that name it
    assert weights.version == 7 and weights.output.tolist() == [list(map(float, range(10)))] * 4
    history = client.versions(fresh)
    assert history["current"] == 1
    assert [v["staged"] for v in history["versions"]] == [False] + [True] * 6

    promoted = client.promote(fresh, 7)
    assert (promoted["version"], promoted["previous_version"], promoted["staged"]) == (7, 1, False)
    assert promoted["live_at"] is not None
    assert client.infer(fresh, x).version == 7 and client.model(fresh)["version"] == 7
    again = client.promote(fresh, 3)  # older than the current: a new version equal to it (the fresh head)
    assert (again["version"], again["previous_version"]) == (8, 7)
    answer = client.infer(fresh, x)
    assert answer.version == 8 and not np.allclose(answer.output, want, atol=1e-3)
    with pytest.raises(NotFound):
        client.promote(fresh, 99)


# -- rollouts -------------------------------------------------------------------------------------------------------
def test_a_broken_head_under_full_shadow_is_aborted_by_its_gates(client: Client, fresh: str) -> None:
    broken = client.replace(fresh, "fc3", FRESH_HEAD, seed=7, stage=True)["version"]
    started = client.start_rollout(fresh, broken, shadow=1.0, gates={"min_requests": 100, "min_agreement": 0.99})
    assert isinstance(started, Rollout) and started.model == fresh
    assert (started.state, started.candidate, started.baseline, started.running) == ("running", broken, 1, True)
    assert started.gates["min_requests"] == GateState("min_requests", 100, 0, False)
    assert started.gates["min_agreement"].rule == "argmax" and started.gates["min_agreement"].ok is None
    assert started.spec["shadow"] == 1.0 and client.model(fresh)["rollout"] == started.id

    x, _ = digits(300)
    answered = drive(client, fresh, x, 600)
    assert set(answered) == {1}  # every client answer came from the current version
    done = client.wait_rollout(fresh, timeout=10)
    assert done.id == started.id and done.state == "aborted" and not done.running
    assert done.reason is not None and "min_agreement" in done.reason
    assert done.agreement is not None and done.agreement < 0.99
    assert done.roles["candidate"].requests >= 100 and done.roles["current"].errors == 0
    assert done.ended_at is not None and done.promoted_as is None
    assert client.model(fresh)["version"] == 1 and client.model(fresh)["rollout"] is None
    assert client.infer(fresh, x[:3]).version == 1


def test_a_canary_of_one_routes_to_the_candidate_until_promoted_by_hand(client: Client, fresh: str) -> None:
    grown = client.insert(fresh, IDENTITY_128, after="relu1", init="identity", stage=True)["version"]
    started = client.start_rollout(fresh, grown, canary=1.0)
    assert started.gates == {} and started.spec["gates"] is None
    x, _ = digits(5)
    served = client.infer(fresh, x)
    assert served.version == grown and np.allclose(served.output, reference(x), atol=1e-5)
    assert client.infer(fresh, x, version=1).version == 1  # a request naming a version bypasses the rollout
    now = client.rollout(fresh)
    assert now.running and now.roles["candidate"].requests >= 1 and now.roles["current"].requests == 0
    with pytest.raises(Conflict, match="end it first"):
        client.start_rollout(fresh, grown, shadow=0.5)
    with pytest.raises(Conflict, match="rollout"):
        client.promote(fresh, grown)  # the rollout decides
    done = client.promote_rollout(fresh)
    assert (done.state, done.promoted_as, done.reason) == ("promoted", grown, "promoted by hand")
    assert client.infer(fresh, x).version == grown and client.model(fresh)["version"] == grown
    with pytest.raises(NotFound, match="no rollout running"):
        client.abort_rollout(fresh)
    assert client.rollout(fresh).state == "promoted"  # the last one that ended


def test_abort_ends_a_rollout_and_the_current_version_answers_again(client: Client, fresh: str) -> None:
    grown = client.insert(fresh, IDENTITY_128, after="relu1", init="identity", stage=True)["version"]
    client.start_rollout(fresh, grown, canary=1.0, sticky_header="X-User-Id")
    x, _ = digits(2)
    assert client.infer(fresh, x).version == grown
    done = client.abort_rollout(fresh)
    assert (done.state, done.reason, done.promoted_as) == ("aborted", "aborted by hand", None)
    assert client.infer(fresh, x).version == 1 and client.model(fresh)["version"] == 1
    assert client.versions(fresh)["versions"][-1]["staged"] is True


def test_bad_rollouts_are_refused_with_the_right_error_and_change_nothing(client: Client, fresh: str) -> None:
    with pytest.raises(NotFound, match="no rollout"):
        client.rollout(fresh)
    grown = client.insert(fresh, IDENTITY_128, after="relu1", init="identity", stage=True)["version"]
    with pytest.raises(NotFound, match="no version 99"):
        client.start_rollout(fresh, 99, canary=0.5)
    with pytest.raises(Conflict, match="current version"):
        client.start_rollout(fresh, 1, canary=0.5)
    bad: list[dict[str, Any]] = [
        {"shadow": 1.5},
        {"canary": -0.1},
        {"canary": 0.5, "gates": {"min_requests": 10, "foo": 1}},
        {"shadow": 0.5, "gates": {"agreement": "cosine"}},
        {"canary": 0.5, "sticky_header": "X User"},
    ]
    for kwargs in bad:
        with pytest.raises(InvalidRequest) as e:
            client.start_rollout(fresh, grown, **kwargs)
        assert e.value.status == 422, kwargs
    with pytest.raises(NotFound, match="no dataset"):
        client.start_rollout(fresh, grown, eval_dataset="nope")
    with pytest.raises(NotFound):
        client.rollout(fresh)  # nothing was started
    assert client.model(fresh)["version"] == 1


# -- datasets and the evaluation gate ---------------------------------------------------------------------------------
def test_datasets_put_list_delete_and_an_evaluation_gate(client: Client, fresh: str) -> None:
    x, y = digits(400, offset=1000)
    held = client.put_dataset(fresh, "heldout", {"input": x, "labels": y})  # numpy arrays: no torch needed
    assert held == Dataset("heldout", 400, held.bytes, {"input": ["FP32", [400, 64]]}, "labels", 10, held.updated_at)
    targets = save_numpy({"input": x[:8], "targets": reference(x[:8])})
    fitted = client.put_dataset(fresh, "fit", targets)  # a safetensors file's bytes
    assert (fitted.kind, fitted.rows, fitted.classes) == ("targets", 8, None)
    assert sorted(d.name for d in client.datasets(fresh)) == ["fit", "heldout"]

    broken = client.replace(fresh, "fc3", FRESH_HEAD, seed=7, stage=True)["version"]
    client.start_rollout(fresh, broken, shadow=1.0, eval_dataset="heldout", gates={"min_eval_accuracy": 0.9})
    done = client.wait_rollout(fresh, timeout=60)
    assert done.state == "aborted" and done.reason is not None and "eval accuracy" in done.reason, done
    scores = (done.evidence or {})["evaluation"]
    assert scores["current"]["accuracy"] > 0.9 > scores["candidate"]["accuracy"], scores
    versions = {v["version"]: v for v in client.versions(fresh)["versions"]}
    assert versions[broken]["evaluations"][0]["accuracy"] == scores["candidate"]["accuracy"]

    client.delete_dataset(fresh, "fit")
    assert [d.name for d in client.datasets(fresh)] == ["heldout"]
    with pytest.raises(NotFound):
        client.delete_dataset(fresh, "fit")


def test_datasets_that_do_not_fit_are_refused_naming_the_tensor(client: Client, fresh: str) -> None:
    x, y = digits(4)
    for tensors, named in (
        ({"input": x[:, :63], "labels": y}, "input"),
        ({"input": x, "labels": np.full(4, 10)}, "labels"),
        ({"pixels": x, "labels": y}, "pixels"),
    ):
        with pytest.raises(InvalidRequest) as e:
            client.put_dataset(fresh, "d", tensors)
        assert e.value.status == 422 and named in e.value.message, e.value
    with pytest.raises(InvalidRequest) as e:
        client.put_dataset(fresh, "d", b"not safetensors")
    assert e.value.status == 422
    big = np.zeros((5000, 64), np.float32)  # 1.25 MiB of inputs: over --max-dataset-mb 1
    with pytest.raises(InvalidRequest, match="--max-dataset-mb") as e:
        client.put_dataset(fresh, "big", {"input": big, "labels": np.zeros(5000, np.int64)})
    assert e.value.fields["limit_bytes"] == DATASET_LIMIT_MB * 1024 * 1024
    assert client.datasets(fresh) == []


# -- the async client -------------------------------------------------------------------------------------------------
def test_async_client_rollouts_and_datasets(server: ServerProcess, fresh: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, token=TOKEN) as c:
            staged = await c.insert(fresh, IDENTITY_128, after="relu1", init="identity", stage=True)
            assert staged["staged"] and (await c.model(fresh))["version"] == 1
            started = await c.start_rollout(fresh, staged["version"], canary=1.0, gates={"min_requests": 5})
            assert started.running and started.gates["min_requests"].bound == 5
            x, y = digits(6)
            answers = await asyncio.gather(*(c.infer(fresh, x[i : i + 1]) for i in range(6)))
            assert {a.version for a in answers} == {staged["version"]}
            done = await c.wait_rollout(fresh, timeout=10)
            assert (done.state, done.promoted_as) == ("promoted", staged["version"]), done
            assert (await c.rollout(fresh)).id == started.id
            with pytest.raises(NotFound):
                await c.promote_rollout(fresh)
            with pytest.raises(NotFound):
                await c.abort_rollout(fresh)
            again = await c.rollback(fresh, 1, stage=True)
            assert (await c.promote(fresh, again["version"]))["version"] == again["version"]
            d = await c.put_dataset(fresh, "few", {"input": x, "labels": y})
            assert d.rows == 6 and [s.name for s in await c.datasets(fresh)] == ["few"]
            await c.delete_dataset(fresh, "few")
            assert await c.datasets(fresh) == []

    asyncio.run(scenario())
