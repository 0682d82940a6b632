"""The layering rule, checked on the source: imports point one way.

api -> serving -> store -> graph; wire -> graph's torch-free table and converter; nothing imports api but
app/morphserve/main.py; graph imports nothing else of app. A violation names the file and the import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app" / "morphserve"


def _module_of(path: Path) -> str:
    rel = path.relative_to(APP.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every `app.*` module a file imports (relative imports resolved), TYPE_CHECKING blocks included."""
    module = _module_of(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)
    return {m for m in found if m == "morphserve" or m.startswith("morphserve.")}


def _files(sub: str = "") -> list[Path]:
    return sorted((APP / sub).rglob("*.py"))


def _violations(files: list[Path], allowed: tuple[str, ...]) -> list[str]:
    bad = []
    for f in files:
        for m in _imports(f):
            top = ".".join(m.split(".")[:2])
            if not any(top == a or m.startswith(a + ".") or m == a for a in allowed):
                bad.append(f"{f.relative_to(APP.parent)} imports {m}")
    return bad


def test_only_main_and_api_import_api() -> None:
    bad = [
        f"{f.relative_to(APP.parent)} imports {m}"
        for f in _files()
        if f != APP / "main.py" and APP / "api" not in f.parents
        for m in _imports(f)
        if m == "morphserve.api" or m.startswith("morphserve.api.")
    ]
    assert bad == []


def test_graph_imports_nothing_else_of_app() -> None:
    assert _violations(_files("graph"), ("morphserve.graph",)) == []


def test_store_imports_only_graph_and_settings() -> None:
    assert _violations(_files("store"), ("morphserve.store", "morphserve.graph", "morphserve.settings")) == []


def test_serving_imports_neither_api_nor_wire() -> None:
    assert (
        _violations(
            _files("serving"), ("morphserve.serving", "morphserve.store", "morphserve.graph", "morphserve.settings")
        )
        == []
    )


def test_wire_uses_only_the_torch_free_parts_of_graph() -> None:
    assert (
        _violations(
            _files("wire"),
            ("morphserve.wire", "morphserve.graph.datatypes", "morphserve.graph.arrays", "morphserve.graph"),
        )
        == []
    )
    for f in _files("wire"):
        assert all(
            m in ("morphserve.graph", "morphserve.graph.datatypes", "morphserve.graph.arrays")
            or m.startswith(("morphserve.wire", "morphserve.graph.datatypes.", "morphserve.graph.arrays."))
            for m in _imports(f)
        ), f


def test_the_client_and_the_wire_codec_do_not_load_torch() -> None:
    """The Python client and the CLI's client commands start fast and run where torch is not installed."""
    code = "import sys, morphserve.client, morphserve.wire.oip_codec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=APP.parent, check=True)
    assert out.stdout.strip() == "False", out.stderr
