#!/usr/bin/env bash
# The tools tests/deploy/test_kubernetes.py checks the manifests with, beyond the dev extra (kubernetes-validate and
# the kserve SDK are there): checkov in a venv of its own, .venv-checkov, because it pins packaging, networkx and
# others to versions older than the project's (installed beside them it would downgrade them). kubectl (for
# `kubectl kustomize`) comes with the machine image; where it is missing this says so (Debian's kubernetes-client
# is 1.20, whose kustomize is too old for these overlays). Idempotent: does nothing when the pinned version is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${MORPHSERVE_CHECKOV_VENV:-$ROOT/.venv-checkov}"
CHECKOV_VERSION=3.3.30
PY="${PYTHON:-python3}"

if ! "$VENV/bin/checkov" --version 2>/dev/null | grep -qx "$CHECKOV_VERSION"; then
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q "checkov==$CHECKOV_VERSION"
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "warning: kubectl not found: tests/deploy/test_kubernetes.py builds the overlays with \`kubectl kustomize\`" \
    "(kubectl >= 1.27, kustomize >= 5); install it from the Kubernetes apt repository or your distribution" >&2
fi
