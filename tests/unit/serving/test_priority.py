"""The edit window's GIL switch interval: set while any edit runs, restored when the last one ends."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator

import pytest

from morphserve.serving.priority import SwitchIntervalBoost


@pytest.fixture(autouse=True)
def default_interval() -> Iterator[float]:
    saved = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield 0.005
    sys.setswitchinterval(saved)


def test_boost_sets_and_restores() -> None:
    boost = SwitchIntervalBoost(0.0002)
    with boost.boosted():
        assert sys.getswitchinterval() == pytest.approx(0.0002, rel=0.02)
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.02)


def test_restored_when_the_edit_raises() -> None:
    boost = SwitchIntervalBoost(0.0002)
    with pytest.raises(RuntimeError), boost.boosted():
        raise RuntimeError("the edit failed")
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.02)


def test_overlapping_edits_keep_it_until_the_last_ends() -> None:
    boost = SwitchIntervalBoost(0.0002)
    first_in, first_may_leave = threading.Event(), threading.Event()
    seen: list[float] = []

    def first() -> None:
        with boost.boosted():
            first_in.set()
            first_may_leave.wait(5)

    t = threading.Thread(target=first)
    t.start()
    assert first_in.wait(5)
    with boost.boosted():
        pass
    seen.append(sys.getswitchinterval())  # the second ended, the first still runs
    first_may_leave.set()
    t.join(5)
    assert seen == [pytest.approx(0.0002, rel=0.02)]
    assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.02)


def test_never_lengthens_a_shorter_interval() -> None:
    sys.setswitchinterval(0.0001)
    with SwitchIntervalBoost(0.0002).boosted():
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)
    assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)


def test_none_leaves_the_interpreter_alone() -> None:
    with SwitchIntervalBoost(None).boosted():
        assert sys.getswitchinterval() == pytest.approx(0.005, rel=0.02)
