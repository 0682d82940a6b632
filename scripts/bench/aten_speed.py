"""Benchmark (issue 23): a model imported through Core ATen serves as fast as the original, imports in time, and
answers soon after upload.

(a) Forward speed: the served graph (bundle zip -> read_bundle -> from_spec -> the version's fx GraphModule, which
    is what the worker runs on the CPU) against the original module's eager forward, in this one process, both under
    torch.inference_mode, timed interleaved (one call of each per round) so that drift on a busy machine hits both:
    GPT-2-small-shaped (12 layers, 768 wide, 12 heads, vocab 50257), BERT-base-shaped (12 layers, 768, 12 heads,
    vocab 30522) at sequence length --seq, and ResNet-50 at 224x224; batch 1 and 32. Reported: medians in ms and
    served/eager. Target: within 10 %.
(b) Import time of the 12-layer BERT-base-shaped model: capture (export, lowering, walk, check) + writing the
    bundle. Target <= 30 s.
(c) First answer after upload: an in-process server with no models; upload the BERT-base bundle (POST /v1/models,
    application/zip) and send one inference: the time from the start of the upload to the answer. Target <= 5 s.

Usage: `python scripts/bench/aten_speed.py [--reps N] [--seq 64] [--quick] [--out PATH]`; prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "app"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from torch import nn  # noqa: E402

from morphserve.capture import capture, write_bundle  # noqa: E402
from morphserve.graph import from_spec, read_bundle  # noqa: E402
from tests.models import vision  # noqa: E402


def gpt2_small() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_embd=768, n_layer=12, n_head=12, vocab_size=50257, n_positions=1024)).eval()


def bert_base() -> nn.Module:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(), add_pooling_layer=False).eval()


def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return vision.resnet50(64).eval()


def _served(module: nn.Module, inputs: list[str], name: str, tmp: Path) -> Any:
    v = capture(module, inputs, name=name)
    write_bundle(v, tmp / f"{name}.zip")
    return from_spec(*read_bundle(tmp / f"{name}.zip"))


def _interleaved(
    a: Callable[..., Any], b: Callable[..., Any], x: tuple[torch.Tensor, ...], reps: int
) -> tuple[float, float]:
    ta, tb = [], []
    with torch.inference_mode():
        for _ in range(2):
            a(*x), b(*x)
        for i in range(reps):
            first, second = (a, b) if i % 2 == 0 else (b, a)  # alternate who goes first
            t0 = time.perf_counter()
            first(*x)
            t1 = time.perf_counter()
            second(*x)
            t2 = time.perf_counter()
            (ta, tb)[0 if first is a else 1].append(t1 - t0)
            (ta, tb)[1 if first is a else 0].append(t2 - t1)
    return statistics.median(ta) * 1e3, statistics.median(tb) * 1e3


def forward_speed(reps: int, seq: int, tmp: Path, quick: bool) -> list[dict[str, Any]]:
    cases: list[tuple[str, Callable[[], nn.Module], list[str], Callable[[int], tuple[torch.Tensor, ...]]]] = [
        ("gpt2_small", gpt2_small, ["input_ids:INT64:-1,-1"], lambda b: (torch.randint(0, 50257, (b, seq)),)),
        ("bert_base", bert_base, ["input_ids:INT64:-1,-1"], lambda b: (torch.randint(0, 30522, (b, seq)),)),
        ("resnet50_224", resnet50, ["input:FP32:-1,3,224,224"], lambda b: (torch.randn(b, 3, 224, 224),)),
    ]
    rows = []
    for name, build, inputs, make in cases:
        module = build()
        served = _served(module, inputs, name, tmp)
        gm = served.graph_module
        for batch in (1, 32):
            x = make(batch)
            n = reps if batch == 1 else max(3, reps // 5)
            eager_ms, served_ms = _interleaved(module, gm, x, 2 if quick else n)
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "seq": seq if name != "resnet50_224" else None,
                    "eager_ms": round(eager_ms, 2),
                    "served_ms": round(served_ms, 2),
                    "ratio": round(served_ms / eager_ms, 3),
                    "nodes": len(served.spec.nodes),
                    "layers": sum(1 for n in served.spec.nodes if n.layer is not None),
                }
            )
        del module, served, gm
    return rows


def import_and_first_answer(tmp: Path) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from morphserve.main import create_app
    from morphserve.settings import Settings

    module = bert_base()
    t0 = time.perf_counter()
    v = capture(module, ["input_ids:INT64:-1,-1"], name="bert_base")
    path = tmp / "bert_base.zip"
    write_bundle(v, path)
    import_s = time.perf_counter() - t0
    token = "bench-token"
    settings = Settings(models=[], admin_token=token, state_dir=tmp / "state")  # type: ignore[call-arg]
    with TestClient(create_app(settings), base_url="http://127.0.0.1:8000") as client:
        body = path.read_bytes()
        ids = torch.randint(0, 30522, (1, 16)).tolist()
        t0 = time.perf_counter()
        r = client.post(
            "/v1/models",
            params={"name": "bert_base"},
            content=body,
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/zip"},
        )
        created = time.perf_counter() - t0
        assert r.status_code == 201, r.text[:300]
        r = client.post("/v1/models/bert_base/infer", json={"inputs": ids})
        first_answer_s = time.perf_counter() - t0
        assert r.status_code == 200, r.text[:300]
    return {
        "import_s": round(import_s, 2),
        "bundle_mb": round(path.stat().st_size / 1e6, 1),
        "upload_to_created_s": round(created, 2),
        "upload_to_first_answer_s": round(first_answer_s, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="two repetitions: checks the script works")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "cpus": os.cpu_count(),
            },
            "forward": forward_speed(args.reps, args.seq, tmp, args.quick),
            "bert_base": import_and_first_answer(tmp),
            "targets": {"forward_ratio_max": 1.10, "import_s_max": 30, "first_answer_s_max": 5},
        }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
