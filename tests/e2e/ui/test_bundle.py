"""The page shipped inside the package is built from the current sources, and installing carries it.

`npm run build` (ui/scripts/stamp.mjs) records a hash of every source file under ui/ and of every file it wrote
into app/morphserve/api/ui_static/build-info.json. Editing a source without rebuilding, or a built file by hand,
fails here.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

from morphserve.api.routes.ui import STATIC_DIR
from tests.conftest import ROOT
from tests.e2e.test_deploy import build_context

UI = ROOT / "ui"
INFO = STATIC_DIR / "build-info.json"


def _files(root: Path) -> list[str]:
    """As stamp.mjs lists them: every file, node_modules, dist and dot-files aside, sorted by path."""
    out = []
    for p in root.rglob("*"):
        rel = p.relative_to(root)
        if p.is_file() and not any(part in ("node_modules", "dist") or part.startswith(".") for part in rel.parts):
            out.append(rel.as_posix())
    return sorted(out)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tree_hash(root: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\n{_sha((root / name).read_bytes())}\n".encode())
    return h.hexdigest()


def test_the_bundle_is_built_from_the_current_sources() -> None:
    info = json.loads(INFO.read_text())
    sources = _files(UI)
    assert "package-lock.json" in sources and "src/main.tsx" in sources and "vite.config.ts" in sources
    assert info["sources"] == len(sources), "a source file was added or removed since the last `npm run build`"
    assert info["source_sha256"] == _tree_hash(UI, sources), (
        "ui/ changed since the shipped bundle was built: run `npm ci && npm run build` in ui/ and commit the result"
    )


def test_the_shipped_files_are_the_ones_the_build_wrote() -> None:
    info = json.loads(INFO.read_text())
    shipped = [n for n in _files(STATIC_DIR) if n != "build-info.json"]
    assert shipped == sorted(info["outputs"]), "files in app/morphserve/api/ui_static differ from the build's"
    for name in shipped:
        assert _sha((STATIC_DIR / name).read_bytes()) == info["outputs"][name], f"{name} was changed after the build"
    index = (STATIC_DIR / "index.html").read_text()
    assert all(f"/ui/{n}" in index for n in shipped if n.startswith("assets/index-")), "index.html and assets disagree"


def test_installing_from_the_docker_context_carries_the_page(tmp_path: Path) -> None:
    context = tmp_path / "context"
    copied = build_context(context)
    assert "app/morphserve/api/ui_static/index.html" in copied
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(context),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("morphserve-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    info = json.loads(INFO.read_text())
    for name in [*info["outputs"], "build-info.json"]:
        assert f"morphserve/api/ui_static/{name}" in names, f"{name} is not in the wheel"
