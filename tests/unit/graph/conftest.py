from __future__ import annotations

import pytest

from .helpers import MODELS, base, live


@pytest.fixture(params=MODELS)
def model_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def digits_live():
    return live("digits")


@pytest.fixture(scope="session", autouse=True)
def _preload() -> None:
    for name in MODELS:
        base(name)
