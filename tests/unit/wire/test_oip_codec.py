"""Tests for the Open Inference Protocol v2 codec (JSON and Triton binary tensor data extension)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from morphserve.wire.oip_codec import (
    NUMPY_TO_OIP,
    OIP_TO_NUMPY,
    InferRequest,
    OIPError,
    RequestedOutput,
    decode_request,
    encode_response,
)

HEADER = "Inference-Header-Content-Length"

# A few in-range values per datatype, including each type's extremes.
SAMPLES: dict[str, list[Any]] = {
    "BOOL": [True, False, True, True, False, False],
    "INT8": [-128, 127, 0, -1, 5, 6],
    "INT16": [-32768, 32767, 0, -1, 5, 6],
    "INT32": [-(2**31), 2**31 - 1, 0, -1, 5, 6],
    "INT64": [-(2**63), 2**63 - 1, 0, -1, 5, 6],
    "UINT8": [0, 255, 1, 2, 3, 4],
    "UINT16": [0, 65535, 1, 2, 3, 4],
    "UINT32": [0, 2**32 - 1, 1, 2, 3, 4],
    "UINT64": [0, 2**64 - 1, 1, 2, 3, 4],
    "FP16": [0.5, -1.25, 65504.0, 0, 3, -2.0],
    "FP32": [0.1, -1.5, 3.4e38, 0, 7, 1e-30],
    "FP64": [0.1, -1.5, 1.7e308, 0, 7, 5e-324],
}


def body_of(doc: dict, *chunks: bytes) -> tuple[bytes, int | None]:
    """Serialize a request the way a client would: JSON header, then binary chunks."""
    header = orjson.dumps(doc)
    if not chunks:
        return header, None
    return header + b"".join(chunks), len(header)


def json_input(name: str, dt: str, shape: list[int], data: Any) -> dict:
    return {"name": name, "datatype": dt, "shape": shape, "data": data}


def bin_input(name: str, arr: np.ndarray) -> tuple[dict, bytes]:
    raw = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    spec = {
        "name": name,
        "datatype": NUMPY_TO_OIP[arr.dtype],
        "shape": list(arr.shape),
        "parameters": {"binary_data_size": len(raw)},
    }
    return spec, raw


def decode(doc: dict, *chunks: bytes, **kw: Any) -> InferRequest:
    body, h = body_of(doc, *chunks)
    return decode_request(body, h, **kw)


def err(doc: dict | bytes, *chunks: bytes, header_length: Any = "auto", **kw: Any) -> str:
    """Decode expecting OIPError; return its message."""
    if isinstance(doc, bytes):
        body, h = doc, None
    else:
        body, h = body_of(doc, *chunks)
    if header_length != "auto":
        h = header_length
    with pytest.raises(OIPError) as ei:
        decode_request(body, h, **kw)
    return str(ei.value)


def make_request(outputs: list[RequestedOutput] | None = None, binary_data_output: bool = False) -> InferRequest:
    return InferRequest(id=None, inputs={}, outputs=outputs or [], binary_data_output=binary_data_output, parameters={})


def parse_response(body: bytes, headers: dict[str, str]) -> tuple[dict, bytes]:
    if HEADER in headers:
        h = int(headers[HEADER])
        return orjson.loads(body[:h]), body[h:]
    return orjson.loads(body), b""


# ------------------------------------------------------------------------------------- dtype tables


def test_dtype_tables_are_inverse_and_exclude_bytes() -> None:
    assert set(OIP_TO_NUMPY) == set(SAMPLES)
    assert "BYTES" not in OIP_TO_NUMPY
    for name, dt in OIP_TO_NUMPY.items():
        assert NUMPY_TO_OIP[dt] == name
        assert NUMPY_TO_OIP[np.dtype(dt.type)] == name


# ------------------------------------------------------------------------------------- JSON inputs


@pytest.mark.parametrize("dt", list(SAMPLES))
def test_json_flat_every_datatype(dt: str) -> None:
    req = decode({"inputs": [json_input("x", dt, [2, 3], SAMPLES[dt])]})
    arr = req.inputs["x"]
    assert arr.dtype == OIP_TO_NUMPY[dt]
    assert arr.shape == (2, 3)
    np.testing.assert_array_equal(arr.reshape(-1), np.array(SAMPLES[dt], dtype=OIP_TO_NUMPY[dt]))


@pytest.mark.parametrize("dt", list(SAMPLES))
def test_json_nested_every_datatype(dt: str) -> None:
    flat = SAMPLES[dt]
    nested = [[flat[0:3]], [flat[3:6]]]  # shape [2, 1, 3]
    req = decode({"inputs": [json_input("x", dt, [2, 1, 3], nested)]})
    arr = req.inputs["x"]
    assert arr.shape == (2, 1, 3) and arr.dtype == OIP_TO_NUMPY[dt]
    np.testing.assert_array_equal(arr, np.array(nested, dtype=OIP_TO_NUMPY[dt]))


def test_json_scalar_and_empty_shapes() -> None:
    req = decode(
        {
            "inputs": [
                json_input("s", "FP32", [], [2.5]),
                json_input("e", "INT64", [0, 4], []),
                json_input("n", "INT32", [2, 0], [[], []]),
            ]
        }
    )
    assert req.inputs["s"].shape == () and req.inputs["s"] == np.float32(2.5)
    assert req.inputs["e"].shape == (0, 4) and req.inputs["e"].dtype == np.int64
    assert req.inputs["n"].shape == (2, 0)


def test_fp_accepts_integers_and_keeps_input_order_and_metadata() -> None:
    doc = {
        "id": "req-1",
        "parameters": {"binary_data_output": True, "custom": 3},
        "inputs": [json_input("b", "FP64", [2], [1, 2]), json_input("a", "FP32", [1], [3])],
        "outputs": [{"name": "y", "parameters": {"binary_data": False}}, {"name": "z"}],
    }
    req = decode(doc)
    assert list(req.inputs) == ["b", "a"]
    assert req.inputs["b"].dtype == np.float64 and req.inputs["b"].tolist() == [1.0, 2.0]
    assert req.id == "req-1"
    assert req.binary_data_output is True
    assert req.parameters == {"binary_data_output": True, "custom": 3}
    assert req.outputs == [RequestedOutput("y", False), RequestedOutput("z", None)]


def test_defaults_when_optional_fields_absent() -> None:
    req = decode({"inputs": []})
    assert req.id is None and req.outputs == [] and req.binary_data_output is False and req.parameters == {}


def test_binary_data_output_alias_on_requested_output() -> None:
    req = decode({"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data_output": True}}]})
    assert req.outputs == [RequestedOutput("y", True)]


# ------------------------------------------------------------------------------------- binary inputs


@pytest.mark.parametrize("dt", list(SAMPLES))
def test_binary_round_trip_every_datatype(dt: str) -> None:
    arr = np.array(SAMPLES[dt], dtype=OIP_TO_NUMPY[dt]).reshape(3, 2)
    spec, raw = bin_input("x", arr)
    req = decode({"inputs": [spec]}, raw)
    out = req.inputs["x"]
    assert out.dtype == arr.dtype and out.shape == (3, 2)
    np.testing.assert_array_equal(out, arr)
    out[0, 0] = out[1, 1]  # decoded arrays are writable copies, not views of the request body
    assert out.flags.writeable


def test_binary_bool_is_one_byte_per_element_and_normalised() -> None:
    spec = {"name": "m", "datatype": "BOOL", "shape": [4], "parameters": {"binary_data_size": 4}}
    req = decode({"inputs": [spec]}, bytes([1, 0, 2, 255]))
    assert req.inputs["m"].tolist() == [True, False, True, True]
    assert req.inputs["m"].view(np.uint8).tolist() == [1, 0, 1, 1]


def test_binary_is_little_endian() -> None:
    spec = {"name": "x", "datatype": "INT32", "shape": [1], "parameters": {"binary_data_size": 4}}
    assert decode({"inputs": [spec]}, b"\x01\x00\x00\x00").inputs["x"].tolist() == [1]


def test_mixed_binary_and_json_inputs() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    c = np.array([[7, 8]], dtype=np.int64)
    sa, ra = bin_input("a", a)
    sc, rc = bin_input("c", c)
    doc = {"inputs": [sa, json_input("b", "UINT8", [2], [9, 10]), sc]}
    req = decode(doc, ra, rc)
    assert list(req.inputs) == ["a", "b", "c"]
    np.testing.assert_array_equal(req.inputs["a"], a)
    assert req.inputs["b"].tolist() == [9, 10] and req.inputs["b"].dtype == np.uint8
    np.testing.assert_array_equal(req.inputs["c"], c)


def test_zero_size_binary_input_and_header_equal_to_body() -> None:
    spec = {"name": "e", "datatype": "FP32", "shape": [0, 3], "parameters": {"binary_data_size": 0}}
    body = orjson.dumps({"inputs": [spec]})
    req = decode_request(body, len(body))
    assert req.inputs["e"].shape == (0, 3)
    # An empty binary tensor is also fine with no header at all: there are no bytes to place.
    assert decode_request(body, None).inputs["e"].shape == (0, 3)


# ------------------------------------------------------------------------------------- decode errors


def test_error_invalid_json_and_non_object() -> None:
    assert "not valid JSON" in err(b"{not json")
    assert "not valid JSON" in err(b"")
    assert "not valid JSON" in err(b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [NaN]}]}')
    assert "not valid JSON" in err(b'{"inputs": [{"name":"x","datatype":"FP32","shape":[1],"data":[Infinity]}]}')
    assert "not valid JSON" in err(b'{"inputs": [{"name": "x", "datatype": "FP64", "shape": [1], "data": [1e400]}]}')
    assert "must be a JSON object, got array" in err(b"[1, 2]")


def test_error_missing_or_bad_inputs() -> None:
    assert "no 'inputs'" in err({"id": "x"})
    assert "'inputs' must be a list, got object" in err({"inputs": {}})
    assert "inputs[0] must be an object" in err({"inputs": [3]})
    assert "inputs[0]: 'name' must be a string" in err({"inputs": [{"datatype": "FP32", "shape": [1]}]})


def test_error_duplicate_input_names() -> None:
    doc = {"inputs": [json_input("x", "FP32", [1], [1.0]), json_input("x", "FP32", [1], [2.0])]}
    assert "duplicate input 'x'" in err(doc)


def test_error_unknown_datatype_and_bytes() -> None:
    assert "unknown datatype 'FP8'" in err({"inputs": [json_input("x", "FP8", [1], [1.0])]})
    assert "BYTES is not supported" in err({"inputs": [json_input("x", "BYTES", [1], ["a"])]})
    assert "unknown datatype None" in err({"inputs": [{"name": "x", "shape": [1], "data": [1]}]})


@pytest.mark.parametrize("shape", [[-1, 2], [2.0], ["2"], [True], None, 3, [[2]]])
def test_error_bad_shape(shape: Any) -> None:
    msg = err({"inputs": [json_input("x", "FP32", shape, [1.0, 2.0])]})
    assert "input 'x': shape must be a list of non-negative integers" in msg


def test_error_too_many_dimensions() -> None:
    assert "at most 32 allowed" in err({"inputs": [json_input("x", "FP32", [1] * 33, [1.0])]})


def test_error_huge_shape_refused_before_allocation() -> None:
    # 2**62 float32 elements would be an exabyte: must be refused from the shape alone.
    spec = {"name": "x", "datatype": "FP32", "shape": [2**31, 2**31], "parameters": {"binary_data_size": 4}}
    assert "has 4611686018427387904 elements, limit is 134217728" in err({"inputs": [spec]}, b"\0" * 4)
    assert "limit is 10" in err({"inputs": [json_input("x", "INT8", [11], [0] * 11)]}, max_elements=10)


def test_error_json_element_count() -> None:
    msg = err({"inputs": [json_input("input", "FP32", [2, 64], [0.0] * 127)]})
    assert "input 'input': shape [2, 64] needs 128 elements, got 127" in msg


def test_error_nested_mismatch() -> None:
    msg = err({"inputs": [json_input("x", "INT32", [2, 3], [[1, 2, 3], [4, 5]])]})
    assert "nested data at depth 1 has 2 entries, shape [2, 3] needs 3" in msg
    msg = err({"inputs": [json_input("x", "INT32", [2, 3], [[1, 2, 3]])]})
    assert "nested data at depth 0 has 1 entries, shape [2, 3] needs 2" in msg
    msg = err({"inputs": [json_input("x", "INT32", [2, 2], [[1, 2], 3])]})
    assert "depth 1 has a integer where shape [2, 2] needs an array of 2" in msg


def test_error_nested_deeper_than_shape() -> None:
    msg = err({"inputs": [json_input("x", "FP32", [2], [[1.0], [2.0]])]})
    assert "nested deeper than shape [2]" in msg
    msg = err({"inputs": [json_input("x", "FP32", [3], [1.0, [2.0], 3.0])]})
    assert "nested deeper than shape [3]" in msg


def test_error_pathological_nesting_does_not_recurse() -> None:
    # Deeper than a naive recursive walk would survive, under orjson's own depth limit (1024);
    # built by hand because orjson.dumps refuses to nest this deep.
    depth = 1000
    prefix = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": '
    body = prefix + b"[" * depth + b"1.0" + b"]" * depth + b"}]}"
    assert "nested deeper than shape [1, 1]" in err(body)
    # Past orjson's depth limit the body is rejected as JSON, still as an OIPError.
    body = prefix + b"[" * 5000 + b"]" * 5000 + b"}]}"
    assert "not valid JSON" in err(body)


def test_error_data_not_a_list() -> None:
    assert "'data' must be an array, got number" in err({"inputs": [json_input("x", "FP32", [], 1.5)]})


@pytest.mark.parametrize(
    ("dt", "data", "expect"),
    [
        ("BOOL", [1, 0], "BOOL data needs booleans, got integers"),
        ("INT32", [1.0, 2], "INT32 data needs integers, got numbers"),
        ("INT32", [True, 2], "INT32 data needs integers, got booleans"),
        ("UINT8", ["1", 2], "UINT8 data needs integers, got strings"),
        ("FP32", [None, 2.0], "FP32 data needs numbers, got nulls"),
        ("FP32", [True, 2.0], "FP32 data needs numbers, got booleans"),
        ("FP64", [{}, 2.0], "FP64 data needs numbers, got objects"),
    ],
)
def test_error_value_types(dt: str, data: list, expect: str) -> None:
    assert f"input 'x': {expect}" in err({"inputs": [json_input("x", dt, [2], data)]})


@pytest.mark.parametrize(
    ("dt", "value", "expect"),
    [
        ("INT8", 128, "value 128 out of range for INT8 [-128, 127]"),
        ("INT8", -129, "value -129 out of range for INT8"),
        ("UINT8", 256, "value 256 out of range for UINT8 [0, 255]"),
        ("UINT16", -1, "value -1 out of range for UINT16"),
        ("INT32", 2**31, "out of range for INT32"),
        ("INT64", 2**63, "out of range for INT64"),
        ("UINT32", 2**32, "out of range for UINT32"),
    ],
)
def test_error_int_range(dt: str, value: int, expect: str) -> None:
    assert expect in err({"inputs": [json_input("x", dt, [2], [0, value])]})


def test_error_integer_beyond_64_bits() -> None:
    # orjson turns integers beyond 64 bits into floats, which an integer datatype then rejects.
    assert "UINT64 data needs integers, got numbers" in err(
        b'{"inputs":[{"name":"x","datatype":"UINT64","shape":[1],"data":[18446744073709551616]}]}'
    )


@pytest.mark.parametrize(("dt", "value"), [("FP16", 70000.0), ("FP32", 1e39), ("FP16", 10**6)])
def test_error_float_out_of_range(dt: str, value: float) -> None:
    assert f"value out of range for {dt}" in err({"inputs": [json_input("x", dt, [1], [value])]})


def test_error_binary_size_mismatch() -> None:
    spec = {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 12}}
    assert "input 'x': FP32 shape [2, 2] needs binary_data_size 16, got 12" in err({"inputs": [spec]}, b"\0" * 12)
    spec["parameters"] = {"binary_data_size": "16"}
    assert "binary_data_size must be an integer, got string" in err({"inputs": [spec]}, b"\0" * 16)


def test_error_binary_truncated_and_trailing() -> None:
    spec = {"name": "x", "datatype": "FP32", "shape": [4], "parameters": {"binary_data_size": 16}}
    assert "input 'x': binary data truncated, needs 16 bytes, only 15 remain" in err({"inputs": [spec]}, b"\0" * 15)
    assert "1 trailing bytes" in err({"inputs": [spec]}, b"\0" * 17)
    # JSON-only request with junk after the header
    body = orjson.dumps({"inputs": [json_input("y", "FP32", [1], [1.0])]})
    assert "3 trailing bytes" in err(body + b"abc", header_length=len(body))


def test_error_binary_without_header() -> None:
    spec = {"name": "x", "datatype": "INT8", "shape": [1], "parameters": {"binary_data_size": 1}}
    body = orjson.dumps({"inputs": [spec]})
    assert f"no {HEADER} header" in err(body, header_length=None)


@pytest.mark.parametrize("h", [-1, 10_000, True, "5"])
def test_error_header_length_out_of_bounds(h: Any) -> None:
    body = orjson.dumps({"inputs": []})
    assert HEADER in err(body, header_length=h)


def test_error_header_length_splits_json() -> None:
    body = orjson.dumps({"inputs": []})
    assert "not valid JSON" in err(body, header_length=len(body) - 1)


def test_error_data_and_binary_both_or_neither() -> None:
    spec = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1], "parameters": {"binary_data_size": 1}}
    assert "both 'data' and parameters.binary_data_size" in err({"inputs": [spec]}, b"\x01")
    assert "neither 'data' nor parameters.binary_data_size" in err(
        {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1]}]}
    )


def test_error_unsupported_extensions() -> None:
    spec = {"name": "x", "datatype": "INT8", "shape": [1], "parameters": {"shared_memory_region": "r"}}
    assert "input 'x': shared memory is not supported" in err({"inputs": [spec]})
    out = {"name": "y", "parameters": {"classification": 3}}
    assert "classification extension is not supported" in err({"inputs": [], "outputs": [out]})
    out = {"name": "y", "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4}}
    assert "output 'y': shared memory is not supported" in err({"inputs": [], "outputs": [out]})


def test_error_bad_parameters_and_outputs() -> None:
    assert "request: 'parameters' must be an object" in err({"inputs": [], "parameters": [1]})
    assert "binary_data_output must be a boolean, got integer" in err(
        {"inputs": [], "parameters": {"binary_data_output": 1}}
    )
    assert "'id' must be a string, got integer" in err({"id": 7, "inputs": []})
    assert "'outputs' must be a list" in err({"inputs": [], "outputs": "y"})
    assert "outputs[0]: 'name' must be a string" in err({"inputs": [], "outputs": [{}]})
    assert "duplicate requested output 'y'" in err({"inputs": [], "outputs": [{"name": "y"}, {"name": "y"}]})
    assert "parameters.binary_data must be a boolean, got string" in err(
        {"inputs": [], "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}]}
    )
    spec = {"name": "x", "datatype": "INT8", "shape": [1], "data": [1], "parameters": "p"}
    assert "input 'x': 'parameters' must be an object, got string" in err({"inputs": [spec]})


# ------------------------------------------------------------------------------------- encode


OUTS = {
    "probs": np.array([[0.25, 0.75]], dtype=np.float32),
    "label": np.array([1], dtype=np.int64),
    "mask": np.array([[True, False]]),
}


def test_encode_plain_json() -> None:
    body, headers = encode_response(
        model_name="m", model_version="3", request_id="abc", outputs=OUTS, request=make_request()
    )
    assert headers == {}
    doc = orjson.loads(body)
    assert doc["model_name"] == "m" and doc["model_version"] == "3" and doc["id"] == "abc"
    assert doc["outputs"] == [
        {"name": "probs", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]},
        {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]},
        {"name": "mask", "datatype": "BOOL", "shape": [1, 2], "data": [True, False]},
    ]


def test_encode_omits_id_when_none() -> None:
    body, _ = encode_response(model_name="m", model_version="1", request_id=None, outputs=OUTS, request=make_request())
    assert "id" not in orjson.loads(body)


@pytest.mark.parametrize("dt", list(SAMPLES))
def test_encode_json_every_datatype(dt: str) -> None:
    arr = np.array(SAMPLES[dt], dtype=OIP_TO_NUMPY[dt]).reshape(2, 3)
    body, headers = encode_response(
        model_name="m", model_version="1", request_id=None, outputs={"y": arr}, request=make_request()
    )
    (out,) = orjson.loads(body)["outputs"]
    assert out["datatype"] == dt and out["shape"] == [2, 3] and headers == {}
    assert all(not isinstance(v, list) for v in out["data"])  # flat
    np.testing.assert_array_equal(np.array(out["data"], dtype=OIP_TO_NUMPY[dt]).reshape(2, 3), arr)


def test_encode_fp16_as_floats_and_non_contiguous() -> None:
    arr = np.array([[0.5, 1.5], [2.5, -3.0]], dtype=np.float16).T  # Fortran-ordered view
    body, _ = encode_response(
        model_name="m", model_version="1", request_id=None, outputs={"h": arr}, request=make_request()
    )
    (out,) = orjson.loads(body)["outputs"]
    assert out["data"] == [0.5, 2.5, 1.5, -3.0] and all(isinstance(v, float) for v in out["data"])


def test_encode_binary_per_output_flags() -> None:
    request = make_request([RequestedOutput("label", False), RequestedOutput("probs", True)])
    body, headers = encode_response(model_name="m", model_version="1", request_id=None, outputs=OUTS, request=request)
    doc, tail = parse_response(body, headers)
    assert [o["name"] for o in doc["outputs"]] == ["label", "probs"]  # requested order, "mask" left out
    label, probs = doc["outputs"]
    assert label["data"] == [1] and "parameters" not in label
    assert probs["parameters"] == {"binary_data_size": 8} and "data" not in probs
    assert tail == OUTS["probs"].tobytes()


def test_encode_binary_request_level_flag_and_override() -> None:
    request = make_request([RequestedOutput("mask", None), RequestedOutput("label", False)], binary_data_output=True)
    body, headers = encode_response(model_name="m", model_version="1", request_id=None, outputs=OUTS, request=request)
    doc, tail = parse_response(body, headers)
    mask, label = doc["outputs"]
    assert mask["parameters"] == {"binary_data_size": 2} and label["data"] == [1]
    assert tail == b"\x01\x00"


def test_encode_binary_all_outputs_in_order() -> None:
    body, headers = encode_response(
        model_name="m",
        model_version="1",
        request_id="r",
        outputs=OUTS,
        request=make_request(binary_data_output=True),
    )
    doc, tail = parse_response(body, headers)
    assert int(headers[HEADER]) == len(body) - len(tail)
    sizes = [o["parameters"]["binary_data_size"] for o in doc["outputs"]]
    assert sizes == [8, 8, 2]
    assert tail == OUTS["probs"].tobytes() + OUTS["label"].tobytes() + b"\x01\x00"


def test_encode_binary_big_endian_array_is_sent_little_endian() -> None:
    arr = np.array([1, 2], dtype=">i4")
    body, headers = encode_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"y": arr},
        request=make_request(None, True),
    )
    doc, tail = parse_response(body, headers)
    assert doc["outputs"][0]["datatype"] == "INT32" and tail == b"\x01\0\0\0\x02\0\0\0"


def test_encode_nan_becomes_null_in_json() -> None:
    arr = np.array([np.nan, 1.0], dtype=np.float32)
    body, _ = encode_response(
        model_name="m", model_version="1", request_id=None, outputs={"y": arr}, request=make_request()
    )
    assert orjson.loads(body)["outputs"][0]["data"] == [None, 1.0]


def test_encode_unknown_requested_output() -> None:
    with pytest.raises(OIPError, match="requested output 'nope' does not exist; model outputs are: probs"):
        encode_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs=OUTS,
            request=make_request([RequestedOutput("nope", None)]),
        )


def test_encode_unsupported_dtype_is_server_error() -> None:
    with pytest.raises(TypeError, match="no Open Inference Protocol datatype"):
        encode_response(
            model_name="m",
            model_version="1",
            request_id=None,
            outputs={"y": np.array(["a"])},
            request=make_request(),
        )


# ------------------------------------------------------------------------------------- properties

_dtypes = st.sampled_from(sorted(OIP_TO_NUMPY.values(), key=str))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=_dtypes, binary=st.booleans())
def test_property_round_trip(data: st.DataObject, dtype: np.dtype, binary: bool) -> None:
    """Any finite array survives request decode and response encode, JSON or binary."""
    elements = None
    if dtype.kind == "f":
        elements = hnp.from_dtype(dtype, allow_nan=False, allow_infinity=False)
    arr = data.draw(
        hnp.arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=4), elements=elements)
    )
    if binary:
        spec, raw = bin_input("x", arr)
        req = decode({"inputs": [spec]}, raw)
    else:
        values = arr.tolist() if arr.ndim else [arr.item()]  # OIP "data" is always an array
        req = decode({"inputs": [json_input("x", NUMPY_TO_OIP[dtype], list(arr.shape), values)]})
    got = req.inputs["x"]
    assert got.dtype == dtype and got.shape == arr.shape
    np.testing.assert_array_equal(got, arr)

    body, headers = encode_response(
        model_name="m",
        model_version="1",
        request_id=None,
        outputs={"y": got},
        request=make_request(binary_data_output=binary),
    )
    doc, tail = parse_response(body, headers)
    (out,) = doc["outputs"]
    back = (np.frombuffer(tail, dtype=dtype) if binary else np.array(out["data"], dtype=dtype)).reshape(out["shape"])
    np.testing.assert_array_equal(back, arr)


# ------------------------------------------------------------------------------------- tritonclient

httpclient = pytest.importorskip("tritonclient.http")


def _triton_input(name: str, arr: np.ndarray, binary: bool) -> Any:
    inp = httpclient.InferInput(name, list(arr.shape), NUMPY_TO_OIP[arr.dtype])
    inp.set_data_from_numpy(arr, binary_data=binary)
    return inp


def _round_trip(inputs: list, outputs: list | None, model_outputs: dict[str, np.ndarray]) -> tuple[InferRequest, Any]:
    body, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs, request_id="r1")
    req = decode_request(body, json_size)
    resp, headers = encode_response(
        model_name="m", model_version="1", request_id=req.id, outputs=model_outputs, request=req
    )
    result = httpclient.InferenceServerClient.parse_response_body(resp, header_length=headers.get(HEADER))
    return req, result


@pytest.mark.parametrize("binary_inputs", [True, False])
@pytest.mark.parametrize("binary_outputs", [True, False])
def test_tritonclient_round_trip(binary_inputs: bool, binary_outputs: bool) -> None:
    x = np.random.default_rng(0).standard_normal((2, 5)).astype(np.float32)
    m = np.array([[True, False, True]])
    h = np.array([1.5, -2.25], dtype=np.float16)
    inputs = [
        _triton_input("x", x, binary_inputs),
        _triton_input("m", m, binary_inputs),
        _triton_input("h", h, True),
    ]
    model_outputs = {"y": (x * 2).sum(axis=1), "ids": np.arange(6, dtype=np.int64).reshape(2, 3), "flag": m}
    outputs = [
        httpclient.InferRequestedOutput("ids", binary_data=binary_outputs),
        httpclient.InferRequestedOutput("y", binary_data=binary_outputs),
        httpclient.InferRequestedOutput("flag", binary_data=not binary_outputs),
    ]
    req, result = _round_trip(inputs, outputs, model_outputs)

    assert req.id == "r1" and list(req.inputs) == ["x", "m", "h"]
    np.testing.assert_array_equal(req.inputs["x"], x)
    np.testing.assert_array_equal(req.inputs["m"], m)
    np.testing.assert_array_equal(req.inputs["h"], h)
    assert [o.binary for o in req.outputs] == [binary_outputs, binary_outputs, not binary_outputs]

    assert result.get_response()["id"] == "r1"
    for name in ("y", "ids", "flag"):
        got = result.as_numpy(name)
        assert got.dtype == model_outputs[name].dtype and got.shape == model_outputs[name].shape
        np.testing.assert_array_equal(got, model_outputs[name])
        assert ("parameters" in result.get_output(name)) == (binary_outputs != (name == "flag"))


def test_tritonclient_no_outputs_requested_means_all_binary() -> None:
    x = np.arange(4, dtype=np.uint16).reshape(2, 2)
    model_outputs = {"a": x.astype(np.float64), "b": x.astype(np.int8)}
    req, result = _round_trip([_triton_input("x", x, False)], None, model_outputs)
    assert req.outputs == [] and req.binary_data_output is True
    for name, arr in model_outputs.items():
        assert result.get_output(name)["parameters"]["binary_data_size"] == arr.nbytes
        np.testing.assert_array_equal(result.as_numpy(name), arr)


def test_tritonclient_json_only_request_has_no_header_length() -> None:
    x = np.array([[1, 2]], dtype=np.int32)
    body, json_size = httpclient.InferenceServerClient.generate_request_body(
        [_triton_input("x", x, False)], outputs=[httpclient.InferRequestedOutput("y", binary_data=False)]
    )
    assert json_size is None
    req = decode_request(body, json_size)
    np.testing.assert_array_equal(req.inputs["x"], x)
    resp, headers = encode_response(
        model_name="m", model_version="1", request_id=None, outputs={"y": x + 1}, request=req
    )
    assert headers == {}
    result = httpclient.InferenceServerClient.parse_response_body(resp)
    np.testing.assert_array_equal(result.as_numpy("y"), x + 1)
