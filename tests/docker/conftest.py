"""Tests against a real Docker engine and the built image (marker `docker`), run by scripts/docker-test.sh.

They are deselected unless `-m` names the marker (`pytest -m docker`), so that `./scripts/test.sh` on a machine
without an engine runs the rest. Once selected they fail, never skip, when the engine or the image is missing.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.docker.engine import IMAGE, Engine, docker


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "docker" in (config.getoption("markexpr") or ""):
        return  # the -m expression decides
    deselected = [i for i in items if i.get_closest_marker("docker")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [i for i in items if not i.get_closest_marker("docker")]


@pytest.fixture(scope="session", autouse=True)
def _engine_and_image() -> None:
    """Fail early and clearly without an engine or the image (scripts/docker-test.sh provides both)."""
    info = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=30)
    if info.returncode != 0:
        pytest.fail(f"no Docker engine reachable ({info.stderr.strip()}): run scripts/docker-test.sh", pytrace=False)
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pytest.fail(
            f"image {IMAGE} not built: run scripts/docker-test.sh (or set MORPHSERVE_TEST_IMAGE)", pytrace=False
        )


@pytest.fixture
def engine() -> Iterator[Engine]:
    """Containers and volumes for one test, all removed after it."""
    e = Engine()
    try:
        yield e
    finally:
        e.cleanup()


@pytest.fixture(scope="module")
def module_engine() -> Iterator[Engine]:
    e = Engine()
    try:
        yield e
    finally:
        e.cleanup()
