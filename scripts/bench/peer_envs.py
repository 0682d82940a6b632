"""Virtual environments of the heavy peers (TorchServe, Ray Serve; Triton through PyTriton, MLServer and KServe's
ModelServer for the OIP benchmarks of scripts/bench/oip.py), created by the harness on first use.

Each peer gets its own venv under `.venv-peers/<name>` (gitignored, no system site packages), so that its
dependencies (Ray's ~60 packages, TorchServe's Java launcher and its Python backend) never touch morphserve's venv,
and so that each peer runs in the environment its users would give it. Every install is constrained to
`torch==2.13.0`: the local CPU wheel here. An unpinned torch would pull a multi-GB CUDA build, so the harness first
resolves the install with `pip install --dry-run --report` and refuses it if anything but torch 2.13.0 or any
`nvidia-*` package would come in.

Besides the peer itself, each venv gets what `morphserve.graph` imports (torch, numpy, pydantic, safetensors, graphviz):
the peers serve the very modules morphserve serves, built by `morphserve.graph.load_zoo`
(scripts/bench/peers/_model.py).

    python scripts/bench/peer_envs.py [torchserve ray pytriton mlserver kserve]   # set up (or check) the venvs
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / ".venv-peers"
TORCH_PIN = "torch==2.13.0"
#: What morphserve.graph needs besides torch, with morphserve's own lower bounds (pyproject.toml).
APP_GRAPH_DEPS = ("numpy>=1.26", "pydantic>=2.7", "safetensors>=0.4", "graphviz>=0.20")


class PeerSetupError(RuntimeError):
    """A peer's venv could not be created or installed; the message says why and where the log is."""


@dataclass(frozen=True)
class PeerEnv:
    name: str
    requirements: tuple[str, ...]  # pinned peer packages first
    dists: tuple[str, ...]  # distributions whose versions are reported

    @property
    def dir(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.dir / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.dir / "bin"

    @property
    def log(self) -> Path:
        return VENVS / f"{self.name}-setup.log"

    @property
    def _marker(self) -> Path:
        return self.dir / ".bench-ready.json"

    def all_requirements(self) -> list[str]:
        return [*self.requirements, TORCH_PIN, *APP_GRAPH_DEPS]

    def ready(self) -> dict[str, str] | None:
        """The installed versions if this venv was set up with exactly the current requirements, else None."""
        try:
            doc = json.loads(self._marker.read_text())
        except (OSError, ValueError):
            return None
        if doc.get("requirements") != self.all_requirements() or not self.python.exists():
            return None
        return dict(doc.get("versions", {}))

    def ensure(self, quiet: bool = False) -> dict[str, str]:
        """Create and install the venv unless it is ready; the installed versions. Raises PeerSetupError."""
        found = self.ready()
        if found is not None:
            return found
        VENVS.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if not quiet:
            print(f"setting up the {self.name} peer in {self.dir} (first use; log: {self.log}) ...", file=sys.stderr)
        with open(self.log, "w") as log:
            try:
                versions = self._install(log)
            except PeerSetupError as e:
                log.write(f"\nFAILED: {e}\n")
                raise PeerSetupError(f"the {self.name} peer could not be set up: {e} (full log: {self.log})") from e
        self._marker.write_text(
            json.dumps(
                {
                    "requirements": self.all_requirements(),
                    "versions": versions,
                    "setup_s": round(time.perf_counter() - t0, 1),
                },
                indent=1,
            )
        )
        if not quiet:
            print(f"{self.name} peer ready in {time.perf_counter() - t0:.0f} s: {versions}", file=sys.stderr)
        return versions

    def setup_seconds(self) -> float | None:
        try:
            return float(json.loads(self._marker.read_text())["setup_s"])
        except (OSError, ValueError, KeyError):
            return None

    def _run(self, cmd: list[str], log, timeout: float = 1800) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
        log.write(f"$ {' '.join(map(str, cmd))}\n")
        log.flush()
        try:
            r = subprocess.run(
                [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise PeerSetupError(f"{cmd[0]} {cmd[1] if len(cmd) > 1 else ''}: {e}") from e
        log.write(r.stdout + r.stderr + "\n")
        log.flush()
        if r.returncode != 0:
            tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-8:])
            raise PeerSetupError(f"`{' '.join(map(str, cmd[:6]))} ...` exited {r.returncode}:\n{tail}")
        return r

    def _install(self, log) -> dict[str, str]:  # type: ignore[no-untyped-def]
        if not self.python.exists():  # an existing venv is brought up to the requirements by pip, not rebuilt
            # No system site packages (venv's default): the peer sees only what is installed for it here.
            base = getattr(sys, "_base_executable", sys.executable)
            self._run([base, "-m", "venv", "--clear", str(self.dir)], log, timeout=300)
        constraints = VENVS / "constraints.txt"
        constraints.write_text(f"# every install into .venv-peers/* (scripts/bench/peer_envs.py)\n{TORCH_PIN}\n")
        pip = [self.python, "-m", "pip", "install", "--disable-pip-version-check", "-c", constraints]
        report = self._run([*pip, "--dry-run", "--quiet", "--report", "-", *self.all_requirements()], log)
        try:
            planned = {
                i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.stdout)["install"]
            }
        except (ValueError, KeyError) as e:
            raise PeerSetupError(f"could not read pip's dry-run report: {e}") from e
        own = {r.split("[")[0].split("=")[0].split("<")[0].split(">")[0].lower() for r in self.requirements}
        bad = sorted(
            n for n in planned if (n.startswith("nvidia-") and n not in own) or n in ("triton", "cuda-toolkit")
        )
        torch_v = planned.get("torch")  # None: the venv has a torch that satisfies the pin already
        if bad or (torch_v is not None and not torch_v.startswith("2.13.0")):
            raise PeerSetupError(
                f"pip would install torch {torch_v} and {bad or 'no CUDA package'}; refusing "
                "(only the local torch 2.13.0 CPU wheel may go into a peer venv)"
            )
        self._run([*pip, "--quiet", *self.all_requirements()], log)
        code = (
            "import importlib.metadata as m, json; "
            f"print(json.dumps({{d: m.version(d) for d in {list(self.dists) + ['torch']!r}}}))"
        )
        versions = json.loads(self._run([self.python, "-c", code], log, timeout=120).stdout.strip().splitlines()[-1])
        if not versions["torch"].startswith("2.13.0"):
            raise PeerSetupError(f"the venv has torch {versions['torch']}, not 2.13.0")
        return versions


PEER_ENVS: dict[str, PeerEnv] = {
    # 0.12.0 is TorchServe's latest release (2024-09); the issue measured 0.12. Java 17 runs its frontend.
    # pyyaml: imported by TorchServe's Python backend (ts/utils/util.py) but not declared by the wheel.
    "torchserve": PeerEnv(
        "torchserve",
        ("torchserve==0.12.0", "torch-model-archiver==0.12.0", "pyyaml>=6"),
        ("torchserve", "torch-model-archiver"),
    ),
    # 2.60.0: the version the issue measured; it installs beside torch 2.13.0 on Python 3.11.
    "ray": PeerEnv("ray", ("ray[serve]==2.60.0",), ("ray",)),
    # The OIP peers (issue 26). PyTriton 0.7 ships the tritonserver binary and its Python backend stubs (a CUDA-free
    # build runs on the CPU); its own package name starts with nvidia- and is allowed past the CUDA guard.
    "pytriton": PeerEnv("pytriton", ("nvidia-pytriton==0.7.0",), ("nvidia-pytriton",)),
    # uvloop < 0.22: newer uvloop breaks MLServer's inference workers ("There is no current event loop").
    "mlserver": PeerEnv("mlserver", ("mlserver==1.7.1", "uvloop<0.22"), ("mlserver",)),
    "kserve": PeerEnv("kserve", ("kserve==0.21.0",), ("kserve",)),
}


def java_version() -> str | None:
    """`java -version`'s first line, or None when there is no java (TorchServe's frontend needs Java 11+)."""
    java = shutil.which("java")
    if not java:
        return None
    r = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    lines = (r.stderr or r.stdout).strip().splitlines()
    return lines[0] if lines else "?"


def main(argv: list[str]) -> int:
    names = argv or list(PEER_ENVS)
    status = 0
    for name in names:
        env = PEER_ENVS.get(name)
        if env is None:
            print(f"unknown peer {name!r}; choose from {', '.join(PEER_ENVS)}", file=sys.stderr)
            return 2
        try:
            print(name, json.dumps(env.ensure()), f"(set up in {env.setup_seconds()} s)")
        except PeerSetupError as e:
            print(f"error: {e}", file=sys.stderr)
            status = 1
    if "torchserve" in names:
        print("java:", java_version() or "not installed (TorchServe needs Java 11+: apt-get install -y openjdk-17-jre)")
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
