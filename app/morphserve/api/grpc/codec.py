"""ModelInferRequest -> numpy arrays, and results -> ModelInferResponse: the gRPC side of the v2 protocol's tensors.

Inputs come as raw little-endian bytes (`raw_input_contents`, one entry per input, what tritonclient.grpc and KServe's
client send), as typed contents, or by reference to a shared memory region; every size is checked against the
declared datatype and shape before anything is built, with the HTTP codec's messages. Outputs are always returned as
`raw_output_contents` (as Triton does; both clients read them), or written into shared memory where asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from morphserve.graph.arrays import MAX_NDIM
from morphserve.graph.datatypes import DATATYPES, NUMPY_TO_OIP, OIP_TO_NUMPY, wire_problem
from morphserve.wire.oip_codec import OIPError, ShmRead, ShmRef, ShmWrite, from_shm, output_bytes, shm_ref

from . import inference_pb2 as pb

MAX_ELEMENTS = 1 << 27
#: The typed-contents field of each datatype (FP16 has none: it travels raw only).
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
}


@dataclass(frozen=True)
class Decoded:
    inputs: dict[str, np.ndarray]
    #: (name, shared memory window or None) per requested output; empty: every output.
    outputs: list[tuple[str, ShmRef | None]]
    parameters: dict[str, Any]


def parameter(p: pb.InferParameter) -> Any:
    """The value of an InferParameter, whichever kind it is (None when unset)."""
    kind = p.WhichOneof("parameter_choice")
    return None if kind is None else getattr(p, kind)


def _params(entries: Any) -> dict[str, Any]:
    return {k: parameter(v) for k, v in entries.items()} if entries else {}


def decode(req: pb.ModelInferRequest, shm: ShmRead) -> Decoded:
    raw = req.raw_input_contents
    if raw and len(raw) != len(req.inputs):
        raise OIPError(f"raw_input_contents has {len(raw)} entries for {len(req.inputs)} inputs: give every input raw")
    inputs: dict[str, np.ndarray] = {}
    for i, t in enumerate(req.inputs):
        name = t.name
        if name in inputs:
            raise OIPError(f"duplicate input '{name}'")
        dtype = OIP_TO_NUMPY.get(t.datatype)
        if dtype is None:
            problem = wire_problem(t.datatype) if t.datatype in DATATYPES else None
            known = ", ".join(OIP_TO_NUMPY)
            raise OIPError(f"input '{name}': {problem or f'unknown datatype {t.datatype!r}, expected one of {known}'}")
        shape = list(t.shape)
        if any(d < 0 for d in shape):
            raise OIPError(f"input '{name}': shape must be non-negative integers, got {shape}")
        if len(shape) > MAX_NDIM:
            raise OIPError(f"input '{name}': shape has {len(shape)} dimensions, at most {MAX_NDIM} allowed")
        count = math.prod(shape)
        if count > MAX_ELEMENTS:
            raise OIPError(f"input '{name}': shape {shape} has {count} elements, limit is {MAX_ELEMENTS}")
        params = _params(t.parameters)  # empty (and cheap) unless the client sent some
        if "shared_memory_region" in params:
            if raw or t.HasField("contents"):
                raise OIPError(f"input '{name}': has both shared memory and contents")
            inputs[name] = from_shm(shm, shm_ref(params, f"input '{name}'"), name, dtype, shape, count)
        elif raw:
            inputs[name] = _from_raw(raw[i], name, dtype, shape, count)
        else:
            inputs[name] = _from_contents(t, name, dtype, shape, count)
    outputs = []
    for o in req.outputs:
        ref = None
        if o.parameters:
            params = _params(o.parameters)
            ref = shm_ref(params, f"output '{o.name}'") if "shared_memory_region" in params else None
        outputs.append((o.name, ref))
    return Decoded(inputs, outputs, _params(req.parameters))


def _from_raw(data: bytes, name: str, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    want = count * dtype.itemsize
    if len(data) != want:
        raise OIPError(
            f"input '{name}': {NUMPY_TO_OIP[dtype]} shape {shape} needs {want} bytes of raw_input_contents, "
            f"got {len(data)}"
        )
    if dtype == np.bool_:
        return np.not_equal(np.frombuffer(data, dtype=np.uint8, count=count), 0).reshape(shape)
    # A copy: protobuf's bytes are read-only, and the worker's tensors must own writable memory.
    return np.frombuffer(data, dtype=dtype.newbyteorder("<"), count=count).astype(dtype, copy=True).reshape(shape)


def _from_contents(t: Any, name: str, dtype: np.dtype, shape: list[int], count: int) -> np.ndarray:
    field = _CONTENTS.get(NUMPY_TO_OIP[dtype])
    if field is None:
        raise OIPError(f"input '{name}': {NUMPY_TO_OIP[dtype]} tensors travel in raw_input_contents only")
    values = getattr(t.contents, field)
    if len(values) != count:
        raise OIPError(f"input '{name}': shape {shape} needs {count} values in contents.{field}, got {len(values)}")
    try:
        return np.array(values, dtype=dtype).reshape(shape)
    except OverflowError:
        datatype = NUMPY_TO_OIP[dtype]
        raise OIPError(f"input '{name}': a value of contents.{field} is out of range for {datatype}") from None


def encode(
    *,
    model: str,
    version: int,
    request_id: str,
    names: tuple[str, ...],
    arrays: tuple[np.ndarray, ...],
    requested: list[tuple[str, ShmRef | None]],
    shm: ShmWrite,
) -> pb.ModelInferResponse:
    """The response: the requested outputs (all when none were named), raw, or written into shared memory."""
    by_name = dict(zip(names, arrays, strict=True))
    chosen = requested or [(n, None) for n in names]
    tensors = []
    raw = []
    for name, ref in chosen:
        arr = by_name.get(name)
        if arr is None:
            raise OIPError(f"requested output '{name}' does not exist; model outputs are: {', '.join(names)}")
        datatype = NUMPY_TO_OIP.get(arr.dtype.newbyteorder("="))
        if datatype is None:
            raise TypeError(f"output '{name}': dtype {arr.dtype} has no Open Inference Protocol datatype")
        out = pb.ModelInferResponse.InferOutputTensor(name=name, datatype=datatype, shape=arr.shape)
        if ref is None:
            raw.append(output_bytes(arr).tobytes())
        else:
            raw.append(b"")  # keeps raw_output_contents aligned with `outputs`, as clients index them
            n = shm(ref.region, ref.offset, ref.byte_size, output_bytes(arr), f"output '{name}'")
            out.parameters["shared_memory_region"].string_param = ref.region
            out.parameters["shared_memory_byte_size"].int64_param = n
            if ref.offset:
                out.parameters["shared_memory_offset"].int64_param = ref.offset
        tensors.append(out)
    if not any(raw):  # every output went to shared memory: no raw contents at all, as Triton answers
        raw = []
    return pb.ModelInferResponse(
        model_name=model, model_version=str(version), id=request_id, outputs=tensors, raw_output_contents=raw
    )
