"""Who may send a mutating request: the Host and Origin rules that close DNS rebinding and cross-site requests.

A server without a token accepts edits because it listens on loopback only. A web page the user visits can still
reach loopback, by rebinding its own name to 127.0.0.1 (Jupyter, Ray's dashboard and Ollama each had this bug):
the browser then sends `Host: evil.example:8000`. So a tokenless server takes a mutating request only with a
loopback Host (or one of `--allowed-hosts`). And any server refuses a mutating request that a browser sent from
another origin (the page at /ui/ is same-origin), unless `--cors-origins` names that origin.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
_DEFAULT_PORT = {"http": 80, "https": 443}


def split_host(host: str) -> tuple[str, int | None]:
    """`name:port`, `[v6]:port` or a bare name -> (lower-case name without brackets, port or None)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        name, _, port = host.partition(":") if host.count(":") <= 1 else (host, "", "")
    return name.rstrip("."), int(port) if port.isdigit() else None


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Loopback names, or a name (with or without its port) of `--allowed-hosts`."""
    if not host:
        return False
    name, port = split_host(host)
    if name in LOOPBACK or _loopback_ip(name):
        return True
    return name in allowed or (port is not None and f"{name}:{port}" in allowed)


def _loopback_ip(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a browser's `Origin` names the server it was sent to (ports defaulted by the origin's scheme;
    the scheme itself is not compared, since a TLS proxy in front changes it)."""
    if not host or origin == "null":
        return False
    parts = urlsplit(origin)
    if parts.scheme not in _DEFAULT_PORT or not parts.hostname:
        return False
    default = _DEFAULT_PORT[parts.scheme]
    name, port = split_host(host)
    return (parts.hostname.rstrip("."), parts.port or default) == (name, port or default)
