"""`serve --model-dir DIR`: a model repository as KServe's storage initializer leaves one in /mnt/models.

Bundles come from `morphserve export` of zoo models on a running server; each layout KServe can leave is served by
a real server: several zips (named by file stem), one zip under any name renamed by `--model-name` (KServe passes
the InferenceService's name, here with KServe's own spelling of the flags), and a bundle unpacked in place (the
storage initializer unzips an archive it downloads). Outputs are compared with the exporting server's.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import TOKEN, ServerProcess
from tests.forkserver import run_cli

X = {"digits": [[0.25] * 64], "mlp": [[0.5] * 784]}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, list[float]]]]:
    """digits.zip and mlp.zip exported by `morphserve export` from a server, and that server's outputs."""
    out = tmp_path_factory.mktemp("exports")
    s = ServerProcess(
        ["--model", "digits", "--model", "mlp", "--admin-token", TOKEN, "--state-dir", str(out / "state")],
        log=out / "exporter.log",
    ).wait_ready()
    try:
        outputs = {}
        for model in ("digits", "mlp"):
            r = run_cli(["export", model, "1", "-o", str(out / f"{model}.zip")], {"MORPHSERVE_URL": s.url})
            assert r.returncode == 0, r.stderr
            outputs[model] = httpx.post(f"{s.url}/v1/models/{model}/infer", json={"inputs": X[model]}).json()["outputs"]
    finally:
        s.stop()
    yield out, outputs


def _serve(tmp: Path, *args: str) -> ServerProcess:
    tmp.mkdir(exist_ok=True)
    return ServerProcess([*args, "--state-dir", str(tmp / "state")], log=tmp / "server.log").wait_ready()


def _models(url: str) -> list[str]:
    return sorted(m["name"] for m in httpx.get(f"{url}/v1/models", timeout=10).json()["models"])


def _check(url: str, name: str, zoo: str, outputs: dict[str, list[float]]) -> None:
    r = httpx.post(f"{url}/v1/models/{name}/infer", json={"inputs": X[zoo]}, timeout=30)
    assert r.status_code == 200, r.text
    assert np.allclose(r.json()["outputs"], outputs[zoo], rtol=1e-5, atol=1e-6)


def test_every_bundle_of_the_directory_is_served_by_its_file_stem(
    exported: tuple[Path, dict[str, list[float]]], tmp_path: Path
) -> None:
    src, outputs = exported
    repo = tmp_path / "models"
    repo.mkdir()
    (repo / "alpha.zip").write_bytes((src / "digits.zip").read_bytes())
    (repo / "beta.zip").write_bytes((src / "mlp.zip").read_bytes())
    (repo / "..data").mkdir()  # what a Kubernetes volume keeps beside the files: not a model
    s = _serve(tmp_path, "--model-dir", str(repo))
    try:
        assert _models(s.url) == ["alpha", "beta"]  # and not the default digits: --model-dir replaces it
        _check(s.url, "alpha", "digits", outputs)
        _check(s.url, "beta", "mlp", outputs)
        assert httpx.get(f"{s.url}/v2/models/alpha/ready").status_code == 200
    finally:
        s.stop()


def test_kserve_layouts_one_bundle_named_by_the_inference_service(
    exported: tuple[Path, dict[str, list[float]]], tmp_path: Path
) -> None:
    src, outputs = exported
    one = tmp_path / "one"
    one.mkdir()
    (one / "model-2026-12.zip").write_bytes((src / "mlp.zip").read_bytes())
    unpacked = tmp_path / "unpacked"  # the storage initializer unzips what it downloads: spec.json at the root
    with zipfile.ZipFile(src / "digits.zip") as z:
        z.extractall(unpacked)
    a = _serve(tmp_path / "a", "--model_dir", str(one), "--model_name", "my-isvc")  # KServe's spelling
    b = _serve(tmp_path / "b", "--model-repository", str(unpacked), "--model-name", "digits-isvc", "--model", "mlp")
    try:
        assert _models(a.url) == ["my-isvc"]
        _check(a.url, "my-isvc", "mlp", outputs)
        assert _models(b.url) == ["digits-isvc", "mlp"]  # --model given explicitly is served beside it
        _check(b.url, "digits-isvc", "digits", outputs)
        r = httpx.post(
            f"{b.url}/v2/models/digits-isvc/infer",
            json={"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": X["digits"][0]}]},
        )
        assert r.status_code == 200 and r.json()["model_name"] == "digits-isvc", r.text
    finally:
        a.stop()
        b.stop()


def test_a_directory_without_a_bundle_is_one_line_and_exit_1(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a model")
    r = run_cli(["serve", "--model-dir", str(tmp_path), "--port", "0", "--state-dir", str(tmp_path / "state")])
    assert r.returncode == 1, r.stderr
    assert "holds no bundle" in r.stderr and "Traceback" not in r.stderr, r.stderr
