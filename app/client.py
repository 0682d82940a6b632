"""Python client for a morphserve server: `Client` (blocking) and `AsyncClient` (asyncio), both on httpx.

Every operation is written once, as a *sans-I/O* generator that yields `_Req` objects and receives
`httpx.Response`s; `Client` and `AsyncClient` only differ in the driver that sends them. That keeps the two
clients from drifting apart (same paths, same encoding, same errors) without duplicating protocol code.

Inference uses the Open Inference Protocol route with Triton's binary tensor extension: tensors travel as raw
little-endian bytes after a small JSON header, which is an order of magnitude cheaper than JSON number lists for
both sides. Server errors become typed exceptions (`NotFound`, `Conflict`, ...) that keep the server's
structured fields (`op`, `node`, `expected`, `got`), so callers can react to them without parsing messages.

Usage::

    from app.client import Client

    with Client("http://127.0.0.1:8000", token="secret") as c:
        r = c.infer("digits", np.zeros((1, 64), np.float32))
        print(r.version, r.output.argmax(1))
        c.insert("digits", {"type": "Linear", "in_features": 128, "out_features": 128}, after="fc1", init="identity")
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson
from httpx_sse import aconnect_sse, connect_sse

from app.client_events import READ_TIMEOUT_S, Event, Follower
from app.wire.oip_codec import NUMPY_TO_OIP, OIP_TO_NUMPY

__all__ = [
    "AsyncClient",
    "Client",
    "Conflict",
    "Event",
    "InferResult",
    "InvalidRequest",
    "MorphserveError",
    "NotFound",
    "Unauthorized",
    "Unavailable",
    "Unreachable",
]

DEFAULT_URL = "http://127.0.0.1:8000"
#: Upload chunk size: large enough that per-chunk overhead vanishes, small enough for a smooth progress bar.
CHUNK_BYTES = 1 << 20
_HEADER = "Inference-Header-Content-Length"

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""`progress(bytes_sent, total_bytes)`, called after each uploaded chunk (and once with 0 before the first)."""
WeightsSource = Mapping[str, Any] | str | os.PathLike[str] | bytes
"""Tensors by parameter name (numpy arrays or torch tensors), a safetensors file's path, or its bytes."""


# -- errors -------------------------------------------------------------------------------------------------
class MorphserveError(Exception):
    """A request the server refused (or could not be sent).

    `status` is the HTTP status (0 when no answer came: the server was unreachable, or the client refused the
    arguments before sending anything), `message` the server's `error` text,
    and `fields` the other members of the server's JSON error body, e.g. `{"op": 0, "node": "fc9"}` for a
    refused edit or `{"expected": [-1, 64], "got": [1, 2]}` for a bad input shape.
    """

    def __init__(self, status: int, message: str, fields: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields: dict[str, Any] = dict(fields or {})

    def __str__(self) -> str:
        return self.message

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, message={self.message!r}, fields={self.fields!r})"


class NotFound(MorphserveError):
    """404: unknown model, version, node, or a version that is no longer resident."""


class Conflict(MorphserveError):
    """409: `if_version` did not match the current version, or a model of that name already exists."""


class Unauthorized(MorphserveError):
    """401/403: the route needs an admin bearer token, or the one given is wrong."""


class InvalidRequest(MorphserveError):
    """400/413/415/422: bad input shape or dtype, a body over the size limit, or an edit that fails validation."""


class Unavailable(MorphserveError):
    """503/504: the queue is full or the request timed out on the server; retrying later may succeed."""


class Unreachable(MorphserveError):
    """No HTTP answer at all (connection refused, DNS failure, network timeout); `status` is 0."""


_BY_STATUS: dict[int, type[MorphserveError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Unauthorized, 404: NotFound, 409: Conflict,
    413: InvalidRequest, 415: InvalidRequest, 422: InvalidRequest, 503: Unavailable, 504: Unavailable,
}  # fmt: skip


def _raise_for(resp: httpx.Response) -> None:
    """Turn an error response into the matching typed exception, keeping the server's JSON fields."""
    if resp.status_code < 400:
        return
    fields: dict[str, Any] = {}
    message = ""
    try:
        body = orjson.loads(resp.content)
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict):
        fields = {k: v for k, v in body.items() if k != "error"}
        message = str(body.get("error") or "")
    if not message:  # not our JSON shape: a proxy, or a server from another project
        message = resp.text.strip()[:200] or resp.reason_phrase or "request failed"
    cls = _BY_STATUS.get(resp.status_code, MorphserveError)
    raise cls(resp.status_code, message, fields)


def _unreachable(base_url: str, exc: httpx.TransportError) -> Unreachable:
    what = "timed out" if isinstance(exc, httpx.TimeoutException) else str(exc) or type(exc).__name__
    return Unreachable(0, f"cannot reach morphserve at {base_url}: {what}")


# -- results ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferResult:
    """One inference answer: `version` is the model version that computed it (guaranteed by the server)."""

    model: str
    version: int
    outputs: dict[str, np.ndarray]
    id: str | None = None

    @property
    def output(self) -> np.ndarray:
        """The only output, for the common single-output model (raises ValueError otherwise)."""
        if len(self.outputs) != 1:
            raise ValueError(f"model {self.model!r} has {len(self.outputs)} outputs ({', '.join(self.outputs)}); "
                             f"use .outputs[name]")  # fmt: skip
        return next(iter(self.outputs.values()))


# -- requests (sans-I/O) ------------------------------------------------------------------------------------
@dataclass
class _Upload:
    """A body sent in chunks with a known length: the server's body limit is checked against Content-Length
    before it reads a byte, and a progress callback can follow the upload."""

    total: int
    data: bytes | None = None
    path: Path | None = None
    progress: Progress | None = None

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        if self.progress:
            self.progress(0, self.total)
        for chunk in self._raw():
            sent += len(chunk)
            yield chunk
            if self.progress:
                self.progress(sent, self.total)

    async def achunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks():  # file reads of 1 MiB are fast enough not to need a thread
            yield chunk

    def _raw(self) -> Iterator[bytes]:
        if self.data is not None:
            view = memoryview(self.data)
            for i in range(0, len(view), CHUNK_BYTES):
                yield bytes(view[i : i + CHUNK_BYTES])
            return
        assert self.path is not None
        with open(self.path, "rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk


@dataclass
class _Req:
    method: str
    path: str
    params: dict[str, Any] | None = None
    json: Any = None
    content: bytes | None = None
    upload: _Upload | None = None
    headers: dict[str, str] = field(default_factory=dict)


_Op = Generator[_Req, httpx.Response, T]


def _p(segment: str | int) -> str:
    """Quote one path segment, so a name can never change the route it lands on."""
    return quote(str(segment), safe="")


def _if_match(if_version: int | None) -> dict[str, str]:
    return {} if if_version is None else {"If-Match": f'"{if_version}"'}


def _is_torch(x: Any) -> bool:
    """Duck-typed torch check, so that the client (and the CLI's start-up) never has to import torch."""
    return type(x).__module__.split(".")[0] == "torch" and hasattr(x, "detach")


def _to_numpy(x: Any) -> np.ndarray:
    if _is_torch(x):
        t = x.detach().cpu()
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16; OIP JSON/binary here has none either
            t = t.float()
        return np.asarray(t.numpy())
    return np.asarray(x)


def _encode_infer(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, int]:
    """Triton binary tensor request: JSON header + raw little-endian tensor bytes in input order."""
    specs, chunks = [], []
    for name, arr in arrays.items():
        dt = NUMPY_TO_OIP.get(arr.dtype.newbyteorder("="))
        if dt is None:
            raise InvalidRequest(0, f"input {name!r}: dtype {arr.dtype} has no Open Inference Protocol datatype",
                                 {"input": name, "got": str(arr.dtype)})  # fmt: skip
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        specs.append({"name": name, "shape": [int(d) for d in arr.shape], "datatype": dt,
                      "parameters": {"binary_data_size": len(raw)}})  # fmt: skip
        chunks.append(raw)
    header = orjson.dumps({"inputs": specs, "parameters": {"binary_data_output": True}})
    return b"".join([header, *chunks]), len(header)


def _decode_infer(model: str, resp: httpx.Response) -> InferResult:
    """Read a JSON or binary-extension OIP response (the server may answer either; both are handled)."""
    body = resp.content
    raw_len = resp.headers.get(_HEADER)
    h = int(raw_len) if raw_len is not None else len(body)
    doc = orjson.loads(memoryview(body)[:h])
    outputs: dict[str, np.ndarray] = {}
    offset = h
    for o in doc["outputs"]:
        dtype = OIP_TO_NUMPY[o["datatype"]]
        shape = o["shape"]
        size = (o.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if dtype == np.bool_:
                arr = np.frombuffer(body, np.uint8, count=size, offset=offset) != 0
            else:
                arr = np.frombuffer(body, dtype.newbyteorder("<"), count=size // dtype.itemsize, offset=offset)
                arr = arr.astype(dtype, copy=True)  # writable and native-endian
            offset += size
        else:  # JSON writes NaN/Inf as null; float(None) fails, so map it explicitly
            data = o.get("data") or []
            if dtype.kind == "f":
                data = [np.nan if v is None else v for v in data]
            arr = np.asarray(data, dtype=dtype)
        outputs[o["name"]] = arr.reshape(shape)
    return InferResult(model=doc.get("model_name", model), version=int(doc["model_version"]), outputs=outputs,
                       id=doc.get("id"))  # fmt: skip


def _safetensors_bytes(tensors: Mapping[str, Any]) -> bytes:
    """Serialise a dict of arrays/tensors; torch's writer when any value is a torch tensor (keeps bf16)."""
    if any(_is_torch(t) for t in tensors.values()):
        import torch
        from safetensors.torch import save as save_torch

        return save_torch({k: (v if _is_torch(v) else torch.from_numpy(np.asarray(v))).detach().cpu().contiguous()
                           for k, v in tensors.items()})  # fmt: skip
    from safetensors.numpy import save as save_numpy

    return save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()})


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

    def _infer(self, model: str, inputs: Any, version: int | str | None) -> _Op[InferResult]:
        sig = yield from self._signature(model)
        if isinstance(inputs, Mapping):
            arrays = {str(k): _to_numpy(v) for k, v in inputs.items()}
        elif len(sig) == 1:
            arrays = {sig[0]["name"]: _to_numpy(inputs)}
        else:
            names = [s["name"] for s in sig]
            raise InvalidRequest(0, f"model {model!r} has inputs {names}: pass a dict of arrays by name",
                                 {"expected": names})  # fmt: skip
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
        try:
            resp = yield _Req(
                "POST",
                path,
                content=body,
                headers={_HEADER: str(header_len), "Content-Type": "application/octet-stream"},
            )
        except MorphserveError:
            self._signatures.pop(model, None)
            raise
        return _decode_infer(model, resp)

    # models and graphs
    def _get_json(self, path: str, params: dict[str, Any] | None = None) -> _Op[dict[str, Any]]:
        resp = yield _Req("GET", path, params=params)
        return resp.json()

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

    def _send_json(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
                   params: dict[str, Any] | None = None) -> _Op[dict[str, Any]]:  # fmt: skip
        resp = yield _Req(method, path, json=body, headers=headers or {}, params=params)
        return resp.json()

    # edits
    def _set_weights(self, model: str, node: str, tensors: Any, progress: Progress | None,
                     if_version: int | None) -> _Op[dict[str, Any]]:  # fmt: skip
        if isinstance(tensors, str | os.PathLike):
            path = Path(tensors)
            upload = _Upload(total=path.stat().st_size, path=path, progress=progress)
        elif isinstance(tensors, bytes | bytearray | memoryview):
            upload = _Upload(total=len(tensors), data=bytes(tensors), progress=progress)
        else:
            data = _safetensors_bytes(tensors)
            upload = _Upload(total=len(data), data=data, progress=progress)
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(upload.total),
                   **_if_match(if_version)}  # fmt: skip
        resp = yield _Req("PUT", f"/v1/models/{_p(model)}/layers/{_p(node)}/weights", upload=upload, headers=headers)
        return resp.json()

    def _export(self, model: str, version: int, format: str) -> _Op[bytes]:
        resp = yield _Req("GET", f"/v1/models/{_p(model)}/versions/{_p(version)}/export", params={"format": format})
        return resp.content


def _base_url(url: str | None) -> str:
    return (url or os.environ.get("MORPHSERVE_URL") or DEFAULT_URL).rstrip("/")


def _headers(token: str | None) -> dict[str, str]:
    token = token if token is not None else os.environ.get("MORPHSERVE_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _insert_body(layer: Mapping[str, Any], after: str | None, before: str | None, name: str | None, init: str,
                 seed: int, if_version: int | None, allow_output_change: bool) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"layer": dict(layer), "init": init, "seed": seed,
                            "allow_output_change": allow_output_change}  # fmt: skip
    for k, v in (("after", after), ("before", before), ("name", name), ("if_version", if_version)):
        if v is not None:
            body[k] = v
    return body


def _replace_body(layer: Mapping[str, Any], keep_weights: bool, seed: int, if_version: int | None,
                  allow_output_change: bool) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"layer": dict(layer), "keep_weights": keep_weights, "seed": seed,
                            "allow_output_change": allow_output_change}  # fmt: skip
    if if_version is not None:
        body["if_version"] = if_version
    return body


def _edit_body(ops: list[Mapping[str, Any]], if_version: int | None, dry_run: bool,
               allow_output_change: bool) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"ops": [dict(o) for o in ops], "dry_run": dry_run,
                            "allow_output_change": allow_output_change}  # fmt: skip
    if if_version is not None:
        body["if_version"] = if_version
    return body


def _model_body(name: str, zoo: str | None, spec: Mapping[str, Any] | None,
                options: Mapping[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    body: dict[str, Any] = {"name": name}
    if zoo is not None:
        body["zoo"] = zoo
    if spec is not None:
        body["spec"] = dict(spec)
    if options:
        body["options"] = dict(options)
    return body


# -- the blocking client ------------------------------------------------------------------------------------
class Client(_Ops):
    """Blocking client. Use as a context manager (or call `close()`) to release the connection pool.

    `url` defaults to `$MORPHSERVE_URL`, then http://127.0.0.1:8000; `token` (the admin bearer token, needed for
    edits and model management) defaults to `$MORPHSERVE_TOKEN`. `transport` is passed to httpx (for example an
    `httpx.MockTransport` in tests).
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0, *,
                 transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        super().__init__()
        self.base_url = _base_url(url)
        self._http = httpx.Client(base_url=self.base_url, headers=_headers(token), timeout=timeout,
                                  transport=transport)  # fmt: skip

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
            return stop.value  # type: ignore[no-any-return]

    def _send(self, req: _Req) -> httpx.Response:
        content: Any = req.upload.chunks() if req.upload is not None else req.content
        try:
            resp = self._http.request(req.method, req.path, params=req.params, json=req.json, content=content,
                                      headers=req.headers)  # fmt: skip
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        _raise_for(resp)
        return resp

    # inference
    def infer(self, model: str, inputs: Any, version: int | str | None = None) -> InferResult:
        """Run inference. `inputs` is a numpy array or torch tensor (single-input models) or a dict of them by
        input name; nested lists work too. Arrays are cast to the model's declared dtype when only precision
        changes (float64 -> float32). `version` pins an older version (404 when it is no longer resident)."""
        return self._run(self._infer(model, inputs, version))

    # models and graphs
    def models(self) -> list[dict[str, Any]]:
        """Every served model: name, current version, signature, parameter count, device, queue depth."""
        return self._run(self._get_json("/v1/models"))["models"]

    def model(self, model: str) -> dict[str, Any]:
        """One model's information (as in `models()`), including its input signature."""
        return self._run(self._get_json(f"/v1/models/{_p(model)}"))

    def graph(self, model: str, version: int | None = None,
              format: Literal["json", "dot", "svg"] = "json") -> Any:  # fmt: skip
        """The computation graph: a dict for `json` (nodes, edges, totals), DOT text for `dot`, SVG bytes for
        `svg` (rendered by the server, which needs graphviz; 503 otherwise)."""
        return self._run(self._graph(model, version, format))

    def versions(self, model: str) -> dict[str, Any]:
        """The version history: `{"model", "current", "versions": [{version, parent, ops, resident, pinned}]}`."""
        return self._run(self._get_json(f"/v1/models/{_p(model)}/versions"))

    def diff(self, model: str, a: int, b: int | None = None) -> dict[str, Any]:
        """What changed from version `a` to `b` (default: the current version): added/removed/changed nodes."""
        return self._run(self._diff(model, a, b))

    def add_model(self, name: str, zoo: str | None = None, spec: Mapping[str, Any] | None = None,
                  options: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """Serve a new model from the built-in zoo (with `options`) or from an architecture spec; admin only."""
        return self._run(self._send_json("POST", "/v1/models", _model_body(name, zoo, spec, options)))

    def delete_model(self, name: str) -> dict[str, Any]:
        """Stop serving a model (its queued requests fail with 503); admin only."""
        return self._run(self._send_json("DELETE", f"/v1/models/{_p(name)}"))

    # edits (admin)
    def edit(self, model: str, ops: list[Mapping[str, Any]], if_version: int | None = None, dry_run: bool = False,
             allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """Apply edit ops atomically (all or none). Returns `{"model", "version", "previous_version", "diff",
        "timings_ms"}`; once it returns, every later inference request sees this version or a newer one.
        `if_version` makes it a compare-and-swap (`Conflict` when the model moved on); `dry_run` validates
        and returns the would-be graph without committing; edits that change the outputs' shape need
        `allow_output_change`."""
        body = _edit_body(ops, if_version, dry_run, allow_output_change)
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/edits", body))

    def insert(self, model: str, layer: Mapping[str, Any], after: str | None = None, before: str | None = None,
               name: str | None = None, init: Literal["default", "identity"] = "default", seed: int = 0,
               if_version: int | None = None, allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """Insert a layer (a catalogue spec such as `{"type": "Linear", "in_features": 128, "out_features": 128}`)
        after or before a node. `init="identity"` makes it function-preserving, so outputs do not change."""
        body = _insert_body(layer, after, before, name, init, seed, if_version, allow_output_change)
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/layers", body))

    def remove(self, model: str, node: str, if_version: int | None = None,
               allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """Remove a node, wiring its input to its consumers (shapes must still fit)."""
        return self._run(
            self._send_json(
                "DELETE",
                f"/v1/models/{_p(model)}/layers/{_p(node)}",
                headers=_if_match(if_version),
                params={"allow_output_change": "true"} if allow_output_change else None,
            )
        )

    def replace(self, model: str, node: str, layer: Mapping[str, Any], keep_weights: bool = False, seed: int = 0,
                if_version: int | None = None, allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """Replace a node's layer (e.g. swap a classification head); `keep_weights` copies same-shaped weights."""
        body = _replace_body(layer, keep_weights, seed, if_version, allow_output_change)
        return self._run(self._send_json("PUT", f"/v1/models/{_p(model)}/layers/{_p(node)}", body))

    def set_weights(self, model: str, node: str, tensors: WeightsSource, progress: Progress | None = None,
                    if_version: int | None = None) -> dict[str, Any]:  # fmt: skip
        """Overwrite a layer's parameters. `tensors` is a dict name -> array/tensor (names as in the layer's
        state dict: `weight`, `bias`; dtypes must match the layer's), a path to a safetensors file, or its
        bytes. The body is streamed in 1 MiB chunks with Content-Length set, so a file is never read into
        memory whole and `progress(bytes_sent, total)` can drive a progress bar."""
        return self._run(self._set_weights(model, node, tensors, progress, if_version))

    def rollback(self, model: str, version: int, if_version: int | None = None) -> dict[str, Any]:
        """Make an earlier version current again (as a new version whose content equals `version`)."""
        body: dict[str, Any] = {"version": version}
        if if_version is not None:
            body["if_version"] = if_version
        return self._run(self._send_json("POST", f"/v1/models/{_p(model)}/rollback", body))

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
                with connect_sse(self._http, "GET", path, params=params, headers=headers,
                                 timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S)) as source:  # fmt: skip
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


# -- the asyncio client -------------------------------------------------------------------------------------
class AsyncClient(_Ops):
    """The asyncio twin of `Client`: same methods, same arguments, same exceptions, each a coroutine.

    Use `async with AsyncClient(...) as c:` (or `await c.aclose()`). `transport` accepts e.g.
    `httpx.ASGITransport(app)` to talk to an in-process app.
    """

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 30.0, *,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:  # fmt: skip
        super().__init__()
        self.base_url = _base_url(url)
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=_headers(token), timeout=timeout,
                                       transport=transport)  # fmt: skip

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
            return stop.value  # type: ignore[no-any-return]

    async def _send(self, req: _Req) -> httpx.Response:
        content: Any = req.upload.achunks() if req.upload is not None else req.content
        try:
            resp = await self._http.request(req.method, req.path, params=req.params, json=req.json, content=content,
                                            headers=req.headers)  # fmt: skip
        except httpx.TransportError as e:
            raise _unreachable(self.base_url, e) from e
        _raise_for(resp)
        return resp

    async def infer(self, model: str, inputs: Any, version: int | str | None = None) -> InferResult:
        """See `Client.infer`."""
        return await self._run(self._infer(model, inputs, version))

    async def models(self) -> list[dict[str, Any]]:
        """See `Client.models`."""
        return (await self._run(self._get_json("/v1/models")))["models"]

    async def model(self, model: str) -> dict[str, Any]:
        """See `Client.model`."""
        return await self._run(self._get_json(f"/v1/models/{_p(model)}"))

    async def graph(self, model: str, version: int | None = None,
                    format: Literal["json", "dot", "svg"] = "json") -> Any:  # fmt: skip
        """See `Client.graph`."""
        return await self._run(self._graph(model, version, format))

    async def versions(self, model: str) -> dict[str, Any]:
        """See `Client.versions`."""
        return await self._run(self._get_json(f"/v1/models/{_p(model)}/versions"))

    async def diff(self, model: str, a: int, b: int | None = None) -> dict[str, Any]:
        """See `Client.diff`."""
        return await self._run(self._diff(model, a, b))

    async def add_model(self, name: str, zoo: str | None = None, spec: Mapping[str, Any] | None = None,
                        options: Mapping[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
        """See `Client.add_model`."""
        return await self._run(self._send_json("POST", "/v1/models", _model_body(name, zoo, spec, options)))

    async def delete_model(self, name: str) -> dict[str, Any]:
        """See `Client.delete_model`."""
        return await self._run(self._send_json("DELETE", f"/v1/models/{_p(name)}"))

    async def edit(self, model: str, ops: list[Mapping[str, Any]], if_version: int | None = None,
                   dry_run: bool = False, allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """See `Client.edit`."""
        body = _edit_body(ops, if_version, dry_run, allow_output_change)
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/edits", body))

    async def insert(self, model: str, layer: Mapping[str, Any], after: str | None = None, before: str | None = None,
                     name: str | None = None, init: Literal["default", "identity"] = "default", seed: int = 0,
                     if_version: int | None = None, allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """See `Client.insert`."""
        body = _insert_body(layer, after, before, name, init, seed, if_version, allow_output_change)
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/layers", body))

    async def remove(self, model: str, node: str, if_version: int | None = None,
                     allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """See `Client.remove`."""
        return await self._run(
            self._send_json(
                "DELETE",
                f"/v1/models/{_p(model)}/layers/{_p(node)}",
                headers=_if_match(if_version),
                params={"allow_output_change": "true"} if allow_output_change else None,
            )
        )

    async def replace(self, model: str, node: str, layer: Mapping[str, Any], keep_weights: bool = False,
                      seed: int = 0, if_version: int | None = None,
                      allow_output_change: bool = False) -> dict[str, Any]:  # fmt: skip
        """See `Client.replace`."""
        body = _replace_body(layer, keep_weights, seed, if_version, allow_output_change)
        return await self._run(self._send_json("PUT", f"/v1/models/{_p(model)}/layers/{_p(node)}", body))

    async def set_weights(self, model: str, node: str, tensors: WeightsSource, progress: Progress | None = None,
                          if_version: int | None = None) -> dict[str, Any]:  # fmt: skip
        """See `Client.set_weights`."""
        return await self._run(self._set_weights(model, node, tensors, progress, if_version))

    async def rollback(self, model: str, version: int, if_version: int | None = None) -> dict[str, Any]:
        """See `Client.rollback`."""
        body: dict[str, Any] = {"version": version}
        if if_version is not None:
            body["if_version"] = if_version
        return await self._run(self._send_json("POST", f"/v1/models/{_p(model)}/rollback", body))

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

    async def events(self, model: str | None = None, since: int | None = None,
                     reconnect: bool = True) -> AsyncIterator[Event]:  # fmt: skip
        """See `Client.events` (an async iterator: `async for event in c.events("digits")`)."""
        f = Follower(model, since, reconnect)
        while not f.done:
            path, params, headers = f.request()
            try:
                async with aconnect_sse(self._http, "GET", path, params=params, headers=headers,
                                        timeout=httpx.Timeout(30.0, read=READ_TIMEOUT_S)) as source:  # fmt: skip
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
