"""Fixtures of the end-to-end tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.replicas import Replicas


@pytest.fixture
def replicas(tmp_path: Path, pg_url: str) -> Iterator[Callable[..., Replicas]]:
    """`replicas(n, *flags)`: n servers following the throwaway PostgreSQL cluster's journal, stopped afterwards."""
    made: list[Replicas] = []

    def make(n: int = 3, *extra: str) -> Replicas:
        made.append(Replicas(tmp_path, pg_url, n, *extra))
        return made[-1]

    yield make
    for r in made:
        r.stop()
