"""The model registry: the serving layer's one entry point for the HTTP layer.

It owns, per model, the version history (graph library), the device worker and an edit lock. Edits run
in the caller's thread (the HTTP layer uses a thread pool): validate and build off the hot path, place on
the device, warm up, then hand the swap to the worker and wait until it is live.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.graph import (
    GraphDiff,
    LiveModel,
    ModelVersion,
    NotFoundError,
    SpecError,
    diff,
    from_spec,
    load_zoo,
    read_bundle,
)
from app.graph.edits import EditError, Op, SetWeightsOp
from app.graph.zoo import ZOO
from app.settings import Settings

from .errors import BadInputError, InferenceTimeoutError, ModelExistsError, NotResidentError
from .metrics import Metrics
from .placement import Placement, resolve_device
from .worker import DeviceWorker, InferItem, InferResult

log = logging.getLogger("morphserve.registry")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NUMPY_OF = {torch.bool: np.bool_, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32,
             torch.int64: np.int64, torch.uint8: np.uint8, torch.uint16: np.uint16, torch.uint32: np.uint32,
             torch.uint64: np.uint64, torch.float16: np.float16, torch.float32: np.float32,
             torch.float64: np.float64}  # fmt: skip


@dataclass
class ServedModel:
    live: LiveModel
    worker: DeviceWorker
    placement: Placement
    edit_lock: threading.Lock

    @property
    def name(self) -> str:
        return self.live.name


@dataclass(frozen=True)
class EditOutcome:
    model: str
    version: ModelVersion
    previous: ModelVersion
    diff: GraphDiff
    timings_ms: dict[str, float]
    dry_run: bool


def numpy_dtype(dtype: torch.dtype) -> np.dtype[Any]:
    return np.dtype(_NUMPY_OF[dtype])


class Registry:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.device = resolve_device(settings.device)
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------------------------------------
    def load_from_settings(self) -> None:
        for entry in self.settings.models:
            name, _, source = entry.partition("=") if "=" in entry else (None, "", entry)
            self.add(self._load_source(source, name))

    def _load_source(self, source: str, name: str | None) -> ModelVersion:
        if source in ZOO:
            return load_zoo(source, as_name=name or source)
        path = Path(source)
        if not path.exists():
            raise SpecError(f"model source {source!r} is neither a zoo model ({', '.join(ZOO)}) nor a file")
        spec, tensors = read_bundle(path)
        return from_spec(spec, tensors, name=name or spec.get("name") or path.stem)

    def add(self, first: ModelVersion) -> ServedModel:
        if not _NAME.match(first.model):
            raise SpecError(f"model name {first.model!r} must match {_NAME.pattern}")
        with self._lock:
            if first.model in self._models:
                raise ModelExistsError(f"model {first.model!r} already exists")
            placement = Placement(self.device)
            worker = DeviceWorker(
                first.model, self.device, max_batch_size=self.settings.max_batch_size,
                max_batch_delay_s=self.settings.max_batch_delay_ms / 1000, max_queue=self.settings.max_queue,
                resident_limit=self.settings.resident_versions, metrics=self.metrics,
            )  # fmt: skip
            runnable = placement.place(first)
            _warm_up(first, runnable, self.device)
            served = ServedModel(LiveModel(first), worker, placement, threading.Lock())
            worker.start(first.version, runnable)
            self._models[first.model] = served
        log.info("model %s: serving version %d on %s", first.model, first.version, self.device)
        return served

    def add_zoo(self, name: str, zoo: str, options: Mapping[str, Any]) -> ServedModel:
        return self.add(load_zoo(zoo, as_name=name, **options))

    def add_spec(self, name: str, spec: Mapping[str, Any], tensors: Mapping[str, torch.Tensor] | None = None) -> ServedModel:
        return self.add(from_spec(dict(spec), tensors, name=name))

    def remove(self, name: str) -> None:
        with self._lock:
            served = self.get(name)
            del self._models[name]
        served.worker.stop()
        log.info("model %s: removed", name)

    def close(self) -> None:
        for name in list(self._models):
            self.remove(name)

    # -- lookups -------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> ServedModel:
        served = self._models.get(name)
        if served is None:
            raise NotFoundError(f"model {name!r} does not exist", model=name)
        return served

    def version(self, name: str, version: int | None = None) -> ModelVersion:
        return self.get(name).live.get(version)

    def resident(self, name: str) -> list[int]:
        return self.get(name).worker.resident_versions()

    # -- inference -----------------------------------------------------------------------------------------
    def prepare_inputs(self, served: ServedModel, arrays: Mapping[str, np.ndarray], version: ModelVersion
                       ) -> tuple[torch.Tensor, ...]:  # fmt: skip
        """Check names, ranks, shapes and dtypes against the signature; tensors in signature order."""
        sig = version.inputs
        names = [t.name for t in sig]
        unknown = [k for k in arrays if k not in names]
        if unknown:
            raise BadInputError(f"model {served.name!r} has no input {unknown[0]!r}; its inputs are {names}",
                                expected=names, got=list(arrays))  # fmt: skip
        tensors = []
        rows: int | None = None
        for t in sig:
            if t.name not in arrays:
                raise BadInputError(f"missing input {t.name!r}", expected=names, got=list(arrays))
            a = arrays[t.name]
            want = numpy_dtype(t.dtype)
            if a.dtype != want:
                raise BadInputError(f"input {t.name!r}: expected datatype {t.datatype}, got {a.dtype.name}",
                                    expected=t.datatype, got=a.dtype.name)  # fmt: skip
            ok = a.ndim == len(t.shape) and all(d == -1 or d == s for d, s in zip(t.shape, a.shape, strict=False))
            if not ok or a.shape[0] == 0 or 0 in a.shape:
                raise BadInputError(f"input {t.name!r}: expected shape {list(t.shape)}, got {list(a.shape)}",
                                    expected=list(t.shape), got=list(a.shape))  # fmt: skip
            if rows is not None and a.shape[0] != rows:
                raise BadInputError(f"inputs disagree on the batch size: {rows} vs {a.shape[0]}")
            rows = a.shape[0]
            tensors.append(torch.from_numpy(np.ascontiguousarray(a)))
        return tuple(tensors)

    async def infer(self, name: str, arrays: Mapping[str, np.ndarray], version: int | None = None) -> InferResult:
        served = self.get(name)
        if version is not None:
            target = served.live.get(version)  # 404 for a version that never existed
            if version not in served.worker.resident_versions():
                raise NotResidentError(
                    f"version {version} of {name!r} is not resident on the device (resident: "
                    f"{', '.join(map(str, served.worker.resident_versions()))}); infer on a resident version",
                    version=version,
                )  # fmt: skip
        else:
            target = served.live.current
        inputs = self.prepare_inputs(served, arrays, target)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[InferResult] = loop.create_future()

        def _resolve(r: InferResult | BaseException) -> None:
            if fut.done():
                return
            if isinstance(r, BaseException):
                fut.set_exception(r)
            else:
                fut.set_result(r)

        item = InferItem(inputs, version, lambda r: loop.call_soon_threadsafe(_resolve, r))
        served.worker.submit(item)
        try:
            return await asyncio.wait_for(fut, self.settings.request_timeout_s)
        except TimeoutError:
            raise InferenceTimeoutError(
                f"inference on {name!r} took longer than {self.settings.request_timeout_s} s"
            ) from None
        finally:
            if not fut.done() or fut.cancelled():
                served.worker.cancel(item)

    # -- edits ---------------------------------------------------------------------------------------------
    def edit(self, name: str, ops: list[Op] | list[dict[str, Any]], *, if_version: int | None = None,
             dry_run: bool = False, allow_output_change: bool = False) -> EditOutcome:  # fmt: skip
        served = self.get(name)
        return self._commit(served, lambda: served.live.propose(ops, if_version=if_version,
                                                                allow_output_change=allow_output_change),
                            dry_run=dry_run)  # fmt: skip

    def set_weights(self, name: str, node: str, tensors: dict[str, torch.Tensor], *,
                    if_version: int | None = None) -> EditOutcome:  # fmt: skip
        return self.edit(name, [SetWeightsOp.from_tensors(node, tensors)], if_version=if_version)

    def rollback(self, name: str, to: int, *, if_version: int | None = None) -> EditOutcome:
        served = self.get(name)
        return self._commit(served, lambda: served.live.propose_rollback(to, if_version=if_version), dry_run=False)

    def _commit(self, served: ServedModel, propose: Any, *, dry_run: bool) -> EditOutcome:
        with served.edit_lock:
            t0 = time.perf_counter()
            previous = served.live.current
            try:
                candidate: ModelVersion = propose()
                t1 = time.perf_counter()
                candidate.graph_module  # noqa: B018 - build (fx codegen) off the hot path
                if dry_run:
                    t2 = time.perf_counter()
                    return EditOutcome(served.name, candidate, previous, diff(previous, candidate),
                                       _ms(validate=t1 - t0, build=t2 - t1, swap=0.0, total=t2 - t0), True)  # fmt: skip
                runnable = served.placement.place(candidate)
                _warm_up(candidate, runnable, self.device)
                t2 = time.perf_counter()
            except Exception:
                self.metrics.edits.labels(served.name, "rejected").inc()
                raise
            served.worker.swap(candidate.version, runnable).result()
            served.live.commit(candidate)
            resident = set(served.worker.resident_versions())
            served.placement.retain(v for v in served.live.versions() if v.version in resident)
            t3 = time.perf_counter()
        self.metrics.edits.labels(served.name, "committed").inc()
        self.metrics.edit_latency.labels(served.name).observe(t3 - t0)
        log.info("model %s: version %d live (from %d, %.1f ms)", served.name, candidate.version, previous.version,
                 (t3 - t0) * 1000)  # fmt: skip
        return EditOutcome(served.name, candidate, previous, diff(previous, candidate),
                           _ms(validate=t1 - t0, build=t2 - t1, swap=t3 - t2, total=t3 - t0), False)  # fmt: skip


def _ms(**seconds: float) -> dict[str, float]:
    return {k: round(v * 1000, 3) for k, v in seconds.items()}


def _warm_up(version: ModelVersion, runnable: Any, device: torch.device) -> None:
    """One forward on a one-row input before the version may serve: it must run, not just type-check."""
    args = []
    for t in version.inputs:
        shape = [1 if i == 0 else (32 if d == -1 else d) for i, d in enumerate(t.shape)]
        args.append(torch.zeros(shape, dtype=t.dtype, device=device))
    try:
        with torch.inference_mode():
            runnable(*args)
    except Exception as e:  # noqa: BLE001 - any failure means the version must not go live
        raise EditError(f"the new version failed its warm-up forward: {str(e).splitlines()[0][:300]}") from None
