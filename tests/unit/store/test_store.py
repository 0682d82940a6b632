"""The store on every backend: blobs are content-addressed and verified, the journal is the truth, gc keeps what
must be kept and never strands a commit, reloading gives bit-identical weights with layers shared between versions.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from morphserve.graph import LiveModel, load_zoo
from morphserve.graph.errors import NotFoundError
from morphserve.store import (
    BlobCorruptError,
    JournalError,
    JournalUnreachableError,
    Store,
    StoreUnavailableError,
    VersionConflictError,
    VersionRecord,
)
from morphserve.store.blobs import DirBlobs
from morphserve.store.memory import MemoryBlobs, MemoryJournal
from morphserve.store.sqlite_journal import SQLiteJournal
from morphserve.store.store import encode

IDENTITY_INSERT = {
    "op": "insert",
    "after": "fc1",
    "init": "identity",
    "layer": {"type": "Linear", "in_features": 128, "out_features": 128},
}


def _bias(i: float) -> list[dict[str, object]]:
    return [{"op": "set_weights", "node": "fc3", "tensors": {"bias": {"shape": [10], "data": [i] * 10}}}]


def _history(store: Store, edits: int = 3) -> LiveModel:
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current, create=True)
    for i in range(edits):
        v = live.propose(_bias(float(i)))
        store.commit(v)
        live.commit(v)
    return live


def _digests(store: Store) -> set[str]:
    return {d for d, _ in store.blobs.listing()}


def test_blob_names_are_content_hashes_and_dedupe(make_store) -> None:  # type: ignore[no-untyped-def]
    t = {"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    a, data = encode(t)
    b, same = encode({"weight": torch.arange(6, dtype=torch.float32).reshape(2, 3).clone()})
    assert a == b and data == same and encode({"weight": torch.zeros(2, 3)})[0] != a
    store = make_store()
    store.blobs.put(a, data)
    assert torch.equal(store.tensors(a)["weight"], t["weight"])


def test_corrupt_blob_is_detected_and_named(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    digest, data = encode({"w": torch.ones(4)})
    damaged = bytearray(data)
    damaged[-1] ^= 0xFF
    store.blobs.put(digest, bytes(damaged))
    with pytest.raises(BlobCorruptError) as e:
        store.tensors(digest)
    assert store.blobs.locate(digest) in str(e.value)


def test_reload_is_bit_identical_and_shares_unchanged_layers(make_store) -> None:  # type: ignore[no-untyped-def]
    live = _history(make_store())
    x = torch.rand(5, 64)
    fresh = make_store()
    for v in range(1, live.current.version + 1):
        loaded = fresh.load("digits", v)
        assert torch.equal(loaded.run(x)[0], live.get(v).run(x)[0])
        assert loaded.spec == live.get(v).spec
    a, b = fresh.load("digits", 2), fresh.load("digits", 3)
    assert a.modules["fc1"] is b.modules["fc1"]  # unchanged layer: one module, not a copy
    assert a.modules["fc3"] is not b.modules["fc3"]


def test_an_edit_writes_only_the_blob_of_the_layer_it_changed(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current, create=True)
    before = _digests(store)
    store.commit(live.propose([IDENTITY_INSERT]))
    added = _digests(store) - before
    assert len(added) == 1
    assert set(store.tensors(added.pop())) == {"weight", "bias"}


def test_gc_keeps_current_pinned_and_last_n_and_sweeps_blobs(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    live = _history(store, edits=5)  # versions 1..6
    store.pin("digits", 2)
    result = store.gc("digits", keep=2)
    assert store.version_numbers("digits") == [2, 5, 6]
    assert result.removed_versions == [1, 3, 4]
    assert result.removed_blobs == 3  # the fc3 blobs of versions 1, 3 and 4
    with store.journal.sweep_lock() as referenced:
        assert _digests(store) == referenced
    with pytest.raises(NotFoundError):
        store.load("digits", 3)
    x = torch.rand(2, 64)
    assert torch.equal(make_store().load("digits", 2).run(x)[0], live.get(2).run(x)[0])


def test_a_sweep_between_blob_write_and_row_cannot_strand_the_commit(make_store) -> None:  # type: ignore[no-untyped-def]
    """Another process's gc runs after this commit wrote its new blob but before its journal row: the sweep deletes
    the (still unreferenced) blob, and the commit must notice inside its transaction and write it again."""
    store, other = make_store(), make_store(sweep_grace_s=0)
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current, create=True)
    v2 = live.propose(_bias(5.0))
    real_put = store.blobs.put
    swept: list[int] = []

    def put_then_sweep(digest: str, data: bytes) -> None:
        real_put(digest, data)
        if not swept:
            swept.append(other.sweep())  # the other process's gc, in the window

    store.blobs.put = put_then_sweep  # type: ignore[method-assign]
    store.commit(v2)
    store.blobs.put = real_put  # type: ignore[method-assign]
    assert swept == [1]  # the sweep really deleted the new fc3 blob
    x = torch.rand(3, 64)
    assert torch.equal(make_store().load("digits", 2).run(x)[0], v2.run(x)[0])


def test_commit_with_create_returns_a_new_incarnation_per_creation(make_store) -> None:  # type: ignore[no-untyped-def]
    store, other = make_store(), make_store()
    live = LiveModel(load_zoo("digits"))
    first = store.commit(live.current, create=True)
    assert first is not None and re.fullmatch(r"[0-9a-f]{32}", first)
    assert other.heads()["digits"].incarnation == first and other.heads()["digits"].version == 1
    v2 = live.propose(_bias(1.0))
    assert store.commit(v2) is None
    assert other.heads()["digits"].version == 2
    with pytest.raises(VersionConflictError, match="exists"):
        other.commit(LiveModel(load_zoo("digits")).current, create=True)  # another replica creating it too
    store.delete_model("digits")
    with pytest.raises(VersionConflictError, match="does not exist"):
        other.commit(live.propose(_bias(2.0)))  # an edit of the deleted model: not a resurrection
    again = other.commit(LiveModel(load_zoo("digits")).current, create=True)
    assert again not in (None, first) and store.heads()["digits"].incarnation == again


@pytest.mark.parametrize("backend", ["postgresql", "postgresql+dir"])
def test_a_damaged_cache_entry_is_fetched_again_and_rewritten(make_store) -> None:  # type: ignore[no-untyped-def]
    """Each replica caches the blobs it loads; a cached copy that fails its hash check is not corruption (the shared
    copy is fine): the Store repairs it from the shared store and the next read is local again."""
    live = _history(make_store(), edits=1)
    replica = make_store()
    digest = replica.journal.get("digits", 2).blobs["fc3"]
    assert torch.equal(replica.tensors(digest)["bias"], live.get(2).modules["fc3"].bias)
    entry = replica.blobs.local.path(digest)  # type: ignore[attr-defined]
    good = entry.read_bytes()
    entry.write_bytes(good[:-1] + bytes([good[-1] ^ 0xFF]))
    assert torch.equal(replica.tensors(digest)["bias"], live.get(2).modules["fc3"].bias)
    assert entry.read_bytes() == good


def test_pin_of_a_missing_version_is_not_found(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    _history(store, edits=1)
    with pytest.raises(NotFoundError):
        store.pin("digits", 99)


def test_delete_model_removes_rows_and_blobs(make_store) -> None:  # type: ignore[no-untyped-def]
    store = make_store()
    _history(store, edits=2)
    store.delete_model("digits")
    assert store.models() == [] and _digests(store) == set()


def test_an_unavailable_store_refuses_writes_and_still_reads() -> None:
    store = Store(MemoryJournal(), MemoryBlobs(), unavailable="the state dir /x is read-only")
    live = LiveModel(load_zoo("digits"))
    store.commit(live.current, startup=True, create=True)  # what the server was told to serve is still recorded
    assert store.load("digits").version == 1
    for write in (
        lambda: store.commit(live.propose(_bias(1.0))),
        lambda: store.pin("digits", 1),
        lambda: store.gc("digits", 1),
        lambda: store.delete_model("digits"),
    ):
        with pytest.raises(StoreUnavailableError, match="read-only"):
            write()
    assert store.version_numbers("digits") == [1]


# -- SQLite specifics ------------------------------------------------------------------------------------------
def test_sqlite_journal_is_wal_and_full_sync(tmp_path: Path) -> None:
    SQLiteJournal(tmp_path / "j.sqlite3").close()
    db = sqlite3.connect(tmp_path / "j.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "4"


def test_unreadable_journal_is_reported_with_its_path_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "journal.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    before = path.read_bytes()
    with pytest.raises(JournalError) as e:
        SQLiteJournal(path)
    assert str(path) in str(e.value)
    assert path.read_bytes() == before


def test_a_journal_of_a_newer_release_is_refused(tmp_path: Path) -> None:
    SQLiteJournal(tmp_path / "j.sqlite3").close()
    with sqlite3.connect(tmp_path / "j.sqlite3") as db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    with pytest.raises(JournalError, match="newer"):
        SQLiteJournal(tmp_path / "j.sqlite3")


def test_a_release_1_journal_is_migrated_with_its_blob_references(tmp_path: Path) -> None:
    """Release 1 had no meta or version_blobs table; gc must still know which blobs the old rows reference."""
    path = tmp_path / "journal.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE versions (model TEXT NOT NULL, version INTEGER NOT NULL, parent INTEGER, ops TEXT "
            "NOT NULL, spec TEXT NOT NULL, blobs TEXT NOT NULL, shapes TEXT NOT NULL, created_at REAL NOT NULL, "
            "PRIMARY KEY (model, version))"
        )
        db.execute("CREATE TABLE pins (model TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (model, version))")
        db.execute("INSERT INTO versions VALUES ('m', 1, NULL, '[]', '{}', '{\"fc\": \"d1\"}', '{}', 0.0)")
    j = SQLiteJournal(path)
    with j.sweep_lock() as referenced:
        assert referenced == {"d1"}
    assert j.latest("m") is not None and j.latest("m").blobs == {"fc": "d1"}  # type: ignore[union-attr]
    assert j.heads()["m"].version == 1  # and it went on to schema 3


def test_a_schema_2_journal_gains_models_with_incarnations_and_replicas(tmp_path: Path) -> None:
    """Schema 2 (release 2) had no `models`, `replicas` or `committed_at`: each model gets a fresh incarnation, its
    rows their creation time as commit time, and the journal goes on taking edits (which need the models row)."""
    path = tmp_path / "journal.sqlite3"
    j = SQLiteJournal(path)
    j.append(VersionRecord("m", 1, None, [], {}, {"fc": "d1"}, 10.0), create="x")
    j.append(VersionRecord("m", 2, 1, [], {}, {"fc": "d2"}, 20.0))
    j.append(VersionRecord("n", 1, None, [], {}, {}, 30.0), create="y")
    j.close()
    with sqlite3.connect(path) as db:  # back to what schema 2 looked like
        db.execute("DROP TABLE models")
        db.execute("DROP TABLE replicas")
        db.execute("ALTER TABLE versions DROP COLUMN committed_at")
        db.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    j = SQLiteJournal(path)
    heads = j.heads()
    assert {m: (h.version, h.committed_at) for m, h in heads.items()} == {"m": (2, 20.0), "n": (1, 30.0)}
    assert heads["m"].incarnation != heads["n"].incarnation
    assert all(re.fullmatch(r"[0-9a-f]{32}", h.incarnation) for h in heads.values())
    j.append(VersionRecord("m", 3, 2, [], {}, {}, 40.0))
    assert j.version_numbers("m") == [1, 2, 3] and j.replicas() == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0] == "4"


def test_a_schema_3_journal_gains_staging_and_documents(tmp_path: Path) -> None:
    """Schema 3 had no `staged` column, no current-version pointer and no documents: every model's newest version
    is its current one, and the journal goes on taking staged versions, promotions and documents."""
    path = tmp_path / "journal.sqlite3"
    j = SQLiteJournal(path)
    j.append(VersionRecord("m", 1, None, [], {}, {}, 10.0), create="x")
    j.append(VersionRecord("m", 2, 1, [], {}, {}, 20.0))
    j.close()
    with sqlite3.connect(path) as db:  # back to what schema 3 looked like
        db.execute("DROP TABLE docs")
        db.execute("ALTER TABLE versions DROP COLUMN staged")
        db.execute("ALTER TABLE models DROP COLUMN current")
        db.execute("ALTER TABLE models DROP COLUMN docs_rev")
        db.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    j = SQLiteJournal(path)
    assert (j.heads()["m"].version, j.heads()["m"].current) == (2, 2)
    j.append(VersionRecord("m", 3, 2, [], {}, {}, 30.0, staged=True))
    assert (j.heads()["m"].version, j.heads()["m"].current) == (3, 2)
    j.put_doc("m", "rollout", "r1", {"candidate": 3}, expect_rev=0, current=3)
    assert j.heads()["m"].current == 3 and j.doc("m", "rollout", "r1").value == {"candidate": 3}  # type: ignore[union-attr]
    assert j.get("m", 3).staged and not j.get("m", 2).staged  # type: ignore[union-attr]


_HOLD_LOCK = """
import sys
from pathlib import Path
from morphserve.store.sqlite_journal import SQLiteJournal
with SQLiteJournal(Path(sys.argv[1])).edit_lock(sys.argv[2]):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_sqlite_edit_lock_excludes_another_process_and_dies_with_it(tmp_path: Path) -> None:
    """The workers of `serve --workers N` share the state dir: a lock file per model under `locks/`."""
    root = Path(__file__).resolve().parents[3]
    path = tmp_path / "journal.sqlite3"
    mine = SQLiteJournal(path)

    def child(model: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", _HOLD_LOCK, str(path), model],
            cwd=root,
            text=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert p.stdout is not None and p.stdout.readline().strip() == "held"
        return p

    holder = child("m")
    try:
        with pytest.raises(JournalUnreachableError, match="edit lock"), mine.edit_lock("m", timeout_s=0.3):
            pass
        with mine.edit_lock("n", timeout_s=1):  # other models are free
            pass
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.wait(30) == 0
        with mine.edit_lock("m", timeout_s=5):  # released by the other process
            pass
        killed = child("m")
        killed.kill()  # a SIGKILLed holder: the kernel drops its lock
        killed.wait()
        with mine.edit_lock("m", timeout_s=5):
            pass
    finally:
        holder.kill()
    assert (tmp_path / "locks" / "m.lock").exists()
    assert {p.name for p in (tmp_path / "locks").iterdir()} == {"m.lock", "n.lock"}


def test_lock_file_names_are_safe_for_any_model_name() -> None:
    from morphserve.store.locks import lock_name

    assert lock_name("resnet-50.v2") == "resnet-50.v2.lock"
    for hostile in ("../../etc/passwd", ".hidden", "a/b", "", "x" * 200):
        name = lock_name(hostile)
        assert "/" not in name and not name.startswith(".") and len(name) < 80 and name != lock_name("other")


def test_dir_blobs_sweep_half_written_temporaries(tmp_path: Path) -> None:
    blobs = DirBlobs(tmp_path)
    digest, data = encode({"w": torch.ones(4)})
    blobs.put(digest, data)
    tmp = blobs.path(digest).parent / ".tmp-deadbeef"
    tmp.write_bytes(b"partial")
    assert blobs.sweep_temporaries() == 1 and not tmp.exists() and blobs.path(digest).exists()


def test_a_full_journal_is_a_storage_error_that_leaves_no_row(tmp_path: Path) -> None:
    """SQLite rolls a transaction back by itself on SQLITE_FULL; a second ROLLBACK used to raise "cannot rollback -
    no transaction is active" over the real cause. `max_page_count` makes the database full for real."""
    from morphserve.store import StorageFullError, VersionRecord

    j = SQLiteJournal(tmp_path / "j.sqlite3")
    pages = j._db.execute("PRAGMA page_count").fetchone()[0]
    j._db.execute(f"PRAGMA max_page_count={pages}")
    big = VersionRecord("m", 1, None, [], {"blob": "x" * 200_000}, {"a": "d"}, 0.0)
    with pytest.raises(StorageFullError) as e:
        j.append(big, create="i1")
    assert str(tmp_path / "j.sqlite3") in str(e.value) and e.value.needed and e.value.needed > 200_000
    assert j.latest("m") is None
    j._db.execute("PRAGMA max_page_count=1073741823")
    j.append(big, create="i1")  # space is back: the same version number (and model) commits
    assert j.version_numbers("m") == [1]
