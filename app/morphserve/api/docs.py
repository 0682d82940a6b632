"""`/docs` (Swagger UI) and `/redoc` (ReDoc), only with `--docs`.

Both pages load their scripts from cdn.jsdelivr.net, without integrity hashes (the packages float on their major
version), on the origin of the page that keeps the admin token; and this server ships no copy of them. So they are
off by default, and when asked for they carry a Content-Security-Policy that lets them load code from that CDN
(plus the one inline script Swagger UI needs, by its hash) and call nothing but this server. `/openapi.json`, the
schema itself, is always served: it is data, sent with `nosniff` and the API's own restrictive policy.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable

from fastapi import FastAPI, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

CDN = "https://cdn.jsdelivr.net"
_INLINE = re.compile(rb"<script>(.*?)</script>", re.S)


def _csp(page: bytes) -> str:
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'" for m in _INLINE.findall(page)
    )
    return (
        f"default-src 'none'; script-src {CDN} {hashes}; style-src {CDN} https://fonts.googleapis.com "
        "'unsafe-inline'; font-src https://fonts.gstatic.com; img-src 'self' data: https:; connect-src 'self'; "
        "worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def install(app: FastAPI) -> None:
    title = f"{app.title} API"
    url = app.openapi_url or "/openapi.json"
    swagger = get_swagger_ui_html(openapi_url=url, title=title).body
    redoc = get_redoc_html(openapi_url=url, title=title).body
    pages = {"/docs": bytes(swagger), "/redoc": bytes(redoc)}

    def page(body: bytes) -> Callable[[], Response]:
        """An endpoint without parameters (a default argument would be a query parameter FastAPI fills)."""
        headers = {"Content-Security-Policy": _csp(body), "X-Content-Type-Options": "nosniff"}

        def endpoint() -> Response:
            return Response(body, media_type="text/html", headers=headers)

        return endpoint

    for path, body in pages.items():
        app.add_api_route(path, page(body), methods=["GET"], include_in_schema=False)
