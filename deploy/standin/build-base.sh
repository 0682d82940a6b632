#!/usr/bin/env bash
# Stand-in base images, for an engine that cannot pull from Docker Hub: built from Debian's archive with
# debootstrap and tagged with the official names, so the Dockerfiles stay exactly what a connected host builds.
#
#   deploy/standin/build-base.sh python    # the morphserve Dockerfile's FROM tag (python:3.11.13-slim-bookworm)
#   deploy/standin/build-base.sh debian    # debian:bookworm-slim, the FROM of deploy/postgres and deploy/nginx
#
# An image already present is left alone. The python stand-in is Debian's python3 (3.11.2 in /usr/bin) with venv
# and pip, not the official image's 3.11.13 in /usr/local; the Dockerfile works with both. The host's extra CA
# certificates (/usr/local/share/ca-certificates) are trusted in the stand-in too, so that pip inside reaches PyPI
# through a TLS-intercepting proxy as the host does. Needs root and debootstrap.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

python_tag() { awk '/^FROM /{print $2; exit}' "$ROOT/Dockerfile"; }

build() {  # build TAG INCLUDE CMD...
  local tag="$1" include="$2"; shift 2
  if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "stand-in $tag: present"
    return
  fi
  local dir log
  dir="$(mktemp -d /tmp/morphserve-standin.XXXXXX)"
  log="$dir.log"
  echo "stand-in $tag: debootstrap $SUITE${include:+ with $include} (log $log)"
  if ! debootstrap --variant=minbase ${include:+--include="$include"} "$SUITE" "$dir" "$MIRROR" >"$log" 2>&1; then
    tail -20 "$log" >&2
    rm -rf "$dir"
    return 1
  fi
  if [ -x "$dir/usr/sbin/update-ca-certificates" ] \
     && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$dir/usr/local/share/ca-certificates/"
    chroot "$dir" update-ca-certificates >>"$log" 2>&1
  fi
  # As lean as the official slim images: no downloaded packages, no package lists (every Dockerfile here runs
  # apt-get update before it installs).
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin "$dir"/var/lib/apt/lists/*
  local changes=(--change "ENV LANG=C.UTF-8")
  for c in "$@"; do changes+=(--change "$c"); done
  tar -C "$dir" -c . | docker import "${changes[@]}" - "$tag" >/dev/null
  rm -rf "$dir" "$log"
  echo "stand-in $tag: built"
}

for which in "${@:-python}"; do
  case "$which" in
    python) build "$(python_tag)" python3,python3-venv,python3-pip,python-is-python3,ca-certificates \
              'CMD ["python3"]' ;;
    debian) build debian:bookworm-slim "" 'CMD ["bash"]' ;;
    *) echo "usage: $0 [python|debian]..." >&2; exit 2 ;;
  esac
done
