"""A server as a child process: start it, wait for its ready line, stop it.

The one helper behind every real server process that convserve's tests, benchmarks and soak
start (and the peers the benchmarks compare with). The child's output is read line by line on
a thread: kept (a bounded tail in memory, everything in `log_path` when given) and searched for
the ready line. `convserve serve` prints

    convserve serving grpc=HOST:PORT metrics=HOST:PORT

once every port is bound; any `name=HOST:PORT` pair on that line is an endpoint, found by name
(`proc.endpoint("grpc")`), so an endpoint added to the line needs no change here. Port -1 means
the endpoint is disabled.

`stop()` sends SIGTERM (to the whole process group with `new_session=True`, for servers that fork
workers), waits, then SIGKILLs on timeout; it returns the exit code, negative when a signal ended
the process, and `killed` says whether it had to kill.

Standard library only: benchmark drivers import this next to clients of other servers, and it
must not load grpc or ONNX Runtime into them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar

READY = re.compile(r"^convserve serving ")  # the line, not a log line that mentions it
ENDPOINTS = ("grpc", "http", "metrics")
_PAIR = re.compile(r"(\w+)=(\S+):(-?\d+)")
_P = TypeVar("_P", bound="ServerProcess")


class ServerStartError(RuntimeError):
    """The server exited, or did not print its ready line in time; the message ends with its
    last lines of output."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int  # -1: disabled

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoints(line: str, ready: re.Pattern[str] = READY) -> dict[str, Endpoint] | None:
    """The `name=HOST:PORT` pairs after the ready marker, by name; None if `line` has no marker."""
    found = ready.search(line)
    if found is None:
        return None
    pairs = _PAIR.findall(line, found.end())
    return {name: Endpoint(host, int(port)) for name, host, port in pairs}


def serve_command(
    repository: Path | str, *flags: str, python: str = sys.executable, module: str = "convserve"
) -> list[str]:
    """`python -m convserve serve --repository REPOSITORY FLAGS...`."""
    return [python, "-m", module, "serve", "--repository", str(repository), *flags]


def loopback_env(names: Sequence[str] = ENDPOINTS) -> dict[str, str]:
    """CONVSERVE_* variables putting every endpoint on 127.0.0.1 and a free port.

    Variables, not flags, so that a flag still wins and a name this server does not know (an
    endpoint added later) is ignored instead of refused.
    """
    env: dict[str, str] = {}
    for name in names:
        env[f"CONVSERVE_{name.upper()}_HOST"] = "127.0.0.1"
        env[f"CONVSERVE_{name.upper()}_PORT"] = "0"
    return env


class ServerProcess:
    """A started child process; `wait_ready()` (or `ServerProcess.start`) waits until it is up."""

    def __init__(
        self,
        cmd: Sequence[str | os.PathLike[str]],
        *,
        name: str = "server",
        env: Mapping[str, str] | None = None,
        cwd: Path | str | None = None,
        ready: re.Pattern[str] | str | None = READY,
        separate_stderr: bool = False,
        log_path: Path | None = None,
        new_session: bool = False,
        keep_lines: int = 10_000,
    ) -> None:
        self.name = name
        self.endpoints: dict[str, Endpoint] | None = None
        self.killed = False
        self._ready_re = re.compile(ready) if isinstance(ready, str) else ready
        self._ready = threading.Event()
        self._new_session = new_session
        self._out: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._err: collections.deque[str] = collections.deque(maxlen=keep_lines)
        self._log_file = log_path.open("w") if log_path is not None else None
        self._log_lock = threading.Lock()
        self.proc = subprocess.Popen(
            [os.fspath(part) for part in cmd],
            cwd=cwd,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if separate_stderr else subprocess.STDOUT,
            text=True,
            start_new_session=new_session,
        )
        self._readers = [self._reader(self.proc.stdout, self._out, watch=True)]
        if separate_stderr:
            self._readers.append(self._reader(self.proc.stderr, self._err, watch=False))

    @classmethod
    def start(
        cls: type[_P], cmd: Sequence[str | os.PathLike[str]], timeout: float = 300.0, **kwargs: Any
    ) -> _P:
        """Start `cmd` and wait for its ready line (ServerStartError if it never comes)."""
        return cls(cmd, **kwargs).wait_ready(timeout)

    def _reader(
        self, stream: IO[str] | None, keep: collections.deque[str], *, watch: bool
    ) -> threading.Thread:
        def pump() -> None:
            assert stream is not None
            with contextlib.suppress(ValueError, OSError):  # the pipe closed under us by stop()
                for line in stream:
                    keep.append(line)
                    if self._log_file is not None:
                        with self._log_lock:
                            if not self._log_file.closed:
                                self._log_file.write(line)
                                self._log_file.flush()
                    if watch and self.endpoints is None and self._ready_re is not None:
                        self.endpoints = parse_endpoints(line, self._ready_re)
                        if self.endpoints is not None:
                            self._ready.set()
            if watch:
                self._ready.set()  # end of output: wake wait_ready, which sees no endpoints

        thread = threading.Thread(target=pump, name=f"{self.name}-output", daemon=True)
        thread.start()
        return thread

    # ---- waiting ---------------------------------------------------------------------------

    def wait_ready(self: _P, timeout: float = 300.0) -> _P:
        """Block until the ready line; on exit or timeout, stop it and raise ServerStartError."""
        if self._ready_re is None:
            raise ValueError(f"{self.name} was started without a ready line to wait for")
        if not self._ready.wait(timeout):
            self._kill()
            self._close()
            raise ServerStartError(f"{self.name} not ready within {timeout:g} s:\n{self.tail()}")
        if self.endpoints is None:
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:  # closed its output but lingers
                self._kill()
            code = self._close()
            raise ServerStartError(
                f"{self.name} exited with code {code} before ready:\n{self.tail()}"
            )
        return self

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the process to exit on its own; its exit code (all its output read)."""
        code = self.proc.wait(timeout)
        for reader in self._readers:
            reader.join(10)
        return code

    # ---- what it said ----------------------------------------------------------------------

    def endpoint(self, name: str) -> Endpoint:
        """The endpoint the ready line announced as `name` (e.g. "grpc", "metrics")."""
        if self.endpoints is None:
            raise RuntimeError(f"{self.name} is not ready: no endpoints yet")
        if name not in self.endpoints:
            raise KeyError(
                f"{self.name} announced no {name!r} endpoint, only {sorted(self.endpoints)}"
            )
        return self.endpoints[name]

    def url(self, name: str, path: str = "") -> str:
        return f"http://{self.endpoint(name)}{path}"

    def stdout(self) -> str:
        """What it wrote to stdout (and stderr, unless separate_stderr); the last keep_lines."""
        return "".join(self._out)

    def stderr(self) -> str:
        """What it wrote to stderr, with separate_stderr; else empty (it is in stdout())."""
        return "".join(self._err)

    def log(self) -> str:
        return self.stdout() + self.stderr()

    def tail(self, lines: int = 30) -> str:
        """The last lines of stdout, then of stderr: what a start error shows."""
        return "".join(list(self._out)[-lines:] + list(self._err)[-lines:])

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    # ---- stopping --------------------------------------------------------------------------

    def send_signal(self, sig: int) -> None:
        """Signal the process (its whole group with new_session); nothing if it has exited."""
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self._new_session:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait up to `timeout`, then SIGKILL; the exit code. Closes the pipes and log."""
        if self.proc.poll() is None:
            self.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill()
        return self._close()

    def _close(self) -> int:
        code = self.wait(10)
        # A reader still blocked on the pipe (a grandchild holds it open) owns the stream's lock:
        # closing under it would block here, so such a pipe is left to the daemon thread.
        if not any(reader.is_alive() for reader in self._readers):
            for stream in (self.proc.stdout, self.proc.stderr):
                if stream is not None:
                    stream.close()
        if self._log_file is not None:
            with self._log_lock:
                self._log_file.close()
        return code

    def _kill(self) -> None:
        self.killed = True
        self.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def __enter__(self: _P) -> _P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
