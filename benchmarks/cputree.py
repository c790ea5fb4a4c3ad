"""CPU-seconds used by a server's whole process tree, read from /proc while a benchmark runs.

A server is more than its first process: PyTriton is a Python process plus the tritonserver it
starts (and the proxy backend's stub), MLServer forks workers. `TreeCpu(pid)` follows every
descendant of `pid` and samples user + system time of all of them on a background thread, each
sample stamped with the wall clock, so that the CPU spent inside any window a load generator
reports (`window_wall`, wall-clock seconds) can be read back afterwards by interpolation:

    with TreeCpu(server.proc.pid) as meter:
        result = run_load(...)                    # reports window_wall = [t0, t1] and requests
    cpu_per_request = meter.between(t0, t1) / result["requests"]

CPU-seconds per request is what an optimisation changes; unlike requests/s it hardly moves when
the machine is shared with other work or its clock speed drifts. A process that exits takes its
ticks with it (its parent only inherits them once it reaps it): servers keep their processes for
their whole life, so nothing is lost in practice. Standard library only.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from types import TracebackType

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, user + system ticks) of one process; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[11]) + int(fields[12])


def descendants(root: int) -> set[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(entry.name))
    tree, todo = set(), [root]
    while todo:
        pid = todo.pop()
        if pid not in tree:
            tree.add(pid)
            todo += children.get(pid, [])
    return tree


def tree_cpu_seconds(pids: set[int]) -> float:
    ticks = 0
    for pid in pids:
        st = _stat(pid)
        if st is not None:
            ticks += st[1]
    return ticks / TICK


class TreeCpu:
    """Cumulative CPU-seconds of a process tree over wall time (see the module docstring)."""

    def __init__(self, root: int, interval: float = 0.1, rescan: float = 1.0) -> None:
        self.root = root
        self.interval = interval
        self.rescan = rescan
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.pids: set[int] = set()
        self._peak_ticks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-cpu", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> TreeCpu:
        self.sample(scan=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join(5)

    def sample(self, *, scan: bool = False) -> float:
        if scan or not self.pids:
            self.pids = descendants(self.root)
        # Per process, never less than seen before: a process that exits keeps its last count
        # here, so the total cannot step backwards.
        for pid in self.pids:
            st = _stat(pid)
            if st is not None:
                self._peak_ticks[pid] = max(self._peak_ticks.get(pid, 0), st[1])
        total = sum(self._peak_ticks.values()) / TICK
        with self._lock:
            self.times.append(time.time())
            self.cpu.append(total)
        return total

    def _run(self) -> None:
        last_scan = time.monotonic()
        while not self._stop.wait(self.interval):
            scan = time.monotonic() - last_scan >= self.rescan
            if scan:
                last_scan = time.monotonic()
            self.sample(scan=scan)

    def at(self, wall: float) -> float:
        """Cumulative CPU-seconds at wall-clock time `wall`, interpolated between samples."""
        with self._lock:
            times, cpu = list(self.times), list(self.cpu)
        if not times:
            return 0.0
        i = bisect.bisect_left(times, wall)
        if i == 0:
            return cpu[0]
        if i >= len(times):
            return cpu[-1]
        t0, t1 = times[i - 1], times[i]
        w = (wall - t0) / (t1 - t0) if t1 > t0 else 1.0
        return cpu[i - 1] + w * (cpu[i] - cpu[i - 1])

    def between(self, start: float, end: float) -> float:
        """CPU-seconds the tree used between two wall-clock times."""
        return self.at(end) - self.at(start)

    def covers(self, start: float, end: float) -> bool:
        """Whether samples were taken on both sides of the window (else `between` is partial)."""
        with self._lock:
            return bool(self.times) and self.times[0] <= start and self.times[-1] >= end
