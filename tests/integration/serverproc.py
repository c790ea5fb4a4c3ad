"""A real `convserve serve` process for end-to-end tests, through service.process (start on
127.0.0.1 with free ports, wait for the ready line, SIGTERM)."""

from __future__ import annotations

from pathlib import Path

from service import process

ROOT = Path(__file__).resolve().parents[2]


class ServerProcess(process.ServerProcess):
    """The endpoints under the names the end-to-end tests use."""

    @property
    def grpc_target(self) -> str:
        return str(self.endpoint("grpc"))

    @property
    def metrics_url(self) -> str:
        return self.url("metrics", "/metrics")


def start_server(repository: Path, *extra: str, timeout: float = 300.0) -> ServerProcess:
    """Start `convserve serve` on ephemeral loopback ports and wait for its ready line."""
    return ServerProcess.start(
        process.serve_command(repository, *extra),
        timeout=timeout,
        name="convserve",
        env=process.loopback_env(),
        cwd=ROOT,
    )


def stop_server(server: ServerProcess, timeout: float = 60.0) -> int:
    """SIGTERM and the exit code; a server that had to be killed fails the test."""
    code = server.stop(timeout)
    if server.killed:
        raise AssertionError("server did not exit after SIGTERM:\n" + server.log())
    return code
