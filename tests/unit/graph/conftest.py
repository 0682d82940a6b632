from __future__ import annotations

import pytest
import torch

from .helpers import MODELS, base


@pytest.fixture(params=MODELS)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session", autouse=True)
def _preload() -> None:
    for name in MODELS:
        base(name)


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are tiny: one intra-op thread is as fast, and far steadier on a busy 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
