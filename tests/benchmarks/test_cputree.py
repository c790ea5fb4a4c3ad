"""benchmarks/cputree.py: a process tree's CPU read from /proc (real child processes), and the
interpolation that turns samples into the CPU of a window."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from benchmarks.cputree import TreeCpu, _stat, descendants

# A child that burns CPU, says its pid, and waits to be killed; a parent that starts it.
CHILD = "\n".join(
    [
        "import os, time",
        "x = sum(i * i for i in range(3_000_000))",
        "print(os.getpid(), flush=True)",
        "time.sleep(60)",
    ]
)
PARENT = "\n".join(
    [
        "import subprocess, sys, time",
        f"subprocess.Popen([sys.executable, '-c', {CHILD!r}])",
        "time.sleep(60)",
    ]
)


def test_the_tree_counts_a_grandchild() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = 0
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())  # the child has done its work
        with TreeCpu(parent.pid, interval=0.02, rescan=0.05) as meter:
            total = meter.sample(scan=True)
        assert {parent.pid, child} <= descendants(parent.pid)
        assert child in meter.pids
        own = _stat(child)
        assert own is not None and own[1] > 0
        assert total >= own[1] / os.sysconf("SC_CLK_TCK")
        assert meter.cpu == sorted(meter.cpu)  # cumulative: never backwards
    finally:
        if child:
            os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()


def test_between_interpolates_the_samples() -> None:
    rng = np.random.default_rng()
    meter = TreeCpu(0)
    meter.times = list(np.cumsum(rng.uniform(0.05, 0.2, 20)) + 1000.0)
    meter.cpu = list(np.cumsum(rng.uniform(0.0, 0.3, 20)))
    i = int(rng.integers(0, 18))
    w = float(rng.uniform(0, 1))
    t = meter.times[i] + w * (meter.times[i + 1] - meter.times[i])
    assert meter.at(t) == pytest.approx(meter.cpu[i] + w * (meter.cpu[i + 1] - meter.cpu[i]))
    a, b = meter.times[2], meter.times[15]
    assert meter.between(a, b) == pytest.approx(meter.cpu[15] - meter.cpu[2])
    assert meter.covers(a, b)
    assert not meter.covers(meter.times[0] - 1, b)
    assert meter.at(meter.times[0] - 5) == meter.cpu[0]  # clamped outside the samples
    assert meter.at(meter.times[-1] + 5) == meter.cpu[-1]
