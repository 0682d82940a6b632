"""Open Inference Protocol v2 (KServe / Triton) HTTP body codec.

Decodes ``POST /v2/models/{name}/infer`` bodies into numpy arrays and encodes responses, in plain JSON
and in Triton's binary tensor data extension, byte-compatible with the official ``tritonclient.http``.

Wire format (binary extension): the body is a JSON header followed by raw tensor bytes. The header's
byte length travels in the ``Inference-Header-Content-Length`` HTTP header; each binary tensor carries
``parameters.binary_data_size`` and its bytes follow the header in tensor order (little-endian, row
major, no padding, BOOL one byte per element). A requested output asks for binary with
``parameters.binary_data``; the request-level ``parameters.binary_data_output`` is the default for
outputs that do not say (``tritonclient`` sets it when it names no outputs).

Pure numpy + orjson on purpose: this module sits on the request path, in the torch-free client and CLI, and in unit
tests, so it must not pull in torch or FastAPI. Datatypes and JSON value checks come from the one table
(morphserve.graph.datatypes) and the one converter (morphserve.graph.arrays) the whole server uses. Every client mistake
raises :class:`OIPError` with a message that names the tensor and says what was expected and what arrived, because a
bare "bad request" is useless to callers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from morphserve.graph.arrays import MAX_NDIM, ArrayError, from_json, json_type
from morphserve.graph.datatypes import DATATYPES, NUMPY_TO_OIP, OIP_TO_NUMPY, wire_problem

_HEADER = "Inference-Header-Content-Length"


class OIPError(ValueError):
    """Bad client input; the HTTP layer maps it to 400 with {"error": str(e)}."""


#: Reads a shared memory window: (region, offset, byte_size, what) -> its bytes, bounds checked by the owner of the
#: regions (morphserve.serving.shm), which raises for a bad reference. The buffer is copied at once.
ShmRead = Callable[[str, int, int, str], "bytes | memoryview"]
#: Writes an output into a shared memory window: (region, offset, byte_size, data, what) -> bytes written.
ShmWrite = Callable[[str, int, int, memoryview, str], int]


@dataclass(frozen=True)
class ShmRef:
    """A tensor passed by reference (Triton's shared memory extension): a registered region and a window in it."""

    region: str
    offset: int
    byte_size: int


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None  # from parameters.binary_data; None = not said
    shm: ShmRef | None = None  # written into this window instead of the response


@dataclass(frozen=True)
class InferRequest:
    id: str | None
    inputs: dict[str, np.ndarray]  # name -> array with the declared shape and dtype (order preserved)
    outputs: list[RequestedOutput]  # empty = all outputs
    binary_data_output: bool  # request-level parameters.binary_data_output (default False)
    parameters: dict[str, Any]  # request-level parameters, as sent


# --------------------------------------------------------------------------------------------- decode


def decode_request(
    body: bytes, header_length: int | None, *, max_elements: int = 1 << 27, shm: ShmRead | None = None
) -> InferRequest:
    """Parse an inference request body.

    ``header_length`` is the ``Inference-Header-Content-Length`` value (None: the whole body is JSON).
    Binary inputs are sliced from the bytes after the header in input order; their sizes must account
    for every trailing byte, so a truncated upload or a mis-sized tensor cannot be silently accepted.
    ``shm`` reads the inputs passed by shared memory reference (None: such inputs and outputs are refused).
    """
    if header_length is None:
        h = len(body)
    else:
        if isinstance(header_length, bool) or not isinstance(header_length, int):
            raise OIPError(f"{_HEADER} must be an integer, got {header_length!r}")
        if not 0 <= header_length <= len(body):
            raise OIPError(f"{_HEADER} {header_length} outside the body of {len(body)} bytes")
        h = header_length
    try:
        doc = orjson.loads(memoryview(body)[:h])
    except orjson.JSONDecodeError as e:
        raise OIPError(f"request header is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OIPError(f"request must be a JSON object, got {json_type(doc)}")

    req_id = doc.get("id")
    if req_id is not None and not isinstance(req_id, str):
        raise OIPError(f"'id' must be a string, got {json_type(req_id)}")
    params = _params(doc, "request")
    bdo = params.get("binary_data_output", False)
    if not isinstance(bdo, bool):
        raise OIPError(f"request parameters.binary_data_output must be a boolean, got {json_type(bdo)}")
    outputs = _requested_outputs(doc.get("outputs"), shm is not None)  # cheap checks first, before any tensor

    raw_inputs = doc.get("inputs")
    if raw_inputs is None:
        raise OIPError("request has no 'inputs'")
    if not isinstance(raw_inputs, list):
        raise OIPError(f"'inputs' must be a list, got {json_type(raw_inputs)}")

    inputs: dict[str, np.ndarray] = {}
    offset = h
    for i, spec in enumerate(raw_inputs):
        name, dtype, shape, count = _tensor_header(spec, i, max_elements)
        if name in inputs:
            raise OIPError(f"duplicate input '{name}'")
        iparams = _params(spec, f"input '{name}'")
        if "shared_memory_region" in iparams:
            if shm is None:
                raise OIPError(f"input '{name}': shared memory is not supported")
            if "data" in spec or "binary_data_size" in iparams:
                raise OIPError(f"input '{name}': has both shared memory and 'data' or binary_data_size")
            inputs[name] = from_shm(shm, shm_ref(iparams, f"input '{name}'"), name, dtype, shape, count)
            continue
        size = iparams.get("binary_data_size")
        if size is not None:
            if "data" in spec:
                raise OIPError(f"input '{name}': has both 'data' and parameters.binary_data_size")
            want = count * dtype.itemsize
            if isinstance(size, bool) or not isinstance(size, int):
                raise OIPError(f"input '{name}': binary_data_size must be an integer, got {json_type(size)}")
            if size != want:
                raise OIPError(f"input '{name}': {_oip(dtype)} shape {shape} needs binary_data_size {want}, got {size}")
            if header_length is None and size:
                raise OIPError(f"input '{name}': binary_data_size given but no {_HEADER} header was sent")
            if offset + size > len(body):
                raise OIPError(
                    f"input '{name}': binary data truncated, needs {size} bytes, only {len(body) - offset} remain"
                )
            inputs[name] = _from_binary(body, offset, dtype, shape, count)
            offset += size
        elif "data" in spec:
            inputs[name] = _from_json(spec["data"], name, dtype, shape, count)
        else:
            raise OIPError(f"input '{name}': has neither 'data' nor parameters.binary_data_size")
    if offset != len(body):
        raise OIPError(
            f"{len(body) - offset} trailing bytes after the binary inputs "
            f"(header {h} + binary {offset - h} != body {len(body)})"
        )

    return InferRequest(
        id=req_id,
        inputs=inputs,
        outputs=outputs,
        binary_data_output=bdo,
        parameters=params,
    )


def _oip(dtype: np.dtype) -> str:
    return NUMPY_TO_OIP[dtype]


def _params(obj: dict[str, Any], what: str) -> dict[str, Any]:
    p = obj.get("parameters")
    if p is None:
        return {}
    if not isinstance(p, dict):
        raise OIPError(f"{what}: 'parameters' must be an object, got {json_type(p)}")
    return p


def _tensor_header(spec: Any, index: int, max_elements: int) -> tuple[str, np.dtype, list[int], int]:
    """Validate name/datatype/shape and return the element count, before any data is touched."""
    if not isinstance(spec, dict):
        raise OIPError(f"inputs[{index}] must be an object, got {json_type(spec)}")
    name = spec.get("name")
    if not isinstance(name, str):
        raise OIPError(f"inputs[{index}]: 'name' must be a string, got {json_type(name)}")
    dt_name = spec.get("datatype")
    dtype = OIP_TO_NUMPY.get(dt_name) if isinstance(dt_name, str) else None
    if dtype is None:
        if isinstance(dt_name, str) and dt_name in DATATYPES:  # a model datatype that cannot cross the wire
            raise OIPError(f"input '{name}': {wire_problem(dt_name)}")
        hint = " (BYTES is not supported)" if dt_name == "BYTES" else ""
        raise OIPError(f"input '{name}': unknown datatype {dt_name!r}{hint}, expected one of {', '.join(OIP_TO_NUMPY)}")
    shape = spec.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int and d >= 0 for d in shape):
        raise OIPError(f"input '{name}': shape must be a list of non-negative integers, got {shape!r}")
    if len(shape) > MAX_NDIM:
        raise OIPError(f"input '{name}': shape has {len(shape)} dimensions, at most {MAX_NDIM} allowed")
    count = math.prod(shape)  # exact Python int: no overflow, and nothing allocated yet
    if count > max_elements:
        raise OIPError(f"input '{name}': shape {shape} has {count} elements, limit is {max_elements}")
    return name, dtype, shape, count


def _from_binary(body: bytes, offset: int, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    """Copy one tensor out of the body: the copy is writable (torch.from_numpy warns on read-only) and
    native-endian; BOOL bytes are normalised (non-zero -> True) so no non-canonical numpy bools exist."""
    if dtype == np.bool_:
        raw = np.frombuffer(body, dtype=np.uint8, count=count, offset=offset)
        return np.not_equal(raw, 0).reshape(shape)  # `!=` is typed as returning Any
    raw = np.frombuffer(body, dtype=dtype.newbyteorder("<"), count=count, offset=offset)
    return raw.astype(dtype, copy=True).reshape(shape)


def shm_ref(params: dict[str, Any], what: str) -> ShmRef:
    """The shared memory reference in a tensor's parameters (`shared_memory_region`, `_offset`, `_byte_size`)."""
    region = params.get("shared_memory_region")
    if not isinstance(region, str) or not region:
        raise OIPError(f"{what}: parameters.shared_memory_region must be a region name, got {json_type(region)}")
    numbers = []
    for label, value in (
        ("shared_memory_offset", params.get("shared_memory_offset", 0)),
        ("shared_memory_byte_size", params.get("shared_memory_byte_size")),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise OIPError(f"{what}: parameters.{label} must be a non-negative integer, got {value!r}")
        numbers.append(value)
    return ShmRef(region, numbers[0], numbers[1])


def from_shm(shm: ShmRead, ref: ShmRef, name: str, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    """Copy one input out of its shared memory window (its size must be the tensor's, as with binary data)."""
    want = count * dtype.itemsize
    if ref.byte_size != want:
        raise OIPError(
            f"input '{name}': {_oip(dtype)} shape {shape} needs shared_memory_byte_size {want}, got {ref.byte_size}"
        )
    raw = shm(ref.region, ref.offset, ref.byte_size, f"input '{name}'")
    if dtype == np.bool_:
        return np.not_equal(np.frombuffer(raw, dtype=np.uint8, count=count), 0).reshape(shape)
    return np.frombuffer(raw, dtype=dtype.newbyteorder("<"), count=count).astype(dtype, copy=True).reshape(shape)


def _from_json(data: Any, name: str, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    try:
        return from_json(data, _oip(dtype), what=f"input '{name}'", shape=shape, max_elements=max(count, 1))
    except ArrayError as e:
        raise OIPError(e.message) from None


def _requested_outputs(raw: Any, shm: bool = False) -> list[RequestedOutput]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise OIPError(f"'outputs' must be a list, got {json_type(raw)}")
    out: list[RequestedOutput] = []
    seen: set[str] = set()
    for i, spec in enumerate(raw):
        if not isinstance(spec, dict):
            raise OIPError(f"outputs[{i}] must be an object, got {json_type(spec)}")
        name = spec.get("name")
        if not isinstance(name, str):
            raise OIPError(f"outputs[{i}]: 'name' must be a string, got {json_type(name)}")
        if name in seen:
            raise OIPError(f"duplicate requested output '{name}'")
        seen.add(name)
        p = _params(spec, f"output '{name}'")
        ref = None
        if "shared_memory_region" in p:
            if not shm:
                raise OIPError(f"output '{name}': shared memory is not supported")
            ref = shm_ref(p, f"output '{name}'")
        if p.get("classification", 0):
            raise OIPError(f"output '{name}': the classification extension is not supported")
        # The spec's per-output key is "binary_data"; "binary_data_output" is accepted as an alias.
        binary = p.get("binary_data", p.get("binary_data_output"))
        if binary is not None and not isinstance(binary, bool):
            raise OIPError(f"output '{name}': parameters.binary_data must be a boolean, got {json_type(binary)}")
        out.append(RequestedOutput(name=name, binary=binary, shm=ref))
    return out


# --------------------------------------------------------------------------------------------- encode


def encode_response(
    *,
    model_name: str,
    model_version: str,
    request_id: str | None,
    outputs: dict[str, np.ndarray],
    request: InferRequest,
    shm: ShmWrite | None = None,
) -> tuple[bytes, dict[str, str]]:
    """Build the response body and the extra headers it needs (Content-Type is the caller's job). Outputs asked
    for in shared memory are written there with ``shm`` and named in the response without their data.

    JSON ``data`` is emitted flat (row major), which every OIP client reshapes by ``shape``. JSON cannot
    carry NaN/Infinity, so orjson writes them as null (tritonclient reads null back as NaN); binary
    output is exact. An unsupported output dtype is a server bug, so it raises TypeError, not OIPError.
    """
    if request.outputs:
        selected: list[tuple[str, bool, ShmRef | None]] = []
        for ro in request.outputs:
            if ro.name not in outputs:
                raise OIPError(f"requested output '{ro.name}' does not exist; model outputs are: {', '.join(outputs)}")
            selected.append((ro.name, request.binary_data_output if ro.binary is None else ro.binary, ro.shm))
    else:
        selected = [(n, request.binary_data_output, None) for n in outputs]

    out_json: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for name, binary, ref in selected:
        arr = np.asarray(outputs[name])
        dt_name = NUMPY_TO_OIP.get(arr.dtype.newbyteorder("="))
        if dt_name is None:
            raise TypeError(f"output '{name}': dtype {arr.dtype} has no Open Inference Protocol datatype")
        entry: dict[str, Any] = {"name": name, "datatype": dt_name, "shape": [int(d) for d in arr.shape]}
        if ref is not None:
            if shm is None:
                raise OIPError(f"output '{name}': shared memory is not supported")
            n = shm(ref.region, ref.offset, ref.byte_size, output_bytes(arr), f"output '{name}'")
            entry["parameters"] = {"shared_memory_region": ref.region, "shared_memory_byte_size": n}
            if ref.offset:
                entry["parameters"]["shared_memory_offset"] = ref.offset
        elif binary:
            # tobytes() is C order; astype to little-endian is a no-op on little-endian hosts.
            raw = arr.astype(arr.dtype.newbyteorder("<"), copy=False).tobytes(order="C")
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            # Native, contiguous and 1-D so orjson's numpy serializer (fast, C) accepts it.
            entry["data"] = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("=")).reshape(-1)
        out_json.append(entry)

    doc: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        doc["id"] = request_id
    doc["outputs"] = out_json
    header = orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return header, {}
    return b"".join([header, *chunks]), {_HEADER: str(len(header))}


def output_bytes(arr: np.ndarray) -> memoryview:
    """An output's bytes as the wire has them (little-endian, row major, BOOL one byte), without a copy where the
    array already is so."""
    le = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
    return memoryview(le).cast("B")  # type: ignore[arg-type]  # numpy's stubs do not declare the buffer protocol
