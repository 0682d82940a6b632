"""`morphserve import` end to end: the CLI writes the bundle the server serves; refusals are one line, exit 1.
Under it, morphserve.capture.importer reports every failure as a CaptureError (capture knows nothing of the CLI).
And the import boundary: nothing on the server side imports morphserve.capture (it runs user code)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from morphserve.capture.importer import import_to_bundle
from morphserve.capture.refusals import CaptureError
from morphserve.graph import from_spec, read_bundle
from tests.forkserver import run_cli

ROOT = Path(__file__).resolve().parents[3]
USER_FILE = Path(__file__).parent / "userfiles" / "refused.py"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(list(args), {"HF_HUB_OFFLINE": "1"})


def test_import_writes_a_bundle_the_server_serves(tmp_path: Path, make_client: Callable[..., TestClient]) -> None:
    out = tmp_path / "vit.zip"
    r = _cli("import", "tests.models.sequence:ViT", "--input", "input:FP32:-1,3,32,32", "-o", str(out), "--name", "vit")
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stdout and "'vit'" in r.stdout
    spec, tensors = read_bundle(out)
    v = from_spec(spec, tensors)
    assert v.model == "vit" and any(n.parameter is not None for n in v.spec.nodes)
    client = make_client(models=[f"vit={out}"])
    x = torch.randn(2, 3, 32, 32)
    body = client.post("/v1/models/vit/infer", json={"inputs": x.tolist()}).json()
    got = torch.tensor(body["outputs"])
    assert torch.allclose(got, v.run(x)[0], atol=1e-4)
    graph = client.get("/v1/models/vit/graph").json()
    kinds = {n["id"]: n["kind"] for n in graph["nodes"]}
    assert kinds["cls_token"] == "parameter" and kinds["encoder_layers_0"] == "layer"


def test_import_refusal_is_one_line_and_exit_code_1(tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    r = _cli("import", f"{USER_FILE}:Branchy", "--input", "x:FP32:-1,4", "-o", str(out))
    assert r.returncode == 1
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: data-dependent control flow"), r.stderr
    assert "refused.py:13" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_import_of_a_file_attribute_with_default_name(tmp_path: Path) -> None:
    out = tmp_path / "good.zip"
    r = _cli("import", f"{USER_FILE}:make_good", "--input", "x:FP32:-1,4", "-o", str(out))
    assert r.returncode == 0, r.stderr
    spec, _ = read_bundle(out)
    assert spec["name"] == "refused" and [n["id"] for n in spec["nodes"]] == ["act", "fc"]


def test_the_importer_raises_capture_errors_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    with pytest.raises(CaptureError, match=r"^data-dependent control flow.*refused\.py:13"):
        import_to_bundle(f"{USER_FILE}:Branchy", ["x:FP32:-1,4"], out)
    with pytest.raises(CaptureError, match=r"^SOURCE 'no_colon': expected path/to/file\.py:ATTR"):
        import_to_bundle("no_colon", ["x:FP32:-1,4"], out)
    missing = tmp_path / "missing" / "x.zip"
    with pytest.raises(CaptureError, match=f"^cannot write {re.escape(str(missing))}: "):
        import_to_bundle(f"{USER_FILE}:make_good", ["x:FP32:-1,4"], missing)
    assert not out.exists() and not missing.parent.exists()
    done = import_to_bundle(f"{USER_FILE}:make_good", ["x:FP32:-1,4"], out)
    assert (done.name, done.nodes, done.layers) == ("refused", 2, 2) and done.params > 0 and out.exists()


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            base = node.module if node.level == 0 else f"<relative>.{node.module}"
            names.add(base)
    return names


def test_server_side_never_imports_capture() -> None:
    server = [
        *(ROOT / "app" / "morphserve").glob("graph/**/*.py"),
        *(ROOT / "app" / "morphserve").glob("serving/**/*.py"),
        *(ROOT / "app" / "morphserve").glob("api/**/*.py"),
        *(ROOT / "app" / "morphserve").glob("store/**/*.py"),
        ROOT / "app/morphserve/main.py",
    ]
    assert len(server) > 20
    for path in server:
        bad = {n for n in _imports(path) if n.startswith("morphserve.capture") or n == "<relative>.capture"}
        assert not bad, f"{path} imports {bad}"
    # and at run time: building the app loads no capture module, nor torch.export
    code = (
        "import sys; from morphserve.main import create_app; from morphserve.settings import Settings; "
        "create_app(Settings(models=['digits'], admin_token='t')); "
        "print(sorted(m for m in sys.modules if m.startswith('morphserve.capture')))"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
