"""A real server that a test stops and starts again on the same port and state dir (a restart from the journal)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import TOKEN, ServerProcess, free_port


class Restartable:
    """A server on a fixed port and state dir that can be stopped and started again."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.tmp, self.args, self.port, self.starts = tmp, list(args), free_port(), 0
        self.server = self.start()

    def start(self) -> ServerProcess:
        self.starts += 1
        args = [*self.args, "--admin-token", TOKEN, "--state-dir", str(self.tmp / "state")]
        self.server = ServerProcess(args, log=self.tmp / f"server-{self.starts}.log", port=self.port)
        return self.server.wait_ready(timeout=240)

    def restart(self) -> None:
        self.server.stop()
        assert self.server.proc.returncode in (0, -15), self.server.logs()  # uvicorn re-raises SIGTERM when done
        self.start()
