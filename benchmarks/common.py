"""What every benchmark script shares: paths, percentiles, server processes, load snapshots.

Benchmarks are scripts, not part of the served package: they may import `service` (the generated
KServe stubs, the config parser, OrtRuntime) but never `tritonclient` in the same process (its
generated protos and ours would register the same names in one descriptor pool).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

from service.loadgen import GRPC_OPTIONS, KSERVE_INFER, percentiles  # noqa: E402
from service.process import ServerProcess, ServerStartError, loopback_env  # noqa: E402

__all__ = ["GRPC_OPTIONS", "KSERVE_INFER", "ServerProcess", "ServerStartError", "loopback_env",
           "percentiles"]  # fmt: skip

BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
CACHE = ROOT / ".cache"
BENCH_REPO = CACHE / "bench-repo"
INPUTS_DIR = CACHE / "bench-inputs"
VENVS = CACHE / "bench-venvs"
TOOLS = CACHE / "tools"
PERF_ANALYZER = TOOLS / "bin" / "perf_analyzer"
APP_PYTHON = ROOT / ".venv" / "bin" / "python"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return True
        time.sleep(0.2)
    return False


def _proc_table() -> dict[int, tuple[int, str, int]]:
    """pid -> (parent pid, command name, CPU ticks used so far), from /proc."""
    table: dict[int, tuple[int, str, int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), comm, int(fields[11]) + int(fields[12]))
    return table


class CpuWatch:
    """How much CPU the rest of the machine used between two samples.

    Processes outside this one's tree (not the benchmark, its servers or its clients) are
    "others": their CPU-seconds per second is the number of cores the benchmark did not have.
    """

    def __init__(self) -> None:
        self._tick = os.sysconf("SC_CLK_TCK")
        self._last = (time.monotonic(), _proc_table())

    def sample(self) -> dict[str, Any]:
        now, table = time.monotonic(), _proc_table()
        then, before = self._last
        self._last = (now, table)
        me = os.getpid()

        def ours(pid: int) -> bool:
            for _ in range(64):
                if pid == me:
                    return True
                if pid not in table or pid <= 1:
                    return False
                pid = table[pid][0]
            return False

        elapsed = max(now - then, 1e-6)
        others: dict[str, float] = {}
        for pid, (_, comm, ticks) in table.items():
            if ours(pid) or pid not in before:
                continue
            used = (ticks - before[pid][2]) / self._tick / elapsed
            if used > 0:
                others[comm] = others.get(comm, 0.0) + used
        top = sorted(others.items(), key=lambda kv: -kv[1])[:4]
        return {
            "others_cores": round(sum(others.values()), 2),
            "others_top": [f"{name} {cores:.2f}" for name, cores in top if cores >= 0.05],
            "loadavg_1m": os.getloadavg()[0],
            "interval_s": round(elapsed, 1),
        }


def start_server(
    name: str,
    cmd: Sequence[str | os.PathLike[str]],
    *,
    port: int,
    ready: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300.0,
    cwd: Path = ROOT,
) -> ServerProcess:
    """Start `cmd`; ready when a line matches `ready` (a regex), else when `port` accepts.

    Its own process group, so that stopping it also stops the helpers PyTriton and MLServer
    fork. convserve endpoints the command leaves unset go to free loopback ports (CONVSERVE_*
    variables; flags still win), so a benchmark never collides with a server on the defaults.
    """
    server = ServerProcess(
        cmd,
        name=name,
        env={**loopback_env(), **(env or {})},
        cwd=cwd,
        ready=ready,
        new_session=True,
        keep_lines=2000,
    )
    if ready is not None:
        server.wait_ready(timeout)  # ServerStartError (a RuntimeError) with the log's tail
    elif not (wait_port(port, timeout) and server.poll() is None):
        server.stop()
        raise ServerStartError(f"{name} did not start (exit {server.poll()}):\n{server.tail()}")
    return server


def stop_server(server: ServerProcess, timeout: float = 30.0) -> None:
    server.stop(timeout)


@contextlib.contextmanager
def running(
    name: str, cmd: Sequence[str | os.PathLike[str]], **kwargs: Any
) -> Iterator[ServerProcess]:
    server = start_server(name, cmd, **kwargs)
    try:
        yield server
    finally:
        stop_server(server)


def wait_model_ready(port: int, model: str, timeout: float = 120.0) -> None:
    """Poll KServe ModelReady (our stubs) until the model answers ready."""
    import grpc

    from service._proto.inference import grpc_service_pb2 as pb
    from service._proto.inference import grpc_service_pb2_grpc as pb_grpc

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.ModelReady(pb.ModelReadyRequest(name=model), timeout=5).ready:
                    return
            except grpc.RpcError as exc:
                last = exc
            time.sleep(0.3)
    raise RuntimeError(f"model {model} not ready on port {port} within {timeout}s: {last}")


def model_stats(port: int, model: str) -> tuple[int, int]:
    """(inference_count, execution_count) from KServe ModelStatistics; (0, 0) if unsupported."""
    import grpc

    from service._proto.inference import grpc_service_pb2 as pb
    from service._proto.inference import grpc_service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            reply = stub.ModelStatistics(pb.ModelStatisticsRequest(name=model), timeout=5)
        except grpc.RpcError:
            return 0, 0
    inferences = sum(s.inference_count for s in reply.model_stats)
    executions = sum(s.execution_count for s in reply.model_stats)
    return inferences, executions


def paired_ratios(
    top: Mapping[int, float | None], bottom: Mapping[int, float | None]
) -> list[float]:
    """top[k] / bottom[k] for every round k measured on both sides (the two sides of a round ran
    back to back, so their ratio cancels the machine's drift between rounds), sorted; rounds
    without a figure on either side are left out."""
    return sorted(
        t / b for k in top.keys() & bottom.keys() if (t := top[k]) is not None and (b := bottom[k])
    )


def interleaved(
    sides: Sequence[str], rounds: int, measure: Callable[[str, int], list[dict[str, Any]]]
) -> tuple[list[dict[str, Any]], float]:
    """Run `measure(side, round)` for every side in every round, the order rotating by one side
    per round (with two sides: alternating), so the machine's drift falls on all sides alike.
    Returns every row and the median number of cores other processes used meanwhile."""
    cpu = CpuWatch()
    runs: list[dict[str, Any]] = []
    others = []
    for round_ in range(rounds):
        shift = round_ % len(sides)
        for side in [*sides[shift:], *sides[:shift]]:
            runs += measure(side, round_)
            others.append(cpu.sample()["others_cores"])
    return runs, statistics.median(others)


def save_results(
    out: Path, name: str, doc: dict[str, Any], render: Callable[[dict[str, Any]], list[str]]
) -> None:
    """`doc` as OUT/NAME.json and its table as OUT/NAME.md."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(doc, indent=1))
    (out / f"{name}.md").write_text("\n".join(render(doc)) + "\n")
    print(f"wrote {out / f'{name}.md'}", file=sys.stderr)
