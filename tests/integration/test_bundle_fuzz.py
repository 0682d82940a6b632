"""A bundle fuzzer (issue 24): hypothesis mutates valid bundles, the zip around them and the spec and weights inside,
and uploads each to `POST /v1/models?name=`. Every answer is a 201 or a 4xx in the one error shape, never a 5xx; a
refusal changes nothing (the models and their versions are as before, no spool file is left); an accepted bundle
serves inference and is deleted again.

What it mutates: bytes anywhere in the zip, its length, the headers of a member (compression method, the encryption
flag, the declared sizes and CRC, in the local header, the central directory or both), members duplicated or left
out, and the documents: spec.json's keys, values, nesting and size, the weights' header and data (NaN, shapes,
dtypes, offsets). The seed is the run's (`MORPHSERVE_FUZZ_SEED`, tests/conftest.py); the quick run tries
`EXAMPLES` bundles, the slow one ten times as many.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from safetensors.torch import save

from morphserve.graph import load_zoo
from morphserve.graph.bundle import spec_json
from tests.conftest import AUTH, FUZZ_SEED, TOKEN
from tests.integration.zips import BZIP2, DEFLATED, LZMA, STORED, Member, craft, stored

ZIP = {**AUTH, "Content-Type": "application/zip"}
DIGITS = load_zoo("digits")
SPEC = spec_json(DIGITS)
TENSORS = {k: v.clone() for k, v in DIGITS.state_dict().items()}
EXAMPLES = 150

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def specs(draw: st.DrawFn) -> bytes:
    """spec.json: the digits spec with one value replaced, a key removed, or the whole document bent."""
    doc = json.loads(json.dumps(SPEC))
    kind = draw(st.sampled_from(["replace", "remove", "deep", "pad", "not-an-object", "garbage", "same"]))
    paths = [p for p in _paths(doc) if p]
    if kind in ("replace", "remove"):
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if kind == "remove":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JSON_VALUES | st.sampled_from([-1, 0, 2**31, 2**20, [-1, 2**20, 2**20], "fc1\n"]))
    elif kind == "deep":
        depth = draw(st.sampled_from([65, 1000, 1025, 3000]))
        return json.dumps(doc).encode()[:-1] + b', "x": ' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "pad":
        return json.dumps(doc).encode() + b" " * draw(st.sampled_from([1, 1 << 20, 17 << 20]))
    elif kind == "not-an-object":
        return json.dumps(draw(JSON_VALUES)).encode()
    elif kind == "garbage":
        return draw(st.binary(max_size=64))
    return json.dumps(doc).encode()


@st.composite
def weights(draw: st.DrawFn) -> bytes:
    """weights.safetensors: the digits tensors with one changed (a NaN, a shape, a dtype, a name), or a file whose
    header lies."""
    tensors = dict(TENSORS)
    kind = draw(st.sampled_from(["nan", "shape", "dtype", "name", "drop", "header", "truncate", "same"]))
    key = draw(st.sampled_from(sorted(tensors)))
    if kind == "nan":
        t = tensors[key].clone()
        t.view(-1)[0] = draw(st.sampled_from([float("nan"), float("inf"), float("-inf")]))
        tensors[key] = t
    elif kind == "shape":
        tensors[key] = torch.zeros(draw(st.lists(st.integers(0, 70), min_size=0, max_size=3)))
    elif kind == "dtype":
        tensors[key] = tensors[key].to(draw(st.sampled_from([torch.float16, torch.float64, torch.int32])))
    elif kind == "name":
        tensors[key + draw(st.text(min_size=1, max_size=3))] = tensors.pop(key)
    elif kind == "drop":
        del tensors[key]
    data = save(tensors)
    if kind == "header":
        (n,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + n])
        header[key] = draw(JSON_VALUES)
        raw = json.dumps(header).encode()
        claimed = draw(st.sampled_from([len(raw), len(raw) + 1, 0, 2**40, 2**63]))
        data = struct.pack("<Q", claimed) + raw + data[8 + n :]
    elif kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


def _member(name: str, data: bytes, method: int) -> Member:
    if method == DEFLATED:
        c = zlib.compressobj(6, zlib.DEFLATED, -15)
        return Member(name, c.compress(data) + c.flush(), len(data), zlib.crc32(data), DEFLATED)
    return stored(name, data)


@st.composite
def bundles(draw: st.DrawFn) -> bytes:
    spec = draw(specs()) if draw(st.booleans()) else json.dumps(SPEC).encode()
    data = draw(weights()) if draw(st.booleans()) else save(TENSORS)
    members = [_member("spec.json", spec, draw(st.sampled_from([STORED, DEFLATED])))]
    if draw(st.integers(0, 5)):
        members.append(_member("weights.safetensors", data, draw(st.sampled_from([STORED, DEFLATED]))))
    if draw(st.integers(0, 7)) == 0:  # a member twice
        members.append(draw(st.sampled_from(members)))
    if draw(st.integers(0, 7)) == 0:  # the headers of one member lie
        i = draw(st.integers(0, len(members) - 1))
        m = members[i]
        members[i] = Member(
            m.name,
            m.data,
            draw(st.sampled_from([m.size, 0, max(m.size - 1, 0), m.size + 1, 2**31])),
            draw(st.sampled_from([m.crc, m.crc ^ 1])),
            draw(st.sampled_from([m.method, STORED, DEFLATED, BZIP2, LZMA, 99])),
            draw(st.sampled_from([0, 1, 8])),
        )
    body = bytearray(craft(members))
    for _ in range(draw(st.integers(0, 2)) if draw(st.integers(0, 3)) == 0 else 0):  # bytes flipped anywhere
        at = draw(st.integers(0, len(body) - 1))
        body[at] ^= draw(st.integers(1, 255))
    if draw(st.integers(0, 9)) == 0:
        body = body[: draw(st.integers(0, len(body)))]
    return bytes(body)


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    from morphserve.main import create_app
    from morphserve.settings import Settings

    state = tmp_path_factory.mktemp("bundle-fuzz") / "state"
    settings = Settings(models=["digits"], admin_token=TOKEN, state_dir=state, fsync=False, max_spec_mb=16)
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        yield client, state / "uploads"


def _models(c: TestClient) -> list[tuple[str, int, int]]:
    return [(m["name"], m["version"], m["versions"]) for m in c.get("/v1/models").json()["models"]]


def _check(c: TestClient, spools: Path, body: bytes) -> int:
    before = _models(c)
    r = c.post("/v1/models?name=fuzzed", content=body, headers=ZIP)
    assert r.status_code < 500, (r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code == 201:
        out = c.post("/v1/models/fuzzed/infer", json={"inputs": [[0.5] * 64]})
        assert out.status_code < 500, out.text[:300]
        assert c.delete("/v1/models/fuzzed", headers=AUTH).status_code == 200
    else:
        assert isinstance(r.json().get("error"), str) and r.json()["error"], r.text
    assert _models(c) == before
    assert not spools.exists() or list(spools.iterdir()) == []
    return r.status_code


def _fuzz(up: tuple[TestClient, Path], examples: int) -> None:
    c, spools = up
    statuses: dict[int, int] = {}

    @seed(FUZZ_SEED)
    @settings(
        max_examples=examples,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
        print_blob=True,
    )
    @given(bundles())
    def run(body: bytes) -> None:
        status = _check(c, spools, body)
        statuses[status] = statuses.get(status, 0) + 1

    run()
    print(f"\nbundle fuzz (seed {FUZZ_SEED}): {sum(statuses.values())} uploads, statuses {sorted(statuses.items())}")
    assert len(statuses) > 1, statuses  # the mutations reached more than one outcome


def test_mutated_bundles_are_201_or_a_4xx_that_changes_nothing(up: tuple[TestClient, Path]) -> None:
    _fuzz(up, EXAMPLES)


@pytest.mark.slow
def test_mutated_bundles_long_run(up: tuple[TestClient, Path]) -> None:
    _fuzz(up, EXAMPLES * 10)
