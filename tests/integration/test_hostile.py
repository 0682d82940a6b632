"""Hostile bodies (issue 7, item 4): every malformed, lying or oversized request gets a 4xx with a clear JSON
`{"error": ...}` message and changes nothing; a real server's memory stays bounded under the nastiest ones.

Decisions this file pins down:
- NaN and Infinity are refused wherever they arrive as JSON: as tokens (`NaN`, `Infinity`: not JSON, so 400
  "not valid JSON", naming them on the routes whose bodies the app parses) and as numbers that overflow the
  datatype (`1e999`, `1e39` for FP32).
- NaN and Infinity inside *binary* FP32 tensor data are data: the bytes are a valid IEEE-754 tensor, Triton
  passes them through, and a model server must not second-guess a tensor's values. The request is served
  (200); JSON outputs carry the non-finite results as `null` (tritonclient reads null back as NaN), binary
  outputs carry them bit-exact.
"""

from __future__ import annotations

import json
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save as save_safetensors

from tests.conftest import AUTH, TOKEN
from tests.integration.helpers import assert_error

OIP = "/v2/models/digits/infer"
V1 = "/v1/models/digits/infer"
EDITS = "/v1/models/digits/edits"
WEIGHTS = "/v1/models/digits/layers/fc3/weights"
MODELS = "/v1/models"
LIMIT_MB = 0.25
LIMIT = int(LIMIT_MB * 1024 * 1024)
JSON_CT = {"Content-Type": "application/json"}
OCTET = {**AUTH, "Content-Type": "application/octet-stream"}
ROW = np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 64)
MHA = {"type": "MultiheadAttention", "embed_dim": 64, "num_heads": 4}


# -- payload builders ---------------------------------------------------------------------------------------------
def _oip_binary(
    tensor_bytes: bytes,
    *,
    shape: list[int] | None = None,
    size: Any = None,
    header_length: Any = None,
    datatype: str = "FP32",
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An OIP binary request: JSON header + raw bytes, with every number that could lie overridable."""
    spec = {
        "name": "input",
        "shape": shape or [1, 64],
        "datatype": datatype,
        "parameters": {"binary_data_size": len(tensor_bytes) if size is None else size},
    }
    header = json.dumps({"inputs": [spec], **(extra or {})}).encode()
    length = len(header) if header_length is None else header_length
    return {"content": header + tensor_bytes, "headers": {"Inference-Header-Content-Length": str(length)}}


def _oip_json(data: Any, shape: list[int] | None = None, datatype: str = "FP32") -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": shape or [1, 64], "datatype": datatype, "data": data}]}
    ).encode()


def _oip_raw_data(token: bytes) -> bytes:
    """An OIP JSON body whose first data value is the raw token (NaN, Infinity, 1e999 are not JSON)."""
    return b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[' + token + b",0" * 63 + b"]}]}"


def _v1_raw_row(token: bytes) -> bytes:
    return b'{"inputs":[[' + token + b",0" * 63 + b"]]}"


def _safetensors_header(header: dict[str, Any], data: bytes = b"", length: int | None = None) -> bytes:
    """A safetensors file by hand: 8-byte little-endian header length, JSON header, data."""
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _fc3(
    weight: tuple[int, ...] = (10, 64),
    bias: tuple[int, ...] = (10,),
    dtype: torch.dtype = torch.float32,
    names: tuple[str, str] = ("weight", "bias"),
) -> bytes:
    return save_safetensors({names[0]: torch.zeros(weight, dtype=dtype), names[1]: torch.zeros(bias, dtype=dtype)})


DEEP = b"[" * 100_000  # 100k levels of nesting, never closed
DEEP_CLOSED = b"[" * 100_000 + b"]" * 100_000
GIGA_SAFETENSORS = _safetensors_header(  # claims a 1M x 1M FP32 tensor (4 TiB) backed by 16 bytes
    {"weight": {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}}, b"\0" * 16
)
GIGA_SAFETENSORS_2 = _safetensors_header(  # two tensors of 2 GiB each, consistent offsets, no data
    {
        "weight": {"dtype": "F32", "shape": [1 << 29], "data_offsets": [0, 2 << 30]},
        "bias": {"dtype": "F32", "shape": [1 << 29], "data_offsets": [2 << 30, 4 << 30]},
    }
)
_FC3_HEADER = {
    "weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]},
    "bias": {"dtype": "F32", "shape": [10], "data_offsets": [2560, 2600]},
}

# (id, method, path, request kwargs, status, words the error message must contain)
Case = tuple[str, str, str, dict[str, Any], int, tuple[str, ...]]
CASES: list[Case] = [
    # --- OIP v2 infer -----------------------------------------------------------------------------------------
    ("oip-invalid-json", "POST", OIP, {"content": b'{"inputs": [', "headers": JSON_CT}, 400, ("not valid JSON",)),
    ("oip-not-an-object", "POST", OIP, {"content": b"[1, 2]", "headers": JSON_CT}, 400, ("JSON object",)),
    ("oip-empty-body", "POST", OIP, {"content": b"", "headers": JSON_CT}, 400, ("JSON",)),
    (
        "oip-text-plain",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 64), "headers": {"Content-Type": "text/plain"}},
        415,
        ("Content-Type",),
    ),
    (
        "oip-octet-without-header-length",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 64), "headers": {"Content-Type": "application/octet-stream"}},
        415,
        ("Inference-Header-Content-Length",),
    ),
    ("oip-binary-truncated", "POST", OIP, _oip_binary(ROW.tobytes()[:100], size=256), 400, ("truncated",)),
    (
        "oip-binary-size-too-small",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), size=100),
        400,
        ("binary_data_size", "256", "100"),
    ),
    (
        "oip-binary-size-claims-a-terabyte",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), size=1 << 40),
        400,
        ("binary_data_size",),
    ),
    ("oip-binary-size-negative", "POST", OIP, _oip_binary(ROW.tobytes(), size=-256), 400, ("binary_data_size",)),
    (
        "oip-binary-size-a-string",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), size="256"),
        400,
        ("binary_data_size", "integer"),
    ),
    ("oip-binary-trailing-bytes", "POST", OIP, _oip_binary(ROW.tobytes() + b"\0" * 8, size=256), 400, ("trailing",)),
    (
        "oip-header-length-beyond-body",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), header_length=10**6),
        400,
        ("Inference-Header-Content-Length", "outside"),
    ),
    (
        "oip-header-length-40-digits",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), header_length="9" * 40),
        400,
        ("Inference-Header-Content-Length",),
    ),
    (
        "oip-header-length-negative",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), header_length=-1),
        400,
        ("Inference-Header-Content-Length", "non-negative"),
    ),
    (
        "oip-header-length-not-a-number",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), header_length="12abc"),
        400,
        ("Inference-Header-Content-Length",),
    ),
    (
        "oip-header-length-cuts-the-json",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), header_length=20),
        400,
        ("not valid JSON",),
    ),
    (
        "oip-huge-shape-binary",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), shape=[1 << 40, 64], size=256),
        400,
        ("elements", "limit"),
    ),
    (
        "oip-huge-shape-json",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 64, [1 << 40, 64]), "headers": JSON_CT},
        400,
        ("elements", "limit"),
    ),
    (
        "oip-huge-shape-1d",
        "POST",
        OIP,
        {"content": _oip_json([0.0], [1 << 40]), "headers": JSON_CT},
        400,
        ("elements", "limit"),
    ),
    (
        "oip-shape-2-to-the-64",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 64, [1 << 64, 1 << 64]), "headers": JSON_CT},
        400,
        ("shape",),
    ),
    (
        "oip-shape-100-dimensions",
        "POST",
        OIP,
        {"content": _oip_json([0.0], [1] * 100), "headers": JSON_CT},
        400,
        ("dimensions",),
    ),
    (
        "oip-shape-negative",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 64, [-1, 64]), "headers": JSON_CT},
        400,
        ("non-negative",),
    ),
    ("oip-shape-data-mismatch", "POST", OIP, {"content": _oip_json([0.0] * 10), "headers": JSON_CT}, 400, ("64", "10")),
    (
        "oip-nested-data-ragged",
        "POST",
        OIP,
        {"content": _oip_json([[0.0] * 64, [0.0] * 3], [2, 64]), "headers": JSON_CT},
        400,
        ("depth",),
    ),
    (
        "oip-wrong-trailing-shape",
        "POST",
        OIP,
        {"content": _oip_json([0.0] * 63, [1, 63]), "headers": JSON_CT},
        400,
        ("expected shape",),
    ),
    (
        "oip-strings-as-data",
        "POST",
        OIP,
        {"content": _oip_json(["0"] * 64), "headers": JSON_CT},
        400,
        ("numbers", "string"),
    ),
    (
        "oip-bytes-datatype",
        "POST",
        OIP,
        {"content": _oip_json(["a"] * 64, datatype="BYTES"), "headers": JSON_CT},
        400,
        ("BYTES",),
    ),
    ("oip-nan-token", "POST", OIP, {"content": _oip_raw_data(b"NaN"), "headers": JSON_CT}, 400, ("not valid JSON",)),
    (
        "oip-infinity-token",
        "POST",
        OIP,
        {"content": _oip_raw_data(b"Infinity"), "headers": JSON_CT},
        400,
        ("not valid JSON",),
    ),
    (
        "oip-minus-infinity-token",
        "POST",
        OIP,
        {"content": _oip_raw_data(b"-Infinity"), "headers": JSON_CT},
        400,
        ("not valid JSON",),
    ),
    ("oip-1e999", "POST", OIP, {"content": _oip_raw_data(b"1e999"), "headers": JSON_CT}, 400, ("infinity",)),
    (
        "oip-1e39-overflows-fp32",
        "POST",
        OIP,
        {"content": _oip_raw_data(b"1e39"), "headers": JSON_CT},
        400,
        ("FP32", "finite"),
    ),
    ("oip-deeply-nested", "POST", OIP, {"content": DEEP, "headers": JSON_CT}, 400, ("not valid JSON", "depth")),
    ("oip-deeply-nested-closed", "POST", OIP, {"content": DEEP_CLOSED, "headers": JSON_CT}, 400, ("not valid JSON",)),
    (
        "oip-deeply-nested-data",
        "POST",
        OIP,
        {"content": b'{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":' + DEEP, "headers": JSON_CT},
        400,
        ("not valid JSON",),
    ),
    (
        "oip-non-utf8",
        "POST",
        OIP,
        {"content": b'{"id": "\xff\xfe\xfd", "inputs": []}', "headers": JSON_CT},
        400,
        ("UTF-8",),
    ),
    (
        "oip-latin1-header-binary",
        "POST",
        OIP,
        _oip_binary(ROW.tobytes(), extra={"id": "x"})
        | {"content": _oip_binary(ROW.tobytes(), extra={"id": "x"})["content"].replace(b'"x"', b'"\xe9"')},
        400,
        ("UTF-8",),
    ),
    (
        "oip-duplicate-input",
        "POST",
        OIP,
        {
            "content": json.dumps(
                {"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0] * 64}] * 2}
            ).encode(),
            "headers": JSON_CT,
        },
        400,
        ("duplicate",),
    ),
    (
        "oip-version-not-a-number",
        "POST",
        "/v2/models/digits/versions/1e9/infer",
        {"content": _oip_json([0.0] * 64), "headers": JSON_CT},
        400,
        ("version",),
    ),
    # --- /v1 infer ----------------------------------------------------------------------------------------------
    ("v1-invalid-json", "POST", V1, {"content": b'{"inputs": [[1, 2', "headers": JSON_CT}, 400, ("not valid JSON",)),
    (
        "v1-text-plain",
        "POST",
        V1,
        {"content": b'{"inputs": [[0]]}', "headers": {"Content-Type": "text/plain"}},
        415,
        ("Content-Type: application/json", "text/plain"),
    ),
    ("v1-no-content-type", "POST", V1, {"content": b'{"inputs": [[0]]}'}, 415, ("Content-Type",)),
    ("v1-form", "POST", V1, {"data": {"inputs": "1"}}, 415, ("Content-Type",)),
    (
        "v1-octet-stream",
        "POST",
        V1,
        {"content": ROW.tobytes(), "headers": {"Content-Type": "application/octet-stream"}},
        415,
        ("Content-Type",),
    ),
    ("v1-nan-token", "POST", V1, {"content": _v1_raw_row(b"NaN"), "headers": JSON_CT}, 400, ("NaN",)),
    ("v1-infinity-token", "POST", V1, {"content": _v1_raw_row(b"Infinity"), "headers": JSON_CT}, 400, ("infinity",)),
    (
        "v1-minus-infinity-token",
        "POST",
        V1,
        {"content": _v1_raw_row(b"-Infinity"), "headers": JSON_CT},
        400,
        ("infinity",),
    ),
    ("v1-1e999", "POST", V1, {"content": _v1_raw_row(b"1e999"), "headers": JSON_CT}, 400, ("infinity",)),
    ("v1-deeply-nested", "POST", V1, {"content": DEEP, "headers": JSON_CT}, 400, ("nested too deeply",)),
    (
        "v1-deeply-nested-closed",
        "POST",
        V1,
        {"content": b'{"inputs":' + DEEP_CLOSED + b"}", "headers": JSON_CT},
        400,
        ("nested too deeply",),
    ),
    (
        "v1-nested-200-levels",
        "POST",
        V1,
        {"content": b'{"inputs":' + b"[" * 200 + b"0" + b"]" * 200 + b"}", "headers": JSON_CT},
        400,
        ("input",),
    ),
    ("v1-ragged", "POST", V1, {"json": {"inputs": [[0.0] * 64, [0.0] * 3]}}, 400, ("rectangular",)),
    ("v1-shape-mismatch", "POST", V1, {"json": {"inputs": [[0.0] * 63]}}, 400, ("expected shape", "64")),
    ("v1-strings", "POST", V1, {"json": {"inputs": [["0"] * 64]}}, 400, ("FP32", "strings")),
    ("v1-huge-integers", "POST", V1, {"json": {"inputs": [[10**40] * 64]}}, 400, ("FP32",)),
    ("v1-non-utf8", "POST", V1, {"content": b'{"inputs": "\xff\xfe"}', "headers": JSON_CT}, 400, ("UTF-8",)),
    ("v1-unknown-input", "POST", V1, {"json": {"inputs": {"nope": [[0.0] * 64]}}}, 400, ("nope",)),
    ("v1-empty-body", "POST", V1, {"content": b"", "headers": JSON_CT}, 422, ("JSON body",)),
    # --- edits ------------------------------------------------------------------------------------------------
    (
        "edits-invalid-json",
        "POST",
        EDITS,
        {"content": b'{"ops": [', "headers": {**AUTH, **JSON_CT}},
        400,
        ("not valid JSON",),
    ),
    (
        "edits-text-plain",
        "POST",
        EDITS,
        {"content": b'{"ops": []}', "headers": {**AUTH, "Content-Type": "text/plain"}},
        415,
        ("Content-Type",),
    ),
    ("edits-no-content-type", "POST", EDITS, {"content": b'{"ops": []}', "headers": AUTH}, 415, ("Content-Type",)),
    (
        "edits-deeply-nested",
        "POST",
        EDITS,
        {"content": b'{"ops": ' + DEEP, "headers": {**AUTH, **JSON_CT}},
        400,
        ("nested too deeply",),
    ),
    (
        "edits-deeply-nested-layer",
        "POST",
        EDITS,
        {
            "content": b'{"ops": [{"op": "insert", "after": "fc1", "layer": '
            + b'{"a": ' * 20_000
            + b"1"
            + b"}" * 20_000
            + b"}]}",
            "headers": {**AUTH, **JSON_CT},
        },
        400,
        ("nested too deeply",),
    ),
    (
        "edits-non-utf8",
        "POST",
        EDITS,
        {"content": b'{"ops": [{"op": "remove", "node": "\xff"}]}', "headers": {**AUTH, **JSON_CT}},
        400,
        ("UTF-8",),
    ),
    (
        "edits-nan-weights",
        "POST",
        EDITS,
        {
            "content": b'{"ops": [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [NaN'
            + b",0" * 9
            + b"]}}}]}",
            "headers": {**AUTH, **JSON_CT},
        },
        400,
        ("not valid JSON", "NaN"),
    ),
    (
        "edits-huge-weights-shape",
        "POST",
        EDITS,
        {
            "json": {
                "ops": [
                    {
                        "op": "set_weights",
                        "node": "fc3",
                        "tensors": {"weight": {"shape": [1 << 40, 1 << 40], "data": [0.0]}},
                    }
                ]
            },
            "headers": AUTH,
        },
        422,
        ("shape",),
    ),
    (
        "edits-if-match-garbage",
        "POST",
        EDITS,
        {"json": {"ops": [{"op": "remove", "node": "relu1"}]}, "headers": {**AUTH, "If-Match": b'"\xe9\xff"'}},
        400,
        ("If-Match",),
    ),
    (
        "edits-if-version-beyond-64-bits",
        "POST",
        EDITS,
        {"json": {"ops": [{"op": "remove", "node": "relu1"}], "if_version": 1 << 70}, "headers": AUTH},
        422,
        ("if_version",),
    ),
    # --- weights upload (safetensors) ---------------------------------------------------------------------------
    (
        "weights-json-content-type",
        "PUT",
        WEIGHTS,
        {"content": _fc3(), "headers": {**AUTH, **JSON_CT}},
        415,
        ("application/octet-stream",),
    ),
    (
        "weights-no-content-type",
        "PUT",
        WEIGHTS,
        {"content": _fc3(), "headers": AUTH},
        415,
        ("application/octet-stream",),
    ),
    (
        "weights-wrong-names",
        "PUT",
        WEIGHTS,
        {"content": _fc3(names=("gamma", "beta")), "headers": OCTET},
        422,
        ("no tensor", "weight"),
    ),
    (
        "weights-wrong-shape",
        "PUT",
        WEIGHTS,
        {"content": _fc3(weight=(10, 63)), "headers": OCTET},
        422,
        ("shape", "[10, 64]", "[10, 63]"),
    ),
    ("weights-transposed", "PUT", WEIGHTS, {"content": _fc3(weight=(64, 10)), "headers": OCTET}, 422, ("shape",)),
    (
        "weights-wrong-dtype",
        "PUT",
        WEIGHTS,
        {"content": _fc3(dtype=torch.float64), "headers": OCTET},
        422,
        ("FP32", "FP64"),
    ),
    (
        "weights-int-dtype",
        "PUT",
        WEIGHTS,
        {"content": _fc3(dtype=torch.int64), "headers": OCTET},
        422,
        ("FP32", "INT64"),
    ),
    (
        "weights-header-claims-terabytes",
        "PUT",
        WEIGHTS,
        {"content": GIGA_SAFETENSORS, "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-header-claims-4-gib",
        "PUT",
        WEIGHTS,
        {"content": GIGA_SAFETENSORS_2, "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-data-missing",
        "PUT",
        WEIGHTS,
        {"content": _safetensors_header(_FC3_HEADER), "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-header-length-beyond-file",
        "PUT",
        WEIGHTS,
        {"content": _safetensors_header(_FC3_HEADER, b"\0" * 2600, length=10**6), "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-header-length-2-to-the-63",
        "PUT",
        WEIGHTS,
        {"content": _safetensors_header(_FC3_HEADER, b"\0" * 2600, length=1 << 63), "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-header-not-json",
        "PUT",
        WEIGHTS,
        {"content": struct.pack("<Q", 8) + b"not json", "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-header-non-utf8",
        "PUT",
        WEIGHTS,
        {"content": struct.pack("<Q", 4) + b"\xff\xfe\xfd\xfc", "headers": OCTET},
        400,
        ("safetensors",),
    ),
    (
        "weights-overlapping-offsets",
        "PUT",
        WEIGHTS,
        {
            "content": _safetensors_header(
                {
                    "weight": {"dtype": "F32", "shape": [10, 64], "data_offsets": [0, 2560]},
                    "bias": {"dtype": "F32", "shape": [10], "data_offsets": [0, 40]},
                },
                b"\0" * 2560,
            ),
            "headers": OCTET,
        },
        400,
        ("safetensors",),
    ),
    (
        "weights-unknown-dtype",
        "PUT",
        WEIGHTS,
        {
            "content": _safetensors_header(
                {"bias": {"dtype": "Q7", "shape": [10], "data_offsets": [0, 40]}}, b"\0" * 40
            ),
            "headers": OCTET,
        },
        400,
        ("safetensors",),
    ),
    ("weights-4-bytes", "PUT", WEIGHTS, {"content": b"abcd", "headers": OCTET}, 400, ("safetensors",)),
    ("weights-empty", "PUT", WEIGHTS, {"content": b"", "headers": OCTET}, 400, ("safetensors",)),
    ("weights-no-tensors", "PUT", WEIGHTS, {"content": save_safetensors({}), "headers": OCTET}, 400, ("no tensors",)),
    ("weights-truncated", "PUT", WEIGHTS, {"content": _fc3()[:-7], "headers": OCTET}, 400, ("safetensors",)),
    # --- model management ---------------------------------------------------------------------------------------
    (
        "models-invalid-json",
        "POST",
        MODELS,
        {"content": b'{"name": "x", ', "headers": {**AUTH, **JSON_CT}},
        400,
        ("not valid JSON",),
    ),
    (
        "models-text-plain",
        "POST",
        MODELS,
        {"content": b'{"name": "x", "zoo": "mlp"}', "headers": {**AUTH, "Content-Type": "text/plain"}},
        415,
        ("Content-Type",),
    ),
    (
        "models-non-utf8",
        "POST",
        MODELS,
        {"content": b'{"name": "\xff", "zoo": "mlp"}', "headers": {**AUTH, **JSON_CT}},
        400,
        ("UTF-8",),
    ),
    (
        "models-deeply-nested-spec",
        "POST",
        MODELS,
        {"content": b'{"name": "x", "spec": ' + DEEP, "headers": {**AUTH, **JSON_CT}},
        400,
        ("nested too deeply",),
    ),
    (
        "rollback-version-beyond-64-bits",
        "POST",
        "/v1/models/digits/rollback",
        {"json": {"version": 1 << 70}, "headers": AUTH},
        422,
        ("version",),
    ),
    # --- issue 24, item 6: each was a 500 -------------------------------------------------------------------------
    (
        "insert-multihead-attention",
        "POST",
        "/v1/models/digits/layers",
        {"json": {"after": "relu1", "layer": MHA}, "headers": AUTH},
        422,
        ("MultiheadAttention",),
    ),
    (
        "replace-with-multihead-attention",
        "PUT",
        "/v1/models/digits/layers/relu1",
        {"json": {"layer": MHA}, "headers": AUTH},
        422,
        ("MultiheadAttention", "relu1"),
    ),
    (
        "edit-replace-with-multihead-attention-dry-run",
        "POST",
        EDITS,
        {"json": {"ops": [{"op": "replace", "node": "fc2", "layer": MHA}], "dry_run": True}, "headers": AUTH},
        422,
        ("MultiheadAttention",),
    ),
    (
        "min-version-beyond-the-journal",
        "POST",
        V1 + "?min_version=99",
        {"json": {"inputs": ROW.tolist()}},
        404,
        ("no replica", "99"),
    ),
    (
        "oip-min-version-beyond-the-journal",
        "POST",
        OIP + "?min_version=1000000",
        {"content": _oip_json([0.0] * 64), "headers": JSON_CT},
        404,
        ("no replica",),
    ),
    ("graph-version-beyond-64-bits", "GET", f"/v1/models/digits/graph?version={1 << 70}", {}, 422, ("version",)),
    (
        "pin-version-beyond-64-bits",
        "POST",
        f"/v1/models/digits/versions/{1 << 70}/pin",
        {"headers": AUTH},
        422,
        ("version",),
    ),
]


@pytest.fixture(scope="module")
def hostile_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for all the cases (each must change nothing, which the test checks), body limit LIMIT_MB."""
    from morphserve.main import create_app
    from morphserve.settings import Settings

    settings = Settings(
        models=["digits"],
        admin_token=TOKEN,
        state_dir=tmp_path_factory.mktemp("hostile") / "state",
        max_body_mb=LIMIT_MB,
        fsync=False,
    )
    with TestClient(create_app(settings)) as client:
        yield client


def _state(client: TestClient | httpx.Client) -> dict[str, Any]:
    """What an accepted request would change: the models, their versions, history length and graph ETag."""
    models = client.get("/v1/models").json()["models"]
    return {
        m["name"]: (
            m["version"],
            m["versions"],
            m["params"],
            client.get(f"/v1/models/{m['name']}/graph").headers.get("etag"),
        )
        for m in models
    }


def _outputs(client: TestClient | httpx.Client) -> list[float]:
    r = client.post(V1, json={"inputs": ROW.tolist()})
    assert r.status_code == 200, r.text
    return r.json()["outputs"][0]


@pytest.mark.parametrize("name,method,path,kw,status,words", CASES, ids=[c[0] for c in CASES])
def test_hostile_request_is_refused_and_changes_nothing(
    hostile_client: TestClient,
    name: str,
    method: str,
    path: str,
    kw: dict[str, Any],
    status: int,
    words: tuple[str, ...],
) -> None:
    before, outputs = _state(hostile_client), _outputs(hostile_client)
    body = assert_error(hostile_client.request(method, path, **kw), status, *words)
    assert "internal" not in body["error"].lower(), body
    assert len(body["error"]) < 2100, "an error message must be short enough to read"
    assert _state(hostile_client) == before
    assert _outputs(hostile_client) == outputs


# -- oversize bodies: 413 before the body is read, declared or chunked --------------------------------------------
@pytest.mark.parametrize(
    "method,path,headers",
    [
        ("POST", OIP, JSON_CT),
        ("POST", V1, JSON_CT),
        ("POST", EDITS, {**AUTH, **JSON_CT}),
        ("PUT", WEIGHTS, OCTET),
        ("POST", MODELS, {**AUTH, **JSON_CT}),
    ],
)
def test_oversize_bodies_are_413_with_content_length_and_chunked(
    hostile_client: TestClient, method: str, path: str, headers: dict[str, str]
) -> None:
    before = _state(hostile_client)
    declared = hostile_client.request(method, path, content=b"{" + b" " * LIMIT + b"}", headers=headers)
    assert_error(declared, 413, "limit", str(LIMIT))

    def chunks() -> Iterator[bytes]:
        for _ in range(LIMIT // 4096 + 4):
            yield b" " * 4096

    chunked = hostile_client.request(method, path, content=chunks(), headers=headers)
    assert_error(chunked, 413, "limit", str(LIMIT))
    assert _state(hostile_client) == before


# -- NaN / Infinity in binary tensors are data -------------------------------------------------------------------
def test_nan_and_infinity_in_binary_fp32_are_data(hostile_client: TestClient) -> None:
    """The documented choice (module docstring): served, non-finite results come back as null in JSON and
    bit-exact in binary; the finite rows of the same request are unaffected."""
    x = np.vstack([ROW, ROW, ROW]).astype(np.float32)
    x[0, 0], x[1, 0] = np.nan, np.inf
    r = hostile_client.post(OIP, **_oip_binary(x.tobytes(), shape=[3, 64]))
    assert r.status_code == 200, r.text
    out = r.json()["outputs"][0]
    assert out["shape"] == [3, 10]
    assert all(v is None for v in out["data"][:10])  # NaN in -> NaN out, written as null
    clean = hostile_client.post(V1, json={"inputs": ROW.tolist()}).json()["outputs"][0]
    assert np.allclose(out["data"][20:30], clean, atol=1e-6)  # the finite row is served as ever

    r = hostile_client.post(
        OIP, **_oip_binary(x.tobytes(), shape=[3, 64], extra={"parameters": {"binary_data_output": True}})
    )
    assert r.status_code == 200, r.text
    header_len = int(r.headers["inference-header-content-length"])
    values = np.frombuffer(r.content[header_len:], dtype="<f4").reshape(3, 10)
    assert np.isnan(values[0]).all() and np.isfinite(values[2]).all()


# -- a real server: every hostile body answered, memory bounded ---------------------------------------------------
def _rss_mb(pid: int, key: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {key} in /proc/{pid}/status")


def _raw_http(url: str, head: bytes, chunks: Iterator[bytes] = iter(())) -> tuple[int, bytes]:
    """Send a request byte by byte as written (a Content-Length that lies, a chunked body that never ends within
    the limit) and read the status and body of the answer."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking the rest: the answer is still readable
        data = b""
        while b"\r\n\r\n" not in data:
            more = sock.recv(65536)
            if not more:
                break
            data += more
        header, _, body = data.partition(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in header.split(b"\r\n") if line.lower().startswith(b"content-length:")),
            0,
        )
        while len(body) < length:
            more = sock.recv(65536)
            if not more:
                break
            body += more
        return int(header.split(b" ")[1]), body


def test_real_server_memory_stays_bounded_under_hostile_bodies(
    start_server: Callable[..., Any], tmp_path: Path
) -> None:
    limit_mb = 2
    limit = limit_mb * 1024 * 1024
    server = start_server(
        "--admin-token", TOKEN, "--state-dir", str(tmp_path / "state"), "--max-body-mb", str(limit_mb), "--no-fsync"
    )
    pid = server.proc.pid
    host = urlsplit(server.url).netloc.encode()
    # the nastiest: claims of huge sizes backed by nothing, nesting, and bodies just under the limit that expand
    # most when parsed (a JSON number per two bytes)
    n = (limit - 200) // 2 // 64 * 64
    near_limit_json = (
        _oip_json(None)
        .replace(b"null", b"[" + b",".join([b"0"] * n) + b"]")
        .replace(b"[1, 64]", b"[%d, 64]" % (n // 64))
    )
    requests: list[tuple[str, str, dict[str, Any], int]] = [
        ("POST", OIP, _oip_binary(ROW.tobytes(), shape=[1 << 40, 64], size=256), 400),
        ("POST", OIP, _oip_binary(ROW.tobytes(), size=1 << 40), 400),
        ("POST", OIP, _oip_binary(ROW.tobytes(), header_length=1 << 40), 400),
        ("POST", OIP, {"content": _oip_json([0.0], [1 << 40]), "headers": JSON_CT}, 400),
        ("POST", OIP, {"content": DEEP, "headers": JSON_CT}, 400),
        ("POST", V1, {"content": DEEP, "headers": JSON_CT}, 400),
        ("POST", V1, {"content": b'{"inputs":' + DEEP_CLOSED + b"}", "headers": JSON_CT}, 400),
        ("POST", EDITS, {"content": b'{"ops": ' + DEEP, "headers": {**AUTH, **JSON_CT}}, 400),
        ("PUT", WEIGHTS, {"content": GIGA_SAFETENSORS, "headers": OCTET}, 400),
        ("PUT", WEIGHTS, {"content": GIGA_SAFETENSORS_2, "headers": OCTET}, 400),
        (
            "PUT",
            WEIGHTS,
            {"content": _safetensors_header(_FC3_HEADER, b"\0" * 2600, length=1 << 62), "headers": OCTET},
            400,
        ),
        ("PUT", WEIGHTS, {"content": _fc3(names=("gamma", "beta")), "headers": OCTET}, 422),
        ("POST", OIP, {"content": near_limit_json, "headers": JSON_CT}, 200),
        (
            "POST",
            V1,
            {
                "content": b'{"inputs":['
                + b",".join([b"[" + b",".join([b"0"] * 64) + b"]"] * ((limit - 200) // 130))
                + b"]}",
                "headers": JSON_CT,
            },
            200,
        ),
    ]
    with httpx.Client(base_url=server.url, timeout=60) as c:
        version = c.get("/v1/models/digits").json()["version"]
        for _ in range(20):  # warm up: torch, the worker, the allocator
            assert c.post(V1, json={"inputs": ROW.tolist()}).status_code == 200
        baseline = _rss_mb(pid)
        rounds = []
        for _ in range(3):
            for method, path, kw, status in requests:
                r = c.request(method, path, **kw)
                assert r.status_code == status, (path, r.status_code, r.text[:300])
                if status >= 400:
                    assert r.json()["error"], r.text
            # a Content-Length claiming 10 GB, nothing sent after it: 413 at once, nothing read or allocated
            status, body = _raw_http(
                server.url,
                b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Content-Length: 10737418240\r\n\r\n" % (OIP.encode(), host),
            )
            assert status == 413 and b"limit" in body, (status, body)
            # a chunked body that goes past the limit: 413 when it does
            status, body = _raw_http(
                server.url,
                b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n" % (V1.encode(), host),
                (b" " * 65536 for _ in range(limit // 65536 + 2)),
            )
            assert status == 413 and b"limit" in body, (status, body)
            rounds.append(_rss_mb(pid))
        time.sleep(0.5)
        peak, end = _rss_mb(pid, "VmHWM"), _rss_mb(pid)
        print(
            f"\nreal server RSS: baseline {baseline:.0f} MB, after each round {[round(r) for r in rounds]} MB, "
            f"end {end:.0f} MB, peak {peak:.0f} MB ({len(requests) + 2} hostile requests x 3 rounds)"
        )
        assert end - baseline < 200, (baseline, rounds, end)
        assert peak - baseline < 400, f"peak RSS {peak:.0f} MB against a {baseline:.0f} MB baseline"
        assert rounds[-1] - rounds[0] < 100, f"RSS keeps growing round after round: {rounds}"
        # still serving, nothing changed
        assert c.get("/v1/models/digits").json()["version"] == version
        assert c.post(V1, json={"inputs": ROW.tolist()}).status_code == 200


# -- issue 24, item 6 and 7 -----------------------------------------------------------------------------------------
def test_min_version_beyond_the_journal_is_refused_at_once(hostile_client: TestClient) -> None:
    """No replica can have a version the journal does not hold: 404 naming the newest, without the 2 s wait
    (--min-version-wait-ms) that used to end in a 503."""
    t0 = time.perf_counter()
    body = assert_error(hostile_client.post(V1 + "?min_version=5", json={"inputs": ROW.tolist()}), 404, "newest is")
    assert time.perf_counter() - t0 < 1.0
    assert body["min_version"] == 5 and body["latest"] >= 1
    r = hostile_client.post(V1 + f"?min_version={body['latest']}", json={"inputs": ROW.tolist()})
    assert r.status_code == 200  # the version it has is served as ever


def test_a_deleted_model_leaves_no_metric_series(hostile_client: TestClient) -> None:
    create = hostile_client.post("/v1/models", json={"name": "gone", "zoo": "digits"}, headers=AUTH)
    assert create.status_code == 201, create.text
    assert hostile_client.post("/v1/models/gone/infer", json={"inputs": ROW.tolist()}).status_code == 200
    edit = hostile_client.post("/v1/models/gone/edits", json={"ops": [{"op": "remove", "node": "relu2"}]}, headers=AUTH)
    assert edit.status_code == 200, edit.text
    assert 'model="gone"' in hostile_client.get("/metrics").text
    assert hostile_client.delete("/v1/models/gone", headers=AUTH).status_code == 200
    left = [line for line in hostile_client.get("/metrics").text.splitlines() if 'model="gone"' in line]
    assert not left, left[:5]
