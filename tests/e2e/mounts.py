"""A small filesystem of its own for a server under test: a tmpfs in a private mount namespace.

The namespace is held open by a `sleep` process, so a server can be SIGKILLed and restarted on the same tmpfs
(`prefix` runs it inside with nsenter); the test reaches the files through `/proc/<holder>/root`. As root this is
plain `unshare --mount`; otherwise a user namespace maps the caller to root inside, which mounting a tmpfs needs.
Nothing is mounted in the test's own namespace, so nothing is left behind if a test dies.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path


class PrivateTmpfs:
    def __init__(self, size: str = "8m") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="morphserve-tmpfs-"))
        user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
        script = f"mount -t tmpfs -o size={size} tmpfs {self.dir} && echo mounted && exec sleep infinity"
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", *user, "sh", "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.holder.stdout is not None
        line = self.holder.stdout.readline().strip()
        if line != "mounted":
            err = self.holder.stderr.read() if self.holder.stderr else ""
            raise RuntimeError(f"could not mount a tmpfs in a private namespace (unshare/mount): {line} {err}")
        self._enter = ["nsenter", f"--target={self.holder.pid}", "--mount"] + (
            [] if os.geteuid() == 0 else ["--user", "--preserve-credentials"]
        )

    @property
    def namespace(self) -> Path | None:
        """The mount namespace to enter with setns(2), for a forked server (tests/forkserver.py); None unless root,
        since without root the namespace is also a user namespace, which only nsenter (`prefix`) enters."""
        return Path(f"/proc/{self.holder.pid}/ns/mnt") if os.geteuid() == 0 else None

    @property
    def prefix(self) -> list[str]:
        """Prepend to a command to run it inside the namespace, where `self.dir` is the tmpfs."""
        return list(self._enter)

    def path(self, *parts: str) -> Path:
        """A path on the tmpfs, as the test process (outside the namespace) reaches it."""
        return Path(f"/proc/{self.holder.pid}/root") / str(self.dir).lstrip("/") / Path(*parts)

    def remount(self, *, read_only: bool) -> None:
        """The whole tmpfs read-only or writable again (only possible while nothing has a file open for writing)."""
        self._mount("-o", f"remount,{'ro' if read_only else 'rw'}", str(self.dir))

    def freeze(self, *parts: str) -> None:
        """Make a directory on the tmpfs read-only while a server writes there: a read-only bind mount over it, so new
        files cannot be created (files already open stay writable, as on a real remount of a busy filesystem)."""
        target = str(self.dir.joinpath(*parts))
        self._mount("--bind", target, target)
        self._mount("-o", "remount,bind,ro", target)

    def thaw(self, *parts: str) -> None:
        subprocess.run([*self._enter, "umount", str(self.dir.joinpath(*parts))], check=True)

    def _mount(self, *args: str) -> None:
        subprocess.run([*self._enter, "mount", *args], check=True)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()
        self.dir.rmdir()
