# morphserve image. Two stages: `builder` creates a venv at /opt/venv and installs torch and the project into it;
# the final stage is the same slim Python base plus graphviz, the venv, and a non-root user.
#
#   GPU (default):  docker build -t morphserve .
#   CPU:            docker build --build-arg TORCH_VARIANT=cpu -t morphserve:cpu .
#   wheelhouse:     put torch (and any other wheels) into ./wheels/, then
#                   docker build --build-arg TORCH_VARIANT=cpu --build-arg TORCH_INDEX_URL= -t morphserve:cpu .
#                   (empty TORCH_INDEX_URL: torch from ./wheels/, the rest from PyPI; add
#                   --build-arg PIP_NO_INDEX=1 when ./wheels/ holds every dependency, or PIP_INDEX_URL=<mirror>)
#   run:            docker run --gpus all -p 8000:8000 -e MORPHSERVE_ADMIN_TOKEN=... -v morphserve-state:/var/lib/morphserve morphserve
#   more models:    arguments after the image name are appended to `morphserve serve --host 0.0.0.0`,
#                   e.g. `docker run ... morphserve --model digits --model mlp`
#
# No `# syntax=` line on purpose: nothing here needs more than the frontend built into BuildKit and the legacy
# builder, and a syntax line makes BuildKit pull docker/dockerfile from Docker Hub, which breaks air-gapped builds.
#
# Base image: python:3.11-slim rather than nvidia/cuda. PyTorch's CUDA wheels carry their own CUDA runtime, cuBLAS,
# cuDNN and NCCL (the nvidia-* wheels), and the NVIDIA Container Toolkit mounts the host's driver (libcuda) into the
# container at run time, so an nvidia/cuda base would only add a second copy of the CUDA libraries. The same base
# therefore serves the GPU and the CPU image; both stages use it so the venv's interpreter path is identical.
# Pinned to a patch release on a fixed Debian release (both FROM lines alike; the tests check it); bump deliberately.
# Nothing below relies on where the base keeps Python (/usr/local/bin in the official image, /usr/bin in a Debian
# one): `python` on PATH creates the venv, and everything after runs from the venv.
FROM python:3.11.13-slim-bookworm AS builder

# torch is pinned exactly as in constraints.txt (tests/e2e/test_deploy.py keeps the two in sync); pyproject.toml only
# declares the range users' environments must satisfy.
ARG TORCH_VERSION=2.13.0
# Which PyTorch build: the wheel index https://download.pytorch.org/whl/${TORCH_VARIANT}, and what the build checks
# it got (`cpu`, or `cuXYZ` = CUDA X.YZ). torch 2.13 is built for CUDA 12.6 and 13.0 (stable) and 13.2
# (experimental). Default cu126: it runs on the widest range of host drivers (any R525+ driver, via CUDA 12
# minor-version compatibility; cu130 needs R580+) and covers Maxwell through Hopper (sm_50..sm_90: T4, A10, A100,
# L4, L40S, H100, H200). For Blackwell GPUs (B200, RTX 50xx) build with TORCH_VARIANT=cu130 on an R580+ driver.
# TORCH_VARIANT=cpu builds the CPU-only image (no CUDA libraries, about 1 GB instead of several).
ARG TORCH_VARIANT=cu126
# Where torch comes from. Empty: from ./wheels/ and PyPI (whose plain torch==2.13.0 is the CUDA 13.0 build, so
# TORCH_VARIANT=cu130 then, or the CPU wheel in ./wheels/ with TORCH_VARIANT=cpu).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/${TORCH_VARIANT}
# Unset unless given: pip reads them from the environment (PIP_NO_INDEX=1: ./wheels/ only; PIP_INDEX_URL: a mirror).
ARG PIP_NO_INDEX
ARG PIP_INDEX_URL

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# The wheelhouse: ./wheels/ of the build context (a committed README keeps the folder there when it holds no
# wheels). pip looks in it (--find-links) besides the index, and of two torch 2.13.0 builds it takes the one
# whose local label sorts last (+cu126 over +cpu, +cpu over PyPI's unlabelled one); the check below catches a
# mismatch with TORCH_VARIANT.
COPY wheels/ /wheels/
# torch first, alone: a change to the project's source does not invalidate this multi-GB layer. The index for it
# is TORCH_INDEX_URL, else a PIP_INDEX_URL given, else PyPI.
RUN PIP_INDEX_URL="${TORCH_INDEX_URL:-${PIP_INDEX_URL:-https://pypi.org/simple}}" \
    pip install --no-cache-dir --find-links /wheels "torch==${TORCH_VERSION}"

# The build context is an allow-list (.dockerignore): pyproject.toml, constraints.txt, README.md, app/ (and wheels/).
COPY . /src
# Non-editable install of the project; torch==2.13.0 is already satisfied (local versions like +cu126 match), the
# rest (numpy, fastapi, uvicorn, ...) comes from ./wheels/ or PyPI. Then fail the build if the torch in the venv
# is not the version and variant asked for (e.g. PyPI's CUDA build where the CPU one was meant).
RUN pip install --no-cache-dir --find-links /wheels --constraint /src/constraints.txt /src \
    && python -c "import sys, torch; want, version = sys.argv[1:]; \
got = 'cu' + torch.version.cuda.replace('.', '') if torch.version.cuda else 'cpu'; \
sys.exit(None if (got, torch.__version__.split('+')[0]) == (want, version) else \
f'torch {torch.__version__} ({got}) is not {version} ({want}): check TORCH_INDEX_URL and ./wheels/')" \
        "${TORCH_VARIANT}" "${TORCH_VERSION}"


FROM python:3.11.13-slim-bookworm

ARG TORCH_VARIANT=cu126
LABEL org.opencontainers.image.title="morphserve" \
      org.opencontainers.image.description="A model server for live-editable PyTorch models" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.morphserve.torch-variant="${TORCH_VARIANT}"

# graphviz's `dot` renders the SVG graphs (GET /v1/models/{name}/graph?format=svg), and the non-root user owns the
# state dir. One layer for both.
# Not version-pinned on purpose: a pinned Debian version disappears from the archive at the next security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends graphviz \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 morphserve \
    && useradd --system --uid 10001 --gid morphserve --create-home --home-dir /home/morphserve \
       --shell /usr/sbin/nologin morphserve \
    && mkdir -p /var/lib/morphserve \
    && chown morphserve:morphserve /var/lib/morphserve

# NVIDIA_DRIVER_CAPABILITIES: the NVIDIA Container Toolkit mounts the compute (CUDA) and utility (nvidia-smi) parts
# of the host driver. NVIDIA_VISIBLE_DEVICES is deliberately not set: GPUs are granted by `--gpus` / the compose
# device reservation, not by the image.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MORPHSERVE_STATE_DIR=/var/lib/morphserve \
    MORPHSERVE_PORT=8000 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# Journal and weight blobs: keep them on a volume so edits survive container replacement.
VOLUME ["/var/lib/morphserve"]

# Numeric so that runtimes (Kubernetes runAsNonRoot) can verify it is not root; 10001 = morphserve above.
USER 10001:10001
WORKDIR /home/morphserve
EXPOSE 8000

# Ready = models loaded and serving. Python's urllib (already in the image) instead of curl; urlopen raises on any
# non-2xx answer, so 503 while loading counts as unhealthy. start-period covers importing torch and loading models.
HEALTHCHECK --interval=15s --timeout=5s --start-period=90s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v2/health/ready' % os.environ.get('MORPHSERVE_PORT', '8000'), timeout=4)"]

# `docker run IMAGE --model mlp` appends to the entrypoint. The empty CMD matters: without it the base image's
# CMD ["python3"] would be passed to `morphserve serve` as an argument.
ENTRYPOINT ["morphserve", "serve", "--host", "0.0.0.0"]
CMD []

# The venv last (root-owned, read-only to the server): a rebuild after a change to the project redoes only this
# step, and no instruction after it has to snapshot the multi-GB file system again (each one would, and with
# storage drivers that copy whole layers, such as vfs, that is a full copy per instruction).
COPY --from=builder /opt/venv /opt/venv
