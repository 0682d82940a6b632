"""One-line messages for what cannot be captured, each naming the construct and the line of the user's code."""

from __future__ import annotations

import os
import re
import traceback
from typing import Any

import torch

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_OWN_DIR = os.path.dirname(__file__) + os.sep
_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\S+)\n\s*(.*)')


class CaptureError(Exception):
    """The model cannot be captured as one editable graph; `str()` is a short, one-line explanation."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))
        self.message = str(self)


def _is_user_file(path: str) -> bool:
    return not path.startswith((_TORCH_DIR, _OWN_DIR)) and not path.startswith("<") and "/importlib/" not in path


def _fmt(path: str, line: int | str, code: str) -> str:
    code = code.strip()
    return f"{_short(path)}:{line}" + (f" (`{code[:80]}`)" if code else "")


def _short(path: str) -> str:
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return rel if not rel.startswith("..") else path


def where_trace(stack_trace: str | None) -> str:
    """'file.py:12 (`code`)' for the innermost user frame of a node's recorded stack trace ('' if none)."""
    frames = [m.groups() for m in _FRAME.finditer(stack_trace or "")]
    for path, line, _fn, code in reversed(frames):
        if _is_user_file(path):
            return _fmt(path, line, code)
    return ""


def where_exception(e: BaseException) -> str:
    """'file.py:12 (`code`)' for the innermost user frame the exception passed through ('' if none)."""
    for f in reversed(traceback.extract_tb(e.__traceback__)):
        if _is_user_file(f.filename):
            return _fmt(f.filename, f.lineno or 0, f.line or "")
    return ""


def at(location: str) -> str:
    return f" at {location}" if location else ""


def first_line(e: BaseException, limit: int = 240) -> str:
    """The first line of an exception's message, shortened at a sentence or clause end (never mid-word)."""
    text = str(e).strip()
    line = text.splitlines()[0].strip() if text else type(e).__name__
    return shorten(line, limit)


def shorten(text: str, limit: int = 240) -> str:
    """`text` cut to at most `limit` characters at the end of a sentence or clause, or of a word, marked with '...'."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = head.rfind(". ")
    if cut > limit // 2:
        return head[: cut + 1]
    for stop in ("; ", ": ", ", "):
        cut = head.rfind(stop)
        if cut > limit // 2:
            return head[:cut] + " ..."
    cut = head.rfind(" ")
    return (head[:cut] if cut > 0 else head) + " ..."


def export_failure(e: BaseException, during: str = "") -> CaptureError:
    """Why torch.export gave up, in one line, named by construct."""
    loc = at(where_exception(e))
    name = type(e).__name__
    text = str(e)
    if isinstance(e, CaptureError):
        return e
    if "data-dependent" in text or name in ("GuardOnDataDependentSymNode", "DataDependentOutputException"):
        return CaptureError(
            f"data-dependent control flow{loc}: forward branches on (or sizes by) a tensor's values, which one graph "
            "cannot express; use torch.where / masks, or move the decision out of forward"
        )
    if "Constraints violated" in text or "specialized" in text or name == "ConstraintViolationError":
        dims = re.findall(r"L\['([^']+)'\](?:\.size\(\)|\.shape)\[(\d+)\]", text)
        what = ", ".join(f"dimension {d} of input {n!r}" for n, d in dict.fromkeys(dims)) or "a dimension marked -1"
        return CaptureError(
            f"{what} cannot vary{loc}: the model only works for the example size; give that dimension a fixed size "
            f"in --input instead of -1 ({first_line(e)})"
        )
    if name == "Unsupported" or "not supported" in text.lower():
        return CaptureError(f"torch.export does not support a construct{loc}: {first_line(e)}")
    what = f"{during} failed" if during else "torch.export could not capture the model"
    return CaptureError(f"{what}{loc}: {name}: {first_line(e)}")


def user_code_failure(e: BaseException, what: str) -> CaptureError:
    """An exception raised by the user's own code (building or running the model)."""
    return CaptureError(f"{what} raised {type(e).__name__}{at(where_exception(e))}: {first_line(e)}")


def describe_value(v: Any) -> str:
    return type(v).__name__
