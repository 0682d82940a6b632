#!/usr/bin/env bash
# The style checks CI runs, and what a developer runs before committing (in the spirit of Starlette's scripts/check):
# lint, formatting and types. Any finding fails. Uses the venv that scripts/test.sh sets up.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${MORPHSERVE_VENV:-$ROOT/.venv}/bin"
set -x
"$BIN/ruff" check .
"$BIN/ruff" format --check .
"$BIN/mypy"
