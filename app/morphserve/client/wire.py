"""The bytes on the wire: inference encoding (OIP + Triton's binary extension), results, uploads, and the
sans-I/O request type the operations yield."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import numpy as np
import orjson

from morphserve.client.errors import InvalidRequest
from morphserve.graph.datatypes import NUMPY_TO_OIP, OIP_TO_NUMPY

DEFAULT_URL = "http://127.0.0.1:8000"
#: Upload chunk size: large enough that per-chunk overhead vanishes, small enough for a smooth progress bar.
CHUNK_BYTES = 1 << 20
_HEADER = "Inference-Header-Content-Length"
#: The request id header: sent to name a request (feedback labels it by this id), and answered on every response.
REQUEST_ID = "X-Request-Id"

T = TypeVar("T")
Progress = Callable[[int, int], None]
"""`progress(bytes_sent, total_bytes)`, called after each uploaded chunk (and once with 0 before the first)."""
WeightsSource = Mapping[str, Any] | str | os.PathLike[str] | bytes
"""Tensors by parameter name (numpy arrays or torch tensors), a safetensors file's path, or its bytes."""
DatasetSource = Mapping[str, Any] | str | os.PathLike[str] | bytes
"""Tensors by name (numpy arrays; torch tensors work too), a safetensors file's path, or its bytes."""
BundleFile = str | os.PathLike[str] | bytes
"""A model bundle (the zip `morphserve import` or an export writes): its path, or its bytes."""


# -- results ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InferResult:
    """One inference answer: `version` is the model version that computed it (guaranteed by the server). `id` is the
    OIP request's `id` echoed; `request_id` is the server's request id (the `X-Request-Id` of the answer: the one
    sent, else one the server made up), by which `feedback()` labels this request later."""

    model: str
    version: int
    outputs: dict[str, np.ndarray]
    id: str | None = None
    request_id: str | None = None

    @property
    def output(self) -> np.ndarray:
        """The only output, for the common single-output model (raises ValueError otherwise)."""
        if len(self.outputs) != 1:
            raise ValueError(
                f"model {self.model!r} has {len(self.outputs)} outputs ({', '.join(self.outputs)}); use .outputs[name]"
            )
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

    @classmethod
    def of(cls, source: str | os.PathLike[str] | bytes | bytearray | memoryview, progress: Progress | None) -> _Upload:
        """A file by path (read as it is sent) or bytes."""
        if isinstance(source, str | os.PathLike):
            path = Path(source)
            return cls(total=path.stat().st_size, path=path, progress=progress)
        return cls(total=len(source), data=bytes(source), progress=progress)

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


def _object(resp: httpx.Response) -> dict[str, Any]:
    """The body of a route that answers a JSON object (httpx types `json()` as Any; nothing is checked here)."""
    body: dict[str, Any] = resp.json()
    return body


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
            raise InvalidRequest(
                0,
                f"input {name!r}: dtype {arr.dtype} has no Open Inference Protocol datatype",
                {"input": name, "got": str(arr.dtype)},
            )
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        specs.append(
            {
                "name": name,
                "shape": [int(d) for d in arr.shape],
                "datatype": dt,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
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
    return InferResult(
        model=doc.get("model_name", model),
        version=int(doc["model_version"]),
        outputs=outputs,
        id=doc.get("id"),
        request_id=resp.headers.get(REQUEST_ID),
    )


def _safetensors_bytes(tensors: Mapping[str, Any]) -> bytes:
    """Serialise a dict of arrays/tensors; torch's writer when any value is a torch tensor (keeps bf16)."""
    if any(_is_torch(t) for t in tensors.values()):
        import torch
        from safetensors.torch import save as save_torch

        return save_torch(
            {
                k: (v if _is_torch(v) else torch.from_numpy(np.asarray(v))).detach().cpu().contiguous()
                for k, v in tensors.items()
            }
        )
    from safetensors.numpy import save as save_numpy

    return save_numpy({k: np.ascontiguousarray(v) for k, v in tensors.items()})
