"""Imported models through a real server (issue 12): every family of tests/models/ (and the Hugging Face BERT and
ViT) captured on the client, uploaded, edited over HTTP, and brought back by a restart from the journal.

One server serves all the families selected (a quick run selects `QUICK_HERE`; CI all).
For each model:
- the upload answers 201 and the served outputs match the original module (fp32, 1e-5 x max(1, max|y|));
- an identity insert keeps the outputs, a fresh head changes them, a rollback restores them bit-exactly;
- after a restart the model is back at the same version, and the current and every earlier version (reloaded
  from the journal's blobs) give bit-identical outputs, parameter nodes and tuple-valued nodes included.
The ways in are all used: `Client.create_from_bundle` (most), `AsyncClient.create_from_bundle`, `morphserve
import --upload`, `morphserve create`, and `--model name=model.zip` at start.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from morphserve.capture import capture, write_bundle
from morphserve.client import AsyncClient, Client
from morphserve.graph import from_spec, read_bundle
from tests.conftest import TOKEN
from tests.e2e.restartable import Restartable
from tests.forkserver import run_cli
from tests.models.families import FAMILIES, Family, example, params

BATCH = 3
#: Families uploaded another way than `Client.create_from_bundle` (the CLI captures its own instance).
VIA_CLI_IMPORT = {"audio_cnn": "tests.models.sequence:AudioCNN"}
VIA_CLI_CREATE = {"lstm"}
VIA_ASYNC = {"two_inputs"}
FAST = [name for name, fam in FAMILIES.items() if not fam.slow]
#: A quick run's families here: one for each way in above, and a plain client upload (vit). The other kinds of graph
#: (a residual CNN, a Hugging Face model) are captured by the quick run of tests/unit/capture/test_families.py.
QUICK_HERE = ("vit", *VIA_CLI_IMPORT, *VIA_CLI_CREATE, *VIA_ASYNC)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), {"MORPHSERVE_URL": url, "MORPHSERVE_TOKEN": TOKEN, "HF_HUB_OFFLINE": "1"}, timeout=600)


def _inputs(fam: Family, batch: int = BATCH) -> dict[str, np.ndarray]:
    names = [text.split(":")[0] for text in fam.inputs]
    return {n: t.numpy() for n, t in zip(names, example(fam, batch, seed=11), strict=True)}


def _outputs(c: Client, name: str, x: dict[str, np.ndarray], version: int | None = None) -> list[np.ndarray]:
    return list(c.infer(name, x, version=version).outputs.values())


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.abs(p - q).max()) for p, q in zip(a, b, strict=True))


def _bit_equal(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(p.dtype == q.dtype and np.array_equal(p, q) for p, q in zip(a, b, strict=True))


@dataclass
class Imported:
    """One family on the server: what it computed at each version before the restart (or why it failed)."""

    reference: list[np.ndarray] = field(default_factory=list)  # the original module (or the bundle) on the input
    outputs: dict[int, list[np.ndarray]] = field(default_factory=dict)
    error: BaseException | None = None


def _bundle(name: str, fam: Family, tmp: Path, url: str) -> tuple[Path, list[np.ndarray], bool]:
    """(bundle path, reference outputs, already uploaded): captured here, or by `morphserve import --upload`."""
    path = tmp / f"{name}.zip"
    x = tuple(torch.from_numpy(v) for v in _inputs(fam).values())
    if name in VIA_CLI_IMPORT:
        args = [a for text in fam.inputs for a in ("--input", text)]
        r = _cli(url, "import", VIA_CLI_IMPORT[name], *args, "-o", str(path), "--upload", name)
        assert r.returncode == 0, r.stderr
        assert f"{name}: serving version 1" in r.stdout, r.stdout
        spec, tensors = read_bundle(path)
        return path, [t.numpy() for t in from_spec(spec, tensors).run(*x)], True
    torch.manual_seed(0)
    module = fam.build().eval()
    write_bundle(capture(module, fam.inputs, name=name), path)
    with torch.no_grad():
        want = [t.numpy() for t in torch.utils._pytree.tree_leaves(module(*x)) if isinstance(t, torch.Tensor)]
    return path, want, False


def _upload(name: str, path: Path, url: str) -> dict[str, Any]:
    if name in VIA_CLI_CREATE:
        r = _cli(url, "create", name, str(path), "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)  # type: ignore[no-any-return]
    if name in VIA_ASYNC:

        async def go() -> dict[str, Any]:
            async with AsyncClient(url, TOKEN) as ac:
                return await ac.create_from_bundle(name, path.read_bytes())

        return asyncio.run(go())
    sent: list[int] = []
    with Client(url, TOKEN) as c:
        info = c.create_from_bundle(name, path, progress=lambda done, total: sent.append(done))
    assert sent[0] == 0 and sent[-1] == path.stat().st_size
    return info


def import_and_edit(c: Client, name: str, fam: Family, tmp: Path) -> Imported:
    """Upload `name`, check it serves the original, then versions 2-4: identity insert, fresh head, rollback to 2."""
    rec = Imported()
    path, rec.reference, uploaded = _bundle(name, fam, tmp, c.base_url)
    info = c.model(name) if uploaded else _upload(name, path, c.base_url)
    assert info["name"] == name and info["version"] == 1 and info["versions"] == 1
    if "outputs" in fam.extra:
        assert [o["name"] for o in info["outputs"]] == fam.extra["outputs"]
    x = _inputs(fam)
    rec.outputs[1] = _outputs(c, name, x)
    scale = max(1.0, max(float(np.abs(w).max()) for w in rec.reference))
    assert _max_diff(rec.outputs[1], rec.reference) <= 1e-5 * scale
    graph = c.graph(name)
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert all(kinds.get(layer) == "layer" for layer in fam.layers), sorted(kinds)
    assert all(kinds.get(p) == "parameter" for p in fam.parameters)

    assert c.insert(name, fam.identity, after=fam.insert_after, init="identity", name="inserted")["version"] == 2
    rec.outputs[2] = _outputs(c, name, x)
    assert _max_diff(rec.outputs[2], rec.outputs[1]) <= 1e-5 * scale

    head = next(n for n in graph["nodes"] if n["id"] == fam.head)
    assert c.replace(name, fam.head, head["layer"], seed=123)["version"] == 3
    rec.outputs[3] = _outputs(c, name, x)
    assert _max_diff(rec.outputs[3], rec.outputs[2]) > 1e-4

    assert c.rollback(name, 2)["version"] == 4
    rec.outputs[4] = _outputs(c, name, x)
    assert _bit_equal(rec.outputs[4], rec.outputs[2])
    return rec


def check_restored(c: Client, name: str, fam: Family, rec: Imported) -> None:
    """After a restart: the same version, bit-identical outputs at it and at every earlier version."""
    if rec.error is not None:
        raise rec.error
    info = c.model(name)
    assert (info["version"], info["versions"]) == (4, 4)
    x = _inputs(fam)
    assert _bit_equal(_outputs(c, name, x), rec.outputs[4])
    for version in (1, 2, 3):  # reloaded from the journal's blobs on demand
        assert _bit_equal(_outputs(c, name, x, version), rec.outputs[version]), version
    kinds = {n["id"]: n["kind"] for n in c.graph(name)["nodes"]}
    assert kinds.get("inserted") == "layer"
    assert all(kinds.get(p) == "parameter" for p in fam.parameters)


def _selected(session: pytest.Session) -> list[str]:
    """The families whose restart test this run selected (the quick run's, or all): only those are imported. A run
    that selected none of them (one other test of this module) imports the cheapest, for the fixture's checks."""
    chosen = {
        item.callspec.params["name"]
        for item in session.items
        if isinstance(item, pytest.Function) and item.originalname == "test_imported_model_survives_a_restart"
    }
    return [name for name in FAST if name in chosen] or ["two_inputs"]


@pytest.fixture(scope="module")
def imported(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Restartable, dict[str, Imported]]]:
    tmp = tmp_path_factory.mktemp("import-serve")
    server = Restartable(tmp, "--model", "digits")
    records: dict[str, Imported] = {}
    try:
        with Client(server.server.url, TOKEN, timeout=120) as c:
            for name in _selected(request.session):
                try:
                    records[name] = import_and_edit(c, name, FAMILIES[name], tmp)
                except BaseException as e:  # noqa: BLE001 - reported by that family's test, not by the fixture
                    records[name] = Imported(error=e)
        server.restart()
        yield server, records
    finally:
        server.server.stop()


@pytest.mark.parametrize("name", params(FAST, quick=QUICK_HERE))
def test_imported_model_survives_a_restart(name: str, imported: tuple[Restartable, dict[str, Imported]]) -> None:
    server, records = imported
    with Client(server.server.url, TOKEN, timeout=120) as c:
        check_restored(c, name, FAMILIES[name], records[name])


def test_no_upload_leaves_a_file_behind(imported: tuple[Restartable, dict[str, Imported]]) -> None:
    server, _ = imported
    uploads = server.tmp / "state" / "uploads"
    assert uploads.is_dir() and list(uploads.iterdir()) == []


@pytest.mark.slow
def test_resnet50_survives_a_restart(tmp_path: Path) -> None:
    server = Restartable(tmp_path, "--model", "digits")
    try:
        with Client(server.server.url, TOKEN, timeout=300) as c:
            rec = import_and_edit(c, "resnet50", FAMILIES["resnet50"], tmp_path)
        server.restart()
        with Client(server.server.url, TOKEN, timeout=300) as c:
            check_restored(c, "resnet50", FAMILIES["resnet50"], rec)
    finally:
        server.server.stop()


# -- --model name=model.zip at start ---------------------------------------------------------------------------
def test_an_imported_bundle_serves_from_the_command_line_and_resumes_from_the_journal(tmp_path: Path) -> None:
    fam = FAMILIES["vit"]
    torch.manual_seed(0)
    module = fam.build().eval()
    path = tmp_path / "vit.zip"
    write_bundle(capture(module, fam.inputs, name="vit"), path)
    x = _inputs(fam)
    with torch.no_grad():
        want = [module(*(torch.from_numpy(v) for v in x.values())).numpy()]
    server = Restartable(tmp_path, "--model", f"mine={path}")
    try:
        with Client(server.server.url, TOKEN) as c:
            assert c.model("mine")["version"] == 1
            y1 = _outputs(c, "mine", x)
            assert _max_diff(y1, want) <= 1e-5 * max(1.0, float(np.abs(want[0]).max()))
            c.replace("mine", "head", next(n for n in c.graph("mine")["nodes"] if n["id"] == "head")["layer"], seed=5)
            y2 = _outputs(c, "mine", x)
        torch.manual_seed(1)  # the journal is the truth now: another model in the bundle file changes nothing
        write_bundle(capture(fam.build().eval(), fam.inputs, name="vit"), path)
        server.restart()
        with Client(server.server.url, TOKEN) as c:
            assert c.model("mine")["version"] == 2
            assert _bit_equal(_outputs(c, "mine", x), y2) and _bit_equal(_outputs(c, "mine", x, 1), y1)
    finally:
        server.server.stop()
