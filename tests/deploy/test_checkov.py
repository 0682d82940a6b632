"""checkov on deploy/kubernetes (issue 27): the built overlays and the KServe resources pass every Kubernetes policy
(zero failed checks; each check skipped carries its reason in a `checkov.io/skipN` annotation), and the sources hold
no secret beyond the dev overlay's fixed development values.

checkov lives in a venv of its own (scripts/k8s_tools.sh makes .venv-checkov: its pins would downgrade the project's
packages); its absence fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.deploy.test_kubernetes import K8S, OVERLAYS, build

CHECKOV_VENV = Path(os.environ.get("MORPHSERVE_CHECKOV_VENV", ROOT / ".venv-checkov"))


def test_checkov_finds_nothing_and_every_skip_says_why(tmp_path: Path) -> None:
    checkov = CHECKOV_VENV / "bin" / "checkov"
    if not checkov.exists():
        pytest.fail(f"checkov is not installed at {checkov}: run scripts/k8s_tools.sh")
    files = []
    for overlay in OVERLAYS:
        path = tmp_path / f"{overlay}.yaml"
        path.write_text(yaml.safe_dump_all(build(str(K8S / f"overlays/{overlay}"))))
        files.append(path)
    files += sorted((K8S / "kserve").glob("*.yaml"))
    # The built overlays (what a cluster gets) against the Kubernetes policies; the sources for secrets (the
    # built Secrets are base64, which any entropy check flags: the dev overlay's values are dev-only on purpose).
    reports = _checkov(checkov, tmp_path, "kubernetes", [a for f in files for a in ("-f", str(f))])
    reports += _checkov(checkov, tmp_path, "secrets", ["-d", str(K8S)])
    kubernetes = [rep for rep in reports if rep.get("check_type") == "kubernetes"]
    assert kubernetes and kubernetes[0]["summary"]["passed"] > 100, kubernetes
    failed = [(c["check_id"], c["resource"]) for rep in reports for c in rep["results"]["failed_checks"]]
    assert not failed, failed
    skipped = [c for rep in reports for c in rep["results"]["skipped_checks"]]
    assert all(len(c["check_result"].get("suppress_comment", "")) > 20 for c in skipped), skipped


def _checkov(checkov: Path, cwd: Path, framework: str, targets: list[str]) -> list[dict[str, Any]]:
    """checkov's JSON reports (offline: --skip-download keeps it from asking Prisma Cloud for guidelines)."""
    r = subprocess.run(
        [str(checkov), "--framework", framework, "--skip-download", "--output", "json", *targets],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    assert r.returncode in (0, 1), r.stderr[-2000:]
    reports = json.loads(r.stdout)
    if isinstance(reports, dict) and "check_type" not in reports:  # nothing of this framework found at all
        return []
    return reports if isinstance(reports, list) else [reports]
