"""The Ray Serve peer: a Ray Serve deployment with `@serve.batch`, the same model, weights and JSON as /v1.

Run with the Python of Ray's own venv (`.venv-peers/ray`, set up by scripts/bench/peer_envs.py). It starts a local
Ray instance, Serve's HTTP proxy on --host:--port, and one replica whose `__call__` parses the /v1 body and awaits
a `@serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)` method: one forward per batch, one row back per
request. The route is morphserve's, `POST /v1/models/{model}/infer` (the application's route prefix); readiness is
Serve's `GET /-/routes` listing that prefix.

Settings (each a choice a user tuning for throughput would make, documented in scripts/bench/README.md):
- `max_batch_size` = --max-batch-size (32), `batch_wait_timeout_s` = --batch-delay-ms / 1000 (0.002).
- one replica (`num_replicas=1`, `num_cpus=1`): the proxy actor, Ray's own daemons (GCS, raylet) and the replica
  share the 2 cores; `max_ongoing_requests=256`: Serve's default (5) would cap a batch at 5 requests.
- `ray.init(num_cpus=2, include_dashboard=False)`, 256 MiB object store, usage stats off, Ray's token auth between
  its own processes off (RAY_AUTH_MODE=disabled: all on loopback), logs at WARNING and Serve's access log off
  (`LoggingConfig(enable_access_log=False)`).
- The replica gets OMP_NUM_THREADS from this process (runtime_env), and sets torch's threads from it.

Stop it with SIGINT: Serve and Ray shut down (`serve.shutdown()`, `ray.shutdown()`), taking their processes along.

    .venv-peers/ray/bin/python scripts/bench/peers/ray_server.py --port 8004 --model mlp
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # before `import ray`: it reads them at import
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # token auth between Ray's own processes, all on loopback here

import numpy as np  # noqa: E402
import ray  # noqa: E402
from _model import peer_arg_parser  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.config import HTTPOptions  # noqa: E402
from ray.serve.schema import LoggingConfig  # noqa: E402


def deployment(model: str, options: str | None, device: str, max_batch_size: int, batch_wait_s: float) -> Any:
    @serve.deployment(
        num_replicas=1,
        max_ongoing_requests=256,
        ray_actor_options={"num_cpus": 1},
        logging_config=LoggingConfig(log_level="WARNING", enable_access_log=False),
    )
    class Zoo:
        def __init__(self) -> None:
            import torch

            sys.path.insert(0, str(HERE))
            from _model import load_model  # the same module and weights as every other server

            threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
            if threads > 0:
                torch.set_num_threads(threads)
            self.torch = torch
            self.model = load_model(model, options, device)
            print(
                f"Zoo replica ready: {model} on {device}, torch {torch.__version__}, "
                f"{torch.get_num_threads()} intra-op thread(s)",
                flush=True,
            )

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def infer(self, rows: list[np.ndarray]) -> list[dict[str, Any]]:
            x = self.torch.from_numpy(np.concatenate(rows)).to(device)
            with self.torch.inference_mode():
                out = self.model(x)[0].cpu().numpy()
            answers, i = [], 0
            for r in rows:
                answers.append({"model": model, "model_version": 1, "outputs": out[i : i + len(r)].tolist()})
                i += len(r)
            return answers

        async def __call__(self, request: Any) -> dict[str, Any]:
            body = await request.json()
            return await self.infer(np.asarray(body["inputs"], dtype=np.float32))

    return Zoo.bind()


def main() -> int:
    ap = peer_arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--num-cpus", type=int, default=os.cpu_count() or 2, help="Ray's logical CPUs")
    args = ap.parse_args()
    temp = Path(tempfile.mkdtemp(prefix="ray-"))  # short: Ray's socket paths must stay under 107 bytes
    env = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONPATH") if k in os.environ}
    ray.init(
        num_cpus=args.num_cpus,
        num_gpus=1 if args.device.startswith("cuda") else 0,
        include_dashboard=False,
        object_store_memory=256 * 1024**2,
        _temp_dir=str(temp),
        logging_level="warning",
        log_to_driver=True,
        runtime_env={"env_vars": env},
    )
    serve.start(
        http_options=HTTPOptions(host=args.host, port=args.port),
        logging_config=LoggingConfig(log_level="WARNING", enable_access_log=False),
    )
    route = f"/v1/models/{args.model}/infer"
    app = deployment(args.model, args.options, args.device, args.max_batch_size, args.batch_delay_ms / 1000)
    serve.run(app, name=args.model, route_prefix=route)
    print(f"RAY_SERVE_READY {json.dumps({'route': route, 'ray': ray.__version__})}", flush=True)

    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
