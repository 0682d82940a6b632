"""System shared memory regions: registration checks, bounds on every read and write, the owner's removal noticed,
unregistration and close; and the OIP codec passing tensors by reference through them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from multiprocessing import shared_memory
from multiprocessing.shared_memory import SharedMemory as Segment

import numpy as np
import orjson
import pytest
import torch

from morphserve.serving.cuda_shm import CudaSharedMemory
from morphserve.serving.shm import SharedMemory, SharedMemoryError, SharedMemoryNotFoundError, SystemSharedMemory
from morphserve.wire.oip_codec import OIPError, decode_request, encode_response


@pytest.fixture
def segment() -> Iterator[Segment]:
    """A 4 KiB POSIX shared memory object (as a client creates it), removed afterwards."""
    seg = shared_memory.SharedMemory(create=True, size=4096)
    yield seg
    seg.close()
    with contextlib.suppress(FileNotFoundError):
        seg.unlink()


@pytest.fixture
def regions() -> Iterator[SystemSharedMemory]:
    r = SystemSharedMemory()
    yield r
    r.close()


def key(seg: Segment) -> str:
    return "/" + seg.name.lstrip("/")


def test_register_read_write_within_the_window(regions: SystemSharedMemory, segment: Segment) -> None:
    segment.buf[100:108] = bytes(range(8))
    regions.register("r", key(segment), 96, 64)  # the window [96, 160) of the object
    assert bytes(regions.read("r", 4, 8)) == bytes(range(8))
    assert regions.write("r", 60, 4, memoryview(b"\xff" * 4)) == 4
    assert bytes(segment.buf[156:160]) == b"\xff" * 4
    assert regions.status() == [{"name": "r", "key": key(segment), "offset": 96, "byte_size": 64}]


@pytest.mark.parametrize(
    ("offset", "size", "words"),
    [(60, 8, "outside"), (64, 1, "outside"), (-1, 4, "non-negative"), (0, 65, "outside"), (True, 4, "integer")],
)
def test_every_reference_is_bounds_checked(
    regions: SystemSharedMemory, segment: Segment, offset: int, size: int, words: str
) -> None:
    regions.register("r", key(segment), 0, 64)
    with pytest.raises(SharedMemoryError, match=words):
        regions.read("r", offset, size)
    with pytest.raises(SharedMemoryError, match=words):
        regions.write("r", offset, size, memoryview(b"\0" * max(size, 0)))


def test_a_write_larger_than_its_window_is_refused(regions: SystemSharedMemory, segment: Segment) -> None:
    regions.register("r", key(segment), 0, 64)
    with pytest.raises(SharedMemoryError, match="needs 16 bytes"):
        regions.write("r", 0, 8, memoryview(b"\0" * 16))


@pytest.mark.parametrize(
    ("name", "k", "offset", "size", "words"),
    [
        ("r", None, 0, 64, "beyond the end"),  # 4096 + 64 > the object
        ("r", "/no-such-object-here", 0, 8, "cannot open"),
        ("r", "/../etc/passwd", 0, 8, "POSIX shared memory name"),
        ("r", "/a/b", 0, 8, "POSIX shared memory name"),
        ("bad name!", None, 0, 8, "must match"),
        ("r", None, 0, 0, "positive"),
        ("r", None, -4, 8, "non-negative"),
    ],
)
def test_bad_registrations_are_refused_with_why(
    regions: SystemSharedMemory,
    segment: Segment,
    name: str,
    k: str | None,
    offset: int,
    size: int,
    words: str,
) -> None:
    with pytest.raises(SharedMemoryError, match=words):
        regions.register(name, k or key(segment), 4096 if words == "beyond the end" else offset, size)
    assert regions.status() == []


def test_a_name_is_registered_once(regions: SystemSharedMemory, segment: Segment) -> None:
    regions.register("r", key(segment), 0, 8)
    with pytest.raises(SharedMemoryError, match="already registered"):
        regions.register("r", key(segment), 8, 8)


def test_a_region_whose_owner_removed_the_object_is_unregistered(regions: SystemSharedMemory, segment: Segment) -> None:
    regions.register("r", key(segment), 0, 64)
    regions.register("s", key(segment), 64, 64)
    segment.unlink()  # the owner is done with it (tritonclient's destroy_shared_memory_region)
    with pytest.raises(SharedMemoryNotFoundError, match="removed or shrunk by its owner"):
        regions.read("r", 0, 4)
    assert regions.status() == []  # listing sweeps the other one too


def test_unregister_one_all_and_close(segment: Segment) -> None:
    regions = SystemSharedMemory()
    for n in ("a", "b", "c"):
        regions.register(n, key(segment), 0, 16)
    regions.unregister("a")
    regions.unregister("never-registered")  # no error, as in Triton
    assert [r["name"] for r in regions.status()] == ["b", "c"]
    view = regions.read("b", 0, 4)  # a caller still holding a view must not make close fail
    regions.unregister(None)
    assert regions.status() == []
    del view
    regions.register("d", key(segment), 0, 16)
    regions.close()
    with pytest.raises(SharedMemoryNotFoundError):
        regions.read("d", 0, 4)


def test_a_disabled_server_refuses_registration_and_says_why(segment: Segment) -> None:
    regions = SystemSharedMemory(enabled=False, why_not="it runs 2 worker processes")
    with pytest.raises(SharedMemoryError, match="2 worker processes"):
        regions.register("r", key(segment), 0, 8)


def test_cuda_shared_memory_is_refused_without_a_gpu() -> None:
    cuda = CudaSharedMemory(torch.device("cpu"))
    assert not cuda.enabled
    with pytest.raises(SharedMemoryError, match="needs a GPU"):
        cuda.register("g", b"\0" * 64, 0, 1024)
    assert cuda.status() == []


def test_the_http_codec_reads_inputs_and_writes_outputs_by_reference(
    regions: SystemSharedMemory, segment: Segment
) -> None:
    shm = SharedMemory(regions, CudaSharedMemory(torch.device("cpu")))
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    segment.buf[: x.nbytes] = x.tobytes()
    regions.register("in", key(segment), 0, 64)
    regions.register("out", key(segment), 1024, 64)
    params = {"shared_memory_region": "in", "shared_memory_byte_size": 32}
    doc = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": params}],
        "outputs": [{"name": "y", "parameters": {"shared_memory_region": "out", "shared_memory_byte_size": 64}}],
    }
    req = decode_request(orjson.dumps(doc), None, shm=shm.read)
    np.testing.assert_array_equal(req.inputs["x"], x)
    x[0, 0] = 99  # the decoded input is a copy: the client may reuse its region at once
    assert req.inputs["x"][0, 0] == 0
    body, _ = encode_response(
        model_name="m", model_version="1", request_id=None, outputs={"y": x * 2}, request=req, shm=shm.write
    )
    out = orjson.loads(body)["outputs"][0]
    assert "data" not in out and out["parameters"] == {"shared_memory_region": "out", "shared_memory_byte_size": 32}
    np.testing.assert_array_equal(np.frombuffer(bytes(segment.buf[1024:1056]), dtype=np.float32).reshape(2, 4), x * 2)


def test_the_codec_refuses_a_reference_whose_size_is_not_the_tensors(
    regions: SystemSharedMemory, segment: Segment
) -> None:
    regions.register("in", key(segment), 0, 64)
    params = {"shared_memory_region": "in", "shared_memory_byte_size": 16}
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 4], "parameters": params}]}
    with pytest.raises(OIPError, match="needs shared_memory_byte_size 32, got 16"):
        decode_request(orjson.dumps(doc), None, shm=regions.read)
    with pytest.raises(OIPError, match="shared memory is not supported"):
        decode_request(orjson.dumps(doc), None)
