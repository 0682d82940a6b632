"""The web page at `/ui/`: the built single-page app shipped inside the package (no npm at run time).

`/ui/` and the deep links `/ui/models/{name}` (with `?version=N`, `?diff=M`) answer the page's index; its
hashed assets are cached for a year, the index is revalidated. Every answer carries a strict
Content-Security-Policy: the page loads scripts, styles, workers and data from this server only, so it works
offline and nothing it shows can pull in code from elsewhere. The files are read once and kept in memory
(the whole page is a few MB), gzipped for clients that accept it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import mimetypes
import re
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from morphserve.api.errors import ApiError

STATIC_DIR = Path(__file__).resolve().parents[1] / "ui_static"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "worker-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_SECURITY = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
}
_IMMUTABLE = "public, max-age=31536000, immutable"
_COMPRESSIBLE = (".js", ".css", ".html", ".svg", ".json", ".map", ".txt")
_DEEP_LINK = re.compile(r"^models/[A-Za-z0-9][A-Za-z0-9_.-]{0,63}/?$")

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class _File:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str
    cache: str


def _files() -> dict[str, Path]:
    if not STATIC_DIR.is_dir():
        return {}
    return {p.relative_to(STATIC_DIR).as_posix(): p for p in STATIC_DIR.rglob("*") if p.is_file()}


_FILES = _files()  # the shipped build: a fixed set of names, so no request path ever reaches the filesystem


@functools.cache
def _load(name: str) -> _File:
    body = _FILES[name].read_bytes()
    media = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if media.startswith("text/") or media in ("application/javascript", "image/svg+xml", "application/json"):
        media += "; charset=utf-8"
    packed = gzip.compress(body, 6, mtime=0) if name.endswith(_COMPRESSIBLE) and len(body) > 1024 else None
    cache = _IMMUTABLE if name.startswith("assets/") else "no-cache" if name == "index.html" else "public, max-age=3600"
    return _File(body, packed, media, f'"{hashlib.sha256(body).hexdigest()[:32]}"', cache)


def _serve(name: str, request: Request) -> Response:
    if name not in _FILES:
        raise ApiError(
            404,
            "the web page is not built into this installation (npm run build in ui/)"
            if name == "index.html"
            else f"no such file: /ui/{name}",
        )
    f = _load(name)
    headers = {**_SECURITY, "Cache-Control": f.cache, "ETag": f.etag, "Vary": "Accept-Encoding"}
    if f.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if f.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        return Response(f.gzipped, media_type=f.media_type, headers={**headers, "Content-Encoding": "gzip"})
    return Response(f.body, media_type=f.media_type, headers=headers)


@router.api_route("/ui", methods=["GET", "HEAD"])
def ui_root() -> Response:
    return RedirectResponse("/ui/", status_code=308)


@router.api_route("/ui/{path:path}", methods=["GET", "HEAD"])
def ui(path: str, request: Request) -> Response:
    """A shipped file by its exact name; the index for `/ui/` and the deep links; 404 for anything else."""
    if path in _FILES and path != "index.html":
        return _serve(path, request)
    if path in ("", "index.html") or _DEEP_LINK.fullmatch(path):
        return _serve("index.html", request)
    raise ApiError(404, f"no such page: /ui/{path}")
