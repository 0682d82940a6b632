"""All configuration in one pydantic-settings class: every field is a `MORPHSERVE_*` variable and a CLI flag."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

_DTYPE_ALIASES = {
    "fp32": "FP32",
    "float32": "FP32",
    "float": "FP32",
    "fp16": "FP16",
    "float16": "FP16",
    "half": "FP16",
    "bf16": "BF16",
    "bfloat16": "BF16",
}


CORS_ANY_WITHOUT_TOKEN = (
    "--cors-origins '*' lets every web page call this server, and it has no admin token: any page the user visits "
    "could change or delete its models. Name the pages' origins in --cors-origins, or set --admin-token"
)


def worker_index() -> int | None:
    """Which worker of `serve --workers N` this process is (set by the supervisor), or None for a lone server."""
    value = os.environ.get("MORPHSERVE_WORKER_INDEX")
    return int(value) if value is not None and value.isdigit() else None


def memory_limit() -> int:
    """Bytes of memory available to this process: the cgroup v2/v1 limit if one is set, else physical memory."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            return int(text)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


#: How long SIGTERM waits for the requests in flight before uvicorn cancels them (its graceful shutdown); the
#: Kubernetes manifests size terminationGracePeriodSeconds on it (deploy/kubernetes/base/deployment.yaml).
GRACEFUL_SHUTDOWN_S = 10


class Settings(BaseSettings):
    # Inputs are not repeated in errors: `journal` may be a URL with a password.
    model_config = SettingsConfigDict(env_prefix="MORPHSERVE_", extra="ignore", hide_input_in_errors=True)

    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535)
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["digits"],
        description="models to load: zoo names or spec paths, `name=path` to name one (comma-separated in env)",
    )
    model_dir: Path | None = Field(
        None,
        description="serve every bundle in this directory, each named by its file stem (a model repository: KServe's "
        "/mnt/models), or the one bundle it is; --model then defaults to none",
    )
    model_name: str | None = Field(
        None,
        description="the name of the one model --model-dir holds, whatever its file is called (KServe passes the "
        "InferenceService's name)",
    )
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda|cuda:\d+)$", description="auto picks CUDA when present")
    dtype: str | None = Field(
        None, description="compute datatype of the --model models: FP32, FP16 or BF16 (inputs and outputs stay FP32)"
    )
    max_batch_size: int = Field(32, ge=1, le=4096)
    max_batch_delay_ms: float = Field(
        2.0,
        ge=0,
        le=10_000,
        description="the longest a batch waits to fill; it waits only when requests keep arriving while batches run "
        "(a lone request never waits)",
    )
    batch_wait: Literal["adaptive", "full"] = Field(
        "adaptive",
        description="adaptive: a batch waits only when arrivals predict it fills within the delay; full: every batch "
        "waits up to the delay (TorchServe's batch_delay, Triton's max_queue_delay)",
    )
    max_queue: int = Field(1024, ge=1, description="queued inference requests per model before 503")
    admin_token: str | None = Field(None, description="bearer token for mutating routes")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="host names (or name:port) a tokenless server accepts changes for, besides loopback",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="origins of web pages that may call the API from a browser (`*`: any)"
    )
    state_dir: Path = Field(Path(".morphserve"), description="journal and weight blobs")
    journal: str = Field(
        "sqlite",
        description="where versions are journalled: `sqlite` (a file in the state dir), `memory` (nothing kept) or "
        "`postgresql://user[:password]@host[:port]/database` (shared by replicas)",
    )
    blob_dir: Path | None = Field(
        None,
        description="weight blobs in this directory (e.g. a shared filesystem) instead of the state dir, or of "
        "the database with a PostgreSQL journal",
    )
    fresh: bool = Field(False, description="start with an empty state dir (deletes its journal and blobs)")
    fsync: bool = Field(True, description="fsync blobs and the journal before acknowledging an edit")
    keep_versions: int | None = Field(None, ge=1, description="after each edit keep only the last N versions")
    max_body_mb: float = Field(64.0, gt=0, description="largest request body accepted (413 beyond)")
    max_upload_mb: float = Field(
        4096.0, gt=0, description="largest model bundle accepted by POST /v1/models as application/zip (413 beyond)"
    )
    max_dataset_mb: float = Field(
        256.0,
        gt=0,
        description="largest dataset a model keeps (PUT /v1/models/{m}/datasets/{name}; the body also obeys "
        "--max-body-mb)",
    )
    request_timeout_s: float = Field(30.0, gt=0, description="longest an inference waits for its result (504)")
    feedback_window: int = Field(
        0,
        ge=0,
        le=1_000_000,
        description="keep the inputs of the last N requests (in memory, never logged) so that "
        "POST /v1/models/{m}/feedback can label them by request id; 0: off",
    )
    max_fit_steps: int = Field(10_000, ge=1, description="the most optimizer steps a fit job may take")
    max_fit_seconds: float = Field(600.0, gt=0, description="the longest a fit job may run (it fails after)")
    max_spec_mb: float = Field(
        16.0, gt=0, le=1024, description="largest spec.json of an uploaded bundle, decompressed (422 beyond)"
    )
    read_timeout_s: float = Field(
        30.0,
        gt=0,
        le=3600,
        description="longest a client may take to send a request's headers, or pause while sending its body (408, "
        "then the connection is closed)",
    )
    resident_versions: int = Field(4, ge=1, description="versions kept on the device per model")
    follow_interval_ms: float = Field(
        250.0,
        gt=0,
        le=1000,
        description="how often a replica reads the journal's heads (besides every notification): bounds the lag",
    )
    min_version_wait_ms: float = Field(
        2000.0, ge=0, le=60_000, description="how long ?min_version= waits for this replica to apply a version"
    )
    max_model_bytes: int | None = Field(
        None, ge=1, description="largest parameter size of one model version, in bytes (default: half the memory)"
    )
    workers: int = Field(1, ge=1, le=64, description="server processes behind the one port, each a replica")
    torch_threads: int | None = Field(
        None,
        ge=1,
        le=256,
        description="torch intra-op threads per worker (default: the cores divided among the "
        "workers, one kept for HTTP when each worker gets four or more)",
    )
    edit_switch_interval_us: float = Field(
        20.0,
        ge=0,
        le=5000,
        description="the interpreter's GIL switch interval while an edit is built, in microseconds (0: leave it at "
        "Python's 5 ms); short lets the edit take the GIL back from a loaded event loop at once",
    )
    render_workers: int = Field(
        1, ge=1, le=16, description="graph drawings (SVG, DOT) made at once, on a pool of their own"
    )
    render_timeout_s: float = Field(
        20.0, gt=0, le=600, description="longest graphviz may take to draw a graph's SVG before it is stopped (504)"
    )
    max_render_nodes: int = Field(
        1000, ge=1, description="largest graph drawn as SVG (422 beyond: its JSON has everything)"
    )
    docs: bool = Field(
        False, description="serve the interactive API docs at /docs and /redoc (they load scripts from a CDN)"
    )
    grpc_port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="also serve the Open Inference Protocol over gRPC (inference.GRPCInferenceService, with Triton's "
        "extensions) on this port, on --host (default: off; 8001 is Triton's)",
    )
    compile: Literal["off", "default", "max-autotune"] = Field(
        "off",
        description="compile each new current version with torch.compile (inductor) in the background and serve the "
        "compiled graph once it is checked against the eager one; the edit never waits for it",
    )
    compile_cache_dir: Path | None = Field(
        None,
        description="inductor's cache of compiled graphs (a directory replicas may share; default: compile-cache "
        "under the state dir)",
    )
    log_level: str = Field("info")

    @field_validator("dtype", mode="before")
    @classmethod
    def _dtype(cls, v: object) -> object:
        """`float16`, `fp16`, `half`, `bfloat16`, `bf16`, `float32` are accepted too: they are what people type."""
        if v is None:
            return None
        name = _DTYPE_ALIASES.get(str(v).strip().lower())
        if name is None:
            raise ValueError(f"dtype {v!r} is not one of FP32, FP16, BF16")
        return name

    @field_validator("journal")
    @classmethod
    def _journal(cls, v: str) -> str:
        """A clear refusal that never repeats the value (a database URL carries its password)."""
        if v in ("sqlite", "memory"):
            return v
        url = urlsplit(v)
        if url.scheme in ("postgresql", "postgres") and (url.hostname or "host=" in url.query) and url.path.strip("/"):
            return v
        raise ValueError(
            "journal must be `sqlite`, `memory` or a PostgreSQL URL postgresql://user[:password]@host[:port]/database"
        )

    @model_validator(mode="after")
    def _model_dir_replaces_the_default_model(self) -> Settings:
        """With `--model-dir` the models are the directory's: the default `digits` is served only when asked for."""
        if self.model_name is not None and self.model_dir is None:
            raise ValueError("model_name names the model of --model-dir: give --model-dir too")
        if self.model_dir is not None and "models" not in self.model_fields_set:
            self.models = []
        return self

    @model_validator(mode="after")
    def _cors_any_needs_a_token(self) -> Settings:
        """A tokenless server is one on loopback without --admin-token (elsewhere a token is generated)."""
        if "*" in self.cors_origins and self.admin_token is None and self.loopback_only:
            raise ValueError(CORS_ANY_WITHOUT_TOKEN)
        return self

    @model_validator(mode="after")
    def _blob_dir_needs_a_journal(self) -> Settings:
        if self.blob_dir is not None and self.journal == "memory":
            raise ValueError("blob_dir needs a journal that keeps versions (sqlite or a PostgreSQL URL), not memory")
        if self.workers > 1 and self.journal == "memory":
            raise ValueError(
                "workers > 1 need a journal they share (sqlite or a PostgreSQL URL), not memory: each "
                "worker would keep versions of its own"
            )
        return self

    @property
    def journal_url(self) -> str | None:
        """The PostgreSQL URL of a shared journal, else None."""
        return self.journal if self.journal not in ("sqlite", "memory") else None

    @field_validator("models", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split(cls, v: object) -> object:
        """`MORPHSERVE_MODELS=digits,mlp=spec.json` lists several values in one variable."""
        return [s.strip() for s in v.split(",") if s.strip()] if isinstance(v, str) else v

    @property
    def loopback_only(self) -> bool:
        """True when the server listens on loopback addresses only (then an untokened admin API stays local)."""
        if self.host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def model_bytes_limit(self) -> int:
        """`max_model_bytes`, or half of the memory this process may use (the cgroup limit where one is set): a
        version is built beside the one serving, so two must fit."""
        return self.max_model_bytes or memory_limit() // 2

    def threads_per_worker(self) -> int:
        """The intra-op thread rule: the cores this process may use divided among the workers; with four or more
        each, one of them is left to the event loop (HTTP, JSON) so that compute does not starve it."""
        if self.torch_threads is not None:
            return self.torch_threads
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        share = max(1, cores // self.workers)
        return share - 1 if share >= 4 else share

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    @property
    def max_dataset_bytes(self) -> int:
        return int(self.max_dataset_mb * 1024 * 1024)

    @property
    def max_spec_bytes(self) -> int:
        return int(self.max_spec_mb * 1024 * 1024)
