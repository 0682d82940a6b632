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
want="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)-$EXTRAS"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch first and exactly pinned: a range would let pip fetch a multi-GB CUDA build on a CPU machine.
  torch_pin="$(grep -o '"torch==[^"]*"' "$ROOT/pyproject.toml" | tr -d '"')"
  "$VENV/bin/python" -m pip install -q "$torch_pin" numpy
  "$VENV/bin/python" -m pip install -q -e "$ROOT${EXTRAS:+[$EXTRAS]}"
  echo "$want" > "$stamp"
fi

# graphviz's `dot` renders SVG graphs; install it from Debian when we can (root, apt available).
if ! command -v dot >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get install -y -q graphviz >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q graphviz >/dev/null 2>&1; }) \
      || echo "warning: could not install graphviz; SVG graphs will answer 503" >&2
  else
    echo "warning: graphviz 'dot' not found; SVG graphs will answer 503 (apt-get install graphviz)" >&2
  fi
fi
