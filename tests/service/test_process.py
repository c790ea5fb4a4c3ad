"""service.process: the ready line, start, log capture and stop, with real child processes (small
Python scripts standing in for a server, so each case takes milliseconds). The real `convserve
serve` process is started through the same helper by test_server.py and the integration tests."""

from __future__ import annotations

import os
import random
import re
import signal
import sys
import textwrap
import time
from pathlib import Path

import pytest

from service.process import (
    Endpoint,
    ServerProcess,
    ServerStartError,
    loopback_env,
    parse_endpoints,
    serve_command,
)


def script(body: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(body)]


def token() -> str:
    return f"t{random.getrandbits(48):012x}"


# ---- the ready line -----------------------------------------------------------------------------


def test_ready_line_endpoints_by_name() -> None:
    grpc, http, metrics = (random.randint(1024, 65535) for _ in range(3))
    line = f"convserve serving grpc=127.0.0.1:{grpc} http=0.0.0.0:{http} metrics=[::1]:{metrics}\n"
    assert parse_endpoints(line) == {
        "grpc": Endpoint("127.0.0.1", grpc),
        "http": Endpoint("0.0.0.0", http),
        "metrics": Endpoint("[::1]", metrics),
    }
    assert str(parse_endpoints(line)["metrics"]) == f"[::1]:{metrics}"  # type: ignore[index]


def test_ready_line_disabled_endpoint_and_other_lines() -> None:
    port = random.randint(1024, 65535)
    line = f"convserve serving grpc=127.0.0.1:{port} metrics=127.0.0.1:-1"
    assert parse_endpoints(line) == {
        "grpc": Endpoint("127.0.0.1", port),
        "metrics": Endpoint("127.0.0.1", -1),
    }
    assert parse_endpoints(f"INFO loading model x=a:{port}") is None
    assert parse_endpoints("convserve: cannot bind gRPC to 127.0.0.1:1") is None
    assert parse_endpoints(f"INFO said 'convserve serving grpc=h:{port}' earlier") is None
    # A peer's own marker: only the pairs after it count.
    peer = re.compile(r"transport serving")
    assert parse_endpoints(f"x=h:1 transport serving grpc=h:{port}", peer) == {
        "grpc": Endpoint("h", port)
    }


def test_serve_command_and_loopback_env(tmp_path: Path) -> None:
    flag = token()
    assert serve_command(tmp_path, "--device", flag, python="py") == [
        "py", "-m", "convserve", "serve", "--repository", str(tmp_path), "--device", flag,
    ]  # fmt: skip
    env = loopback_env(("grpc", "http"))
    assert env == {
        "CONVSERVE_GRPC_HOST": "127.0.0.1",
        "CONVSERVE_GRPC_PORT": "0",
        "CONVSERVE_HTTP_HOST": "127.0.0.1",
        "CONVSERVE_HTTP_PORT": "0",
    }
    assert {"CONVSERVE_METRICS_PORT", "CONVSERVE_HTTP_PORT"} <= set(loopback_env())


# ---- start, wait, stop --------------------------------------------------------------------------


def test_start_captures_output_and_sigterm_gives_the_exit_code() -> None:
    before, port, after = token(), random.randint(1024, 65535), token()
    server = ServerProcess.start(
        script(f"""
            import signal, sys, time
            signal.signal(signal.SIGTERM, lambda *_: (print("{after}"), sys.exit(3)))
            print("{before}", file=sys.stderr)
            print("convserve serving grpc=127.0.0.1:{port} metrics=127.0.0.1:-1", flush=True)
            while True:
                time.sleep(0.05)
        """),
        timeout=60,
    )
    assert server.endpoint("grpc") == Endpoint("127.0.0.1", port)
    assert server.url("grpc", "/x") == f"http://127.0.0.1:{port}/x"
    assert server.endpoint("metrics").port == -1
    with pytest.raises(KeyError, match="no 'http' endpoint"):
        server.endpoint("http")
    assert server.poll() is None and server.pid > 0
    assert server.stop(timeout=30) == 3 and not server.killed
    assert before in server.log() and after in server.log()
    assert server.stderr() == ""  # merged into stdout by default


def test_exit_before_ready_is_a_start_error_with_the_log() -> None:
    said = token()
    with pytest.raises(ServerStartError, match=r"exited with code 2 before ready") as info:
        ServerProcess.start(
            script(f"import sys; print('convserve: {said}', file=sys.stderr); sys.exit(2)"),
            timeout=60,
        )
    assert said in str(info.value)


def test_no_ready_line_in_time_kills_the_process() -> None:
    said = token()
    server = ServerProcess(
        script(f"import time; print('{said}', flush=True); time.sleep(60)"), name="quiet"
    )
    with pytest.raises(ServerStartError, match=r"quiet not ready within 0\.5 s") as info:
        server.wait_ready(0.5)
    assert said in str(info.value)
    assert server.killed and server.poll() == -signal.SIGKILL


def test_a_server_ignoring_sigterm_is_killed_after_the_timeout() -> None:
    server = ServerProcess.start(
        script("""
            import signal, time
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("convserve serving grpc=127.0.0.1:1", flush=True)
            time.sleep(60)
        """),
        timeout=60,
    )
    started = time.monotonic()
    assert server.stop(timeout=0.5) == -signal.SIGKILL
    assert server.killed and time.monotonic() - started < 30


def test_separate_stderr_and_a_full_log_file(tmp_path: Path) -> None:
    marks = [token() for _ in range(50)]
    log = tmp_path / "server.log"
    with ServerProcess(
        script(f"""
            import sys
            for mark in {marks!r}:
                print(mark)
            print("oops", file=sys.stderr)
            print("convserve serving grpc=127.0.0.1:1", flush=True)
        """),
        separate_stderr=True,
        log_path=log,
        keep_lines=10,
    ) as server:
        server.wait_ready(60)
        assert server.wait(30) == 0
        assert server.stderr() == "oops\n"
        kept = server.stdout().split()
        assert kept == [*marks[-9:], "convserve", "serving", "grpc=127.0.0.1:1"]  # the tail
    # The file has everything, stderr's lines among stdout's in the order they were read.
    words = log.read_text().split()
    assert [w for w in words if w != "oops"][:50] == marks and "oops" in words


def test_new_session_stops_the_whole_process_group(tmp_path: Path) -> None:
    """A server that forks a worker (as MLServer does): SIGTERM reaches the worker too."""
    pid_file = tmp_path / "worker.pid"
    server = ServerProcess.start(
        script(f"""
            import subprocess, sys, time
            worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            open({str(pid_file)!r}, "w").write(str(worker.pid))
            print("convserve serving grpc=127.0.0.1:1", flush=True)
            time.sleep(60)
        """),
        new_session=True,
        timeout=60,
    )
    worker = int(pid_file.read_text())
    assert server.stop(timeout=30) == -signal.SIGTERM
    deadline = time.monotonic() + 10
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(worker)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2] != "Z"  # a zombie has exited, its parent not reaped it
