"""Run-time checks for the operators of the opset that are unsafe with hostile arguments.

A bundle is data, but its arguments are chosen by whoever wrote it, and sizes named by `{"input": i}` are known
only when a request arrives. So the operators below check what they are given before the kernel sees it:

- views with chosen strides or offsets (`as_strided`) may only reach their input's own elements;
- operators that allocate by a size argument (`full`, `arange`, `repeat`, `expand`, paddings, resizing,
  convolution, pooling) are sized first (on the meta device where the rule is not simple) and refused beyond
  `MAX_ELEMENTS`;
- index operators check every index against the dimension it indexes (PyTorch checks on the CPU, but on CUDA an
  index out of range is a device-side assert that takes the whole device down);
- `empty` gives zeros: uninitialised memory could hold another request's data.

Each check raises ValueError or IndexError, which the serving layer answers as a 400 for that request. During
shape propagation the arguments are fake tensors, whose values cannot be read: index checks are skipped there,
size checks are not.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Final

import torch
from torch._subclasses.fake_tensor import FakeTensor

#: The most elements a tensor created by a size argument may have (2 GiB of FP32).
MAX_ELEMENTS: Final = 1 << 29

aten = torch.ops.aten


def _numel(shape: Sequence[int], what: str) -> None:
    total = 1
    for s in shape:
        if s < 0:
            raise ValueError(f"{what}: negative size {s}")
        total *= s
    if total > MAX_ELEMENTS:
        raise ValueError(f"{what}: {total} elements is more than the {MAX_ELEMENTS} a created tensor may have")


def _result_numel(out: Any, what: str) -> None:
    for t in out if isinstance(out, tuple | list) else (out,):
        if isinstance(t, torch.Tensor):
            _numel(tuple(t.shape), what)


# -- views ----------------------------------------------------------------------------------------------------
def as_strided(
    self: torch.Tensor, size: Sequence[int], stride: Sequence[int], storage_offset: int | None = None
) -> Any:
    """Only within the input's own elements: a bundle must not read a neighbour's memory through a view."""
    if len(size) != len(stride):
        raise ValueError(f"as_strided: {len(size)} sizes and {len(stride)} strides")
    if any(s < 0 for s in size) or any(st < 0 for st in stride):
        raise ValueError("as_strided: negative sizes or strides")
    if not self.is_contiguous():
        raise ValueError("as_strided of a tensor that is not contiguous")
    base = self.storage_offset()
    offset = base if storage_offset is None else storage_offset
    if 0 not in size:
        last = offset + sum((s - 1) * st for s, st in zip(size, stride, strict=True))
        if offset < base or last >= base + self.numel():
            raise IndexError("as_strided reaches outside its input's elements")
    return aten.as_strided.default(self, size, stride, offset)


def expand(self: torch.Tensor, size: Sequence[int], *, implicit: bool = False) -> Any:
    _numel([self.shape[i - len(size) + self.dim()] if s == -1 else s for i, s in enumerate(size)], "expand")
    return aten.expand.default(self, size, implicit=implicit)


def diagonal(self: torch.Tensor, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Any:
    return aten.diagonal.default(self, offset, dim1, dim2)


# -- creation by size -----------------------------------------------------------------------------------------
def empty(size: Sequence[int], **kw: Any) -> Any:
    """Zeros: uninitialised memory could hold what another request left there."""
    _numel(size, "empty")
    kw.pop("memory_format", None)
    return aten.zeros.default(size, **kw)


def empty_strided(size: Sequence[int], stride: Sequence[int], **kw: Any) -> Any:
    _numel(size, "empty_strided")
    return aten.zeros.default(size, **kw)


def full(size: Sequence[int], fill_value: Any, **kw: Any) -> Any:
    _numel(size, "full")
    return aten.full.default(size, fill_value, **kw)


def arange(start: Any, end: Any, step: Any = 1, **kw: Any) -> Any:
    if step == 0:
        raise ValueError("arange: step must not be 0")
    values = [float(v) for v in (start, end, step)]
    if not all(math.isfinite(v) for v in values):
        raise ValueError("arange: bounds must be finite")
    _numel([max(0, math.ceil((values[1] - values[0]) / values[2]))], "arange")
    return aten.arange.start_step(start, end, step, **kw)


def repeat(self: torch.Tensor, repeats: Sequence[int]) -> Any:
    if len(repeats) < self.dim():
        raise ValueError(f"repeat: {len(repeats)} repeats for a tensor of {self.dim()} dimensions")
    shape = [1] * (len(repeats) - self.dim()) + list(self.shape)
    _numel([s * r for s, r in zip(shape, repeats, strict=True)], "repeat")
    return aten.repeat.default(self, repeats)


def bounded(op: torch._ops.OpOverload) -> Callable[..., Any]:
    """`op`, sized on the meta device first: the result must stay under MAX_ELEMENTS."""
    name = str(op)

    def run(*args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, FakeTensor) for a in args):
            meta = torch.utils._pytree.tree_map(_to_meta, (args, kwargs))
            _result_numel(op(*meta[0], **meta[1]), name)
        out = op(*args, **kwargs)
        _result_numel(out, name)
        return out

    run.__name__ = run.__qualname__ = f"bounded_{op._overloadpacket.__name__}"
    return run


def _to_meta(v: Any) -> Any:
    return torch.empty_strided(v.shape, v.stride(), dtype=v.dtype, device="meta") if isinstance(v, torch.Tensor) else v


def grid_sampler_2d(
    input: torch.Tensor, grid: torch.Tensor, interpolation_mode: int, padding_mode: int, align_corners: bool
) -> Any:
    if interpolation_mode not in (0, 1, 2) or padding_mode not in (0, 1, 2):
        raise ValueError("grid_sampler_2d: interpolation_mode and padding_mode are 0, 1 or 2")
    return aten.grid_sampler_2d.default(input, grid, interpolation_mode, padding_mode, align_corners)


# -- indexing -------------------------------------------------------------------------------------------------
def _check_index(index: torch.Tensor, size: int, what: str, negative: bool = True) -> None:
    """Every value of `index` addresses one of `size` elements (negative ones from the end, where allowed)."""
    if isinstance(index, FakeTensor) or index.numel() == 0:
        return
    if index.dtype.is_floating_point or index.dtype.is_complex:
        raise TypeError(f"{what}: indices must be integers, got {index.dtype}")
    if index.dtype == torch.bool:
        return
    lo, hi = (int(v) for v in torch.aminmax(index))
    low = -size if negative else 0
    if lo < low or hi >= size:
        bad = lo if lo < low else hi
        raise IndexError(f"{what}: index {bad} is out of range for a dimension of size {size}")


def _dim_size(t: torch.Tensor, dim: int) -> int:
    n = max(t.dim(), 1)
    if not -n <= dim < n:
        raise IndexError(f"dimension {dim} is out of range for a tensor of {t.dim()} dimensions")
    return t.shape[dim] if t.dim() else 1


def _check_indices(self: torch.Tensor, indices: Sequence[torch.Tensor | None], what: str) -> None:
    pos = 0
    for idx in indices:
        if idx is None:
            pos += 1
            continue
        if idx.dtype in (torch.bool, torch.uint8):
            pos += idx.dim()
            continue
        if pos >= self.dim():
            raise IndexError(f"{what}: too many indices for a tensor of {self.dim()} dimensions")
        _check_index(idx, self.shape[pos], what)
        pos += 1


def index(self: torch.Tensor, indices: Sequence[torch.Tensor | None]) -> Any:
    _check_indices(self, indices, "index")
    return aten.index.Tensor(self, indices)


def index_put(
    self: torch.Tensor, indices: Sequence[torch.Tensor | None], values: torch.Tensor, accumulate: bool = False
) -> Any:
    _check_indices(self, indices, "index_put")
    return aten.index_put.default(self, indices, values, accumulate)


def index_select(self: torch.Tensor, dim: int, index: torch.Tensor) -> Any:
    _check_index(index, _dim_size(self, dim), "index_select")
    return aten.index_select.default(self, dim, index)


def gather(self: torch.Tensor, dim: int, index: torch.Tensor, sparse_grad: bool = False) -> Any:
    _check_index(index, _dim_size(self, dim), "gather")
    return aten.gather.default(self, dim, index, sparse_grad=sparse_grad)


def scatter_src(self: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> Any:
    _check_index(index, _dim_size(self, dim), "scatter")
    return aten.scatter.src(self, dim, index, src)


def scatter_value(self: torch.Tensor, dim: int, index: torch.Tensor, value: Any) -> Any:
    _check_index(index, _dim_size(self, dim), "scatter")
    return aten.scatter.value(self, dim, index, value)


def scatter_add(self: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor) -> Any:
    _check_index(index, _dim_size(self, dim), "scatter_add")
    return aten.scatter_add.default(self, dim, index, src)


def scatter_reduce(
    self: torch.Tensor, dim: int, index: torch.Tensor, src: torch.Tensor, reduce: str, *, include_self: bool = True
) -> Any:
    _check_index(index, _dim_size(self, dim), "scatter_reduce")
    return aten.scatter_reduce.two(self, dim, index, src, reduce, include_self=include_self)


def embedding(
    weight: torch.Tensor,
    indices: torch.Tensor,
    padding_idx: int = -1,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Any:
    if weight.dim() != 2:
        raise ValueError(f"embedding: the weight must have 2 dimensions, got {weight.dim()}")
    _check_index(indices, weight.shape[0], "embedding", negative=False)
    return aten.embedding.default(weight, indices, padding_idx, scale_grad_by_freq, sparse)


def masked_scatter(self: torch.Tensor, mask: torch.Tensor, source: torch.Tensor) -> Any:
    if not isinstance(mask, FakeTensor) and mask.dtype == torch.bool:
        needed = int(torch.broadcast_to(mask, torch.broadcast_shapes(self.shape, mask.shape)).sum())  # type: ignore[no-untyped-call]
        if needed > source.numel():
            raise IndexError(f"masked_scatter: the mask selects {needed} elements, the source has {source.numel()}")
    return aten.masked_scatter.default(self, mask, source)


def native_group_norm(
    input: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    N: int,
    C: int,
    HxW: int,
    group: int,
    eps: float,
) -> Any:
    if input.dim() < 2 or input.shape[0] != N or input.shape[1] != C or N * C * HxW != input.numel():
        raise ValueError(f"native_group_norm: N={N}, C={C}, HxW={HxW} do not describe an input of {list(input.shape)}")
    if group <= 0 or C % group:
        raise ValueError(f"native_group_norm: {C} channels cannot form {group} groups")
    return aten.native_group_norm.default(input, weight, bias, N, C, HxW, group, eps)


def select_scatter(self: torch.Tensor, src: torch.Tensor, dim: int, index: int) -> Any:
    return aten.select_scatter.default(self, src, dim, index)


def slice_scatter(
    self: torch.Tensor,
    src: torch.Tensor,
    dim: int = 0,
    start: int | None = None,
    end: int | None = None,
    step: int = 1,
) -> Any:
    if step <= 0:
        raise ValueError("slice_scatter: step must be positive")
    return aten.slice_scatter.default(self, src, dim, start, end, step)


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    *,
    scale: float | None = None,
    enable_gqa: bool = False,
) -> Any:
    if dropout_p != 0:
        raise ValueError("scaled_dot_product_attention: dropout_p must be 0")
    if attn_mask is not None and not is_causal and _is_causal_mask(attn_mask, query, key):
        attn_mask, is_causal = None, True  # the same attention, through the kernels made for it
    return aten.scaled_dot_product_attention.default(
        query, key, value, attn_mask, 0.0, is_causal, scale=scale, enable_gqa=enable_gqa
    )


_TRIL: dict[tuple[int, torch.device], torch.Tensor] = {}


def _is_causal_mask(mask: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> bool:
    """Whether a boolean mask is the plain causal one, the same for every row and head (what a decoder builds from
    the sequence length alone when no padding mask is given; export materialises it where eager code passes
    `is_causal=True`). Checked on one row and head only when the mask is broadcast over the others, so the check
    costs a length x length comparison, not the attention."""
    if isinstance(mask, FakeTensor) or mask.dtype != torch.bool or mask.dim() != 4:
        return False
    length = query.shape[-2]
    if key.shape[-2] != length or mask.shape[-2:] != (length, length):
        return False
    if any(mask.shape[d] != 1 and mask.stride(d) != 0 for d in (0, 1)):
        return False  # a mask that may differ per row or head
    tril = _TRIL.get((length, mask.device))
    if tril is None:
        tril = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        if len(_TRIL) > 64:
            _TRIL.clear()
        _TRIL[(length, mask.device)] = tril
    return bool(torch.equal(mask[0, 0], tril))
