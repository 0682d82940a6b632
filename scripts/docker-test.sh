#!/usr/bin/env bash
# Build the morphserve CPU image in a real Docker engine and test it there (tests/docker, pytest marker `docker`).
#
#   scripts/docker-test.sh               the image: user, health, inference, auth, volume, SIGTERM, graphviz, size
#   scripts/docker-test.sh --replicas    also the compose stack of docker-compose.replicas.yml (postgres, 2 replicas,
#                                        nginx): every replica follows the one PostgreSQL journal (issue 13)
#   scripts/docker-test.sh --record      write the report to docs/bench/docker-test.json (else build/docker-test.json)
#   scripts/docker-test.sh -- -k sigterm arguments after `--` go to pytest
#
# What it does, each step only when needed: installs docker.io and debootstrap (and docker-compose for --replicas)
# with apt; starts dockerd (MORPHSERVE_DOCKERD_STORAGE, default overlay2, else vfs; MORPHSERVE_DOCKERD_ROOT, default
# /var/lib/docker) when no engine answers, and stops it at the end; pulls the FROM images, or builds Debian
# stand-ins for them (deploy/standin/build-base.sh) when Docker Hub is out of reach; copies the local CPU torch
# wheel (MORPHSERVE_TORCH_WHEELS, default /opt/wheels) into wheels/ when no torch wheel is there and then builds
# with an empty TORCH_INDEX_URL, else from the PyTorch CPU index. Logs go to build/docker-test/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REPLICAS=0
RECORD=0
PYTEST_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --replicas) REPLICAS=1 ;;
    --record) RECORD=1 ;;
    --) shift; PYTEST_ARGS=("$@"); break ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

IMAGE="${MORPHSERVE_TEST_IMAGE:-morphserve:cpu}"
LOGS="$ROOT/build/docker-test"
REPORT="$LOGS/report.json"
mkdir -p "$LOGS"
rm -f "$REPORT"
T0=$(date +%s)
LOAD_AT_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
declare -A TIMES=()
log() { printf '[docker-test %s] %s\n' "$(date +%H:%M:%S)" "$*"; }
timed() {  # timed NAME COMMAND...: run it, remember its wall time
  local name="$1" t
  shift
  t=$(date +%s)
  "$@"
  TIMES[$name]=$(( $(date +%s) - t ))
  log "$name: ${TIMES[$name]} s"
}

# --- tools -----------------------------------------------------------------------------------------------------------
install_tools() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 && command -v docker >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ "$REPLICAS" = 1 ] && ! command -v docker-compose >/dev/null 2>&1 \
     && ! docker compose version >/dev/null 2>&1; then
    missing+=(docker-compose)
  fi
  [ "${#missing[@]}" -eq 0 ] && return
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]} (install them, or run as root on Debian/Ubuntu)" >&2
    exit 1
  fi
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${missing[@]}" >"$LOGS/apt.log" 2>&1 \
    || { apt-get update -q >>"$LOGS/apt.log" 2>&1 && apt-get install -y -q --no-install-recommends "${missing[@]}" \
         >>"$LOGS/apt.log" 2>&1; } \
    || { tail -20 "$LOGS/apt.log" >&2; exit 1; }
}

# --- engine ----------------------------------------------------------------------------------------------------------
DOCKERD_PID=""
ENGINE_STARTED=false
stop_engine() {
  [ -n "$DOCKERD_PID" ] || return 0
  log "stopping the dockerd this script started (pid $DOCKERD_PID)"
  kill "$DOCKERD_PID" 2>/dev/null || true
  for _ in $(seq 60); do kill -0 "$DOCKERD_PID" 2>/dev/null || return 0; sleep 0.5; done
  kill -9 "$DOCKERD_PID" 2>/dev/null || true
}
start_engine() {
  if docker info >/dev/null 2>&1; then
    log "engine: using the running one"
    return
  fi
  local data_root="${MORPHSERVE_DOCKERD_ROOT:-/var/lib/docker}" storage
  # overlay2 where the kernel and file system allow it (it shares layers; vfs copies each layer whole, which makes
  # every build step and container start copy the ~1.4 GB file system), else vfs, which runs anywhere.
  for storage in ${MORPHSERVE_DOCKERD_STORAGE:-overlay2 vfs}; do
    log "engine: starting dockerd --storage-driver=$storage --data-root=$data_root (log $LOGS/dockerd.log)"
    dockerd --storage-driver="$storage" --data-root="$data_root" >"$LOGS/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    ENGINE_STARTED=true
    trap stop_engine EXIT
    for _ in $(seq 120); do
      docker info >/dev/null 2>&1 && return
      kill -0 "$DOCKERD_PID" 2>/dev/null || break
      sleep 0.5
    done
    log "engine: dockerd with $storage did not come up: $(tail -1 "$LOGS/dockerd.log")"
    stop_engine
    DOCKERD_PID=""
  done
  echo "no dockerd came up; see $LOGS/dockerd.log" >&2
  exit 1
}

# --- base images -----------------------------------------------------------------------------------------------------
BASES_BUILT=()
base_image() {  # base_image TAG STANDIN: present, else pulled, else a Debian stand-in
  local tag="$1" standin="$2"
  docker image inspect "$tag" >/dev/null 2>&1 && return
  if timeout 300 docker pull -q "$tag" >"$LOGS/pull.log" 2>&1; then
    log "base $tag: pulled"
    return
  fi
  log "base $tag: cannot pull ($(tail -1 "$LOGS/pull.log")); building a Debian stand-in"
  "$ROOT/deploy/standin/build-base.sh" "$standin"
  BASES_BUILT+=("$tag")
}
base_images() {
  base_image "$(awk '/^FROM /{print $2; exit}' Dockerfile)" python
  if [ "$REPLICAS" = 1 ]; then base_image debian:bookworm-slim debian; fi
}

# --- the image -------------------------------------------------------------------------------------------------------
build_image() {
  local args=(--build-arg TORCH_VARIANT=cpu) version wheel
  version="$(awk -F= '/^ARG TORCH_VERSION=/{print $2; exit}' Dockerfile)"
  if ! compgen -G "wheels/torch-*.whl" >/dev/null; then
    wheel="$(compgen -G "${MORPHSERVE_TORCH_WHEELS:-/opt/wheels}/torch-${version}+cpu-*.whl" | head -1 || true)"
    if [ -n "$wheel" ]; then
      log "wheels/: adding $(basename "$wheel")"
      cp "$wheel" wheels/
    fi
  fi
  if compgen -G "wheels/torch-*.whl" >/dev/null; then
    args+=(--build-arg TORCH_INDEX_URL=)  # torch from wheels/, the rest from PyPI
    log "build $IMAGE: torch from wheels/ ($(cd wheels && ls torch-*.whl | tr '\n' ' '))"
  else
    log "build $IMAGE: torch from the PyTorch CPU index"
  fi
  # The step lines as progress; the whole output in the log.
  if ! docker build "${args[@]}" -t "$IMAGE" . 2>&1 | tee "$LOGS/build.log" | grep --line-buffered '^Step '; then
    tail -30 "$LOGS/build.log" >&2
    exit 1
  fi
  # The builder stage tagged too (all cached, seconds), so that pruning the images that the rebuild left dangling
  # (the previous image's multi-GB venv layer) keeps the cache that the next build starts from.
  docker build "${args[@]}" --target builder -t "$IMAGE-builder" . >"$LOGS/build-builder.log" 2>&1
  docker image prune -f >/dev/null
}
build_stack_images() {
  docker build -t morphserve-postgres:15 deploy/postgres >"$LOGS/build-postgres.log" 2>&1 \
    || { tail -30 "$LOGS/build-postgres.log" >&2; exit 1; }
  docker build -t morphserve-nginx:1.22 deploy/nginx >"$LOGS/build-nginx.log" 2>&1 \
    || { tail -30 "$LOGS/build-nginx.log" >&2; exit 1; }
}

# --- run -------------------------------------------------------------------------------------------------------------
timed tools install_tools
timed engine start_engine
images_before="$(docker info --format '{{.Images}}')"
timed base_images base_images
timed build_image build_image
if [ "$REPLICAS" = 1 ]; then timed build_stack_images build_stack_images; fi

PY="${PYTHON:-$ROOT/.venv/bin/python}"
if [ ! -x "$PY" ]; then
  log "no venv at $ROOT/.venv: setting it up (scripts/_env.sh dev)"
  "$ROOT/scripts/_env.sh" dev
  PY="$ROOT/.venv/bin/python"
fi
MARK="docker and not replicas"
[ "$REPLICAS" = 1 ] && MARK="docker"
log "pytest -m '$MARK' tests/docker"
t=$(date +%s)
set +e
MORPHSERVE_TEST_IMAGE="$IMAGE" MORPHSERVE_DOCKER_REPORT="$REPORT" "$PY" -m pytest -m "$MARK" tests/docker -v -rA \
  -p no:cacheprovider --junitxml="$LOGS/junit.xml" "${PYTEST_ARGS[@]}"
rc=$?
set -e
TIMES[tests]=$(( $(date +%s) - t ))
TIMES[total]=$(( $(date +%s) - T0 ))

# --- report ----------------------------------------------------------------------------------------------------------
compose_version=none
if command -v docker-compose >/dev/null 2>&1; then compose_version="docker-compose $(docker-compose version --short)"
elif docker compose version >/dev/null 2>&1; then compose_version="docker compose $(docker compose version --short)"; fi
export REPORT PYTEST_RC=$rc REPLICAS ENGINE_STARTED IMAGES_BEFORE="$images_before" STANDINS="${BASES_BUILT[*]:-}"
export COMPOSE_VERSION="$compose_version" STORAGE="$(docker info --format '{{.Driver}}')"
export DOCKER_CLIENT="$(docker version --format '{{.Client.Version}}')"
export DOCKER_ENGINE="$(docker version --format '{{.Server.Version}}')"
export TIMES_TSV="$(for k in "${!TIMES[@]}"; do printf '%s\t%s\n' "$k" "${TIMES[$k]}"; done)"
export JUNIT="$LOGS/junit.xml" LOAD_AT_START LOAD_AT_END="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
"$PY" - <<'PY'
import json, os
import xml.etree.ElementTree as ET
from pathlib import Path

env = os.environ
path = Path(env["REPORT"])
data = json.loads(path.read_text()) if path.exists() else {}  # the image sizes, from test_image.py
suite = ET.parse(env["JUNIT"]).getroot().find("testsuite") if Path(env["JUNIT"]).exists() else None
counts = {k: int(suite.get(k, 0)) if suite is not None else 0 for k in ("tests", "failures", "errors", "skipped")}
data.update({
    "pytest_exit_code": int(env["PYTEST_RC"]),
    "tests": {"passed": counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
              "failed": counts["failures"] + counts["errors"], "skipped": counts["skipped"]},
    "replicas": env["REPLICAS"] == "1",
    "seconds": {k: int(v) for k, v in (line.split("\t") for line in env["TIMES_TSV"].splitlines())},
    "cold": {"engine_started": env["ENGINE_STARTED"] == "true", "images_before": int(env["IMAGES_BEFORE"]),
             "stand_in_bases_built": env["STANDINS"].split()},
    "versions": {"docker_client": env["DOCKER_CLIENT"], "docker_engine": env["DOCKER_ENGINE"],
                 "storage_driver": env["STORAGE"], "compose": env["COMPOSE_VERSION"]},
    "load_average": {"start": env["LOAD_AT_START"], "end": env["LOAD_AT_END"]},
})
path.write_text(json.dumps(data, indent=2) + "\n")
print(json.dumps(data, indent=2))
PY
if [ "$RECORD" = 1 ]; then
  mkdir -p docs/bench
  cp "$REPORT" docs/bench/docker-test.json
  log "recorded docs/bench/docker-test.json"
fi
stop_engine
DOCKERD_PID=""
log "done in ${TIMES[total]} s (pytest exit code $rc)"
# The closing line, in the plain form CI reads.
"$PY" -c "import json, sys; t = json.load(open(sys.argv[1]))['tests']; \
print(f\"docker-test: {t['passed']} passed, {t['failed']} failed, {t['skipped']} skipped\")" "$REPORT"
exit "$rc"
