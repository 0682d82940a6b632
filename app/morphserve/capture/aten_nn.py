"""ATen converters for reductions, linear algebra, convolution, normalisation, pooling, resizing and creation
(the rest of aten.py's table)."""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from .aten import (
    CONVERTERS,
    Converter,
    Emit,
    Refused,
    Sizes,
    converts,
    dtype_name,
    ints,
    is_tensor,
    op_name,
    scalar,
    val,
)


# -- reductions -----------------------------------------------------------------------------------------------
def _dims(a: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if a.get("dim") not in (None, []):
        out["dim"] = ints(a["dim"], "dimension")
    if a.get("keepdim"):
        out["keepdim"] = True
    return out


@converts("mean", "sum")
def _mean_sum(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    name = op_name(n)
    args = _dims(a)
    if a.get("dtype") is not None and a["dtype"] != val(a["self"]).dtype:
        if name != "sum":
            raise Refused("mean with a dtype")
        args["datatype"] = dtype_name(a["dtype"])
    elif name == "sum" and val(n).dtype != val(a["self"]).dtype:
        args["datatype"] = dtype_name(val(n).dtype)  # sum of integers/bools promotes to INT64
    return Emit(name, [a["self"]], args)


@converts("amax", "amin")
def _amax(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit(op_name(n), [a["self"]], _dims(a))


@converts("var", "std")
def _var(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    correction = a.get("correction")
    correction = 1 if correction is None else correction
    if not a.get("unbiased", True):
        correction = 0
    return Emit(op_name(n), [a["self"]], {**_dims(a), "correction": int(correction)})


@converts("linalg_vector_norm")
def _norm(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a.get("dtype") is not None:
        raise Refused("norm with a dtype")
    return Emit("norm", [a["self"]], {**_dims(a), "ord": float(a["ord"])})


@converts("argmax")
def _argmax(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    args: dict[str, Any] = {} if a.get("dim") is None else {"dim": a["dim"]}
    if a.get("keepdim"):
        args["keepdim"] = True
    return Emit("argmax", [a["self"]], args)


# -- linear algebra, convolution, normalisation ---------------------------------------------------------------
@converts("matmul", "mm")
def _matmul(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("matmul", [a["self"], a.get("other", a.get("mat2"))])


@converts("bmm")
def _bmm(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("bmm", [a["self"], a["mat2"]])


@converts("linear")
def _linear(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("linear", [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else []))


@converts("einsum")
def _einsum(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("einsum", list(a["tensors"]), {"equation": a["equation"]})


@converts("conv1d", "conv2d")
def _conv(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    pad = a["padding"]
    args = {
        "stride": ints(a["stride"], "stride"),
        "padding": pad if isinstance(pad, str) else ints(pad, "padding"),
        "dilation": ints(a["dilation"], "dilation"),
        "groups": a["groups"],
    }
    ins = [a["input"], a["weight"]] + ([a["bias"]] if a["bias"] is not None else [])
    return Emit(op_name(n), ins, args)


@converts("embedding")
def _embedding(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    pad = a.get("padding_idx", -1)
    return Emit("embedding", [a["indices"], a["weight"]], {} if pad in (None, -1) else {"padding_idx": pad})


def _affine(name: str, a: dict[str, Any], extra: dict[str, Any]) -> Emit:
    w, b = a.get("weight"), a.get("bias")
    if w is None and b is not None:
        raise Refused(f"{name} with a bias but no weight")
    return Emit(name, [a["input"]] + [t for t in (w, b) if t is not None], extra)


@converts("layer_norm")
def _layer_norm(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return _affine("layer_norm", a, {"normalized_shape": ints(a["normalized_shape"], "shape"), "eps": float(a["eps"])})


@converts("group_norm")
def _group_norm(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return _affine("group_norm", a, {"num_groups": a["num_groups"], "eps": float(a["eps"])})


@converts("rms_norm")
def _rms_norm(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    args: dict[str, Any] = {"normalized_shape": ints(a["normalized_shape"], "shape")}
    if a.get("eps") is not None:
        args["eps"] = float(a["eps"])
    return Emit("rms_norm", [a["input"]] + ([a["weight"]] if a.get("weight") is not None else []), args)


@converts("scaled_dot_product_attention")
def _sdpa(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a["dropout_p"] not in (0, 0.0):
        raise Refused("scaled_dot_product_attention with dropout_p > 0 (pass 0.0 when not training)")
    if a.get("enable_gqa"):
        raise Refused("scaled_dot_product_attention with enable_gqa")
    args: dict[str, Any] = {}
    if a["is_causal"]:
        args["is_causal"] = True
    if a.get("scale") is not None:
        args["scale"] = float(scalar(a["scale"], "scale"))
    ins = [a["query"], a["key"], a["value"]] + ([a["attn_mask"]] if a["attn_mask"] is not None else [])
    return Emit("scaled_dot_product_attention", ins, args)


@converts("masked_fill")
def _masked_fill(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    value = a["value"]
    if is_tensor(value):
        raise Refused("masked_fill with a tensor value")
    return Emit("masked_fill", [a["self"], a["mask"]], {"value": scalar(value, "fill value")})


@converts("where")
def _where(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if not (is_tensor(a.get("self")) and is_tensor(a.get("other"))):
        raise Refused("where with scalar branches (use tensors for both)")
    return Emit("where", [a["condition"], a["self"], a["other"]])


# -- pooling, resizing, padding -------------------------------------------------------------------------------
@converts("max_pool1d", "max_pool2d", "max_pool2d_with_indices", "max_pool1d_with_indices")
def _max_pool(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    name = op_name(n).replace("_with_indices", "")
    args = {
        "kernel_size": ints(a["kernel_size"], "kernel"),
        "stride": ints(a["stride"], "stride") or None,
        "padding": ints(a["padding"], "padding"),
        "dilation": ints(a["dilation"], "dilation"),
        "ceil_mode": bool(a["ceil_mode"]),
    }
    return Emit(
        name,
        [a["self"]],
        {k: v for k, v in args.items() if v is not None},
        first_of_tuple=op_name(n).endswith("with_indices"),
    )


@converts("avg_pool1d", "avg_pool2d")
def _avg_pool(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if a.get("divisor_override") is not None:
        raise Refused("avg_pool with divisor_override")
    args = {
        "kernel_size": ints(a["kernel_size"], "kernel"),
        "stride": ints(a["stride"], "stride") or None,
        "padding": ints(a["padding"], "padding"),
        "ceil_mode": bool(a["ceil_mode"]),
        "count_include_pad": bool(a["count_include_pad"]),
    }
    return Emit(op_name(n), [a["self"]], {k: v for k, v in args.items() if v is not None})


@converts("adaptive_avg_pool1d", "adaptive_avg_pool2d", "_adaptive_avg_pool2d", "adaptive_max_pool2d")
def _adaptive(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    name = op_name(n).lstrip("_")
    return Emit(
        name,
        [a["self"]],
        {"output_size": ints(a["output_size"], "output size")},
        first_of_tuple=name == "adaptive_max_pool2d",
    )


_MODES = {
    "upsample_nearest1d": "nearest",
    "upsample_nearest2d": "nearest",
    "_upsample_nearest_exact1d": "nearest-exact",
    "_upsample_nearest_exact2d": "nearest-exact",
    "upsample_linear1d": "linear",
    "upsample_bilinear2d": "bilinear",
    "upsample_bicubic2d": "bicubic",
}


def _upsample(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    mode = _MODES[op_name(n)]
    args: dict[str, Any] = {"mode": mode}
    if a.get("scale_factors") is not None:
        args["scale_factor"] = [float(f) for f in a["scale_factors"]]
    elif a.get("output_size") is not None:
        args["size"] = ints(a["output_size"], "output size")
    if mode in ("linear", "bilinear", "bicubic"):
        args["align_corners"] = bool(a.get("align_corners"))
    return Emit("interpolate", [a["input"] if "input" in a else a["self"]], args)


for _name in _MODES:
    CONVERTERS[_name] = _upsample


@converts("pad", "constant_pad_nd")
def _pad(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    mode = a.get("mode", "constant")
    args: dict[str, Any] = {"pad": ints(a["pad"], "padding"), "mode": mode}
    value = a.get("value")
    if mode == "constant" and value not in (None, 0, 0.0):
        args["value"] = float(value)
    return Emit("pad", [a["self"] if "self" in a else a["input"]], args)


def _padding(mode: str) -> Converter:
    def conv(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
        return Emit("pad", [a["self"]], {"pad": ints(a["padding"], "padding"), "mode": mode})

    return conv


for _name, _mode in [
    ("reflection_pad1d", "reflect"),
    ("reflection_pad2d", "reflect"),
    ("replication_pad1d", "replicate"),
    ("replication_pad2d", "replicate"),
    ("circular_pad1d", "circular"),
    ("circular_pad2d", "circular"),
]:
    CONVERTERS[_name] = _padding(_mode)


@converts("pixel_shuffle")
def _pixel_shuffle(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("pixel_shuffle", [a["self"]], {"factor": a["upscale_factor"]})


@converts("pixel_unshuffle")
def _pixel_unshuffle(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    return Emit("pixel_unshuffle", [a["self"]], {"factor": a["downscale_factor"]})


# -- creation (with run-time sizes; creation from constants is folded by the walker) -------------------------------
def _fill_of(n: fx.Node, a: dict[str, Any]) -> Any:
    name = op_name(n)
    if "zeros" in name:
        return 0
    if "ones" in name:
        return 1
    return scalar(a["fill_value"], "fill value")


@converts("full", "zeros", "ones", "new_zeros", "new_ones", "new_full", "new_empty", "empty")
def _full(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    if "empty" in op_name(n):
        raise Refused("an uninitialised tensor (torch.empty) whose values are used")
    return Emit(
        "full",
        [],
        {
            "size": s.shape(a["size"], [], infer=False),
            "fill_value": _fill_of(n, a),
            "datatype": dtype_name(val(n).dtype),
        },
    )


@converts("zeros_like", "ones_like", "full_like")
def _full_like(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    args: dict[str, Any] = {"fill_value": _fill_of(n, a)}
    if val(n).dtype != val(a["self"]).dtype:
        args["datatype"] = dtype_name(val(n).dtype)
    return Emit("full_like", [a["self"]], args)


@converts("arange")
def _arange(a: dict[str, Any], s: Sizes, n: fx.Node) -> Emit:
    start, step = a.get("start", 0) or 0, a.get("step", 1) or 1
    args: dict[str, Any] = {"end": s.index(a["end"], []), "datatype": dtype_name(val(n).dtype)}
    if start:
        args["start"] = ints(start, "arange start")[0]
    if step != 1:
        args["step"] = ints(step, "arange step")[0]
    return Emit("arange", [], args)
