"""Text a client sent, made safe for a log line."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\\]")


def printable(text: str, limit: int = 300) -> str:
    """`text` (a URL path, a header a client sent) safe to put in a log line: control characters, and the
    backslash that escapes them, written as escapes, so `%0A` in a path cannot start a forged line of its own."""
    text = text[:limit]
    return _CONTROL.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)
