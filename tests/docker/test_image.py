"""The image in a real Docker engine: user, health, inference, auth, volume, SIGTERM, graphviz, size.

scripts/docker-test.sh builds the CPU image (MORPHSERVE_TEST_IMAGE, default morphserve:cpu) and runs these with
`-m docker`. Every container is published on 127.0.0.1 only, at a free port, and removed with its volumes after
its test (or module, for the read-only checks that share one container).
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import AUTH, TOKEN
from tests.docker.engine import IMAGE, STATE_DIR, Container, Engine, docker, inspect
from tests.integration.helpers import X, assert_error, head_ops, reference

pytestmark = pytest.mark.docker

UID = "10001"
# The CPU image is about 1.4 GB; PyPI's CUDA torch alone would add more than 4 GB of nvidia-* libraries.
CPU_IMAGE_MAX_BYTES = 2_500_000_000


@pytest.fixture(scope="module")
def served(module_engine: Engine) -> Container:
    """One container for the read-only checks; `--model mlp` after the image name reaches `morphserve serve`."""
    c = module_engine.run("--model", "digits", "--model", "mlp")
    c.wait_healthy()
    return c


def edit(c: Container, const: float, token: str = TOKEN) -> dict[str, Any]:
    """An acknowledged edit: digits' head then outputs `const` for every logit."""
    with c.client(token) as http:
        r = http.post("/v1/models/digits/edits", json={"ops": head_ops(const)})
    assert r.status_code == 200, r.text
    return r.json()


def outputs(c: Container, version: int | None = None) -> tuple[int, np.ndarray]:
    """(model_version, outputs) of digits on X, of the current version or of `version` (OIP per-version route)."""
    with c.client() as http:
        if version is None:
            r = http.post("/v1/models/digits/infer", json={"inputs": X.tolist()})
            assert r.status_code == 200, r.text
            return r.json()["model_version"], np.asarray(r.json()["outputs"], dtype=np.float32)
        body = {"inputs": [{"name": "input", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]}
        r = http.post(f"/v2/models/digits/versions/{version}/infer", json=body)
        assert r.status_code == 200, r.text
        out = r.json()["outputs"][0]
        return int(r.json()["model_version"]), np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


def versions(c: Container) -> list[int]:
    with c.client() as http:
        r = http.get("/v1/models/digits/versions")
    assert r.status_code == 200, r.text
    return [v["version"] for v in r.json()["versions"]]


def test_runs_as_uid_10001_and_turns_healthy_under_its_own_healthcheck(served: Container) -> None:
    container, image = inspect("container", served.name), inspect("image", IMAGE)
    assert container["Config"]["User"] == f"{UID}:{UID}"
    # --health-interval changed only the interval: the probe is the image's HEALTHCHECK, on /v2/health/ready.
    probe = container["Config"]["Healthcheck"]["Test"]
    assert probe == image["Config"]["Healthcheck"]["Test"] and "/v2/health/ready" in " ".join(probe), probe
    health = served.state()["Health"]
    assert health["Status"] == "healthy" and any(p["ExitCode"] == 0 for p in health["Log"]), health

    status = served.exec("cat", "/proc/1/status").stdout  # the server is PID 1 (exec-form ENTRYPOINT)
    uids = next(line.split()[1:] for line in status.splitlines() if line.startswith("Uid:"))
    assert uids == [UID] * 4, status
    assert "morphserve" in served.exec("cat", "/proc/1/cmdline").stdout
    # The state volume belongs to that user, and the server wrote its journal into it.
    assert served.exec("stat", "-c", "%u:%g", STATE_DIR).stdout.strip() == f"{UID}:{UID}"
    files = served.exec("find", STATE_DIR, "-mindepth", "1").stdout.split()
    assert files, "nothing written to the state dir"
    assert served.exec("find", STATE_DIR, "!", "-uid", UID).stdout.strip() == ""


def test_inference_v1_and_oip_v2_in_the_container(served: Container) -> None:
    with served.client() as http:
        names = {m["name"] for m in http.get("/v1/models").json()["models"]}
    assert names == {"digits", "mlp"}, names
    expected = reference(X)  # the shipped weights through the host's torch
    version, v1 = outputs(served)
    assert version == 1
    np.testing.assert_allclose(v1, expected, rtol=1e-5, atol=1e-5)
    version, v2 = outputs(served, version=1)
    assert version == 1
    np.testing.assert_allclose(v2, expected, rtol=1e-5, atol=1e-5)


def test_graph_svg_renders_inside(served: Container) -> None:
    with served.client() as http:
        r = http.get("/v1/models/digits/graph", params={"format": "svg"})
    assert r.status_code == 200, r.text[:500]
    assert r.headers["content-type"].startswith("image/svg+xml"), r.headers
    assert "<svg" in r.text and "fc3" in r.text


def test_edits_need_the_token(engine: Engine) -> None:
    with_token = engine.run()
    without_token = engine.run(token=None)  # on 0.0.0.0 with no token the server makes one up: never open
    with_token.wait_healthy()
    without_token.wait_healthy()
    body = {"ops": head_ops(1.5)}
    for c in (with_token, without_token):
        with c.client() as http:
            assert_error(http.post("/v1/models/digits/edits", json=body), 401)
        with c.client("wrong-token") as http:
            assert_error(http.post("/v1/models/digits/edits", json=body), 403)
        assert versions(c) == [1]
    assert edit(with_token, 1.5)["version"] == 2
    version, out = outputs(with_token)
    assert version == 2 and np.all(out == 1.5)


def test_edited_version_survives_a_new_container_on_the_same_volume(engine: Engine) -> None:
    volume = engine.volume()
    first = engine.run(volume=volume)
    first.wait_healthy()
    assert edit(first, 3.5)["version"] == 2
    docker("rm", "-f", first.name)

    second = engine.run(volume=volume)
    second.wait_healthy()
    assert versions(second) == [1, 2]
    version, out = outputs(second)
    assert version == 2 and np.all(out == 3.5)


def test_sigterm_stops_in_under_10_s_and_loses_no_acknowledged_edit(engine: Engine) -> None:
    c = engine.run()
    c.wait_healthy()
    acked: dict[int, float] = {}  # version -> the constant its head outputs, for every edit answered 200
    stop = threading.Event()

    def edit_until_stopped() -> None:
        const = 0.0
        with c.client(TOKEN) as http:
            while not stop.is_set():
                const += 1.0
                try:
                    r = http.post("/v1/models/digits/edits", json={"ops": head_ops(const)}, headers=AUTH, timeout=10)
                except httpx.HTTPError:  # the connection drops while the server shuts down
                    return
                if r.status_code != 200:
                    return
                acked[r.json()["version"]] = const

    editor = threading.Thread(target=edit_until_stopped, daemon=True)
    editor.start()
    deadline = time.monotonic() + 60
    while len(acked) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(acked) >= 3, "edits were not acknowledged"

    t0 = time.monotonic()
    docker("stop", "-t", "10", c.name, timeout=60)  # SIGTERM, then SIGKILL after 10 s
    took = time.monotonic() - t0
    stop.set()
    editor.join(30)
    state = c.state()
    print(f"docker stop took {took:.2f} s, exit code {state['ExitCode']}, {len(acked)} edits acknowledged")
    assert took < 10 and state["ExitCode"] != 137 and not state["OOMKilled"], (took, state, c.logs())
    assert state["ExitCode"] == 0, c.logs()

    docker("start", c.name)  # the same container, so the same (anonymous) state volume
    c.wait_healthy()
    present = set(versions(c))
    assert set(acked) <= present, f"acknowledged versions lost: {sorted(set(acked) - present)}"
    last = max(acked)
    version, out = outputs(c, version=last)
    assert version == last and np.all(out == acked[last])


def test_cpu_image_has_the_cpu_torch_and_records_its_size() -> None:
    probe = (
        "import importlib.metadata as m, json, torch; print(json.dumps({'torch': torch.__version__, "
        "'cuda': torch.version.cuda, 'nvidia': sorted(d.metadata['Name'] for d in m.distributions() "
        "if d.metadata['Name'].startswith('nvidia'))}))"
    )
    found = json.loads(docker("run", "--rm", "--entrypoint", "python", IMAGE, "-c", probe).stdout)
    assert found == {"torch": "2.13.0+cpu", "cuda": None, "nvidia": []}, found

    image = inspect("image", IMAGE)
    assert image["Config"]["Labels"]["io.morphserve.torch-variant"] == "cpu"
    size = int(image["Size"])
    record = {
        "image": IMAGE,
        "size_bytes": size,
        "size_gb": round(size / 1e9, 3),
        "layers": len(image["RootFS"]["Layers"]),
        "torch": found["torch"],
    }
    print(f"image size: {json.dumps(record)}")
    report = os.environ.get("MORPHSERVE_DOCKER_REPORT")
    if report:  # scripts/docker-test.sh adds its timings to the same file
        path = Path(report)
        data = json.loads(path.read_text()) if path.exists() else {}
        data.setdefault("images", {})[IMAGE] = record
        path.write_text(json.dumps(data, indent=2) + "\n")
    assert size < CPU_IMAGE_MAX_BYTES, record
