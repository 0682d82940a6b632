"""The Triton peer: NVIDIA Triton Inference Server through PyTriton (its Python-backend binding), serving the same zoo
model with Triton's dynamic batcher. Triton speaks the Open Inference Protocol over HTTP (`--port`) and gRPC
(`--grpc-port`), so the OIP JSON body and the gRPC request of scripts/bench/oip.py reach it unchanged.

    .venv-peers/pytriton/bin/python scripts/bench/peers/pytriton_server.py --port 8000 --grpc-port 8001 --model mlp

Runs in its own venv (scripts/bench/peer_envs.py). PyTriton's Python-backend stub links libpython3.11.so by name, and
on this machine finds Debian's 3.11.2 before the interpreter's own 3.11.7 (then the stub fails with "'_thread.RLock'
object has no attribute '_recursion_count'"): the script re-executes itself with LD_LIBRARY_PATH naming its
interpreter's LIBDIR first. Stops on SIGINT (Triton's context manager shuts the server down).
"""

from __future__ import annotations

import os
import sys
import sysconfig

LIBDIR = sysconfig.get_config_var("LIBDIR") or ""
if LIBDIR and os.environ.get("LD_LIBRARY_PATH", "").split(":")[0] != LIBDIR:
    env = {**os.environ, "LD_LIBRARY_PATH": ":".join(p for p in (LIBDIR, os.environ.get("LD_LIBRARY_PATH")) if p)}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _model import load_model, peer_arg_parser  # noqa: E402
from pytriton.decorators import batch  # noqa: E402
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor  # noqa: E402
from pytriton.triton import Triton, TritonConfig  # noqa: E402


def main() -> None:
    ap = peer_arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--grpc-port", type=int, required=True)
    ap.add_argument("--metrics-port", type=int, default=0)
    args = ap.parse_args()
    import json

    from morphserve.graph import load_zoo

    version = load_zoo(args.model, **(json.loads(args.options) if args.options else {}))
    in_shape = tuple(int(d) for d in version.inputs[0].shape[1:])
    out_shape = tuple(int(d) for d in (version.outputs[0].shape or (-1, -1))[1:])
    model = load_model(args.model, args.options, args.device)

    @batch
    def infer(input: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            out = model(torch.from_numpy(input).to(args.device))[0]
        return {"output": out.cpu().numpy()}

    config = TritonConfig(
        http_address=args.host,
        http_port=args.port,
        grpc_address=args.host,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port or args.port + 2,
        allow_metrics=False,
        log_verbose=0,
    )
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.model,
            infer_func=infer,
            inputs=[Tensor(name="input", dtype=np.float32, shape=in_shape)],
            outputs=[Tensor(name="output", dtype=np.float32, shape=out_shape)],
            config=ModelConfig(
                max_batch_size=args.max_batch_size,
                batcher=DynamicBatcher(max_queue_delay_microseconds=int(args.batch_delay_ms * 1000)),
            ),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
