"""The client's fit jobs and feedback against a real `morphserve serve` subprocess (issue 29).

One server per module (with a feedback window); each test trains its own copy of `digits` (`fresh`), so tests stay
independent in any order. Jobs run in the server's worker between inference batches: tests wait for their end with
`wait_job` (bounded), never on a sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from morphserve.client import AsyncClient, Client, Conflict, FeedbackResult, InvalidRequest, Job, NotFound
from tests.conftest import TOKEN, ServerProcess, serve_module
from tests.digits import digits

FRESH_HEAD = {"type": "Linear", "in_features": 64, "out_features": 10}
#: The loop of the issue: a fresh head trained on 1,000 digits, scored on the rest.
FIT = {"steps": 400, "lr": 0.02, "batch_size": 64}
WINDOW = 600
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from serve_module(tmp_path_factory, "--model", "digits", "--feedback-window", str(WINDOW))


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[Client]:
    with Client(server.url, token=TOKEN) as c:
        yield c


@pytest.fixture
def fresh(client: Client) -> Iterator[str]:
    """A private copy of `digits` (trained weights, version 1) that the test may train freely."""
    name = f"fit_{next(_names)}"
    client.add_model(name, zoo="digits")
    yield name
    with contextlib.suppress(NotFound):
        client.delete_model(name)


def accuracy(client: Client, model: str, x: np.ndarray, y: np.ndarray, version: int | None = None) -> float:
    answer = client.infer(model, x, version=version)
    if version is not None:
        assert answer.version == version
    return float((answer.output.argmax(1) == y).mean())


def put_digits(client: Client, model: str) -> tuple[np.ndarray, np.ndarray]:
    """`train` (the first 1,000 digits) and `heldout` (the other 797) on the model; the held-out arrays."""
    x, y = digits()
    client.put_dataset(model, "train", {"input": x[:1000], "labels": y[:1000]})
    client.put_dataset(model, "heldout", {"input": x[1000:], "labels": y[1000:]})
    return x[1000:], y[1000:]


# -- the loop -------------------------------------------------------------------------------------------------------
def test_a_fresh_head_trained_in_the_server_is_a_staged_version_that_answers_and_promotes(
    client: Client, fresh: str
) -> None:
    held_x, held_y = put_digits(client, fresh)
    assert client.replace(fresh, "fc3", FRESH_HEAD, seed=7)["version"] == 2
    assert accuracy(client, fresh, held_x, held_y) < 0.3  # about chance

    started = client.fit(fresh, ["fc3"], "train", eval="heldout", **FIT)
    assert isinstance(started, Job) and started.model == fresh and started.running
    assert (started.base_version, started.train, started.steps, started.version) == (2, ["fc3"], 400, None)
    assert started.spec["lr"] == 0.02 and started.spec["eval"] == "heldout" and started.seed == 0
    done = client.wait_job(fresh, started.id, timeout=120)
    assert done.id == started.id and done.state == "succeeded" and not done.running, done
    assert (done.version, done.step, done.progress, done.error) == (3, 400, 1.0, None)
    assert len(done.loss_curve) == 400 and done.loss_curve_stride == 1 and done.loss == done.loss_curve[-1]
    assert done.loss_curve[-1] < done.loss_curve[0] / 3
    assert done.eval_before is not None and done.eval_after is not None
    assert (done.eval_before["version"], done.eval_after["version"]) == (2, 3)
    assert done.eval_before["accuracy"] < 0.3 and done.eval_after["accuracy"] >= 0.95, done
    assert done.ended_at is not None and 0 < done.seconds < 60

    # staged: the current version did not move; the staged one answers requests that name it, as its record says
    info = client.model(fresh)
    assert (info["version"], info["latest"]) == (2, 3)
    assert client.infer(fresh, held_x[:4]).version == 2
    staged = accuracy(client, fresh, held_x, held_y, version=3)
    assert staged >= 0.95 and abs(staged - done.eval_after["accuracy"]) < 0.01
    record = {v["version"]: v for v in client.versions(fresh)["versions"]}[3]
    assert record["staged"] and record["parent"] == 2
    assert record["ops"] == [
        {"op": "fit", "job": done.id, "train": ["fc3"], "dataset": "train", "steps": 400, "seed": 0}
    ]
    assert client.job(fresh, done.id) == done
    assert [j.id for j in client.jobs(fresh)] == [done.id]

    client.promote(fresh, 3)
    assert accuracy(client, fresh, held_x, held_y) == staged  # current now, the same weights


def test_a_prefix_epochs_sgd_and_an_eval_curve(client: Client, fresh: str) -> None:
    x, y = digits()
    client.put_dataset(fresh, "few", {"input": x[:300], "labels": y[:300]})
    client.put_dataset(fresh, "heldout", {"input": x[1000:1200], "labels": y[1000:1200]})
    job = client.fit(
        fresh, "fc", "few", epochs=1.5, optimizer="sgd", lr=0.01, momentum=0.9, eval="heldout", eval_every=5, seed=3
    )
    assert sorted(job.train) == ["fc1", "fc2", "fc3"]  # a string is a prefix of node ids (or module paths)
    assert job.steps == math.ceil(1.5 * math.ceil(300 / 32)) == 15
    done = client.wait_job(fresh, job.id, timeout=120)
    assert done.state == "succeeded" and done.seed == 3, done
    assert [p["step"] for p in done.eval_curve] == [5, 10, 15]
    assert all(p["dataset"] == "heldout" and p["rows"] == 200 for p in done.eval_curve)
    start = done.eval_before["accuracy"] if done.eval_before else 0
    assert start > 0.9 and min(p["accuracy"] for p in done.eval_curve) > start - 0.05  # a trained net stays trained


def test_the_same_seed_data_and_version_give_the_same_answers(client: Client, fresh: str) -> None:
    x, y = digits()
    client.put_dataset(fresh, "few", {"input": x[:300], "labels": y[:300]})
    made = []
    for seed in (11, 11, 12):
        job = client.fit(fresh, ["fc2", "fc3"], "few", steps=25, seed=seed, optimizer="sgd", lr=0.05, version=1)
        done = client.wait_job(fresh, job.id, timeout=120)
        assert done.state == "succeeded" and done.base_version == 1, done
        assert done.version is not None
        made.append(client.infer(fresh, x[1000:1100], version=done.version).output)
    assert np.array_equal(made[0], made[1])  # bit for bit
    assert not np.array_equal(made[0], made[2])


# -- cancel, one job at a time, refusals ------------------------------------------------------------------------------
def test_cancel_one_job_at_a_time_and_nothing_committed(client: Client, fresh: str) -> None:
    x, y = digits()
    client.put_dataset(fresh, "few", {"input": x[:300], "labels": y[:300]})
    long = client.fit(fresh, ["fc3"], "few", steps=10_000)
    with pytest.raises(Conflict, match=long.id) as e:
        client.fit(fresh, ["fc3"], "few", steps=5)
    assert e.value.fields["job"] == long.id
    deadline = time.monotonic() + 30
    while client.job(fresh, long.id).step < 5:  # cancelled mid-way, not before its first step
        assert time.monotonic() < deadline, "the job does not step"
        time.sleep(0.02)
    cancelled = client.cancel_job(fresh, long.id)
    assert (cancelled.state, cancelled.version, cancelled.error) == ("cancelled", None, "cancelled by a client")
    assert 5 <= cancelled.step < 10_000 and cancelled.ended_at is not None
    assert client.cancel_job(fresh, long.id) == client.job(fresh, long.id)  # ended: answered as it is
    assert client.model(fresh)["latest"] == 1  # nothing was committed
    again = client.fit(fresh, ["fc3"], "few", steps=5)
    assert client.wait_job(fresh, again.id, timeout=60).version == 2
    assert [(j.id, j.state) for j in client.jobs(fresh)] == [(again.id, "succeeded"), (long.id, "cancelled")]


@pytest.mark.parametrize(
    "kwargs,error,words",
    [
        ({"train": ["nope"]}, InvalidRequest, "no layer 'nope'"),
        ({"train": ["relu1"]}, InvalidRequest, "no parameters"),
        ({"train": "zzz"}, InvalidRequest, "'zzz'"),
        ({"dataset": "missing"}, NotFound, "no dataset 'missing'"),
        ({"loss": "mse"}, InvalidRequest, "needs a dataset with targets"),
        ({"steps": 50_000}, InvalidRequest, "--max-fit-steps"),
        ({"steps": None}, InvalidRequest, "steps or epochs"),
        ({"epochs": 1.0}, InvalidRequest, "steps or epochs"),
        ({"eval_every": 2}, InvalidRequest, "eval"),
        ({"eval": "missing"}, NotFound, "no dataset 'missing'"),
        ({"version": 9}, NotFound, "9"),
        ({"lr": -1.0}, InvalidRequest, "lr"),
    ],
)
def test_bad_jobs_are_refused_with_the_right_error_and_change_nothing(
    client: Client, fresh: str, kwargs: dict[str, Any], error: type[Exception], words: str
) -> None:
    x, y = digits()
    client.put_dataset(fresh, "few", {"input": x[:50], "labels": y[:50]})
    args: dict[str, Any] = {"train": ["fc3"], "dataset": "few", "steps": 5, **kwargs}
    with pytest.raises(error, match=words):
        client.fit(fresh, **args)
    assert client.jobs(fresh) == [] and client.model(fresh)["latest"] == 1
    with pytest.raises(NotFound, match="no job"):
        client.job(fresh, "1-00000000")


# -- feedback -------------------------------------------------------------------------------------------------------
def test_feedback_labels_earlier_requests_by_their_request_id_and_a_job_trains_on_them(
    client: Client, fresh: str
) -> None:
    x, y = digits()
    answers = [client.infer(fresh, x[i : i + 1], request_id=f"req-{i}") for i in range(150)]
    assert [a.request_id for a in answers[:2]] == ["req-0", "req-1"]
    unnamed = [client.infer(fresh, x[i : i + 1]) for i in range(150, 200)]  # the server names them
    assert all(a.request_id for a in unnamed) and len({a.request_id for a in unnamed}) == 50
    batch = client.infer(fresh, x[200:203], request_id="three-rows")

    labels: dict[str, Any] = {a.request_id or "": y[i] for i, a in enumerate([*answers, *unnamed])}  # numpy ints
    labels["three-rows"] = y[200:203]  # a request of three rows: three labels
    labels["never-sent"] = 4
    added = client.feedback(fresh, "fb", labels)
    assert added == FeedbackResult("fb", 203, 201, ["never-sent"])
    assert batch.request_id == "three-rows"
    again = client.feedback(fresh, "fb", {"req-0": int(y[0])})  # feedback extends the dataset
    assert (again.rows, again.added, again.missing) == (204, 1, [])
    (d,) = client.datasets(fresh)
    assert (d.name, d.rows, d.kind) == ("fb", 204, "labels")
    with pytest.raises(NotFound, match="feedback window"):
        client.feedback(fresh, "fb", {"never-sent": 1})
    with pytest.raises(InvalidRequest, match="labels"):
        client.feedback(fresh, "fb", {"req-1": 10})  # out of the 10 classes
    done = client.wait_job(fresh, client.fit(fresh, ["fc3"], "fb", steps=20).id, timeout=60)
    assert done.state == "succeeded" and done.version == 2, done


# -- the async client -------------------------------------------------------------------------------------------------
def test_async_client_fit_jobs_and_feedback(server: ServerProcess, fresh: str) -> None:
    async def scenario() -> None:
        async with AsyncClient(server.url, token=TOKEN) as c:
            x, y = digits()
            answers = await asyncio.gather(*(c.infer(fresh, x[i : i + 1], request_id=f"a{i}") for i in range(40)))
            assert sorted(a.request_id or "" for a in answers) == sorted(f"a{i}" for i in range(40))
            fed = await c.feedback(fresh, "fb", {f"a{i}": int(y[i]) for i in range(40)})
            assert (fed.rows, fed.added, fed.missing) == (40, 40, [])
            long = await c.fit(fresh, ["fc3"], "fb", steps=10_000)
            with pytest.raises(Conflict):
                await c.fit(fresh, ["fc3"], "fb", steps=5)
            assert (await c.cancel_job(fresh, long.id)).state == "cancelled"
            job = await c.fit(fresh, ["fc3"], "fb", steps=10, lr=0.01)
            assert job.running and (await c.job(fresh, job.id)).id == job.id
            done = await c.wait_job(fresh, job.id, timeout=60)
            assert (done.state, done.version, done.step) == ("succeeded", 2, 10), done
            assert [j.state for j in await c.jobs(fresh)] == ["succeeded", "cancelled"]
            assert (await c.infer(fresh, x[:2], version=2)).version == 2

    asyncio.run(scenario())
