"""`POST /v1/models?name=NAME` with a bundle zip (issue 12): 201, 409, 413 and 422, each naming what is wrong and
changing nothing, the body-limit exemption of the route, and no spool file left behind on any path."""

from __future__ import annotations

import io
import json
import pickle
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from morphserve.graph import load_zoo
from morphserve.graph.bundle import bundle_bytes, spec_json, weights_bytes
from tests.conftest import AUTH
from tests.integration.helpers import X, assert_error, reference

BODY_LIMIT = int(0.01 * 1024 * 1024)  # max_body_mb=0.01: every bundle here is over it
UPLOAD_MB = 1.0
ZIP = {**AUTH, "Content-Type": "application/zip"}
DIGITS = bundle_bytes(load_zoo("digits"))


def _zip(members: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buf.getvalue()


def _digits_spec(**changes: Any) -> dict[str, Any]:
    spec = spec_json(load_zoo("digits"))
    spec.update(changes)
    return spec


@pytest.fixture
def up(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client(max_body_mb=0.01, max_upload_mb=UPLOAD_MB)


@pytest.fixture
def spools(tmp_path: Path) -> Iterator[Path]:
    """The spool directory of `up`; every test ends with it empty (or never made)."""
    path = tmp_path / "state" / "uploads"
    yield path
    assert not path.exists() or list(path.iterdir()) == []


def _models(c: TestClient) -> list[str]:
    return [m["name"] for m in c.get("/v1/models").json()["models"]]


def test_an_uploaded_bundle_is_served(up: TestClient, spools: Path) -> None:
    assert len(DIGITS) > BODY_LIMIT  # the inference body limit does not apply to this route
    r = up.post("/v1/models?name=mine", content=DIGITS, headers=ZIP)
    assert r.status_code == 201, r.text
    info = r.json()
    assert (info["name"], info["version"], info["versions"]) == ("mine", 1, 1)
    assert info["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    out = up.post("/v1/models/mine/infer", json={"inputs": X.tolist()}).json()
    assert np.array_equal(np.asarray(out["outputs"], np.float32), reference())  # the bundle's weights, exactly
    assert up.get("/v1/models/mine/graph").json()["totals"] == up.get("/v1/models/digits/graph").json()["totals"]
    assert spools.is_dir()  # the spool was under the state dir, and is gone


def test_a_chunked_upload_streams_past_the_body_limit(up: TestClient, spools: Path) -> None:
    def pieces() -> Iterator[bytes]:
        for i in range(0, len(DIGITS), 4096):
            yield DIGITS[i : i + 4096]

    r = up.post("/v1/models?name=chunked", content=pieces(), headers=ZIP)
    assert r.status_code == 201, r.text
    assert "chunked" in _models(up)


def test_a_taken_name_is_409_whatever_the_body(up: TestClient, spools: Path) -> None:
    body = assert_error(up.post("/v1/models?name=digits", content=DIGITS, headers=ZIP), 409, "digits", "exists")
    assert body["model"] == "digits"
    # not even looked at: a body that is not a bundle gets the same 409, not a 422
    assert_error(up.post("/v1/models?name=digits", content=b"not a zip", headers=ZIP), 409, "exists")
    assert up.get("/v1/models/digits").json()["version"] == 1 and _models(up) == ["digits"]


def test_over_the_upload_limit_is_413_declared_or_chunked(up: TestClient, spools: Path) -> None:
    big = DIGITS + b"\0" * int(UPLOAD_MB * 1024 * 1024)
    assert_error(
        up.post("/v1/models?name=big", content=big, headers=ZIP),
        413,
        "--max-upload-mb",
        str(int(UPLOAD_MB * 1024 * 1024)),
    )

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(big), 65536):
            yield big[i : i + 65536]

    assert_error(up.post("/v1/models?name=big", content=pieces(), headers=ZIP), 413, "--max-upload-mb")
    assert _models(up) == ["digits"]


def test_the_json_route_on_the_same_path_keeps_the_body_limit(up: TestClient, spools: Path) -> None:
    r = up.post("/v1/models", json={"name": "x", "spec": {"pad": "x" * BODY_LIMIT}}, headers=AUTH)
    assert_error(r, 413, "--max-body-mb", str(BODY_LIMIT))
    r = up.post("/v1/models", json={"name": "small", "zoo": "mlp"}, headers=AUTH)  # and still works
    assert r.status_code == 201, r.text


def _bad_weights() -> bytes:
    tensors = dict(load_zoo("digits").state_dict())
    del tensors["fc3.bias"]
    return save({k: v.contiguous() for k, v in tensors.items()})


_WEIGHTS = weights_bytes(load_zoo("digits"))
_UNKNOWN_LAYER = _digits_spec()
_UNKNOWN_LAYER["nodes"][2]["layer"] = {"type": "Exec", "code": "import os"}
_UNKNOWN_FUNCTION = _digits_spec()
_UNKNOWN_FUNCTION["nodes"][1] = {
    "id": _UNKNOWN_FUNCTION["nodes"][1]["id"],
    "function": "eval",
    "inputs": _UNKNOWN_FUNCTION["nodes"][1]["inputs"],
}


@pytest.mark.parametrize(
    "body,words",
    [
        (b"definitely not a zip", ["not a zip"]),
        (b"PK\x03\x04" + b"\0" * 100, ["not a zip"]),
        (_zip({"weights.safetensors": _WEIGHTS}), ["mine.zip", "no spec.json"]),
        (_zip({"spec.json": "{not json", "weights.safetensors": _WEIGHTS}), ["spec.json is not JSON"]),
        (_zip({"spec.json": "[1, 2]", "weights.safetensors": _WEIGHTS}), ["spec.json must hold a JSON object"]),
        (
            _zip({"spec.json": json.dumps(_digits_spec()), "weights.safetensors": b"\x08" + b"\0" * 20}),
            ["weights.safetensors is not a safetensors file"],
        ),
        (
            _zip({"spec.json": json.dumps(_digits_spec()), "weights.safetensors": _bad_weights()}),
            ["weights do not match", "fc3.bias"],
        ),
        (_zip({"spec.json": json.dumps(_UNKNOWN_LAYER), "weights.safetensors": _WEIGHTS}), ["Exec"]),
        (_zip({"spec.json": json.dumps(_UNKNOWN_FUNCTION), "weights.safetensors": _WEIGHTS}), ["eval"]),
        (_zip({"spec.json": json.dumps(_digits_spec(format=99)), "weights.safetensors": _WEIGHTS}), ["format"]),
    ],
    ids=[
        "garbage",
        "zip-magic-only",
        "no-spec",
        "spec-not-json",
        "spec-not-object",
        "bad-safetensors",
        "weights-mismatch",
        "unknown-layer",
        "unknown-function",
        "spec-format",
    ],
)
def test_an_invalid_bundle_is_422_naming_what_is_wrong(
    up: TestClient, spools: Path, body: bytes, words: list[str]
) -> None:
    assert_error(up.post("/v1/models?name=mine", content=body, headers=ZIP), 422, *words)
    assert _models(up) == ["digits"]
    assert up.get("/v1/models/mine").status_code == 404


@pytest.mark.parametrize("spec", [_UNKNOWN_LAYER, _UNKNOWN_FUNCTION], ids=["layer", "function"])
def test_an_unknown_type_or_function_names_its_node(up: TestClient, spools: Path, spec: dict[str, Any]) -> None:
    body = _zip({"spec.json": json.dumps(spec), "weights.safetensors": _WEIGHTS})
    err = assert_error(up.post("/v1/models?name=mine", content=body, headers=ZIP), 422)
    bad = next(n for n in spec["nodes"] if n.get("function") == "eval" or (n.get("layer") or {}).get("type") == "Exec")
    assert err["node"] == bad["id"]


def test_a_model_over_the_memory_budget_is_422(make_client: Callable[..., TestClient], tmp_path: Path) -> None:
    c = make_client(models=[], max_model_bytes=10_000)  # digits holds ~69 KB
    err = assert_error(c.post("/v1/models?name=mine", content=DIGITS, headers=ZIP), 422, "--max-model-bytes")
    assert err["needed_bytes"] > err["limit_bytes"] == 10_000
    assert list((tmp_path / "state" / "uploads").iterdir()) == []


@pytest.mark.parametrize(
    "query,words",
    [("", ["?name="]), ("?name=..", ["name"]), ("?name=a%2Fb", ["name"]), ("?name=" + "x" * 65, ["name"])],
)
def test_a_missing_or_bad_name_is_422_before_anything_is_spooled(
    up: TestClient, spools: Path, query: str, words: list[str]
) -> None:
    assert_error(up.post(f"/v1/models{query}", content=DIGITS, headers=ZIP), 422, *words)
    assert not spools.exists()


def test_the_upload_needs_the_token(up: TestClient, spools: Path) -> None:
    assert_error(up.post("/v1/models?name=mine", content=DIGITS, headers={"Content-Type": "application/zip"}), 401)
    bad = {"Authorization": "Bearer nope", "Content-Type": "application/zip"}
    assert_error(up.post("/v1/models?name=mine", content=DIGITS, headers=bad), 403)
    assert _models(up) == ["digits"] and not spools.exists()


def test_another_binary_content_type_goes_to_the_json_route(up: TestClient, spools: Path) -> None:
    small = _zip({"spec.json": json.dumps(_digits_spec())})
    r = up.post("/v1/models?name=mine", content=small, headers={**AUTH, "Content-Type": "application/octet-stream"})
    assert_error(r, 415, "application/json")
    assert _models(up) == ["digits"]


def test_without_a_state_dir_the_spool_is_a_system_temp_file(
    make_client: Callable[..., TestClient], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    c = make_client(journal="memory")
    spooled: list[Path] = []
    real_load = c.app.state.registry.upload_spool

    def spool(name: str) -> Any:
        s = real_load(name)
        spooled.append(s.path)
        return s

    monkeypatch.setattr(c.app.state.registry, "upload_spool", spool)
    r = c.post("/v1/models?name=mine", content=DIGITS, headers=ZIP)
    assert r.status_code == 201, r.text
    assert spooled and spooled[0].is_relative_to(systmp) and not spooled[0].exists()
    assert list(systmp.iterdir()) == [] and not (tmp_path / "state" / "uploads").exists()


def test_an_upload_is_never_unpickled(up: TestClient, spools: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("an upload reached an unpickler")

    for owner, attr in ((torch, "load"), (torch.export, "load"), (pickle, "load"), (pickle, "loads")):
        monkeypatch.setattr(owner, attr, refuse)
    r = up.post("/v1/models?name=mine", content=DIGITS, headers=ZIP)
    assert r.status_code == 201, r.text


def test_an_unusable_state_dir_refuses_the_upload_before_reading_it(
    make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("x")
    c = make_client(state_dir=not_a_dir)
    assert_error(c.post("/v1/models?name=mine", content=DIGITS, headers=ZIP), 503, "state dir")
