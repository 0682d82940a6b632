"""Errors of the serving layer. The graph library's and the store's errors pass through unchanged; the HTTP layer
maps all of them to statuses in one table (app/morphserve/api/errors.py)."""

from __future__ import annotations

from morphserve.graph.errors import GraphError, NotFoundError


class BadInputError(GraphError):
    """An inference input does not match the model's signature, or the model cannot compute on it."""


class QueueFullError(GraphError):
    """The model's queue is full: the client should retry later (503 + Retry-After)."""

    retry_after_s = 1


class NotResidentError(NotFoundError):
    """The version exists but is not loaded on the device."""


class ModelExistsError(GraphError):
    """A model of that name is already served."""


class UnavailableError(GraphError):
    """The model is shutting down or its worker has stopped."""


class InferenceTimeoutError(GraphError):
    """The request waited longer than the configured request timeout."""


class ModelTooLargeError(GraphError):
    """A model or an edit would need more parameter memory than --max-model-bytes allows."""


class VersionBehindError(GraphError):
    """`?min_version=` asks for a version this replica has not applied within --min-version-wait-ms."""

    retry_after_s = 1


class RolloutConflictError(GraphError):
    """A rollout is already running on this model (one at a time), or it ended meanwhile."""


class DatasetError(GraphError):
    """A dataset does not fit the model's signature (the message names the tensor), or is over its size bound."""


class JobError(GraphError):
    """A fit job that cannot run as asked: an unknown layer, one without parameters, a loss the dataset cannot
    serve, over a limit (the message says which)."""


class JobConflictError(GraphError):
    """A fit job is already training this model (one at a time)."""


class VersionAheadError(NotFoundError):
    """`?min_version=` asks for a version beyond the journal's newest: no replica has it, or can have it before an
    edit makes it (404 at once, instead of a wait that can only end in VersionBehindError)."""


class RenderTooLargeError(GraphError):
    """A graph has more nodes than --max-render-nodes allows to draw (422: ask for JSON)."""


class RenderTimeoutError(GraphError):
    """Drawing a graph ran past --render-timeout-s and was stopped (504)."""


class RenderBusyError(GraphError):
    """Too many renders wait for the render pool (503 + Retry-After)."""

    retry_after_s = 1


class RenderUnavailableError(GraphError):
    """graphviz's `dot` is not installed (501)."""
