"""The MLServer peer: Seldon MLServer serving the same zoo model through a custom runtime (mlserver_runtime.py), with
MLServer's adaptive batching (`max_batch_size`, `max_batch_time`) and one inference worker process.

    .venv-peers/mlserver/bin/python scripts/bench/peers/mlserver_server.py --port 8000 --grpc-port 8001 --model mlp

Writes MLServer's settings.json and model-settings.json into a temporary directory and runs `mlserver start` on it
(the launcher MLServer's users run), with this directory and the repository on PYTHONPATH so that its workers import
the runtime and morphserve.graph. Runs in its own venv (peer_envs.py; uvloop < 0.22, see there). Stops on SIGINT.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from _model import ROOT, peer_arg_parser

HERE = Path(__file__).resolve().parent


def main() -> int:
    ap = peer_arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--grpc-port", type=int, required=True)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlserver-bench-") as tmp:
        folder = Path(tmp)
        (folder / "settings.json").write_text(
            json.dumps(
                {
                    "host": args.host,
                    "http_port": args.port,
                    "grpc_port": args.grpc_port,
                    "metrics_port": args.port + 2,
                    "metrics_endpoint": None,
                    "parallel_workers": 1,
                    "debug": False,
                }
            )
        )
        model_dir = folder / args.model
        model_dir.mkdir()
        (model_dir / "model-settings.json").write_text(
            json.dumps(
                {
                    "name": args.model,
                    "implementation": "mlserver_runtime.TorchRuntime",
                    "max_batch_size": args.max_batch_size,
                    "max_batch_time": args.batch_delay_ms / 1000,
                    "parameters": {"extra": {"zoo": args.model, "options": args.options, "device": args.device}},
                }
            )
        )
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), os.environ.get("PYTHONPATH", "")])}
        mlserver = Path(sys.executable).parent / "mlserver"
        proc = subprocess.Popen([str(mlserver), "start", str(folder)], env=env)
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)
            try:
                return proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
