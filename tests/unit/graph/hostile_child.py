"""The child process of test_opset_hostile.py: every operator of the vocabulary, fed hostile arguments.

`python -m tests.unit.graph.hostile_child START EXAMPLES PROGRESS` runs operators START.. of the sorted vocabulary,
EXAMPLES hypothesis examples each. Before each call it writes the operator and the example to PROGRESS, so that the
parent can name what a crash (a signal, an abort) was running. A call may fail with any Python exception: a clean
refusal. What it must not do is read outside its inputs, which this child checks two ways:

- every input tensor is a view into the middle of a larger buffer whose other elements hold a canary value; a
  result that contains the canary (and no input did) read a neighbour's memory;
- a result that is a view of such a buffer must lie within its input's own elements.

Prints `FAIL <op> <example>` for each out-of-bounds read found and `DONE` at the end.
"""

from __future__ import annotations

import json
import math
import os
import resource
import signal
import sys
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from morphserve.graph.functions import OPSET, SYMBOLIC
from morphserve.graph.functions.opset import _STRINGS, Param

PAD = 64
CANARY = {torch.float32: 1234.5, torch.float64: 1234.5, torch.float16: 1234.0, torch.int64: 7777, torch.int32: 7777}
DTYPES = [torch.float32, torch.int64, torch.bool, torch.float16, torch.int32]
INTS = [0, 1, -1, 2, 3, 4, 7, -2, -7, 64, 1 << 31, -(1 << 31), 1 << 40, 1 << 62, -(1 << 63), (1 << 63) - 1]
FLOATS: list[Any] = [0.0, -0.0, 0.5, 1.0, -1.0, 2.0, 1e-300, 1e308, -1e308, "inf", "-inf", "nan"]
ENTRIES = {**OPSET, **SYMBOLIC}
NAMES = sorted(ENTRIES)


class Buffers:
    """The input tensors of one example, each a view into a canary-padded buffer."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.regions: list[tuple[torch.Tensor, int, int]] = []  # (buffer, first, end) of each tensor input

    def tensor(self, draw: Any) -> dict[str, int]:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(st.lists(st.integers(0, 5), min_size=0, max_size=4))
        numel = math.prod(shape)
        canary = CANARY.get(dtype, 0)
        buf = torch.full((PAD + numel + PAD,), canary, dtype=dtype)
        if dtype.is_floating_point:
            body = torch.randn(numel).to(dtype)
        elif dtype == torch.bool:
            body = torch.rand(numel) > 0.5
        else:
            body = torch.randint(-7, 8, (numel,)).to(dtype)
        buf[PAD : PAD + numel] = body
        t = buf[PAD : PAD + numel].view(shape)
        if len(shape) >= 2 and draw(st.booleans()):
            t = t.transpose(0, 1)  # not contiguous
        self.regions.append((buf, PAD, PAD + numel))
        self.values.append(t)
        return {"input": len(self.values) - 1}

    def scalar(self, draw: Any) -> dict[str, int]:
        self.values.append(draw(st.sampled_from([0, 1, 2, 3, -1, 1 << 40, 0.5])))
        return {"input": len(self.values) - 1}


def _value(draw: Any, op: str, p: Param, bufs: Buffers) -> Any:
    kind = p.kind
    if kind.endswith("?") and draw(st.integers(0, 3)) == 0:
        return None
    base = kind.rstrip("?")
    if base == "tensor":
        return bufs.tensor(draw)
    if base == "tensors":
        n = draw(st.integers(0, 3))
        if kind == "tensors?":
            return [None if draw(st.booleans()) else bufs.tensor(draw) for _ in range(n)]
        return [bufs.tensor(draw) for _ in range(n)]
    if base == "int":
        return bufs.scalar(draw) if draw(st.integers(0, 9)) == 0 else draw(st.sampled_from(INTS) | st.integers(-8, 8))
    if base == "ints":
        return draw(st.lists(st.sampled_from(INTS) | st.integers(-3, 6), max_size=6))
    if base in ("float", "scalar"):
        return draw(st.sampled_from(FLOATS) | st.sampled_from(INTS) | st.booleans())
    if base == "floats":
        return draw(st.lists(st.sampled_from(FLOATS), max_size=4))
    if base == "bool":
        return draw(st.booleans())
    if base == "bools":
        return draw(st.lists(st.booleans(), max_size=4))
    if base == "str":
        return draw(st.sampled_from([*sorted(_STRINGS.get((op, p.name), ())), "bogus"]))
    if base == "dtype":
        return draw(st.sampled_from(["FP32", "INT64", "BOOL", "FP16", "INT8", "UINT8"]))
    if base == "memory_format":
        return draw(st.sampled_from(["contiguous_format", "preserve_format", "channels_last"]))
    return None


def _reach(t: torch.Tensor) -> tuple[int, int]:
    """The first and last storage element a tensor can address (in elements)."""
    lo = hi = t.storage_offset()
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if size == 0:
            return t.storage_offset(), t.storage_offset() - 1
        step = (size - 1) * stride
        lo, hi = (lo + step, hi) if step < 0 else (lo, hi + step)
    return lo, hi


def _check(op: str, result: Any, bufs: Buffers) -> str | None:
    """Why `result` shows an out-of-bounds read, or None."""
    leaves = result if isinstance(result, tuple | list) else [result]
    for out in leaves:
        if not isinstance(out, torch.Tensor) or out.numel() == 0:
            continue
        ptr = out.untyped_storage().data_ptr()
        for buf, first, end in bufs.regions:
            if buf.untyped_storage().data_ptr() == ptr and buf.dtype == out.dtype:
                lo, hi = _reach(out)
                if lo <= hi and (lo < first or hi >= end):
                    return f"a view reaching elements {lo}..{hi} of a buffer whose input is {first}..{end - 1}"
        canary = CANARY.get(out.dtype)
        if canary is None:
            continue
        inputs_have = any(
            isinstance(v, torch.Tensor) and v.dtype == out.dtype and bool((v == canary).any()) for v in bufs.values
        )
        scalar_has = any(not isinstance(v, torch.Tensor) and v == canary for v in bufs.values)
        if not inputs_have and not scalar_has and bool((out == canary).any()):
            return f"the result holds the canary {canary}: it read outside its inputs"
    return None


def _sweep_one(index: int, examples: int, log: Any, failures: list[str]) -> None:
    name = NAMES[index]
    entry = ENTRIES[name]

    @settings(
        max_examples=examples, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )
    @given(st.data())
    def check(data: Any) -> None:
        bufs = Buffers()
        args = {p.name: _value(data.draw, name, p, bufs) for p in entry.params}
        args = {k: v for k, v in args.items() if v is not None or data.draw(st.booleans())}
        inputs = [f"i{k}" for k in range(len(bufs.values))]
        try:
            parsed = entry.parse(inputs, args)
        except ValueError:
            return  # refused before anything runs
        shapes = [list(v.shape) if isinstance(v, torch.Tensor) else v for v in bufs.values]
        log.write(f"{index}\t{name}\t{json.dumps(args, default=str)}\t{shapes}\n")
        if os.environ.get("HOSTILE_CRASH_AT") == name:  # the parent's own test: a crash it must name
            os.kill(os.getpid(), signal.SIGSEGV)
        try:
            target, a, kw = entry.call(parsed, bufs.values, lambda r: None, lambda: torch.device("cpu"))
            with torch.inference_mode():
                result = target(*a, **kw)
        except Exception:  # noqa: BLE001 - any clean error is a refusal, which is fine
            return
        problem = _check(name, result, bufs)
        if problem is not None:
            failures.append(f"FAIL {name} {json.dumps(args, default=str)} {shapes}: {problem}")

    check()


def run(start: int, examples: int, progress: str) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))  # a huge allocation fails cleanly, not the machine
    torch.manual_seed(0)
    log = open(progress, "w", buffering=1)  # noqa: SIM115 - kept open for the whole run, line-buffered
    failures: list[str] = []
    for index in range(start, len(NAMES)):
        _sweep_one(index, examples, log, failures)
        print(f"OP {index} {NAMES[index]}", flush=True)
    for f in failures:
        print(f, flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    run(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
