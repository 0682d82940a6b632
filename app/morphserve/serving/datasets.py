"""Labelled data as a model's resource: what a rollout evaluates a candidate on (and a fit job trains on).

A dataset is a safetensors file: one tensor per model input, under the input's name, with the samples in
dimension 0, plus `labels` (class indices, one per sample) or `targets` (shaped like the first output per sample).
It is checked against the model's signature when it is put, stored as a content-addressed blob, and recorded as a
journal document (kind `dataset`), so that it is durable, replicas see it, and gc keeps its bytes. safetensors holds
only tensors: nothing in the file is executed or unpickled.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors

from morphserve.graph.datatypes import name_of_torch
from morphserve.graph.errors import NotFoundError
from morphserve.graph.version import ModelVersion
from morphserve.store import Doc, Store

from .errors import DatasetError

KIND = "dataset"
LABELS, TARGETS = "labels", "targets"
#: Dataset names are path segments and journal keys.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # pydantic's (Rust) regex: $ is the end of the text


@dataclass(frozen=True)
class Dataset:
    """A dataset's tensors, checked: inputs in signature order, and labels or targets."""

    name: str
    inputs: tuple[torch.Tensor, ...]
    labels: torch.Tensor | None
    targets: torch.Tensor | None

    @property
    def rows(self) -> int:
        return int(self.inputs[0].shape[0])


def check(model: str, name: str, data: bytes, version: ModelVersion) -> tuple[Dataset, dict[str, Any]]:
    """Parse and check a dataset against `version`'s signature; the dataset and its description (the document's
    value). DatasetError names the tensor that does not fit."""
    try:
        tensors = load_safetensors(data)
    except Exception as e:  # noqa: BLE001 - any parse failure is the client's file
        raise DatasetError(f"dataset {name!r} is not a valid safetensors file: {str(e)[:200]}") from None
    names = [t.name for t in version.inputs]
    unknown = sorted(set(tensors) - set(names) - {LABELS, TARGETS})
    if unknown:
        raise DatasetError(
            f"dataset {name!r}: tensor {unknown[0]!r} is neither an input of {model!r} ({', '.join(names)}) nor "
            f"{LABELS!r} or {TARGETS!r}",
            tensor=unknown[0],
        )
    if (LABELS in tensors) == (TARGETS in tensors):
        raise DatasetError(f"dataset {name!r} needs exactly one of {LABELS!r} (class indices) or {TARGETS!r}")
    inputs = []
    rows: int | None = None
    for spec in version.inputs:
        t = tensors.get(spec.name)
        if t is None:
            raise DatasetError(f"dataset {name!r} has no tensor for input {spec.name!r}", tensor=spec.name)
        if name_of_torch(t.dtype) != spec.datatype:
            raise DatasetError(
                f"dataset {name!r}: tensor {spec.name!r} is {name_of_torch(t.dtype)}, the input is {spec.datatype}",
                tensor=spec.name,
            )
        fits = t.ndim == len(spec.shape) and all(d in (-1, s) for d, s in zip(spec.shape, t.shape, strict=False))
        if not fits or t.shape[0] == 0:
            raise DatasetError(
                f"dataset {name!r}: tensor {spec.name!r} has shape {list(t.shape)}, the input is {list(spec.shape)} "
                "(samples in dimension 0)",
                tensor=spec.name,
            )
        if rows is not None and t.shape[0] != rows:
            raise DatasetError(f"dataset {name!r}: inputs disagree on the number of samples", tensor=spec.name)
        rows = int(t.shape[0])
        inputs.append(t.contiguous())
    assert rows is not None
    out = version.outputs[0]
    labels, targets = tensors.get(LABELS), tensors.get(TARGETS)
    if labels is not None:
        if labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or labels.shape != (rows,):
            raise DatasetError(
                f"dataset {name!r}: {LABELS!r} must be integer class indices of shape [{rows}], got "
                f"{name_of_torch(labels.dtype)} {list(labels.shape)}",
                tensor=LABELS,
            )
        classes = (out.shape or (-1,))[-1]
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or (classes > 0 and hi >= classes):
            raise DatasetError(
                f"dataset {name!r}: {LABELS!r} range over [{lo}, {hi}], the output has {classes} classes",
                tensor=LABELS,
            )
        labels = labels.to(torch.int64)
    if targets is not None:
        want = [rows, *list(out.shape or (-1,))[1:]]
        fits = targets.ndim == len(want) and all(d in (-1, s) for d, s in zip(want, targets.shape, strict=False))
        if not fits or not targets.is_floating_point():
            raise DatasetError(
                f"dataset {name!r}: {TARGETS!r} must be floating point shaped like the output per sample "
                f"({want}, -1 any), got {name_of_torch(targets.dtype)} {list(targets.shape)}",
                tensor=TARGETS,
            )
        if not bool(torch.isfinite(targets).all()):
            raise DatasetError(f"dataset {name!r}: {TARGETS!r} holds NaN or infinite values", tensor=TARGETS)
    for spec, t in zip(version.inputs, inputs, strict=True):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DatasetError(f"dataset {name!r}: tensor {spec.name!r} holds NaN or infinite values", tensor=spec.name)
    description = {
        "name": name,
        "rows": rows,
        "bytes": len(data),
        "inputs": {s.name: [s.datatype, list(t.shape)] for s, t in zip(version.inputs, inputs, strict=True)},
        "kind": LABELS if labels is not None else TARGETS,
        "classes": (out.shape or (-1,))[-1] if labels is not None else None,
    }
    return Dataset(name, tuple(inputs), labels, targets), description


class Datasets:
    """Put, list, read and delete datasets through the store; the parsed tensors of the last few read are kept."""

    def __init__(self, store: Store, max_bytes: int) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self._cache: dict[tuple[str, str], tuple[int, Dataset]] = {}
        self._lock = threading.Lock()

    def put(self, model: str, name: str, data: bytes, version: ModelVersion) -> Doc:
        if len(data) > self.max_bytes:
            raise DatasetError(
                f"dataset {name!r} is {len(data)} bytes, over --max-dataset-mb ({self.max_bytes} bytes)",
                needed_bytes=len(data),
                limit_bytes=self.max_bytes,
            )
        _, description = check(model, name, data, version)
        digest = self.store.put_blob(data)
        return self.store.put_doc(model, KIND, name, description, digest=digest)

    def extend(
        self,
        model: str,
        name: str,
        version: ModelVersion,
        inputs: Mapping[str, Mapping[str, np.ndarray]],
        labels: Mapping[str, Any],
        kind: str,
    ) -> Doc:
        """Add labelled requests (inputs by request id, their labels or targets by the same ids) to dataset
        `name`, creating it if it does not exist. A label is a class index (one per row of its request: a number
        for a one-row request, else a list) or, for `targets`, a nested list shaped like the output's rows."""
        tensors: dict[str, list[torch.Tensor]] = {t.name: [] for t in version.inputs}
        out_key = LABELS if kind == LABELS else TARGETS
        tensors[out_key] = []
        for request_id, arrays in inputs.items():
            rows = int(next(iter(arrays.values())).shape[0])
            for spec in version.inputs:
                if spec.name not in arrays:
                    raise DatasetError(f"request {request_id!r} has no input {spec.name!r}", request=request_id)
                tensors[spec.name].append(torch.from_numpy(np.ascontiguousarray(arrays[spec.name])))
            value = labels[request_id]
            try:
                if out_key == LABELS:
                    got = torch.as_tensor(value if isinstance(value, list) else [value], dtype=torch.int64)
                else:
                    got = torch.as_tensor(value, dtype=torch.float32)
                    got = got.reshape(rows, *got.shape[1:]) if got.ndim and got.shape[0] == rows else got[None]
            except (TypeError, ValueError, RuntimeError) as e:
                raise DatasetError(f"the {out_key} of request {request_id!r} are not numbers: {e}") from None
            if got.shape[0] != rows:
                raise DatasetError(
                    f"request {request_id!r} had {rows} row(s) but got {got.shape[0]} {out_key}", request=request_id
                )
            tensors[out_key].append(got)
        existing = self.store.doc(model, KIND, name)
        if existing is not None and existing.digest is not None:
            old = load_safetensors(self.store.blob(existing.digest))
            if set(old) != set(tensors):
                raise DatasetError(
                    f"dataset {name!r} holds {sorted(old)}; feedback of {out_key} cannot extend it", dataset=name
                )
            for k in tensors:
                tensors[k].insert(0, old[k])
        merged = {k: torch.cat(v) for k, v in tensors.items()}
        return self.put(model, name, save_safetensors(merged), version)

    def list(self, model: str) -> list[Doc]:
        return self.store.docs(model, KIND)

    def delete(self, model: str, name: str) -> None:
        self.describe(model, name)
        self.store.delete_doc(model, KIND, name)
        self.store.sweep()

    def describe(self, model: str, name: str) -> Doc:
        doc = self.store.doc(model, KIND, name)
        if doc is None:
            raise NotFoundError(f"model {model!r} has no dataset {name!r}", dataset=name)
        return doc

    def load(self, model: str, name: str, version: ModelVersion) -> Dataset:
        """The dataset's tensors, checked against `version` (a candidate may have another signature)."""
        doc = self.describe(model, name)
        key = (model, name)
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None and hit[0] == doc.rev:
            return hit[1]
        assert doc.digest is not None
        dataset, _ = check(model, name, self.store.blob(doc.digest), version)
        with self._lock:
            if len(self._cache) > 8:
                self._cache.clear()
            self._cache[key] = (doc.rev, dataset)
        return dataset
