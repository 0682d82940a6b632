"""The layering rule, checked on the source: imports point one way.

api -> serving -> store -> graph; wire -> graph's torch-free table and converter; nothing imports api but
app/morphserve/main.py; graph imports nothing else of app; the CLI's modules form no circle, and capture (which the
CLI runs) knows nothing of the CLI. A violation names the file and the import (or the circle).
"""

from __future__ import annotations

import ast
import json
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


def _package_of(path: Path) -> str:
    module = _module_of(path)
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _from_target(node: ast.ImportFrom, package: str) -> str:
    """The module `from X import ...` reads from, relative imports resolved against `package`."""
    if node.level:
        base = package.split(".")[: len(package.split(".")) - node.level + 1]
        return ".".join([*base, node.module] if node.module else base)
    return node.module or ""


def _imports(path: Path) -> set[str]:
    """Every `morphserve.*` name a file imports (relative imports resolved), TYPE_CHECKING blocks included."""
    package = _package_of(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
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


# -- circles ---------------------------------------------------------------------------------------------------
def _modules() -> dict[str, Path]:
    return {_module_of(f): f for f in _files()}


def _edges(path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules a file's import statements name: `from p import x` is p.x where that is a module, else p;
    `import p.q` is p.q. A package's __init__ is not an edge of its submodules (Python runs it first, but a
    submodule that imports nothing from it does not depend on it). TYPE_CHECKING blocks count."""
    package = _package_of(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            target = _from_target(node, package)
            found.update(f"{target}.{a.name}" if f"{target}.{a.name}" in modules else target for a in node.names)
    return found & modules.keys()


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One circle of `graph` as [a, b, ..., a], or [] (a depth-first search for a back edge)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str]:
        state[m] = 1
        path.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 1:
                return [*path[path.index(n) :], n]
            if n not in state and (found := visit(n)):
                return found
        path.pop()
        state[m] = 2
        return []

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return []


def _graph(packages: tuple[str, ...]) -> dict[str, set[str]]:
    """The import graph among the modules `packages` name, and theirs."""
    modules = _modules()
    inside = {m: f for m, f in modules.items() if any(m == p or m.startswith(p + ".") for p in packages)}
    return {m: {n for n in _edges(f, modules) if n in inside and n != m} for m, f in inside.items()}


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) == []


def test_the_cli_modules_form_no_circle() -> None:
    graph = _graph(("morphserve.cli",))
    assert len(graph) >= 5 and "morphserve.cli.common" in graph
    assert _cycle(graph) == []


def test_the_cli_plumbing_is_a_leaf() -> None:
    """What every command shares imports no command (so a command can never pull in another, or the root)."""
    graph = _graph(("morphserve.cli",))
    for leaf in ("morphserve.cli.common", "morphserve.cli.describe"):
        assert graph[leaf] == set(), (leaf, graph[leaf])


def test_capture_imports_nothing_of_the_cli() -> None:
    bad = [
        f"{f.relative_to(APP.parent)} imports {m}"
        for f in _files("capture")
        for m in _imports(f)
        if m == "morphserve.cli" or m.startswith("morphserve.cli.")
    ]
    assert bad == []


def test_no_circle_between_registry_and_replication() -> None:
    graph = _graph(("morphserve.serving.registry", "morphserve.serving.replication"))
    assert _cycle(graph) == []


def test_the_cli_starts_without_torch() -> None:
    """`morphserve --help`, `serve --help` and a client command import neither torch nor the server."""
    code = (
        "import sys\n"
        "from morphserve.cli import main\n"
        "runs = (['--help'], ['serve', '--help'], ['edit', '--help'], ['--url', 'http://127.0.0.1:9', 'models'])\n"
        "for argv in runs:\n"
        "    sys.argv = ['morphserve', *argv]\n"
        "    try:\n"
        "        main()\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'morphserve.serving'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=APP.parent, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr
    assert "cannot reach morphserve at http://127.0.0.1:9" in out.stderr


def test_the_graph_package_exports_exactly_its_lazy_names() -> None:
    import morphserve.graph as graph

    assert sorted(graph.__all__) == sorted(graph._EXPORTS)
    for name in graph.__all__:
        assert getattr(graph, name) is not None


def test_the_installed_package_is_morphserve_and_nothing_named_app(tmp_path: Path) -> None:
    """Installed morphserve must not shadow a user's own `app` package: from a directory that is not the source tree,
    `morphserve` imports from the source root and no `app` is importable."""
    probe = (
        "import importlib.util as u, json; "
        "print(json.dumps([u.find_spec('app') is None, u.find_spec('morphserve').origin]))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, check=True)
    no_app, origin = json.loads(out.stdout)
    assert no_app, "a module named app is importable beside morphserve"
    assert Path(origin) == APP / "__init__.py"
