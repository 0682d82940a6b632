"""The blocking client: drives the shared operations with an `httpx.Client`."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import httpx
from httpx_sse import connect_sse

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


# -- the blocking client ------------------------------------------------------------------------------------
class Client(_Ops):
    """Blocking client. Use as a context manager (or call `close()`) to release the connection pool.

    `url` defaults to `$MORPHSERVE_URL`, then http://127.0.0.1:8000; `token` (the admin bearer token, needed for
    edits and model management) defaults to `$MORPHSERVE_TOKEN`. `transport` is passed to httpx (for example an
    `httpx.MockTransport` in tests).
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__()
        self.base_url = _base_url(url)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token), timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, op: _Op[T]) -> T:
        """Drive an operation: send what it yields, feed back the response; errors are raised into it."""
        try:
            req = next(op)
            while True:
                try:
                    resp = self._send(req)
                except MorphserveError as e:
                    req = op.throw(e)
                else:
                    req = op.send(resp)
        except StopIteration as stop:
            result: T = stop.value  # the generator's return value (typeshed: Any), of type T by _Op[T]
            return result

    def _send(self, req: _Req) -> httpx.Response:
        content: Any = req.upload.chunks() if req.upload is not None else req.content
        try:
            resp = self._http.request(
                req.method, req.path, params=req.params, json=req.json, content=content, headers=req.headers
            )
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        _raise_for(resp)
        return resp

    # inference
    def infer(
        self, model: str, inputs: Any, version: int | str | None = None, *, request_id: str | None = None
    ) -> InferResult:
        """Run inference. `inputs` is a numpy array or torch tensor (single-input models) or a dict of them by
        input name; nested lists work too. Arrays are cast to the model's declared dtype when only precision
        changes (float64 -> float32). `version` pins an older version (404 when it is no longer resident).
        `request_id` is sent as `X-Request-Id` (up to 64 characters); the answer's `.request_id` is the id the
        server used (that one, or one it made up), by which `feedback()` can label the request later."""
        return self._run(self._infer(model, inputs, version, request_id))

    # models and graphs
    def models(self) -> list[dict[str, Any]]:
        """Every served model: name, current version, signature, parameter count, device, queue depth."""
        models: list[dict[str, Any]] = self._run(self._get_json("/v1/models"))["models"]
        return models

    def model(self, model: str) -> dict[str, Any]:
        """One model's information (as in `models()`), including its input signature."""
        return self._run(self._get_json(f"/v1/models/{_p(model)}"))

    def graph(self, model: str, version: int | None = None, format: Literal["json", "dot", "svg"] = "json") -> Any:
        """The computation graph: a dict for `json` (nodes, edges, totals), DOT text for `dot`, SVG bytes for
        `svg` (rendered by the server, which needs graphviz; 503 otherwise)."""
        return self._run(self._graph(model, version, format))

    def versions(self, model: str) -> dict[str, Any]:
        """The version history: `{"model", "current", "versions": [{version, parent, ops, resident, pinned}]}`."""
        return self._run(self._get_json(f"/v1/models/{_p(model)}/versions"))

    def diff(self, model: str, a: int, b: int | None = None) -> dict[str, Any]:
        """What changed from version `a` to `b` (default: the current version): added/removed/changed nodes."""
        return self._run(self._diff(model, a, b))

    def add_model(
        self,
        name: str,
        zoo: str | None = None,
        spec: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Serve a new model from the built-in zoo (with `options`) or from an architecture spec; admin only."""
        return self._run(self._send_json("POST", "/v1/models", _model_body(name, zoo, spec, options)))

    def create_from_bundle(self, name: str, bundle: BundleFile, progress: Progress | None = None) -> dict[str, Any]:
        """Serve a new model from a bundle zip (spec.json + weights.safetensors, as `morphserve import` or
        `export` writes it), a path or its bytes; admin only. The file is streamed in 1 MiB chunks, never read
        whole; `progress(bytes_sent, total)` follows the upload. Returns the model's information (as `model()`)."""
        return self._run(self._create_from_bundle(name, bundle, progress))

    def delete_model(self, name: str) -> dict[str, Any]:
        """Stop serving a model (its queued requests fail with 503); admin only."""
        return self._run(self._send_json("DELETE", f"/v1/models/{_p(name)}"))

    # edits (admin)
    def edit(
        self,
        model: str,
        ops: list[Mapping[str, Any]],
        if_version: int | None = None,
        dry_run: bool = False,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """Apply edit ops atomically (all or none). Returns `{"model", "version", "previous_version", "diff",
        "timings_ms", "staged"}`; once it returns, every later inference request sees this version or a newer one.
        `if_version` makes it a compare-and-swap (`Conflict` when the model moved on); `dry_run` validates
        and returns the would-be graph without committing; edits that change the outputs' shape need
        `allow_output_change`. `stage=True` commits the version without making it current: it serves only
        requests that name it until `promote()` or a rollout (`start_rollout()`) makes it current. Every edit
        method takes `stage`."""
        body = _edit_body(ops, if_version, dry_run, allow_output_change, stage)
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/edits", body))

    def insert(
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
        """Insert a layer (a catalogue spec such as `{"type": "Linear", "in_features": 128, "out_features": 128}`)
        after or before a node. `init="identity"` makes it function-preserving, so outputs do not change."""
        body = _insert_body(layer, after, before, name, init, seed, if_version, allow_output_change, stage)
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/layers", body))

    def remove(
        self,
        model: str,
        node: str,
        if_version: int | None = None,
        allow_output_change: bool = False,
        stage: bool = False,
    ) -> dict[str, Any]:
        """Remove a node, wiring its input to its consumers (shapes must still fit)."""
        return self._run(
            self._send_json(
                "DELETE",
                f"/v1/models/{_p(model)}/layers/{_p(node)}",
                headers=_if_match(if_version),
                params=_remove_params(allow_output_change, stage),
            )
        )

    def replace(
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
        """Replace a node's layer (e.g. swap a classification head); `keep_weights` copies same-shaped weights."""
        body = _replace_body(layer, keep_weights, seed, if_version, allow_output_change, stage)
        return self._run(self._send_json("PUT", f"/v1/models/{_p(model)}/layers/{_p(node)}", body))

    def set_weights(
        self,
        model: str,
        node: str,
        tensors: WeightsSource,
        progress: Progress | None = None,
        if_version: int | None = None,
        stage: bool = False,
    ) -> dict[str, Any]:
        """Overwrite a layer's parameters. `tensors` is a dict name -> array/tensor (names as in the layer's
        state dict: `weight`, `bias`; dtypes must match the layer's), a path to a safetensors file, or its
        bytes. The body is streamed in 1 MiB chunks with Content-Length set, so a file is never read into
        memory whole and `progress(bytes_sent, total)` can drive a progress bar."""
        return self._run(self._set_weights(model, node, tensors, progress, if_version, stage))

    def rollback(self, model: str, version: int, if_version: int | None = None, stage: bool = False) -> dict[str, Any]:
        """Make an earlier version current again (as a new version whose content equals `version`)."""
        body = _rollback_body(version, if_version, stage)
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/rollback", body))

    def promote(self, model: str, version: int) -> dict[str, Any]:
        """Make a committed version (a staged one) current: a swap like any edit's, answered like one. A version
        older than the current one comes back as a new version equal to it. `Conflict` while a rollout runs (it
        decides: `promote_rollout()`)."""
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/versions/{_p(version)}/promote"))

    # rollouts (admin to start or end one)
    def start_rollout(
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
        """Roll version `candidate` (a staged one, usually) out: `shadow` (0-1) of unversioned requests also run
        on it after the current version answered, for comparison; `canary` (0-1) of them are answered by it
        (`sticky_header`, e.g. `X-User-Id`, keeps a header value on one side). `gates` (`min_requests`,
        `max_error_rate`, `max_p99_ratio`, `min_agreement`, `agreement`, `min_eval_accuracy`,
        `max_eval_regression`) promote or abort it on their own; `eval_dataset` scores it on a dataset first.
        `NotFound` for an unknown version or dataset, `Conflict` while another runs or when it is current,
        `InvalidRequest` for fractions outside 0-1 or an unknown gate."""
        body = _rollout_body(candidate, shadow, canary, sticky_header, gates, eval_dataset)
        return self._run(self._rollout(model, "PUT", body=body))

    def rollout(self, model: str) -> Rollout:
        """The running rollout with the evidence so far, else the last one that ended (`NotFound`: none ever)."""
        return self._run(self._rollout(model, "GET"))

    def promote_rollout(self, model: str) -> Rollout:
        """Promote the running rollout's candidate by hand (`NotFound` when none runs)."""
        return self._run(self._rollout(model, "POST", "promote"))

    def abort_rollout(self, model: str) -> Rollout:
        """End the running rollout without promoting it; the candidate stops taking traffic."""
        return self._run(self._rollout(model, "POST", "abort"))

    def wait_rollout(self, model: str, timeout: float = 60.0, interval: float = 0.1) -> Rollout:
        """Poll the rollout until it has ended (promoted or aborted) or `timeout` seconds passed; the last state
        read either way (check `.running`)."""
        deadline = time.monotonic() + timeout
        while (r := self.rollout(model)).running and time.monotonic() < deadline:
            time.sleep(interval)
        return r

    # datasets
    def put_dataset(self, model: str, name: str, data: DatasetSource, progress: Progress | None = None) -> Dataset:
        """Store a labelled dataset a rollout can be scored on (admin; replaces one of that name): a dict of
        numpy arrays (each input under its name, samples in dimension 0, plus `labels` as integer class indices
        or `targets` shaped like the first output), or a safetensors file's path or bytes. No torch is needed.
        `InvalidRequest` naming the tensor that does not fit the model."""
        return self._run(self._put_dataset(model, name, data, progress))

    def datasets(self, model: str) -> list[Dataset]:
        """The model's datasets."""
        return self._run(self._datasets(model))

    def delete_dataset(self, model: str, name: str) -> None:
        """Remove a dataset (admin; `NotFound` when there is none of that name)."""
        self._run(self._delete_dataset(model, name))

    # fit jobs and feedback
    def fit(
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
        """Start a fit job (admin): train the layers `train` names (a list of node ids, or a string: a prefix of
        node ids or module paths) of `version` (default: the current one) on `dataset`, for `steps` optimizer steps
        or `epochs` passes (exactly one), everything else frozen. It runs in the server, between inference batches;
        when it succeeds it commits a **staged** version (`Job.version`): promote it or start a rollout on it.
        `eval` scores a dataset before and after (and every `eval_every` steps). The same seed, data and version
        give the same weights on a CPU. Returns the running job at once (`wait_job()` waits for its end).
        `NotFound` for an unknown dataset or version, `Conflict` while another job trains the model,
        `InvalidRequest` for an unknown layer, one without parameters, a prefix that matches none, a loss the
        dataset cannot serve (cross_entropy needs labels; mse and bce targets), steps over the server's limit."""
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
        return self._run(self._job(model, "POST", "/fit", body))

    def job(self, model: str, job_id: str) -> Job:
        """A job's record: progress while it runs, the training record once it ended (`NotFound`: no such job).
        A job whose server stopped is reported `failed` within seconds of being read."""
        return self._run(self._job(model, "GET", f"/jobs/{_p(job_id)}"))

    def jobs(self, model: str) -> list[Job]:
        """The model's jobs, newest first."""
        return self._run(self._jobs(model))

    def cancel_job(self, model: str, job_id: str) -> Job:
        """Cancel a running job (admin): it stops before its next step and commits nothing. A job that has ended
        is answered as it is."""
        return self._run(self._job(model, "DELETE", f"/jobs/{_p(job_id)}"))

    def wait_job(self, model: str, job_id: str, timeout: float = 600.0, interval: float = 0.2) -> Job:
        """Poll a job until it has ended (succeeded, failed or cancelled) or `timeout` seconds passed; the last
        record read either way (check `.running`)."""
        deadline = time.monotonic() + timeout
        while (j := self.job(model, job_id)).running and time.monotonic() < deadline:
            time.sleep(interval)
        return j

    def feedback(
        self, model: str, dataset: str, labels: Mapping[str, Any], kind: Literal["labels", "targets"] = "labels"
    ) -> FeedbackResult:
        """Label earlier requests by their request id (`InferResult.request_id`) into `dataset` (admin; created, or
        extended): a class index per request (a list for a request of several rows), or with `kind="targets"`
        nested lists shaped like the output's rows. The server must keep recent inputs (`--feedback-window N`;
        `InvalidRequest` otherwise). Ids it no longer holds are in `.missing`; `NotFound` when it holds none."""
        return self._run(self._feedback(model, _feedback_body(dataset, labels, kind)))

    # durability
    def export(self, model: str, version: int, format: Literal["zip", "onnx"] = "zip") -> bytes:
        """One version as a file: a zip of `spec.json` + `weights.safetensors`, or an ONNX model."""
        return self._run(self._export(model, version, format))

    def pin(self, model: str, version: int) -> dict[str, Any]:
        """Protect a version from `gc`; admin only."""
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/versions/{_p(version)}/pin"))

    def unpin(self, model: str, version: int) -> dict[str, Any]:
        """Let `gc` remove a version again; admin only."""
        return self._run(self._send_json("DELETE", f"/v1/models/{_p(model)}/versions/{_p(version)}/pin"))

    def gc(self, model: str, keep: int) -> dict[str, Any]:
        """Delete old versions, keeping the newest `keep` (plus the current and pinned ones); admin only."""
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/gc", {"keep": keep}))

    # live events
    def events(self, model: str | None = None, since: int | None = None, reconnect: bool = True) -> Iterator[Event]:
        """Follow `model` as it is edited: one `Event` per committed version (`.version`, `.data["parent"]`,
        `.data["ops"]`), as it goes live; `since` replays the versions after it first. With `model=None`: models
        created and deleted (and every model's versions). Ends when the model is deleted. A dropped connection is
        reopened and the server replays what was missed (`reconnect=False`: `Unreachable` is raised instead)."""
        f = Follower(model, since, reconnect)
        while not f.done:
            path, params, headers = f.request()
            try:
                with connect_sse(
                    self._http,
                    "GET",
                    path,
                    params=params,
                    headers=headers,
                    timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S),
                ) as source:
                    if source.response.status_code != 200:
                        source.response.read()
                        _raise_for(source.response)
                    for sse in source.iter_sse():
                        if (event := f.feed(sse)) is not None:
                            yield event
                        if f.done:
                            return
            except httpx.TransportError as e:
                if not reconnect:
                    raise _unreachable(self.base_url, e) from e
            time.sleep(f.retry_s)
