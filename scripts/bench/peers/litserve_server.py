"""The LitServe peer: LitServe with dynamic batching, the same model, weights and JSON as morphserve's /v1 route.

`max_batch_size` and `batch_timeout` match morphserve's `--max-batch-size` / `--max-batch-delay-ms` (32 and 2 ms by
default). LitServe runs the model in a separate inference worker process fed by the API server process, here over
its ZeroMQ queue (`fast_queue=True`, its faster option; `--queue mp` for the multiprocessing default).
Stop it with SIGINT (its Ctrl+C path shuts its workers down; SIGTERM leaves them orphaned).

    python scripts/bench/peers/litserve_server.py --port 8002 --model mlp [--max-batch-size 32] [--batch-timeout-ms 2]
"""

from __future__ import annotations

from typing import Any

import litserve as ls
import numpy as np
import torch
from _model import load_model, peer_arg_parser


class ZooAPI(ls.LitAPI):
    def __init__(self, name: str, options: str | None, device: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.name, self.options, self.device_name = name, options, device

    def setup(self, device: str) -> None:
        self.model = load_model(self.name, self.options, self.device_name)

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # no annotation: LitServe reads it as a schema
        return np.asarray(request["inputs"], dtype=np.float32)  # one request: [rows, ...]

    def batch(self, inputs: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(inputs)).to(self.device_name)

    def predict(self, x: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return self.model(x)[0].cpu().numpy()

    def unbatch(self, output: np.ndarray) -> list[np.ndarray]:
        return [output[i : i + 1] for i in range(len(output))]  # one row per request (one-sample requests)

    def encode_response(self, output: np.ndarray) -> dict[str, Any]:
        return {"model": self.name, "model_version": 1, "outputs": output.tolist()}


def main() -> None:
    ap = peer_arg_parser(__doc__.splitlines()[0], delay_flag="--batch-timeout-ms")
    ap.add_argument(
        "--queue",
        choices=["zmq", "mp"],
        default="zmq",
        help="zmq: LitServe's fast_queue (ZeroMQ), ~15%% more req/s here than mp (multiprocessing)",
    )
    args = ap.parse_args()
    api = ZooAPI(
        args.model,
        args.options,
        args.device,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout_ms / 1000,
        api_path=f"/v1/models/{args.model}/infer",
    )
    server = ls.LitServer(
        api,
        accelerator="cuda" if args.device.startswith("cuda") else "cpu",
        devices=1,
        workers_per_device=1,
        fast_queue=args.queue == "zmq",
        timeout=60,
    )
    server.run(host=args.host, port=args.port, num_api_servers=1, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
