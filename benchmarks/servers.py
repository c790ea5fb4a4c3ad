"""The servers the benchmarks compare, each started the way its users start it, one at a time.

    transport        benchmarks/transport_ceiling.py: grpc.aio KServe v2 that runs no model
    convserve        `convserve serve` on the benchmark repository as exported (eager batching)
    convserve-delay  the same models, configs naming Triton's rule (bench_repo.policy_view)
    pytriton         PyTriton: tritonserver + the Python process that runs ONNX Runtime
    mlserver         Seldon MLServer, inference in the server process (parallel_workers 0)
    mlserver-pw1     MLServer's own default: one inference worker process

Every server serves one model on the CPU with the same ONNX file, max batch 64 and max queue
delay 1000 µs (convserve's from its config, the peers' from the same numbers), in its own
process group on free loopback ports. `launch` yields a `Running`: its ports (HTTP -1 where it
has none) and the root pid whose process tree benchmarks/cputree.py meters.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bench_repo import Model
from benchmarks.common import APP_PYTHON, BENCH_DIR, ROOT, VENVS, free_port, running

SERVERS = ("transport", "convserve", "convserve-delay", "pytriton", "mlserver", "mlserver-pw1")
PEERS = ("pytriton", "mlserver")


@dataclass(frozen=True)
class Running:
    name: str
    grpc_port: int
    http_port: int  # -1: no HTTP endpoint
    pid: int


def argv(*parts: object, **flags: object) -> list[str]:
    """A command line: positional parts, then `--flag-name value` for each keyword."""
    out = [str(p) for p in parts]
    for key, value in flags.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def convserve_command(
    repository: Path, model: str, grpc_port: int, http_port: int | None, python: Path = APP_PYTHON
) -> list[str]:
    """`convserve serve` of one model on the CPU; `http_port` None: no such flag (a convserve
    from before HTTP existed)."""
    http = {} if http_port is None else {"http_port": http_port}
    return argv(
        python,
        "-m",
        "convserve",
        "serve",
        repository=repository,
        grpc_host="127.0.0.1",
        grpc_port=grpc_port,
        **http,
        metrics_port=-1,
        load_models=model,
        device="cpu",
        log_level="WARNING",
    )


@contextmanager
def launch(server: str, model: Model, repos: dict[str, Path]) -> Iterator[Running]:
    """Start `server` serving `model`; `repos` maps "convserve" / "convserve-delay" to the
    repository each serves (the peers read the ONNX file of repos["convserve"])."""
    grpc_port, http_port = free_port(), free_port()
    onnx = repos["convserve"] / model.name / "1" / "model.onnx"
    peers = BENCH_DIR / "peers"
    if server == "transport":
        cmd = argv(
            APP_PYTHON,
            "-m",
            "benchmarks.transport_ceiling",
            repository=repos["convserve"],
            model=model.name,
            port=grpc_port,
        )
        with running(server, cmd, port=grpc_port, ready=r"transport serving") as proc:
            yield Running(server, grpc_port, -1, proc.pid)
    elif server.startswith("convserve"):
        cmd = convserve_command(repos[server], model.name, grpc_port, http_port)
        with running(server, cmd, port=grpc_port, ready=r"^convserve serving", timeout=600) as p:
            yield Running(server, grpc_port, http_port, p.pid)
    elif server == "pytriton":
        cmd = argv(
            VENVS / "pytriton" / "bin" / "python",
            peers / "pytriton_server.py",
            onnx=onnx,
            name=model.name,
            input=model.peer_input,
            output=model.output,
            grpc_port=grpc_port,
            http_port=http_port,
            metrics_port=free_port(),
        )
        # The Triton binary in the wheel links libpython: point it at this interpreter's.
        libdir = sysconfig.get_config_var("LIBDIR") or ""
        paths = (libdir, os.environ.get("LD_LIBRARY_PATH", ""))
        env = {"LD_LIBRARY_PATH": os.pathsep.join(p for p in paths if p)}
        with running(server, cmd, port=grpc_port, ready=r"pytriton serving", env=env) as proc:
            yield Running(server, grpc_port, http_port, proc.pid)
    elif server.startswith("mlserver"):
        workers = 1 if server == "mlserver-pw1" else 0
        with tempfile.TemporaryDirectory(prefix="mlserver-bench-") as work:
            cmd = argv(
                VENVS / "mlserver" / "bin" / "python",
                peers / "mlserver_server.py",
                onnx=onnx,
                name=model.name,
                grpc_port=grpc_port,
                http_port=http_port,
                metrics_port=free_port(),
                workdir=work,
                parallel_workers=workers,
            )
            with running(server, cmd, port=grpc_port) as proc:
                yield Running(server, grpc_port, http_port, proc.pid)
    else:
        raise ValueError(f"unknown server {server!r}; known: {', '.join(SERVERS)}")


def peer_ready(peer: str) -> bool:
    """Whether the peer's environment exists and imports (benchmarks/peers/setup.sh builds it)."""
    module = {"pytriton": "pytriton.triton", "mlserver": "mlserver"}[peer]
    python = VENVS / peer / "bin" / "python"
    if not python.is_file():
        return False
    probe = subprocess.run(
        [str(python), "-c", f"import {module}, onnxruntime"], capture_output=True, timeout=120
    )
    return probe.returncode == 0


def ensure_peer(peer: str) -> bool:
    if peer_ready(peer):
        return True
    print(f"building the {peer} environment (benchmarks/peers/setup.sh {peer})", file=sys.stderr)
    setup = subprocess.run(
        ["bash", str(BENCH_DIR / "peers" / "setup.sh"), peer], cwd=ROOT, timeout=1800
    )
    return setup.returncode == 0 and peer_ready(peer)
