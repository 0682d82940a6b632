"""Durability that a SIGKILL cannot show (issue 11, item 5).

A SIGKILL keeps the page cache, so tests/e2e/test_crash_recovery.py would pass with `os.fsync` or
`synchronous=FULL` removed. Here the calls themselves are watched: an acknowledged edit fsynced its new blob (the
file, before its rename) and the blob's directory, all before the journal row was appended; the journal's connection
ran `PRAGMA synchronous=FULL`. And a real process that dies between the blob write and the journal row leaves no
version behind: after a restart the model is at its last row, and the orphan blob is swept by gc.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import morphserve.store.sqlite_journal as sqlite_journal
from morphserve.main import create_app
from morphserve.serving.metrics import Metrics
from morphserve.serving.registry import Registry
from morphserve.settings import Settings
from tests.conftest import AUTH, ROOT, TOKEN
from tests.integration.helpers import X, head_ops, reference

EDITS = "/v1/models/digits/edits"


def test_an_edit_fsyncs_its_blob_and_the_directory_before_the_row(
    make_client: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_client()
    store = c.app.state.registry.store  # type: ignore[attr-defined]
    events: list[tuple[str, str]] = []
    real_fsync, real_append = os.fsync, store.journal.append

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def append(*args: Any, **kwargs: Any) -> Any:
        events.append(("append", ""))
        return real_append(*args, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store.journal, "append", append)
    before = set(store.blobs.root.glob("*/*.safetensors"))
    r = c.post(EDITS, json={"ops": head_ops(7.0)}, headers=AUTH)
    assert r.status_code == 200, r.text
    (blob,) = set(store.blobs.root.glob("*/*.safetensors")) - before  # fc3's new weights
    assert ("append", "") in events
    written = events[: events.index(("append", ""))]
    tmp = [p for what, p in written if what == "fsync" and Path(p).parent == blob.parent and ".tmp-" in p]
    assert tmp, f"the blob was not fsynced before its rename: {events}"
    assert ("fsync", str(blob.parent)) in written[[p for _, p in written].index(tmp[0]) :], (
        f"the blob's directory was not fsynced after the rename: {events}"
    )


def test_the_journal_runs_synchronous_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    statements: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(sqlite_journal.sqlite3, "connect", connect)
    journal = sqlite_journal.SQLiteJournal(tmp_path / "journal.sqlite3")
    try:
        assert "PRAGMA synchronous=FULL" in statements, statements[:10]
        assert journal._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL, on the connection that commits
    finally:
        journal.close()


_DIES_BEFORE_THE_ROW = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from fastapi.testclient import TestClient
    from morphserve.main import create_app
    from morphserve.serving.metrics import Metrics
    from morphserve.serving.registry import Registry
    from morphserve.settings import Settings

    settings = Settings(models=["digits"], admin_token=sys.argv[2], state_dir=Path(sys.argv[1]))
    registry = Registry(settings, Metrics())
    registry.load_from_settings()  # v1 journaled
    root = registry.store.blobs.root
    before = set(root.glob("*/*.safetensors"))

    def die(*args, **kwargs):  # the blobs are written and fsynced; the row is not
        new = set(root.glob("*/*.safetensors")) - before
        print("orphan", *sorted(p.name for p in new), flush=True)
        os._exit(17)

    registry.store.journal.append = die
    client = TestClient(create_app(settings, registry), base_url="http://127.0.0.1:8000")
    bias = {"shape": [10], "data": [5.0] * 10}
    client.post("/v1/models/digits/edits", headers={"Authorization": "Bearer " + sys.argv[2]},
                json={"ops": [{"op": "set_weights", "node": "fc3", "tensors": {
                    "weight": {"shape": [10, 64], "data": [0.0] * 640}, "bias": bias}}]})
    sys.exit(3)  # never reached: the process died inside the commit
""")


def test_a_crash_between_the_blob_and_the_row_leaves_no_version(tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = subprocess.run(
        [sys.executable, "-c", _DIES_BEFORE_THE_ROW, str(state), TOKEN],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 17, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    orphans = proc.stdout.split("orphan", 1)[1].split()
    assert len(orphans) == 1, proc.stdout  # fc3's new weights reached the disk

    settings = Settings(models=["digits"], admin_token=TOKEN, state_dir=state)
    registry = Registry(settings, Metrics())
    try:
        registry.load_from_settings()
        assert registry.store.version_numbers("digits") == [1]  # no row, so no version 2
        assert registry.current("digits").version == 1
        out = registry.current("digits").run(torch.from_numpy(X))[0].numpy()
        np.testing.assert_allclose(out, reference(X), rtol=1e-5, atol=1e-5)
        (blob,) = [p for p in registry.store.blobs.root.glob("*/*.safetensors") if p.name == orphans[0]]
        old = blob.stat().st_mtime - 2 * registry.store.sweep_grace_s - 60
        os.utime(blob, (old, old))  # older than the sweep's grace period: no commit can still be on its way
        assert registry.store.sweep() == 1
        assert not blob.exists()
        registry.current("digits").run(torch.from_numpy(X))  # v1's blobs were not touched
        assert registry.store.load("digits", 1).version == 1
    finally:
        registry.close()


def test_a_corrupt_row_is_reported_with_the_journal_named_and_the_others_serve(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """One model's journal row holds broken JSON: that model is reported (the journal file and the model named)
    and not served; the other model of the same journal serves, and the row is left as it was."""
    state = tmp_path / "state"
    first = Registry(Settings(models=["digits", "mlp"], admin_token=TOKEN, state_dir=state), Metrics())
    first.load_from_settings()
    first.close()
    journal = state / "journal.sqlite3"
    with sqlite3.connect(journal) as db:
        db.execute("UPDATE versions SET spec = '{\"nodes\": [' WHERE model = 'mlp'")
    db.close()

    registry = Registry(Settings(models=[], admin_token=TOKEN, state_dir=state), Metrics())
    try:
        with caplog.at_level("ERROR"):
            registry.load_from_settings()
        assert registry.names() == ["digits"] and "mlp" in registry.failed
        reports = [r.getMessage() for r in caplog.records if "mlp" in r.getMessage()]
        assert reports and str(journal) in reports[0], caplog.text
        # and what the server reports for the model (readiness, GET /v1/models) names the file and the version too
        assert str(journal) in registry.failed["mlp"] and "version 1" in registry.failed["mlp"], registry.failed
        out = registry.current("digits").run(torch.from_numpy(X))[0].numpy()
        np.testing.assert_allclose(out, reference(X), rtol=1e-5, atol=1e-5)
    finally:
        registry.close()
    with sqlite3.connect(journal) as db:
        assert db.execute("SELECT spec FROM versions WHERE model = 'mlp'").fetchone()[0] == '{"nodes": ['
    db.close()


# -- damaged files (issue 11, item 5) ----------------------------------------------------------------------------
def _serve(state: Path, models: list[str]) -> tuple[Registry, TestClient]:
    settings = Settings(models=models, admin_token=TOKEN, state_dir=state)
    registry = Registry(settings, Metrics())
    registry.load_from_settings()
    return registry, TestClient(create_app(settings, registry), base_url="http://127.0.0.1:8000")


def _crashed_copy(tmp_path: Path) -> Path:
    """A state dir as a SIGKILL leaves it: digits at version 1 in the database file (checkpointed), and versions
    2 and 3 acknowledged but only in the write-ahead log (the copy is taken while the server still runs)."""
    state = tmp_path / "state"
    registry, client = _serve(state, ["digits"])
    try:
        with sqlite3.connect(state / "journal.sqlite3") as db:
            assert db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        db.close()
        for const in (2.0, 3.0):
            r = client.post(EDITS, json={"ops": head_ops(const)}, headers=AUTH)
            assert r.status_code == 200, r.text
        crashed = tmp_path / "crashed"
        shutil.copytree(state, crashed)
    finally:
        registry.close()
    assert (crashed / "journal.sqlite3-wal").stat().st_size > 0
    return crashed


def _wal_frames(wal: Path) -> tuple[int, list[bool]]:
    """The log's frame size and which frames commit a transaction (the format is SQLite's, read independently of
    morphserve.store.sqlite_wal)."""
    data = wal.read_bytes()
    frame = 24 + int.from_bytes(data[8:12], "big")
    commits = [int.from_bytes(data[at + 4 : at + 8], "big") != 0 for at in range(32, len(data) - frame + 1, frame)]
    return frame, commits


def test_a_damaged_write_ahead_log_is_reported_kept_and_no_edit_is_written_over_it(tmp_path: Path) -> None:
    """One flipped byte in the first frame of the `-wal` file: SQLite alone would silently serve version 1 and
    number the next edit 2 again. The damage is reported (the log named), a copy of the log is kept, edits are
    refused with that reason while inference goes on, and edits resume once the operator moves the copy away."""
    state = _crashed_copy(tmp_path)
    wal = state / "journal.sqlite3-wal"
    frame, commits = _wal_frames(wal)
    assert sum(commits) >= 2, commits  # the two edits' transactions, after the damaged frame
    damaged = bytearray(wal.read_bytes())
    damaged[32 + 24 + 100] ^= 0xFF  # page data of frame 1
    wal.write_bytes(damaged)

    registry, client = _serve(state, ["digits"])
    try:
        reason = registry.store.unavailable
        assert reason is not None and str(wal) in reason and "frame 1 " in reason, reason
        kept = state / "journal.sqlite3-wal.damaged"
        assert kept.read_bytes() == bytes(damaged)
        assert registry.current("digits").version == 1  # what SQLite can verify
        r = client.post(EDITS, json={"ops": head_ops(9.0)}, headers=AUTH)
        assert r.status_code == 503 and str(kept) in r.json()["error"], r.text
        assert registry.current("digits").version == 1
        r = client.post("/v1/models/digits/infer", json={"inputs": X.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"]), reference(X), rtol=1e-4, atol=1e-4)
    finally:
        registry.close()

    registry, client = _serve(state, ["digits"])  # a restart does not forget: the copy is still there
    try:
        assert registry.store.unavailable is not None and str(kept) in registry.store.unavailable
    finally:
        registry.close()
    kept.rename(tmp_path / "recovered-elsewhere.wal")
    registry, client = _serve(state, ["digits"])
    try:
        assert registry.store.unavailable is None
        r = client.post(EDITS, json={"ops": head_ops(9.0)}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == 2, r.text
    finally:
        registry.close()


def test_a_torn_last_transaction_in_the_write_ahead_log_is_not_damage(tmp_path: Path) -> None:
    """A crash while the last transaction was being written (never acknowledged: its fsync never returned) leaves
    its frames half there; that is the normal end of a log, so edits go on from the version before it."""
    state = _crashed_copy(tmp_path)
    wal = state / "journal.sqlite3-wal"
    frame, commits = _wal_frames(wal)
    with open(wal, "r+b") as f:
        f.truncate(32 + len(commits) * frame - frame // 2)  # half of the last frame: version 3's commit
    registry, client = _serve(state, ["digits"])
    try:
        assert registry.store.unavailable is None
        assert registry.current("digits").version == 2
        r = client.post(EDITS, json={"ops": head_ops(9.0)}, headers=AUTH)
        assert r.status_code == 200 and r.json()["version"] == 3, r.text
    finally:
        registry.close()


def _page_offset(journal: Path, table: str) -> int:
    """The byte offset in `journal` of the (only) page of `table`."""
    with sqlite3.connect(journal) as db:
        (page,) = db.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,)).fetchone()
        size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    return int((page - 1) * size)


def _damage(journal: Path, offset: int) -> None:
    with open(journal, "r+b") as f:
        f.seek(offset + 8)  # past the page header's first bytes: its cell pointers now point nowhere
        f.write(b"\xa5" * 2000)


def test_a_damaged_index_page_is_reported_and_every_model_serves(tmp_path: Path) -> None:
    """A damaged page that no model's rows need (an index gc uses): the journal is reported damaged (the file
    named), edits and gc are refused so nothing is written over it, and both models serve."""
    state = tmp_path / "state"
    registry, _ = _serve(state, ["digits", "mlp"])
    registry.close()
    journal = state / "journal.sqlite3"
    _damage(journal, _page_offset(journal, "version_blobs_digest"))
    before = journal.read_bytes()

    registry, client = _serve(state, [])
    try:
        reason = registry.store.unavailable
        assert reason is not None and str(journal) in reason and "damaged" in reason, reason
        assert sorted(registry.names()) == ["digits", "mlp"] and registry.readiness().ready
        r = client.post("/v1/models/digits/infer", json={"inputs": X.tolist()})
        assert r.status_code == 200, r.text
        np.testing.assert_allclose(np.array(r.json()["outputs"]), reference(X), rtol=1e-4, atol=1e-4)
        r = client.post(EDITS, json={"ops": head_ops(9.0)}, headers=AUTH)
        assert r.status_code == 503 and str(journal) in r.json()["error"], r.text
        assert client.post("/v1/models/digits/gc", json={"keep": 1}, headers=AUTH).status_code == 503
    finally:
        registry.close()
    assert journal.read_bytes() == before  # left exactly as found


def test_a_damaged_table_page_is_reported_and_the_server_stays_up(tmp_path: Path) -> None:
    """The page that holds every version row is damaged: no model can be read. Instead of a traceback at start,
    the server comes up, not ready, with the journal named in its readiness; `--model digits` is not written
    over the damaged journal either, and is reported."""
    state = tmp_path / "state"
    registry, _ = _serve(state, ["digits"])
    registry.close()
    journal = state / "journal.sqlite3"
    _damage(journal, _page_offset(journal, "versions"))

    registry, client = _serve(state, ["digits"])
    try:
        assert registry.names() == []
        readiness = registry.readiness()
        assert not readiness.ready and str(journal) in (readiness.reason or ""), readiness
        r = client.get("/v2/health/ready")
        assert r.status_code == 503, r.text
        assert client.get("/v2/health/live").status_code == 200
    finally:
        registry.close()
