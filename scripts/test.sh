#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/_env.sh" dev
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"
