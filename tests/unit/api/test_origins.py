"""The Host and Origin rules, case by case (the HTTP tests check them on every mutating route)."""

from __future__ import annotations

import pytest

from morphserve.api.origins import host_allowed, same_origin, split_host


@pytest.mark.parametrize(
    "host,expected",
    [
        ("localhost:8000", ("localhost", 8000)),
        ("127.0.0.1", ("127.0.0.1", None)),
        ("[::1]:9000", ("::1", 9000)),
        ("Example.COM.:80", ("example.com", 80)),
        ("::1", ("::1", None)),
        ("host:notaport", ("host", None)),
    ],
)
def test_split_host(host: str, expected: tuple[str, int | None]) -> None:
    assert split_host(host) == expected


@pytest.mark.parametrize("host", ["localhost", "localhost:8000", "127.0.0.1:1", "127.9.9.9", "[::1]:8000", "[::1]"])
def test_loopback_hosts_are_allowed(host: str) -> None:
    assert host_allowed(host, frozenset())


@pytest.mark.parametrize(
    "host",
    [
        "rebind.example:8000",
        "localhost.evil.example",
        "127.0.0.1.evil.example:80",
        "0.0.0.0:8000",
        "",
        None,
        "[::2]:8000",
        "10.0.0.1",
    ],
)
def test_other_hosts_are_not(host: str | None) -> None:
    assert not host_allowed(host, frozenset())


def test_allowed_hosts_by_name_or_name_and_port() -> None:
    allowed = frozenset({"models.internal", "gpu-7:8000"})
    assert host_allowed("models.internal:1234", allowed) and host_allowed("gpu-7:8000", allowed)
    assert not host_allowed("gpu-7:9000", allowed) and not host_allowed("models.internal.evil", allowed)


@pytest.mark.parametrize(
    "origin,host,same",
    [
        ("http://127.0.0.1:8000", "127.0.0.1:8000", True),
        ("http://localhost", "localhost:80", True),
        ("https://models.example", "models.example", True),
        ("https://models.example", "models.example:443", True),
        ("http://evil.example", "127.0.0.1:8000", False),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", False),
        ("null", "127.0.0.1:8000", False),
        ("file://", "127.0.0.1", False),
        ("http://[::1]:8000", "[::1]:8000", True),
        ("http://127.0.0.1:8000", None, False),
    ],
)
def test_same_origin(origin: str, host: str | None, same: bool) -> None:
    assert same_origin(origin, host) is same
