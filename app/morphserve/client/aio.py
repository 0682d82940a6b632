"""The asyncio client: drives the shared operations with an `httpx.AsyncClient`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Literal

import httpx
from httpx_sse import aconnect_sse

from morphserve.client.errors import MorphserveError, _raise_for, _unreachable
from morphserve.client.events import READ_TIMEOUT_S, Event, Follower
from morphserve.client.jobs import FeedbackResult, Job, Loss, Optimizer, _feedback_body, _fit_body
from morphserve.client.ops import (
    _base_url,
    _edit_body,
    _headers,
    _insert_body,
    _model_body,
    _Ops,
    _remove_params,
    _replace_body,
    _rollback_body,
)
from morphserve.client.rollouts import Dataset, Rollout, _rollout_body
from morphserve.client.wire import (
    BundleFile,
    DatasetSource,
    InferResult,
    Progress,
    T,
    WeightsSource,
    _if_match,
    _Op,
    _p,
    _Req,
)


# -- the asyncio client -------------------------------------------------------------------------------------
class AsyncClient(_Ops):
    """The asyncio twin of `Client`: same methods, same arguments, same exceptions, each a coroutine.

    Use `async with AsyncClient(...) as c:` (or `await c.aclose()`). `transport` accepts e.g.
    `httpx.ASGITransport(app)` to talk to an in-process app.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.base_url = _base_url(url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, op: _Op[T]) -> T:
        try:
            req = next(op)
            while True:
                try:
                    resp = await self._send(req)
                except MorphserveError as e:
                    req = op.throw(e)
                else:
                    req = op.send(resp)
        except StopIteration as stop:
            result: T = stop.value  # the generator's return value (typeshed: Any), of type T by _Op[T]
            return result

    async def _send(self, req: _Req) -> httpx.Response:
        content: Any = req.upload.achunks() if req.upload is not None else req.content
        try:
            resp = await self._http.request(
                req.method, req.path, params=req.params, json=req.json, content=content, headers=req.headers
            )
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        _raise_for(resp)
        return resp

    async def infer(
        self, model: str, inputs: Any, version: int | str | None = None, *, request_id: str | None = None
    ) -> InferResult:
        """See `Client.infer`."""
        return await self._run(self._infer(model, inputs, version, request_id))

    async def models(self) -> list[dict[str, Any]]:
        """See `Client.models`."""
        models: list[dict[str, Any]] = (await self._run(self._get_json("/v1/models")))["models"]
        return models

    async def model(self, model: str) -> dict[str, Any]:
        """See `Client.model`."""
        return await self._run(self._get_json(f"/v1/models/{_p(model)}"))

    async def graph(
        self, model: str, version: int | None = None, format: Literal["json", "dot", "svg"] = "json"
    ) -> Any:
        """See `Client.graph`."""
        return await self._run(self._graph(model, version, format))

    async def versions(self, model: str) -> dict[str, Any]:
        """See `Client.versions`."""
        return await self._run(self._get_json(f"/v1/models/{_p(model)}/versions"))

    async def diff(self, model: str, a: int, b: int | None = None) -> dict[str, Any]:
        """See `Client.diff`."""
        return await self._run(self._diff(model, a, b))

    async def add_model(
        self,
        name: str,
        zoo: str | None = None,
        spec: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """See `Client.add_model`."""
        return await self._run(self._send_json("POST", "/v1/models", _model_body(name, zoo, spec, options)))

    async def create_from_bundle(
        self, name: str, bundle: BundleFile, progress: Progress | None = None
    ) -> dict[str, Any]:
        """See `Client.create_from_bundle`."""
        return await self._run(self._create_from_bundle(name, bundle, progress))

    async def delete_model(self, name: str) -> dict[str, Any]:
        """See `Client.delete_model`."""
        return await self._run(self._send_json("DELETE", f"/v1/models/{_p(name)}"))

    async def edit(
        self,
        model: str,
        ops: list[Mapping[str, Any]],
        if_version: int | None = None,
        dry_run: bool = False,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """See `Client.edit`."""
        body = _edit_body(ops, if_version, dry_run, allow_output_change, stage)
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/edits", body))

    async def insert(
        self,
        model: str,
        layer: Mapping[str, Any],
        after: str | None = None,
        before: str | None = None,
        name: str | None = None,
        init: Literal["default", "identity"] = "default",
        seed: int = 0,
        if_version: int | None = None,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """See `Client.insert`."""
        body = _insert_body(layer, after, before, name, init, seed, if_version, allow_output_change, stage)
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/layers", body))

    async def remove(
        self,
        model: str,
        node: str,
        if_version: int | None = None,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """See `Client.remove`."""
        return await self._run(
            self._send_json(
                "DELETE",
                f"/v1/models/{_p(model)}/layers/{_p(node)}",
                headers=_if_match(if_version),
                params=_remove_params(allow_output_change, stage),
            )
        )

    async def replace(
        self,
        model: str,
        node: str,
        layer: Mapping[str, Any],
        keep_weights: bool = False,
        seed: int = 0,
        if_version: int | None = None,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """See `Client.replace`."""
        body = _replace_body(layer, keep_weights, seed, if_version, allow_output_change, stage)
        return await self._run(self._send_json("PUT", f"/v1/models/{_p(model)}/layers/{_p(node)}", body))

    async def set_weights(
        self,
        model: str,
        node: str,
        tensors: WeightsSource,
        progress: Progress | None = None,
        if_version: int | None = None,
        stage: bool = False,
    ) -> dict[str, Any]:
        """See `Client.set_weights`."""
        return await self._run(self._set_weights(model, node, tensors, progress, if_version, stage))

    async def rollback(
        self, model: str, version: int, if_version: int | None = None, stage: bool = False
    ) -> dict[str, Any]:
        """See `Client.rollback`."""
        body = _rollback_body(version, if_version, stage)
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/rollback", body))

    async def promote(self, model: str, version: int) -> dict[str, Any]:
        """See `Client.promote`."""
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/versions/{_p(version)}/promote"))

    async def start_rollout(
        self,
        model: str,
        candidate: int,
        *,
        shadow: float = 0.0,
        canary: float = 0.0,
        sticky_header: str | None = None,
        gates: Mapping[str, Any] | None = None,
        eval_dataset: str | None = None,
    ) -> Rollout:
        """See `Client.start_rollout`."""
        body = _rollout_body(candidate, shadow, canary, sticky_header, gates, eval_dataset)
        return await self._run(self._rollout(model, "PUT", body=body))

    async def rollout(self, model: str) -> Rollout:
        """See `Client.rollout`."""
        return await self._run(self._rollout(model, "GET"))

    async def promote_rollout(self, model: str) -> Rollout:
        """See `Client.promote_rollout`."""
        return await self._run(self._rollout(model, "POST", "promote"))

    async def abort_rollout(self, model: str) -> Rollout:
        """See `Client.abort_rollout`."""
        return await self._run(self._rollout(model, "POST", "abort"))

    async def wait_rollout(self, model: str, timeout: float = 60.0, interval: float = 0.1) -> Rollout:
        """See `Client.wait_rollout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (r := await self.rollout(model)).running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(interval)
        return r

    async def put_dataset(
        self, model: str, name: str, data: DatasetSource, progress: Progress | None = None
    ) -> Dataset:
        """See `Client.put_dataset`."""
        return await self._run(self._put_dataset(model, name, data, progress))

    async def datasets(self, model: str) -> list[Dataset]:
        """See `Client.datasets`."""
        return await self._run(self._datasets(model))

    async def delete_dataset(self, model: str, name: str) -> None:
        """See `Client.delete_dataset`."""
        await self._run(self._delete_dataset(model, name))

    async def fit(
        self,
        model: str,
        train: str | Sequence[str],
        dataset: str,
        *,
        loss: Loss = "cross_entropy",
        optimizer: Optimizer = "adamw",
        lr: float = 1e-3,
        steps: int | None = None,
        epochs: float | None = None,
        batch_size: int = 32,
        eval: str | None = None,
        eval_every: int | None = None,
        seed: int = 0,
        version: int | None = None,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
    ) -> Job:
        """See `Client.fit`."""
        body = _fit_body(
            train,
            dataset,
            loss=loss,
            optimizer=optimizer,
            lr=lr,
            steps=steps,
            epochs=epochs,
            batch_size=batch_size,
            eval=eval,
            eval_every=eval_every,
            seed=seed,
            version=version,
            weight_decay=weight_decay,
            momentum=momentum,
        )
        return await self._run(self._job(model, "POST", "/fit", body))

    async def job(self, model: str, job_id: str) -> Job:
        """See `Client.job`."""
        return await self._run(self._job(model, "GET", f"/jobs/{_p(job_id)}"))

    async def jobs(self, model: str) -> list[Job]:
        """See `Client.jobs`."""
        return await self._run(self._jobs(model))

    async def cancel_job(self, model: str, job_id: str) -> Job:
        """See `Client.cancel_job`."""
        return await self._run(self._job(model, "DELETE", f"/jobs/{_p(job_id)}"))

    async def wait_job(self, model: str, job_id: str, timeout: float = 600.0, interval: float = 0.2) -> Job:
        """See `Client.wait_job`."""
        deadline = asyncio.get_running_loop().time() + timeout
        while (j := await self.job(model, job_id)).running and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(interval)
        return j

    async def feedback(
        self, model: str, dataset: str, labels: Mapping[str, Any], kind: Literal["labels", "targets"] = "labels"
    ) -> FeedbackResult:
        """See `Client.feedback`."""
        return await self._run(self._feedback(model, _feedback_body(dataset, labels, kind)))

    async def export(self, model: str, version: int, format: Literal["zip", "onnx"] = "zip") -> bytes:
        """See `Client.export`."""
        return await self._run(self._export(model, version, format))

    async def pin(self, model: str, version: int) -> dict[str, Any]:
        """See `Client.pin`."""
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/versions/{_p(version)}/pin"))

    async def unpin(self, model: str, version: int) -> dict[str, Any]:
        """See `Client.unpin`."""
        return await self._run(self._send_json("DELETE", f"/v1/models/{_p(model)}/versions/{_p(version)}/pin"))

    async def gc(self, model: str, keep: int) -> dict[str, Any]:
        """See `Client.gc`."""
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/gc", {"keep": keep}))

    async def events(
        self, model: str | None = None, since: int | None = None, reconnect: bool = True
    ) -> AsyncIterator[Event]:
        """See `Client.events` (an async iterator: `async for event in c.events("digits")`)."""
        f = Follower(model, since, reconnect)
        while not f.done:
            path, params, headers = f.request()
            try:
                async with aconnect_sse(
                    self._http,
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S),
                ) as source:
                    if source.response.status_code != 200:
                        await source.response.aread()
                        _raise_for(source.response)
                    async for sse in source.aiter_sse():
                        if (event := f.feed(sse)) is not None:
                            yield event
                        if f.done:
                            return
            except httpx.TransportError as e:
                if not reconnect:
                    raise _unreachable(self.base_url, e) from e
            await asyncio.sleep(f.retry_s)
