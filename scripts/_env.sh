#!/usr/bin/env bash
# Shared set-up for serve.sh and test.sh: a local venv with the pinned CPU torch and the project installed.
# Idempotent: reinstalls only when pyproject.toml changed (or the extras asked for differ).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MORPHSERVE_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.morphserve-installed"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -d' ' -f1)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first, exactly as constraints.txt pins it (pyproject.toml only declares a range, which would let pip
  # fetch a multi-GB CUDA build on a CPU machine); every later install is held to the same constraints.
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" torch numpy
  "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  if [ "$EXTRAS" = "dev" ]; then
    # The ONNX import tests need onnx2torch, but not its torchvision: the one pip finds here is built for CUDA
    # torch and breaks `import torchvision` (and so transformers' image code) next to the CPU torch pinned above.
    # morphserve.capture.onnx stands in for the two operators it needs torchvision for.
    "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" --no-deps "onnx2torch>=1.5"
  fi
  echo "$want" > "$stamp"
fi
# checkov for tests/deploy, in a venv of its own (a no-op when it is there).
if [ "$EXTRAS" = "dev" ]; then "$ROOT/scripts/k8s_tools.sh"; fi

# System tools from Debian, installed when we can (root, apt available): graphviz's `dot` renders SVG graphs
# (serving); the dev set-up also wants docker-compose (validates the compose file), wrk (benchmarks), chromium
# (the browser tests of the web page: Playwright cannot download its own browser here) and PostgreSQL's server
# (the tests start a throwaway cluster for the shared journal: tests/pg.py). Debian keeps initdb off PATH, under
# /usr/lib/postgresql/<version>/bin.
need=("dot:graphviz")
if [ "$EXTRAS" = "dev" ]; then need+=("docker-compose:docker-compose" "wrk:wrk" "chromium:chromium"); fi
# tests/e2e/test_partitions.py: network namespaces and faults in them
if [ "$EXTRAS" = "dev" ]; then need+=("ip:iproute2" "iptables:iptables"); fi
missing=()
for pair in "${need[@]}"; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "$EXTRAS" = "dev" ] && ! command -v initdb >/dev/null 2>&1 \
    && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing+=("postgresql")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "${missing[@]}" >/dev/null 2>&1; } \
      || echo "warning: could not install ${missing[*]} from Debian" >&2
  else
    echo "warning: ${missing[*]} not found (apt-get install ${missing[*]}); SVG graphs answer 503 without graphviz," \
      "the PostgreSQL tests fail without postgresql" >&2
  fi
fi
