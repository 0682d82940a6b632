"""The store: blobs are content-addressed and verified, the journal is the source of truth, gc keeps what
must be kept, and reloading gives bit-identical weights with layers shared between versions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from app.graph import LiveModel, load_zoo
from app.graph.errors import NotFoundError
from app.store import BlobCorruptError, JournalError, Store
from app.store.blobs import BlobStore
from app.store.journal import Journal, JournalConflict, VersionRecord

IDENTITY_INSERT = {"op": "insert", "after": "fc1", "init": "identity",
                   "layer": {"type": "Linear", "in_features": 128, "out_features": 128}}  # fmt: skip


def _history(tmp_path: Path, edits: int = 3) -> tuple[Store, LiveModel]:
    store = Store(tmp_path)
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current)
    for i in range(edits):
        v = live.propose([{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [float(i)] * 10}}}])
        store.commit(v)
        live.commit(v)
    return store, live


def test_blob_names_are_content_hashes_and_dedupe(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    t = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    a = blobs.put(t)
    b = blobs.put({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).clone()})
    assert a == b and len(blobs.digests()) == 1
    assert torch.equal(blobs.get(a)["weight"], t["weight"])
    assert blobs.put({"weight": torch.zeros(2, 3)}) != a


def test_corrupt_blob_is_detected_and_named(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    d = blobs.put({"w": torch.ones(4)})
    path = blobs.path(d)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BlobCorruptError) as e:
        blobs.get(d)
    assert str(path) in str(e.value)


def test_half_written_temporaries_are_swept(tmp_path: Path) -> None:
    blobs = BlobStore(tmp_path)
    d = blobs.put({"w": torch.ones(4)})
    tmp = blobs.path(d).parent / ".tmp-deadbeef"
    tmp.write_bytes(b"partial")
    assert blobs.sweep_temporaries() == 1 and not tmp.exists() and blobs.path(d).exists()


def test_journal_rejects_a_taken_version(tmp_path: Path) -> None:
    j = Journal(tmp_path / "j.sqlite3")
    rec = VersionRecord("m", 1, None, [], {}, {}, 0.0)
    j.append(rec)
    with pytest.raises(JournalConflict):
        j.append(rec)
    assert j.latest("m") == rec
    mode = sqlite3.connect(tmp_path / "j.sqlite3").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_unreadable_journal_is_reported_with_its_path_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(JournalError) as e:
        Store(tmp_path)
    assert str(path) in str(e.value)
    assert path.read_bytes() == before


def test_reload_is_bit_identical_and_shares_unchanged_layers(tmp_path: Path) -> None:
    store, live = _history(tmp_path)
    x = torch.rand(5, 64)
    fresh = Store(tmp_path)
    for v in range(1, live.current.version + 1):
        loaded = fresh.load("digits", v)
        assert torch.equal(loaded.run(x)[0], live.get(v).run(x)[0])
        assert loaded.spec == live.get(v).spec
    a, b = fresh.load("digits", 2), fresh.load("digits", 3)
    assert a.modules["fc1"] is b.modules["fc1"]  # unchanged layer: one module, not a copy
    assert a.modules["fc3"] is not b.modules["fc3"]


def test_an_edit_writes_only_the_blob_of_the_layer_it_changed(tmp_path: Path) -> None:
    store = Store(tmp_path)
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current)
    before = store.blobs.digests()
    v = live.propose([IDENTITY_INSERT])
    store.commit(v)
    added = store.blobs.digests() - before
    assert len(added) == 1
    assert set(store.blobs.get(added.pop())) == {"weight", "bias"}


def test_gc_keeps_current_pinned_and_last_n_and_sweeps_blobs(tmp_path: Path) -> None:
    store, live = _history(tmp_path, edits=5)  # versions 1..6
    store.pin("digits", 2)
    result = store.gc("digits", keep=2)
    kept = [r.version for r in store.records("digits")]
    assert kept == [2, 5, 6]
    assert result.removed_versions == [1, 3, 4]
    assert result.removed_blobs == 3  # the fc3 blobs of versions 1, 3 and 4
    assert store.blobs.digests() == store.journal.referenced_blobs()
    with pytest.raises(NotFoundError):
        store.load("digits", 3)
    x = torch.rand(2, 64)
    assert torch.equal(Store(tmp_path).load("digits", 2).run(x)[0], live.get(2).run(x)[0])


def test_pin_of_a_missing_version_is_not_found(tmp_path: Path) -> None:
    store, _ = _history(tmp_path, edits=1)
    with pytest.raises(NotFoundError):
        store.pin("digits", 99)
