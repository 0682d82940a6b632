#!/usr/bin/env bash
# Set up (first run only) and start the server on 127.0.0.1:8000 with the built-in `digits` model.
# Extra arguments go to `morphserve serve`, e.g. ./scripts/serve.sh --model mlp --port 9000
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/_env.sh"
exec "$ROOT/.venv/bin/morphserve" serve "$@"
