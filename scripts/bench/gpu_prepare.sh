#!/usr/bin/env bash
# Here (with network), before a device run: what the GPU machine lacks for scripts/bench/gpu_check.sh.
# That machine has Python 3.12 with CUDA torch, numpy, pytest, httpx, safetensors, typer, rich, prometheus-client,
# uvloop and h11, but no package registry: morphserve's other dependencies travel as wheels in .whl/, and wrk (a
# Debian binary) with the libraries it links in .gpu-tools/. Both folders are gitignored; name them in `carry`.
#
#   bash scripts/bench/gpu_prepare.sh && du -sh .whl .gpu-tools    # well under the 64 MiB a run may carry
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python3}
rm -rf .whl .gpu-tools
mkdir -p .whl .gpu-tools/lib
# The pure-Python and cp312 manylinux wheels of what app/ and the naive peer import beyond the machine's image.
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  fastapi starlette uvicorn pydantic pydantic-core pydantic-settings python-dotenv typing-inspection \
  annotated-types annotated-doc orjson graphviz httptools
command -v wrk >/dev/null || apt-get install -y -q wrk
cp "$(command -v wrk)" .gpu-tools/wrk
# wrk's own libraries (LuaJIT; OpenSSL is on any CUDA image, but carried too in case).
ldd "$(command -v wrk)" | awk '/=> \// {print $3}' | grep -E 'luajit|libssl|libcrypto' | xargs -r -I{} cp {} .gpu-tools/lib/
ls .whl .gpu-tools .gpu-tools/lib
