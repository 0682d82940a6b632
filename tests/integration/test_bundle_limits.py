"""Bundles read with budgets (issue 24, items 1, 6 and 7): a zip bomb, a padded spec.json, a spec nested 3,000 deep,
an encrypted member, an unsupported compression method, two spec.json members and NaN weights are each a 422
naming what is wrong (and the limit, where one applies), refused after reading at most that budget; nothing
changes; a real server's peak memory stays within 300 MB of its idle size while it refuses the bombs.
"""

from __future__ import annotations

import bz2
import dataclasses
import json
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import save

from morphserve.graph import load_zoo
from morphserve.graph.bundle import bundle_bytes, spec_json, weights_bytes
from tests.conftest import AUTH, TOKEN, ServerProcess
from tests.integration.helpers import assert_error
from tests.integration.zips import BZIP2, LZMA, Member, craft, deflated, stored

ZIP = {**AUTH, "Content-Type": "application/zip"}
DIGITS = load_zoo("digits")
SPEC = json.dumps(spec_json(DIGITS)).encode()
WEIGHTS = weights_bytes(DIGITS)
MB = 1 << 20
ZEROS = b"\0" * (16 * MB)
SPACES = b" " * (16 * MB)


def _spec_padded(times: int) -> Member:
    """spec.json: the digits spec, then `times` x 16 MiB of spaces (valid JSON, 1 GiB at 64)."""
    return deflated("spec.json", [(SPEC, 1), (SPACES, times)])


def _weights_bomb(times: int, **header: int) -> Member:
    """weights.safetensors: a valid digits file followed by `times` x 16 MiB of zeros."""
    return deflated("weights.safetensors", [(WEIGHTS, 1), (ZEROS, times)], **header)


def _bzip2_spec(megabytes: int) -> Member:
    data = b"\0" * (megabytes * MB)
    return Member("spec.json", bz2.compress(data, 9), len(data), zlib.crc32(data), BZIP2)


def _nested(depth: int) -> bytes:
    spec = spec_json(DIGITS)
    spec["nodes"][0]["args"] = {}  # a node with a deeply nested value
    doc = json.dumps(spec).encode()
    return doc[:-1] + b', "pad": ' + b"[" * depth + b"]" * depth + b"}"


def _nonfinite(value: float) -> bytes:
    tensors = {k: v.clone() for k, v in DIGITS.state_dict().items()}
    tensors["fc3.bias"][3] = value
    return save(tensors)


def _encrypted() -> bytes:
    """The digits bundle with its members' 'encrypted' flag set (as a zip tool writes it, the data unchanged)."""
    return craft(
        [
            Member(m.name, m.data, m.size, m.crc, m.method, 0x1)
            for m in (stored("spec.json", SPEC), stored("weights.safetensors", WEIGHTS))
        ]
    )


# (id, zip body, status, words in the error)
CASES: list[tuple[str, Any, int, tuple[str, ...]]] = [
    ("bzip2-bomb", lambda: craft([_bzip2_spec(64), stored("weights.safetensors", WEIGHTS)]), 422, ("bzip2",)),
    (
        "lzma-member",
        lambda: craft([Member("spec.json", b"x" * 20, len(SPEC), zlib.crc32(SPEC), LZMA)]),
        422,
        ("lzma", "deflate"),
    ),
    ("encrypted-member", _encrypted, 422, ("encrypted",)),
    (
        "deflate-weights-bomb",
        lambda: craft([stored("spec.json", SPEC), _weights_bomb(64)]),
        422,
        ("weights.safetensors", "bytes"),
    ),
    (
        "deflate-weights-bomb-lying-size",
        lambda: craft([stored("spec.json", SPEC), _weights_bomb(64, size=len(WEIGHTS))]),
        422,
        ("weights.safetensors",),
    ),
    ("padded-spec", lambda: craft([_spec_padded(64), stored("weights.safetensors", WEIGHTS)]), 422, ("spec.json",)),
    (
        "padded-spec-lying-size",
        lambda: craft([dataclasses.replace(_spec_padded(64), size=1000)]),
        422,
        ("spec.json",),
    ),
    ("spec-nested-3000-deep", lambda: craft([stored("spec.json", _nested(3000))]), 422, ("nested",)),
    ("spec-nested-200-deep", lambda: craft([stored("spec.json", _nested(200))]), 422, ("nested", "64")),
    (
        "two-spec-json",
        lambda: craft([stored("spec.json", SPEC), stored("spec.json", b"{}"), stored("weights.safetensors", WEIGHTS)]),
        422,
        ("more than one", "spec.json"),
    ),
    (
        "too-many-members",
        lambda: craft([stored("spec.json", SPEC)] + [stored(f"x{i}", b"") for i in range(70)]),
        422,
        ("members",),
    ),
    (
        "nan-weights",
        lambda: craft([stored("spec.json", SPEC), stored("weights.safetensors", _nonfinite(float("nan")))]),
        422,
        ("NaN", "fc3.bias"),
    ),
    (
        "inf-weights",
        lambda: craft([stored("spec.json", SPEC), stored("weights.safetensors", _nonfinite(float("-inf")))]),
        422,
        ("infinity", "fc3.bias"),
    ),
    (
        "weights-header-claims-a-terabyte",
        lambda: craft([stored("spec.json", SPEC), stored("weights.safetensors", struct.pack("<Q", 1 << 40) + b"{}")]),
        422,
        ("safetensors",),
    ),
]


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from morphserve.main import create_app
    from morphserve.settings import Settings

    settings = Settings(
        models=["digits"], admin_token=TOKEN, state_dir=tmp_path_factory.mktemp("bundles") / "state", fsync=False
    )
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        yield client


def _models(c: TestClient | httpx.Client) -> list[tuple[str, int]]:
    return [(m["name"], m["version"]) for m in c.get("/v1/models").json()["models"]]


@pytest.mark.parametrize("name,body,status,words", CASES, ids=[c[0] for c in CASES])
def test_a_hostile_bundle_is_refused_naming_the_problem(
    up: TestClient, name: str, body: Callable[[], bytes], status: int, words: tuple[str, ...]
) -> None:
    before = _models(up)
    err = assert_error(up.post("/v1/models?name=mine", content=body(), headers=ZIP), status, *words)
    assert "internal" not in err["error"]
    assert _models(up) == before


def test_the_bundle_an_export_writes_is_still_accepted(up: TestClient) -> None:
    """The budgets refuse no real bundle: an export, and a bundle of zero weights (deflate at ~1,000:1)."""
    zeros = {k: torch.zeros_like(v) for k, v in DIGITS.state_dict().items()}
    for i, body in enumerate(
        (bundle_bytes(DIGITS), craft([stored("spec.json", SPEC), deflated("weights.safetensors", [(save(zeros), 1)])]))
    ):
        r = up.post(f"/v1/models?name=ok{i}", content=body, headers=ZIP)
        assert r.status_code == 201, r.text
        assert up.delete(f"/v1/models/ok{i}", headers=AUTH).status_code == 200


def test_a_spec_nested_3000_deep_in_a_json_body_is_4xx(up: TestClient) -> None:
    doc = b'{"name": "deep", "spec": ' + _nested(3000) + b"}"
    assert_error(up.post("/v1/models", content=doc, headers={**AUTH, "Content-Type": "application/json"}), 400)
    doc = b'{"name": "deep", "spec": ' + _nested(200) + b"}"
    assert_error(
        up.post("/v1/models", content=doc, headers={**AUTH, "Content-Type": "application/json"}), 422, "nested"
    )
    assert up.get("/v1/models/deep").status_code == 404


def _status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(key)


def test_bombs_leave_a_real_servers_memory_within_300_mb(start_server: Callable[..., ServerProcess]) -> None:
    """The bzip2 bomb, the deflate bombs (1 GiB of zeros behind ~1 MB; with the true size declared and with a lie)
    and a spec.json padded to 1 GiB, uploaded to a real server: each refused, and its peak RSS (VmHWM) stays within
    300 MB of its RSS when idle."""
    server = start_server("--model", "digits", "--admin-token", TOKEN, "--no-fsync")
    pid = server.proc.pid
    bodies = {
        "bzip2": craft([_bzip2_spec(64), stored("weights.safetensors", WEIGHTS)]),
        "deflate": craft([stored("spec.json", SPEC), _weights_bomb(64)]),
        "deflate-lying": craft([stored("spec.json", SPEC), _weights_bomb(64, size=len(WEIGHTS))]),
        "padded-spec": craft([_spec_padded(64), stored("weights.safetensors", WEIGHTS)]),
    }
    with httpx.Client(base_url=server.url, timeout=120) as c:
        for _ in range(5):
            assert c.post("/v1/models/digits/infer", json={"inputs": [[0.0] * 64]}).status_code == 200
        ok = c.post("/v1/models?name=warm", content=bundle_bytes(DIGITS), headers=ZIP)  # the upload path, warm
        assert ok.status_code == 201 and c.delete("/v1/models/warm", headers=AUTH).status_code == 200
        idle = _status(pid, "VmRSS")
        for what, body in bodies.items():
            r = c.post("/v1/models?name=bomb", content=body, headers=ZIP)
            assert r.status_code == 422, (what, r.status_code, r.text[:300])
        peak = _status(pid, "VmHWM")
        print(f"\nbundle bombs on a real server: idle RSS {idle:.0f} MB, peak {peak:.0f} MB (+{peak - idle:.0f})")
        assert peak - idle < 300, f"peak RSS {peak:.0f} MB against {idle:.0f} MB idle"
        assert _models(c) == [("digits", 1)]
