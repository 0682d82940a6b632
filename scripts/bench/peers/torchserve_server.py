"""The TorchServe peer: TorchServe 0.12 with its own batching, the same model, weights and JSON as morphserve's /v1.

Run with the Python of TorchServe's own venv (`.venv-peers/torchserve`, set up by scripts/bench/peer_envs.py). It
packs scripts/bench/peers/torchserve_handler.py into a .mar with `torch-model-archiver` (model config inside:
batchSize, maxBatchDelay, workers), writes a config.properties and a log4j2 config into a fresh work directory,
and runs `torchserve --start --foreground` on it. Inference is TorchServe's own route, `POST /predictions/{model}`,
with the /v1 body `{"inputs": [[...]]}`. Readiness: the management API's `GET /models/{model}` lists every worker
READY (`GET /ping` is no use: it answers Healthy while workers crash in a restart loop).

Settings (what a user benchmarking throughput would set; every one is written to the config below):
- `batchSize` = --max-batch-size (32), `maxBatchDelay` = --batch-delay-ms (2, TorchServe takes whole ms), in the
  .mar's model-config.yaml, the place TorchServe 0.12 documents for them.
- `minWorkers` = `maxWorkers` = --workers (default 1: one Python worker process doing the forwards, the Java
  frontend's Netty threads on the other core, the same split as LitServe's one inference worker and morphserve's
  one batcher).
- `disable_token_authorization=true`: TorchServe 0.12 requires a bearer token on every call by default.
- `disable_system_metrics=true`, `enable_metrics_api=false`: no CPU/memory sampling process, no metrics endpoint.
- log4j2: TorchServe's access log and metrics logs off, everything else at WARN, to stdout; `async_logging=true`.
- `default_response_timeout=120`, `job_queue_size=1000` (default 100 would 503 under deeper loads than c=64).
- Each instance sets TEMP/TMPDIR to its own directory: TorchServe keeps its pid file in the temp dir, and two
  instances (one stopping while the next starts) would otherwise see each other.

Stop it with SIGINT or SIGTERM: it runs `torchserve --stop`, which terminates the Java frontend and its workers.

    .venv-peers/torchserve/bin/python scripts/bench/peers/torchserve_server.py --port 8003 --model mlp
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _model import peer_arg_parser

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
BIN = Path(sys.executable).parent

LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="STDOUT" target="SYSTEM_OUT"><PatternLayout pattern="%d{ISO8601} [%-5p] %c - %m%n"/></Console>
  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="off" additivity="false"/>
    <Logger name="MODEL_METRICS" level="off" additivity="false"/>
    <Logger name="TS_METRICS" level="off" additivity="false"/>
    <Logger name="MODEL_LOG" level="warn"/>
    <Logger name="org.pytorch.serve" level="warn"/>
    <Root level="warn"><AppenderRef ref="STDOUT"/></Root>
  </Loggers>
</Configuration>
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def build(args: argparse.Namespace, work: Path) -> tuple[Path, Path, Path]:
    """The model store (with the .mar), config.properties and the log4j2 config, all under `work`."""
    src = work / "src"
    store = work / "model-store"
    src.mkdir(parents=True)
    store.mkdir()
    (src / "zoo.json").write_text(
        json.dumps(
            {"model": args.model, "options": json.loads(args.options or "{}"), "device": args.device, "root": str(ROOT)}
        )
    )
    (src / "model-config.yaml").write_text(
        f"minWorkers: {args.workers}\nmaxWorkers: {args.workers}\nbatchSize: {args.max_batch_size}\n"
        f"maxBatchDelay: {round(args.batch_delay_ms)}\nresponseTimeout: 120\n"
    )
    shutil.copy(HERE / "torchserve_handler.py", src / "torchserve_handler.py")
    subprocess.run(
        [
            str(BIN / "torch-model-archiver"),
            "--model-name",
            args.model,
            "--version",
            "1.0",
            "--handler",
            str(src / "torchserve_handler.py"),
            "--extra-files",
            str(src / "zoo.json"),
            "--config-file",
            str(src / "model-config.yaml"),
            "--export-path",
            str(store),
        ],
        check=True,
    )
    log4j = work / "log4j2.xml"
    log4j.write_text(LOG4J2)
    props = {
        "inference_address": f"http://{args.host}:{args.port}",
        "management_address": f"http://127.0.0.1:{args.management_port or _free_port()}",
        "metrics_address": f"http://127.0.0.1:{_free_port()}",
        "model_store": str(store),
        "load_models": f"{args.model}.mar",
        "disable_token_authorization": "true",
        "enable_metrics_api": "false",
        "disable_system_metrics": "true",
        "async_logging": "true",
        "default_response_timeout": "120",
        "job_queue_size": "1000",
        "install_py_dep_per_model": "false",
    }
    config = work / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    return store, config, log4j


def main() -> int:
    ap = peer_arg_parser(__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=1, help="TorchServe worker processes of the model")
    ap.add_argument(
        "--management-port",
        type=int,
        default=None,
        help="management API port on 127.0.0.1 (readiness: GET /models/{model}); default a free one",
    )
    ap.add_argument("--work-dir", type=Path, default=None, help="default: a new temp dir, removed at exit")
    args = ap.parse_args()
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        print(
            "error: TorchServe needs Java 11+ (`java` not found): apt-get install -y openjdk-17-jre-headless",
            file=sys.stderr,
        )
        return 3
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="torchserve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    store, config, log4j = build(args, work)
    tmp = work / "tmp"
    tmp.mkdir()
    env = {
        **os.environ,
        "TEMP": str(tmp),
        "TMPDIR": str(tmp),
        "LOG_LOCATION": str(work / "logs"),
        "METRICS_LOCATION": str(work / "logs"),
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [
        str(BIN / "torchserve"),
        "--start",
        "--foreground",
        "--ncs",
        "--disable-token-auth",
        "--ts-config",
        str(config),
        "--model-store",
        str(store),
        "--log-config",
        str(log4j),
    ]
    print("$ " + " ".join(cmd), flush=True)
    print("config.properties:\n" + config.read_text(), flush=True)
    proc = subprocess.Popen(cmd, cwd=work, env=env)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            subprocess.run([str(BIN / "torchserve"), "--stop", "--foreground"], cwd=work, env=env, timeout=90)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while proc.poll() is None:
            time.sleep(0.2)
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if stopping else (proc.returncode or 1)


if __name__ == "__main__":
    raise SystemExit(main())
