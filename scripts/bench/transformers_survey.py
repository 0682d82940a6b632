"""Survey: which `transformers` models import all the way, and why the others do not (issue 23).

For every model type of `transformers` (AutoModel's table), the base model is built from its default config shrunk
to a small size (random weights, no hub), its inputs guessed from `main_input_name` (input_ids, pixel_values,
input_values, input_features; an encoder-decoder also gets decoder_input_ids), and then:

1. captured with `morphserve.capture` (export, Core ATen, layers, the capture's own check at batch 2);
2. written as a bundle, read back the way the server loads it, and run at batch 3 (and, with a variable length,
   another length): it must match the original within fp32 tolerance (1e-4 x max(1, max|y|)).

A model that cannot be built from a shrunk default config, or whose forward refuses the guessed inputs, is "not
tried" (a limit of this script, not of morphserve). The rest either import or are refused, and the refusal (or
mismatch) is recorded with its reason, one line each.

Usage: `python scripts/bench/transformers_survey.py [--only TYPE ...] [--jobs 2] [--timeout 120] --out survey.json`
(each model runs in its own process, so a crash or a hang costs one entry). `--summary survey.json` prints the
counts and the refusals grouped by reason.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SMALL: dict[str, Any] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 64,
    "vocab_size": 128,
    "max_position_embeddings": 128,
    "d_model": 32,
    "d_ff": 64,
    "d_kv": 8,
    "head_dim": 8,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "encoder_attention_heads": 4,
    "decoder_attention_heads": 4,
    "encoder_ffn_dim": 64,
    "decoder_ffn_dim": 64,
    "n_embd": 32,
    "n_layer": 2,
    "n_head": 4,
    "n_inner": 64,
    "n_positions": 128,
    "num_layers": 2,
    "num_heads": 4,
    "num_experts": 4,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "embedding_size": 32,
    "projection_dim": 32,
    "kv_lora_rank": 16,
    "q_lora_rank": 16,
    "qk_rope_head_dim": 8,
    "qk_nope_head_dim": 8,
    "v_head_dim": 8,
}
_TOKENS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id", "cls_token_id")


def _shrink(cfg: Any) -> None:
    for k, v in SMALL.items():
        if hasattr(cfg, k) and isinstance(getattr(cfg, k), int) and not isinstance(getattr(cfg, k), bool):
            with contextlib.suppress(Exception):  # a property without a setter: leave the default
                setattr(cfg, k, v)
    for k in _TOKENS:
        v = getattr(cfg, k, None)
        if isinstance(v, int) and v >= SMALL["vocab_size"]:
            setattr(cfg, k, 1)
    for k in ("depths",):
        v = getattr(cfg, k, None)
        if isinstance(v, list | tuple) and v:
            setattr(cfg, k, [1] * len(v))
    for k in ("text_config", "vision_config", "audio_config", "encoder", "decoder"):
        sub = getattr(cfg, k, None)
        if sub is not None and hasattr(sub, "to_dict"):
            _shrink(sub)
    if hasattr(cfg, "use_cache"):
        cfg.use_cache = False


def _inputs(model: Any, cfg: Any) -> tuple[str, list[str]] | None:
    main = getattr(model, "main_input_name", "input_ids")
    if main == "input_ids":
        inputs = ["input_ids:INT64:-1,-1"]
        if getattr(cfg, "is_encoder_decoder", False):
            inputs.append("decoder_input_ids:INT64:-1,-1")
        return "text", inputs
    if main == "pixel_values":
        c = getattr(cfg, "num_channels", 3)
        size = getattr(cfg, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        return "vision", [f"pixel_values:FP32:-1,{c},{h},{w}"]
    if main == "input_values":
        return "audio", ["input_values:FP32:-1,-1"]
    if main == "input_features":
        mels = getattr(cfg, "num_mel_bins", getattr(cfg, "feature_size", 80))
        frames = getattr(cfg, "max_source_positions", None)  # Whisper: exactly 2 x its positions, fixed
        inputs = [f"input_features:FP32:-1,{mels},{2 * frames if isinstance(frames, int) else -1}"]
        if getattr(cfg, "is_encoder_decoder", False):
            inputs.append("decoder_input_ids:INT64:-1,-1")
        return "audio", inputs
    return None


def _attempt(model_type: str) -> dict[str, Any]:
    """One model type, in this process: the stage it reached and why it stopped."""
    import torch
    import transformers
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    sys.path.insert(0, str(ROOT / "app"))
    from morphserve.capture.api import capture_with_notes, example_inputs
    from morphserve.capture.refusals import CaptureError
    from morphserve.graph import from_spec, read_bundle
    from morphserve.graph.bundle import write_bundle

    out: dict[str, Any] = {"type": model_type, "class": MODEL_MAPPING_NAMES.get(model_type)}
    try:
        cfg = CONFIG_MAPPING[model_type]()
        _shrink(cfg)
        cls = getattr(transformers, out["class"])
        torch.manual_seed(0)
        model = cls(cfg).eval()
    except Exception as e:  # noqa: BLE001 - this script's small config does not fit the model
        return {**out, "status": "not tried", "stage": "build", "reason": f"{type(e).__name__}: {str(e)[:200]}"}
    guessed = _inputs(model, cfg)
    if guessed is None:
        return {**out, "status": "not tried", "stage": "inputs", "reason": f"main input {model.main_input_name}"}
    out["modality"], inputs = guessed
    out["inputs"] = inputs
    t = time.perf_counter()
    try:
        captured = capture_with_notes(model, inputs, name="m")
    except CaptureError as e:
        if e.message.startswith("forward on inputs of shapes"):
            return {**out, "status": "not tried", "stage": "forward", "reason": e.message[:300]}
        return {**out, "status": "refused", "stage": "capture", "reason": e.message}
    except Exception as e:  # noqa: BLE001 - a capture bug: recorded as such
        return {
            **out,
            "status": "refused",
            "stage": "capture",
            "reason": f"capture raised {type(e).__name__}: {e}"[:400],
        }
    out["capture_s"] = round(time.perf_counter() - t, 2)
    out["notes"] = captured.notes
    v = captured.version
    out["nodes"] = len(v.spec.nodes)
    out["layers"] = sum(1 for n in v.spec.nodes if n.layer is not None)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            write_bundle(v, Path(tmp) / "m.zip")
            served = from_spec(*read_bundle(Path(tmp) / "m.zip"))
        variable = any(d == -1 for t in v.inputs for d in t.shape[1:])
        size = 24 if variable else 32
        lows = [lo for t in v.inputs for lo, d in zip(t.bounds()[0][1:], t.shape[1:], strict=True) if d == -1]
        size = max([size, *lows])
        xs = example_inputs(v.inputs, batch=3, seed=7, size=size)
        names = [t.name for t in v.inputs]
        with torch.no_grad():
            want = model(**dict(zip(names, xs, strict=True)))
        leaves = [
            x
            for p, x in torch.utils._pytree.tree_flatten_with_path(want)[0]
            if isinstance(x, torch.Tensor) and not any("past_key" in str(k) or "cache" in str(k) for k in p)
        ]
        got = served.run(*xs)
        if len(got) != len(leaves):
            return {**out, "status": "refused", "stage": "match", "reason": f"{len(got)} outputs, model {len(leaves)}"}
        for w, g in zip(leaves, got, strict=True):
            if w.shape != g.shape:
                return {
                    **out,
                    "status": "refused",
                    "stage": "match",
                    "reason": f"shape {list(g.shape)} != {list(w.shape)}",
                }
            if w.is_floating_point() and w.numel():
                diff = float((w - g).abs().max())
                if not diff <= 1e-4 * max(1.0, float(w.abs().max())):
                    return {**out, "status": "refused", "stage": "match", "reason": f"differs by {diff:.3g}"}
    except Exception as e:  # noqa: BLE001 - serving the bundle failed: recorded
        return {**out, "status": "refused", "stage": "serve", "reason": f"{type(e).__name__}: {str(e)[:300]}"}
    return {**out, "status": "imported"}


class _Worker:
    """A child process that attempts model types one after another (torch and transformers imported once); a
    crash or a hang costs the entry it was on, and a new child takes over."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def _start(self) -> subprocess.Popen[str]:
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'app'}{os.pathsep}{ROOT}"}
        return subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
            cwd=ROOT,
        )

    def run(self, model_type: str, timeout: float) -> dict[str, Any]:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(model_type + "\n")
        self.proc.stdin.flush()
        result: list[str] = []

        def read() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                if line.startswith("{"):
                    result.append(line)
                    return

        import threading

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        if result:
            return json.loads(result[0])  # type: ignore[no-any-return]
        code = self.proc.poll()
        self.proc.kill()
        self.proc = None
        if code is None:
            return {"type": model_type, "status": "not tried", "stage": "timeout", "reason": f"over {timeout:.0f} s"}
        return {"type": model_type, "status": "refused", "stage": "crash", "reason": f"the process died (exit {code})"}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()


def _serve() -> None:
    """The child's loop: one model type per line in, one JSON line out."""
    for line in sys.stdin:
        model_type = line.strip()
        try:
            out = _attempt(model_type)
        except BaseException as e:  # noqa: BLE001 - whatever happens, the driver gets a line
            out = {
                "type": model_type,
                "status": "refused",
                "stage": "crash",
                "reason": f"{type(e).__name__}: {e}"[:300],
            }
        print(json.dumps(out, default=str), flush=True)


def _summary(results: list[dict[str, Any]]) -> str:
    counts = Counter(r["status"] for r in results)
    tried = [r for r in results if r["status"] != "not tried"]
    lines = [
        f"model types: {len(results)}; tried (built and ran with the guessed inputs): {len(tried)}; "
        f"imported all the way: {counts['imported']}; refused: {counts['refused']}; not tried: {counts['not tried']}"
    ]
    by_modality = Counter((r.get("modality"), r["status"]) for r in tried)
    for m in ("text", "vision", "audio"):
        n = sum(v for (mm, _), v in by_modality.items() if mm == m)
        lines.append(f"  {m}: {by_modality[(m, 'imported')]} imported of {n} tried")
    reasons: Counter[str] = Counter()
    for r in results:
        if r["status"] == "refused":
            reasons[_reason_key(r["reason"])] += 1
    lines.append("refusals by reason:")
    lines += [f"  {n:3d}  {k}" for k, n in reasons.most_common()]
    return "\n".join(lines)


def _reason_key(reason: str) -> str:
    key = re.sub(r" at [^ ]+\.py:\d+ \(`[^`]*`\)", "", reason)
    key = re.sub(r"\d+", "N", key)
    return key[:160]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--serve", action="store_true")
    ap.add_argument("--only", nargs="*")
    ap.add_argument(
        "--shuffle", type=int, default=None, help="try the types in a random order (seed): a run cut short is a sample"
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--summary", type=Path)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(_attempt(a.child), default=str), flush=True)
        return
    if a.serve:
        _serve()
        return
    if a.summary:
        print(_summary(json.loads(a.summary.read_text())))
        return
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    types = a.only or sorted(MODEL_MAPPING_NAMES)
    if a.shuffle is not None:
        __import__("random").Random(a.shuffle).shuffle(types)
    results: list[dict[str, Any]] = []
    queue = list(types)
    lock = __import__("threading").Lock()

    def drain() -> None:
        worker = _Worker()
        try:
            while True:
                with lock:
                    if not queue:
                        return
                    t = queue.pop(0)
                r = worker.run(t, a.timeout)
                with lock:
                    results.append(r)
                    line = f"{r['status']:9s} {r['type']:28s} {r.get('stage', '')}: {str(r.get('reason', ''))[:150]}"
                    print(line, flush=True)
                    if a.out:
                        a.out.write_text(json.dumps(results, indent=1, default=str))
        finally:
            worker.close()

    with ThreadPoolExecutor(a.jobs) as pool:
        for f in [pool.submit(drain) for _ in range(a.jobs)]:
            f.result()
    print(_summary(results))


if __name__ == "__main__":
    main()
