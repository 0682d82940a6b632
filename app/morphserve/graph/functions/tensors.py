"""Shapes, views, indexing and casts."""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field, model_validator

from ..dtypes import OIP_TO_TORCH, Datatype
from .base import (
    MAX_SIZE,
    Args,
    DimArg,
    DimArgs,
    Dims,
    Function,
    Index,
    IndexArg,
    OptDimArgs,
    PosInt,
    Scalar,
    Shape,
    SizeArg,
    _Checked,
    number,
    register,
)


# -- shapes, views and indexing -------------------------------------------------------------------------------
class ReshapeArgs(Args):
    shape: Shape

    @model_validator(mode="after")
    def _one_free(self) -> ReshapeArgs:
        if sum(1 for s in self.shape if s == -1) > 1:
            raise ValueError("at most one dimension of a shape may be -1")
        return self


class PermuteArgs(Args):
    dims: Dims

    @model_validator(mode="after")
    def _permutation(self) -> PermuteArgs:
        n = len(self.dims)
        if sorted(d % n for d in self.dims) != list(range(n)):
            raise ValueError(f"dims {list(self.dims)} are not a permutation of {n} dimensions")
        return self


class TransposeArgs(Args):
    dim0: DimArg
    dim1: DimArg


class UnflattenArgs(Args):
    dim: DimArg
    sizes: Annotated[tuple[SizeArg, ...], Field(min_length=1, max_length=8)]


class SqueezeArgs(Args):
    dim: Dims | None = None


class ExpandArgs(Args):
    size: Annotated[tuple[SizeArg, ...], Field(min_length=1, max_length=8)]


class RepeatArgs(Args):
    repeats: Annotated[tuple[PosInt, ...], Field(min_length=1, max_length=8)]


class SelectArgs(Args):
    dim: DimArg
    index: Index


class SliceArgs(Args):
    dim: DimArg = 0
    start: IndexArg | None = None
    end: IndexArg | None = None
    step: PosInt = 1


class SplitArgs(Args):
    split_size: (
        PosInt
        | Annotated[
            tuple[Annotated[int, Field(strict=True, ge=0, le=MAX_SIZE)], ...], Field(min_length=1, max_length=256)
        ]
    )
    dim: DimArg = 0


class ChunkArgs(Args):
    chunks: Annotated[int, Field(strict=True, ge=1, le=256)]
    dim: DimArg = 0


class GetitemArgs(Args):
    index: Annotated[int, Field(strict=True, ge=0, le=255)]


class ToArgs(Args):
    datatype: Datatype


class FlipArgs(Args):
    dims: Annotated[tuple[DimArg, ...], Field(min_length=1, max_length=8)]


class RollArgs(Args):
    shifts: Annotated[tuple[Index, ...], Field(min_length=1, max_length=8)]
    dims: Annotated[tuple[DimArg, ...], Field(min_length=1, max_length=8)]


class IndexArgs(Args):
    """Which dimensions the index inputs index, in order (the other dimensions are taken whole)."""

    dims: Annotated[tuple[Annotated[int, Field(strict=True, ge=0, le=7)], ...], Field(min_length=1, max_length=8)]

    @model_validator(mode="after")
    def _increasing(self) -> IndexArgs:
        if list(self.dims) != sorted(set(self.dims)):
            raise ValueError("dims must be strictly increasing")
        return self


def _check_index(parsed: Args, n: int) -> None:
    assert isinstance(parsed, IndexArgs)
    if len(parsed.dims) != n - 1:
        raise ValueError(f"{len(parsed.dims)} dims need {len(parsed.dims) + 1} inputs (x and one index each)")


def _index(x: torch.Tensor, *indices: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    key: list[Any] = [slice(None)] * (max(dims) + 1)
    for d, t in zip(dims, indices, strict=True):
        key[d] = t
    return x[tuple(key)]


class MaskedFillArgs(Args):
    value: Scalar


def _reshape(x: torch.Tensor, *, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.reshape(x, shape)


def _unflatten(x: torch.Tensor, *, dim: int, sizes: tuple[int, ...]) -> torch.Tensor:
    return torch.unflatten(x, dim, sizes)


def _squeeze(x: torch.Tensor, *, dim: tuple[int, ...] | None = None) -> torch.Tensor:
    return torch.squeeze(x) if dim is None else torch.squeeze(x, dim)


def _expand(x: torch.Tensor, *, size: tuple[int, ...]) -> torch.Tensor:
    return x.expand(size)


def _repeat(x: torch.Tensor, *, repeats: tuple[int, ...]) -> torch.Tensor:
    return x.repeat(repeats)


def _slice(
    x: torch.Tensor, *, dim: int = 0, start: int | None = None, end: int | None = None, step: int = 1
) -> torch.Tensor:
    index = [slice(None)] * (dim % x.dim()) + [slice(start, end, step)]
    return x[tuple(index)]


def _split(x: torch.Tensor, *, split_size: int | tuple[int, ...], dim: int = 0) -> tuple[torch.Tensor, ...]:
    return torch.split(x, list(split_size) if isinstance(split_size, tuple) else split_size, dim)


def _gather(x: torch.Tensor, index: torch.Tensor, *, dim: int) -> torch.Tensor:
    return torch.gather(x, dim, index)


def _getitem(x: tuple[torch.Tensor, ...], *, index: int) -> torch.Tensor:
    return x[index]


def _to(x: torch.Tensor, *, datatype: str) -> torch.Tensor:
    return x.to(OIP_TO_TORCH[datatype])


def _masked_fill(x: torch.Tensor, mask: torch.Tensor, *, value: Scalar) -> torch.Tensor:
    return x.masked_fill(mask, number(value))


register(
    Function("reshape", _reshape, (1, 1), ReshapeArgs, doc="reshape to `shape` (-1: inferred; sizes may be refs)"),
    Function("permute", torch.permute, (1, 1), PermuteArgs),
    Function("transpose", torch.transpose, (1, 1), TransposeArgs),
    Function("unflatten", _unflatten, (1, 1), UnflattenArgs),
    Function("unsqueeze", torch.unsqueeze, (1, 1), DimArgs),
    Function("squeeze", _squeeze, (1, 1), SqueezeArgs, doc="drop the size-1 dims `dim` (all when left out)"),
    Function("expand", _expand, (1, 1), ExpandArgs, doc="broadcast to `size` (-1 keeps a dim; sizes may be refs)"),
    Function("repeat", _repeat, (1, 1), RepeatArgs),
    Function("select", torch.select, (1, 1), SelectArgs, doc="`x[..., index]` along `dim` (drops the dim)"),
    Function("slice", _slice, (1, 1), SliceArgs, doc="`x[..., start:end:step]` along `dim` (bounds may be refs)"),
    Function("split", _split, (1, 1), SplitArgs, doc="a tuple of pieces of `split_size` (or of the listed sizes)"),
    Function("chunk", torch.chunk, (1, 1), ChunkArgs, doc="a tuple of `chunks` pieces"),
    Function("unbind", torch.unbind, (1, 1), OptDimArgs, doc="a tuple of the slices along `dim`"),
    Function("getitem", _getitem, (1, 1), GetitemArgs, doc="element `index` of a tuple-valued node"),
    Function("to", _to, (1, 1), ToArgs, doc="cast to `datatype`"),
    Function("flip", torch.flip, (1, 1), FlipArgs),
    Function("roll", torch.roll, (1, 1), RollArgs),
    Function("gather", _gather, (2, 2), DimArgs, doc="inputs (x, index): x's values at index along `dim`"),
    Function("masked_fill", _masked_fill, (2, 2), MaskedFillArgs, doc="inputs (x, mask): x with `value` where mask"),
    Function("where", torch.where, (3, 3), doc="inputs (condition, x, y)"),
    _Checked(
        "index",
        _index,
        (2, 9),
        IndexArgs,
        doc="inputs (x, index...): `x[..., i0, ..., i1]`, integer index tensors at `dims`",
        rule=_check_index,
    ),
)
