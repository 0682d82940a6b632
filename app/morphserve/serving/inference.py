"""The inference path: check inputs against a version's signature, queue them on the model's worker, await the
result on the event loop, and bring back evicted versions that a request names."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from morphserve.graph import ModelVersion
from morphserve.graph.datatypes import OIP_TO_NUMPY

from .errors import BadInputError, InferenceTimeoutError, NotResidentError
from .served import ServedModel
from .worker import InferItem, InferResult


def prepare_inputs(model: str, arrays: Mapping[str, np.ndarray], version: ModelVersion) -> tuple[torch.Tensor, ...]:
    """Check names, ranks, shapes and dtypes against the signature; tensors in signature order."""
    sig = version.inputs
    names = [t.name for t in sig]
    unknown = [k for k in arrays if k not in names]
    if unknown:
        raise BadInputError(
            f"model {model!r} has no input {unknown[0]!r}; its inputs are {names}", expected=names, got=list(arrays)
        )
    tensors = []
    rows: int | None = None
    for t in sig:
        if t.name not in arrays:
            raise BadInputError(f"missing input {t.name!r}", expected=names, got=list(arrays))
        a = arrays[t.name]
        want = OIP_TO_NUMPY.get(t.datatype)
        if a.dtype != want:
            raise BadInputError(
                f"input {t.name!r}: expected datatype {t.datatype}, got {a.dtype.name}",
                expected=t.datatype,
                got=a.dtype.name,
            )
        problem = t.shape_problem(tuple(a.shape))  # rank, fixed sizes, and the bounds a model's buffers set
        if problem is not None:
            raise BadInputError(f"input {t.name!r}: {problem}", expected=list(t.shape), got=list(a.shape))
        if rows is not None and a.shape[0] != rows:
            raise BadInputError(f"inputs disagree on the batch size: {rows} vs {a.shape[0]}")
        rows = a.shape[0]
        tensors.append(torch.from_numpy(np.ascontiguousarray(a)))
    return tuple(tensors)


class Inference:
    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    async def infer(
        self, served: ServedModel, arrays: Mapping[str, np.ndarray], version: int | None = None
    ) -> InferResult:
        runnable = None
        residency = served.residency
        if version is not None:
            # An evicted version is reloaded from the store off the loop (404 for one that never existed).
            held = residency.cached(version)
            target = held if held is not None else await asyncio.to_thread(residency.get, version)
            if residency.runnable(version) is None:
                runnable = await asyncio.to_thread(residency.make_resident, target)
        else:
            target = served.current()
        delivery = _Delivery(asyncio.get_running_loop())
        item = InferItem(prepare_inputs(served.name, arrays, target), version, delivery, runnable=runnable)
        fut = delivery.future
        for attempt in range(3):
            try:
                served.worker.submit(item)
                break
            except NotResidentError:
                # An edit (or another old version brought back) evicted it after the check above: load it again.
                if version is None or attempt == 2:
                    raise
                item.runnable = await asyncio.to_thread(residency.make_resident, target)
        names = tuple(o.name for o in target.outputs)  # now: the model may be gone by the time the result is
        # A timer that fails the future, rather than asyncio.wait_for: the same bound without wait_for's machinery
        # on every request (measured on the event loop's profile under load).
        expiry = delivery.loop.call_later(self.timeout_s, delivery.expire, served.name, self.timeout_s)
        try:
            return dataclasses.replace(await fut, names=names)
        finally:
            expiry.cancel()
            if not fut.done() or fut.cancelled() or isinstance(fut.exception(), InferenceTimeoutError):
                served.worker.cancel(item)


class _Delivery:
    """The worker's callback for one request: hands the result to the event loop's future (thread-safe)."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[InferResult] = loop.create_future()

    def __call__(self, r: InferResult | BaseException) -> None:
        self.loop.call_soon_threadsafe(self._resolve, r)

    def expire(self, model: str, timeout_s: float) -> None:
        """On the loop, when the request's time is up: fail it unless its result came first."""
        self._resolve(InferenceTimeoutError(f"inference on {model!r} took longer than {timeout_s} s"))

    def _resolve(self, r: InferResult | BaseException) -> None:
        if self.future.done():
            return
        if isinstance(r, BaseException):
            self.future.set_exception(r)
        else:
            self.future.set_result(r)
