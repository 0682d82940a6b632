"""Errors of the graph library.

They carry structured fields (op index, node, expected/got) so the HTTP layer can return them as JSON
without parsing messages.
"""

from __future__ import annotations

from typing import Any


def short_message(e: BaseException) -> str:
    """The first line of an exception's message (its type when empty), capped: what a client error quotes of a
    torch failure, without a traceback-sized wall of text."""
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:300]


class GraphError(Exception):
    """Base class: a user-facing problem with a model, a spec or an edit."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = {k: v for k, v in fields.items() if v is not None}


class SpecError(GraphError):
    """A model spec (or a traced module) cannot be turned into a runnable graph."""


class EditError(GraphError):
    """An edit was refused; nothing changed. `op` is the index of the failing op."""


class NotFoundError(GraphError):
    """A model, version or node does not exist."""


class UnknownNodeError(EditError, NotFoundError):
    """An edit names a node that does not exist (an EditError that the server reports as 404)."""
