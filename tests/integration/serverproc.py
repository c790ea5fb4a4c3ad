"""A real `convserve serve` process for end-to-end tests (start, ready line, SIGTERM)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"convserve serving grpc=(\S+):(\d+) metrics=(\S+):(-?\d+)")


@dataclass
class ServerProcess:
    proc: subprocess.Popen[str]
    pump: threading.Thread
    grpc_target: str
    metrics_url: str
    output: list[str] = field(default_factory=list)

    def log(self) -> str:
        return "".join(self.output)


def start_server(repository: Path, *extra: str, timeout: float = 300.0) -> ServerProcess:
    """Start `convserve serve` on ephemeral ports and wait for its ready line."""
    cmd = [
        sys.executable, "-m", "convserve", "serve",
        "--repository", str(repository),
        "--grpc-host", "127.0.0.1", "--grpc-port", "0",
        "--metrics-host", "127.0.0.1", "--metrics-port", "0",
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    ready: list[re.Match[str]] = []
    seen = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = READY.search(line)
            if m and not ready:
                ready.append(m)
                seen.set()
        seen.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while not seen.wait(0.2):
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("server not ready in time:\n" + "".join(lines))
    if not ready:
        proc.wait(5)
        raise AssertionError(f"server exited ({proc.returncode}):\n" + "".join(lines))
    m = ready[0]
    return ServerProcess(
        proc=proc,
        pump=reader,
        grpc_target=f"{m.group(1)}:{m.group(2)}",
        metrics_url=f"http://{m.group(3)}:{m.group(4)}/metrics",
        output=lines,
    )


def stop_server(server: ServerProcess, timeout: float = 60.0) -> int:
    if server.proc.poll() is None:
        server.proc.send_signal(signal.SIGTERM)
    try:
        return server.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait(10)
        raise AssertionError("server did not exit after SIGTERM:\n" + server.log()) from None
    finally:
        server.pump.join(10)  # the reader thread ends at EOF; then its pipe can be closed
        if server.proc.stdout is not None:
            server.proc.stdout.close()
