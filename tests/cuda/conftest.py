"""Tests that need a CUDA device (marker `cuda`), run on a lent GPU machine by scripts/bench/gpu_check.sh.

Deselected unless `-m` names the marker (`pytest -m cuda`), like the docker tests; once selected they fail, never
skip, on a machine without CUDA.
"""

from __future__ import annotations

import pytest
import torch


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "cuda" in (config.getoption("markexpr") or ""):
        return
    deselected = [i for i in items if i.get_closest_marker("cuda")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not i.get_closest_marker("cuda")]


@pytest.fixture(scope="session", autouse=True)
def _cuda() -> None:
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device: these tests run on a GPU machine (pytest -m cuda)", pytrace=False)
