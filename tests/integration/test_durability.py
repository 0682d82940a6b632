"""Durability that a SIGKILL cannot show (issue 11, item 5).

A SIGKILL keeps the page cache, so tests/e2e/test_crash_recovery.py would pass with `os.fsync` or
`synchronous=FULL` removed. Here the calls themselves are watched: an acknowledged edit fsynced its new blob (the
file, before its rename) and the blob's directory, all before the journal row was appended; the journal's connection
ran `PRAGMA synchronous=FULL`. And a real process that dies between the blob write and the journal row leaves no
version behind: after a restart the model is at its last row, and the orphan blob is swept by gc.
"""

from __future__ import annotations

import os
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

import app.store.sqlite_journal as sqlite_journal
from app.serving.metrics import Metrics
from app.serving.registry import Registry
from app.settings import Settings
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
    assert ("fsync", str(blob.parent)) in written[[p for _, p in written].index(tmp[0]) :], \
        f"the blob's directory was not fsynced after the rename: {events}"  # fmt: skip


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
    from app.main import create_app
    from app.serving.metrics import Metrics
    from app.serving.registry import Registry
    from app.settings import Settings

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
    proc = subprocess.run([sys.executable, "-c", _DIES_BEFORE_THE_ROW, str(state), TOKEN], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
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
