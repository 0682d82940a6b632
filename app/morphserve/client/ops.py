"""Every operation written once, as a sans-I/O generator shared by `Client` and `AsyncClient`; and request bodies."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from morphserve.client.errors import InvalidRequest, MorphserveError
from morphserve.client.jobs import FeedbackResult, Job
from morphserve.client.rollouts import Dataset, Rollout
from morphserve.client.wire import (
    _HEADER,
    DEFAULT_URL,
    REQUEST_ID,
    BundleFile,
    InferResult,
    Progress,
    _decode_infer,
    _encode_infer,
    _if_match,
    _object,
    _Op,
    _p,
    _Req,
    _safetensors_bytes,
    _to_numpy,
    _Upload,
)
from morphserve.graph.datatypes import OIP_TO_NUMPY


class _Ops:
    """The protocol: one generator per operation, shared by `Client` and `AsyncClient`."""

    base_url: str

    def __init__(self) -> None:
        # Input signatures by model, so `infer(model, array)` knows the input name and dtype without a metadata
        # round trip per request. Dropped on any inference error, since a model can be deleted and re-created.
        self._signatures: dict[str, list[dict[str, Any]]] = {}

    # inference
    def _signature(self, model: str) -> _Op[list[dict[str, Any]]]:
        sig = self._signatures.get(model)
        if sig is None:
            resp = yield _Req("GET", f"/v2/models/{_p(model)}")
            sig = self._signatures[model] = list(resp.json()["inputs"])
        return sig

    def _infer(
        self, model: str, inputs: Any, version: int | str | None, request_id: str | None = None
    ) -> _Op[InferResult]:
        sig = yield from self._signature(model)
        if isinstance(inputs, Mapping):
            arrays = {str(k): _to_numpy(v) for k, v in inputs.items()}
        elif len(sig) == 1:
            arrays = {sig[0]["name"]: _to_numpy(inputs)}
        else:
            names = [s["name"] for s in sig]
            raise InvalidRequest(
                0, f"model {model!r} has inputs {names}: pass a dict of arrays by name", {"expected": names}
            )
        # Cast to the declared dtype when no information is lost in kind (float64 -> float32, int -> float):
        # numpy's default float64 would otherwise be refused by an FP32 model. Other mismatches go to the
        # server unchanged, so its error names the expected and the given datatype.
        want = {s["name"]: OIP_TO_NUMPY.get(s["datatype"]) for s in sig}
        for name, arr in arrays.items():
            dt = want.get(name)
            if dt is not None and arr.dtype != dt and np.can_cast(arr.dtype, dt, casting="same_kind"):
                arrays[name] = arr.astype(dt)
        body, header_len = _encode_infer(arrays)
        path = f"/v2/models/{_p(model)}" + (f"/versions/{_p(version)}" if version is not None else "") + "/infer"
        headers = {_HEADER: str(header_len), "Content-Type": "application/octet-stream"}
        if request_id is not None:
            headers[REQUEST_ID] = request_id
        try:
            resp = yield _Req("POST", path, content=body, headers=headers)
        except MorphserveError:
            self._signatures.pop(model, None)
            raise
        return _decode_infer(model, resp)

    # models and graphs
    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> _Op[dict[str, Any]]:
        resp = yield _Req("GET", path, params=params)
        return _object(resp)

    def _graph(self, model: str, version: int | None, format: str) -> _Op[Any]:
        params: dict[str, Any] = {"format": format}
        if version is not None:
            params["version"] = version
        resp = yield _Req("GET", f"/v1/models/{_p(model)}/graph", params=params)
        if format == "json":
            return resp.json()
        return resp.text if format == "dot" else resp.content

    def _diff(self, model: str, a: int, b: int | None) -> _Op[dict[str, Any]]:
        params: dict[str, Any] = {"from": a}
        if b is not None:
            params["to"] = b
        return (yield from self._get_json(f"/v1/models/{_p(model)}/diff", params))

    def _send_json(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
    ) -> _Op[dict[str, Any]]:
        resp = yield _Req(method, path, json=body, headers=headers or {}, params=params)
        return _object(resp)

    # edits
    def _set_weights(
        self, model: str, node: str, tensors: Any, progress: Progress | None, if_version: int | None, stage: bool
    ) -> _Op[dict[str, Any]]:
        upload = _tensors_upload(tensors, progress)
        headers = {
            "Content-Type": "application/octet-stream",
            "Content-Length": str(upload.total),
            **_if_match(if_version),
        }
        resp = yield _Req(
            "PUT",
            f"/v1/models/{_p(model)}/layers/{_p(node)}/weights",
            upload=upload,
            headers=headers,
            params=_stage_param(stage),
        )
        return _object(resp)

    # rollouts and datasets
    def _rollout(self, model: str, method: str, action: str = "", body: Any = None) -> _Op[Rollout]:
        """GET or PUT `.../rollout`, or POST `.../rollout/{action}`: every one answers the rollout."""
        path = f"/v1/models/{_p(model)}/rollout" + (f"/{action}" if action else "")
        resp = yield _Req(method, path, json=body)
        return Rollout.from_json(model, _object(resp))

    def _put_dataset(self, model: str, name: str, data: Any, progress: Progress | None) -> _Op[Dataset]:
        upload = _tensors_upload(data, progress)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(upload.total)}
        resp = yield _Req("PUT", f"/v1/models/{_p(model)}/datasets/{_p(name)}", upload=upload, headers=headers)
        return Dataset.from_json(_object(resp))

    def _datasets(self, model: str) -> _Op[list[Dataset]]:
        body = yield from self._get_json(f"/v1/models/{_p(model)}/datasets")
        return [Dataset.from_json(d) for d in body["datasets"]]

    def _delete_dataset(self, model: str, name: str) -> _Op[None]:
        yield _Req("DELETE", f"/v1/models/{_p(model)}/datasets/{_p(name)}")  # 204: nothing to read

    # fit jobs and feedback
    def _job(self, model: str, method: str, path: str = "", body: Any = None) -> _Op[Job]:
        """POST `.../fit`, or GET / DELETE `.../jobs/{id}`: every one answers a job's record."""
        resp = yield _Req(method, f"/v1/models/{_p(model)}{path}", json=body)
        return Job.from_json(_object(resp))

    def _jobs(self, model: str) -> _Op[list[Job]]:
        body = yield from self._get_json(f"/v1/models/{_p(model)}/jobs")
        return sorted((Job.from_json(j) for j in body["jobs"]), key=lambda j: j.started_at, reverse=True)

    def _feedback(self, model: str, body: dict[str, Any]) -> _Op[FeedbackResult]:
        resp = yield _Req("POST", f"/v1/models/{_p(model)}/feedback", json=body)
        return FeedbackResult.from_json(_object(resp))

    def _create_from_bundle(self, name: str, bundle: BundleFile, progress: Progress | None) -> _Op[dict[str, Any]]:
        upload = _Upload.of(bundle, progress)
        headers = {"Content-Type": "application/zip", "Content-Length": str(upload.total)}
        resp = yield _Req("POST", "/v1/models", params={"name": name}, upload=upload, headers=headers)
        return _object(resp)

    def _export(self, model: str, version: int, format: str) -> _Op[bytes]:
        resp = yield _Req("GET", f"/v1/models/{_p(model)}/versions/{_p(version)}/export", params={"format": format})
        return resp.content


def _tensors_upload(tensors: Any, progress: Progress | None) -> _Upload:
    """A safetensors body: a file's path or bytes as they are, or tensors by name serialised (numpy arrays with
    safetensors' numpy writer, so that no torch is needed; torch tensors with torch's)."""
    if isinstance(tensors, str | os.PathLike | bytes | bytearray | memoryview):
        return _Upload.of(tensors, progress)
    if not isinstance(tensors, Mapping):
        raise InvalidRequest(
            0, f"tensors must be a dict of arrays by name, a safetensors file's path or its bytes, not {type(tensors)}"
        )
    data = _safetensors_bytes(tensors)
    return _Upload(total=len(data), data=data, progress=progress)


def _stage_param(stage: bool) -> dict[str, Any] | None:
    """`?stage=true` for the routes without a JSON body (remove, weights upload)."""
    return {"stage": "true"} if stage else None


def _remove_params(allow_output_change: bool, stage: bool) -> dict[str, Any] | None:
    params = {"allow_output_change": "true"} if allow_output_change else {}
    return {**params, **(_stage_param(stage) or {})} or None


def _base_url(url: str | None) -> str:
    return (url or os.environ.get("MORPHSERVE_URL") or DEFAULT_URL).rstrip("/")


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("MORPHSERVE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _insert_body(
    layer: Mapping[str, Any],
    after: str | None,
    before: str | None,
    name: str | None,
    init: str,
    seed: int,
    if_version: int | None,
    allow_output_change: bool,
    stage: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "layer": dict(layer),
        "init": init,
        "seed": seed,
        "allow_output_change": allow_output_change,
    }
    for k, v in (("after", after), ("before", before), ("name", name), ("if_version", if_version)):
        if v is not None:
            body[k] = v
    return _staged(body, stage)


def _replace_body(
    layer: Mapping[str, Any],
    keep_weights: bool,
    seed: int,
    if_version: int | None,
    allow_output_change: bool,
    stage: bool = False,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "layer": dict(layer),
        "keep_weights": keep_weights,
        "seed": seed,
        "allow_output_change": allow_output_change,
    }
    if if_version is not None:
        body["if_version"] = if_version
    return _staged(body, stage)


def _edit_body(
    ops: list[Mapping[str, Any]], if_version: int | None, dry_run: bool, allow_output_change: bool, stage: bool = False
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "ops": [dict(o) for o in ops],
        "dry_run": dry_run,
        "allow_output_change": allow_output_change,
    }
    if if_version is not None:
        body["if_version"] = if_version
    return _staged(body, stage)


def _rollback_body(version: int, if_version: int | None, stage: bool = False) -> dict[str, Any]:
    body: dict[str, Any] = {"version": version}
    if if_version is not None:
        body["if_version"] = if_version
    return _staged(body, stage)


def _staged(body: dict[str, Any], stage: bool) -> dict[str, Any]:
    """`"stage": true` only when asked: a body without it is what servers before staged versions accept too."""
    if stage:
        body["stage"] = True
    return body


def _model_body(
    name: str, zoo: str | None, spec: Mapping[str, Any] | None, options: Mapping[str, Any] | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name}
    if zoo is not None:
        body["zoo"] = zoo
    if spec is not None:
        body["spec"] = dict(spec)
    if options:
        body["options"] = dict(options)
    return body
