"""Conformance of every journal and blob backend: what the Store relies on, asserted against each implementation.

A new backend (PostgreSQL) is done when this file passes against it."""

from __future__ import annotations

import time

import pytest

from app.store import Store, VersionConflictError, VersionRecord


def _rec(model: str, version: int, blobs: dict[str, str] | None = None) -> VersionRecord:
    return VersionRecord(model, version, version - 1 or None, [{"op": "x", "i": version}], {"name": model},
                         blobs or {}, 1000.0 + version, {"n": [[2], [3], "FP32"]})  # fmt: skip


def test_append_get_latest_versions_models(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    assert j.latest("m") is None and j.models() == [] and j.versions("m") == []
    for v in (1, 2, 3):
        j.append(_rec("m", v, {"fc": f"d{v}"}))
    j.append(_rec("other", 1))
    assert j.latest("m") == _rec("m", 3, {"fc": "d3"})
    assert j.get("m", 2) == _rec("m", 2, {"fc": "d2"}) and j.get("m", 9) is None
    assert [r.version for r in j.versions("m")] == [1, 2, 3] == j.version_numbers("m")
    assert j.models() == ["m", "other"]


def test_a_taken_version_number_is_a_conflict_and_changes_nothing(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    j.append(_rec("m", 1, {"a": "d1"}))
    with pytest.raises(VersionConflictError):
        j.append(_rec("m", 1, {"a": "other"}))
    assert j.get("m", 1) == _rec("m", 1, {"a": "d1"})
    with j.sweep_lock() as referenced:
        assert referenced == {"d1"}


def test_a_failing_before_commit_rolls_the_row_back(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal

    def boom() -> None:
        raise OSError("disk gone")

    with pytest.raises(OSError):
        j.append(_rec("m", 1, {"a": "d1"}), before_commit=boom)
    assert j.latest("m") is None and j.models() == []
    with j.sweep_lock() as referenced:
        assert referenced == set()
    j.append(_rec("m", 1, {"a": "d1"}))  # the number is free again
    assert j.version_numbers("m") == [1]


def test_second_connection_sees_commits_and_conflicts(make_store) -> None:  # type: ignore[no-untyped-def]
    a, b = make_store().journal, make_store().journal
    a.append(_rec("m", 1))
    assert b.latest("m") == _rec("m", 1)
    with pytest.raises(VersionConflictError):
        b.append(_rec("m", 1))


def test_pins_and_deletes_are_transactional(make_store) -> None:  # type: ignore[no-untyped-def]
    j = make_store().journal
    for v in (1, 2, 3):
        j.append(_rec("m", v, {"fc": f"d{v}"}))
    j.pin("m", 1)
    j.pin("m", 1)  # idempotent
    j.pin("m", 3)
    assert j.pins("m") == {1, 3}
    j.unpin("m", 3)
    assert j.pins("m") == {1}
    j.delete_versions("m", [1, 2])
    assert j.version_numbers("m") == [3] and j.pins("m") == set()
    with j.sweep_lock() as referenced:
        assert referenced == {"d3"}
    j.delete_model("m")
    assert j.models() == [] and j.latest("m") is None


def test_reset_forgets_everything(make_store) -> None:  # type: ignore[no-untyped-def]
    s = make_store()
    s.journal.append(_rec("m", 1, {"a": "d"}))
    s.blobs.put("d", b"x")
    s.reset()
    assert s.journal.models() == [] and list(s.blobs.listing()) == []


def test_blobs_put_is_idempotent_and_listed_with_their_time(make_store) -> None:  # type: ignore[no-untyped-def]
    b = make_store().blobs
    before = time.time() - 1
    b.put("aa11", b"one")
    b.put("aa11", b"ignored: content-addressed, the first write stands")
    b.put("bb22", b"two")
    assert b.get("aa11") == b"one"
    assert b.present(["aa11", "bb22", "cc33"]) == {"aa11", "bb22"}
    listed = dict(b.listing())
    assert set(listed) == {"aa11", "bb22"} and all(t >= before for t in listed.values())
    assert b.delete(["aa11", "cc33"]) == 1
    assert b.present(["aa11"]) == set()
    assert "aa11"[:4] in b.locate("aa11")


def test_a_missing_blob_is_corrupt_and_named(make_store) -> None:  # type: ignore[no-untyped-def]
    from app.store import BlobCorruptError

    b = make_store().blobs
    with pytest.raises(BlobCorruptError) as e:
        b.get("ee99" * 16)
    assert b.locate("ee99" * 16) in str(e.value)


def test_sweep_spares_referenced_and_young_blobs(make_store) -> None:  # type: ignore[no-untyped-def]
    s: Store = make_store(sweep_grace_s=3600)
    s.blobs.put("young", b"y")
    assert s.sweep() == 0 and s.blobs.present(["young"]) == {"young"}
    s2: Store = make_store(sweep_grace_s=0)
    s2.journal.append(_rec("m", 1, {"fc": "kept"}))
    s2.blobs.put("kept", b"k")
    assert s2.sweep() == 1  # "young" is unreferenced and the grace is 0
    assert s2.blobs.present(["young", "kept"]) == {"kept"}
