"""Regenerate morphserve's gRPC modules from app/morphserve/api/grpc/inference.proto (grpcio-tools, the dev extra).

    .venv/bin/python scripts/gen_grpc.py          # rewrite inference_pb2.py, inference_pb2.pyi, inference_pb2_grpc.py
    .venv/bin/python scripts/gen_grpc.py --check  # exit 1 if the committed modules differ from what it would write

One change is made to protoc's output: the messages are built in a descriptor pool of their own
(morphserve.api.grpc._pool) instead of protobuf's default pool. The protocol's message names
(`inference.ModelInferRequest` ...) are the same in Triton's and KServe's own modules, which also register them in the
default pool, so a process that imports `tritonclient.grpc` (a test, a benchmark, a user's application embedding the
server) could not import ours there; in a pool of their own they never meet. Nothing on the wire names the pool.
"""

from __future__ import annotations

import argparse
import filecmp
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path("morphserve/api/grpc")
PROTO = PACKAGE / "inference.proto"
OUTPUTS = ("inference_pb2.py", "inference_pb2.pyi", "inference_pb2_grpc.py")
DEFAULT_POOL = "_descriptor_pool.Default()"
OWN_POOL = "_pool.POOL"


def generate(out: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",
        f"-I{ROOT / 'app'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        str(ROOT / "app" / PROTO),
    ]
    subprocess.run(cmd, check=True)
    pb2 = out / PACKAGE / "inference_pb2.py"
    text = pb2.read_text()
    if text.count(DEFAULT_POOL) != 1:
        raise SystemExit(f"protoc's output changed: expected one {DEFAULT_POOL} in {pb2.name}")
    text = text.replace(DEFAULT_POOL, OWN_POOL).replace(
        "from google.protobuf.internal import builder as _builder\n",
        "from google.protobuf.internal import builder as _builder\nfrom morphserve.api.grpc import _pool\n",
    )
    pb2.write_text(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed modules instead of writing")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        differ = []
        for name in OUTPUTS:
            made, committed = Path(tmp) / PACKAGE / name, ROOT / "app" / PACKAGE / name
            if args.check:
                if not committed.exists() or not filecmp.cmp(made, committed, shallow=False):
                    differ.append(name)
            else:
                shutil.copyfile(made, committed)
    if differ:
        print(f"out of date: {', '.join(differ)} (run scripts/gen_grpc.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
