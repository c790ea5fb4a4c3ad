"""cuDNN's convolution algorithm search, chosen by measurement and written into the model's config.

    python -m benchmarks.gpu.conv_search MODEL_DIR [--seconds 0.5]

For HEURISTIC (cuDNN's heuristics pick an algorithm at once) and EXHAUSTIVE (cuDNN times every
algorithm on the first run of each shape), the server's own session (OrtRuntime with the model's
config, the parameter overridden) is created and warmed on every batch bucket, as the server does
before READY — that start-up time is recorded — then each bucket is timed on the server's path
(numpy in, IO binding, numpy out) on fresh random inputs, the two sessions alternating in blocks
of runs so that drift hits both alike. Per bucket the ratio HEURISTIC time /
EXHAUSTIVE time; EXHAUSTIVE wins when the geometric mean of the ratios is at least 1.03 (a 3%
gain: less would not repay its slower start and is within run-to-run spread). The winner is
written into config.pbtxt as `cudnn_conv_algo_search`, replacing any earlier value, and read
back through convserve's own config parser.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu import cuda
from service.config import read_spec

MODES = ("HEURISTIC", "EXHAUSTIVE")
MIN_GAIN = 1.03
KEY = "cudnn_conv_algo_search"
_PARAM = re.compile(  # one `parameters { key: KEY value: { string_value: "..." } }` entry
    r'parameters\s*:?\s*\{\s*key:\s*"' + KEY + r'"\s*'
    r'value:\s*\{\s*string_value:\s*"[^"]*"\s*\}\s*\}[ \t]*\n?'
)


def measure(
    model_dir: Path, *, buckets: tuple[int, ...] | None = None, seconds: float = 0.5
) -> dict[str, Any]:
    model = cuda.load(model_dir)
    sizes = buckets or model.spec.buckets
    rng = np.random.default_rng()
    feeds = {b: cuda.feed(model, b, rng) for b in sizes}
    runtimes, startup = {}, {}
    for mode in MODES:
        begin = time.perf_counter()
        runtimes[mode] = cuda.runtime(model, mode)
        runtimes[mode].warmup(sizes)  # EXHAUSTIVE searches here, once per shape
        startup[mode] = time.perf_counter() - begin
    times: dict[str, dict[int, float]] = {mode: {} for mode in MODES}
    for size in sizes:
        runs = cuda.interleaved(
            {mode: partial(rt.run, feeds[size]) for mode, rt in runtimes.items()}, seconds
        )
        for mode in MODES:
            times[mode][size] = statistics.median(runs[mode]) * 1e3
    for rt in runtimes.values():
        rt.close()
    rows = {mode: {"startup_s": startup[mode], "batch_ms_p50": times[mode]} for mode in MODES}
    ratios = [
        rows["HEURISTIC"]["batch_ms_p50"][b] / rows["EXHAUSTIVE"]["batch_ms_p50"][b] for b in sizes
    ]
    gain = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
    return {
        "model": model.name,
        "buckets": list(sizes),
        "modes": rows,
        "heuristic_over_exhaustive": dict(zip(sizes, ratios, strict=True)),
        "geomean_gain": gain,
        "winner": "EXHAUSTIVE" if gain >= MIN_GAIN else "HEURISTIC",
    }


def write_winner(model_dir: Path, winner: str) -> None:
    """Set `cudnn_conv_algo_search` in model_dir/config.pbtxt; the parser must read it back."""
    if winner not in MODES:
        raise ValueError(f"{winner!r} is not one of {MODES}")
    path = model_dir / "config.pbtxt"
    text = _PARAM.sub("", path.read_text())
    if not text.endswith("\n"):
        text += "\n"
    text += f'parameters {{ key: "{KEY}" value: {{ string_value: "{winner}" }} }}\n'
    path.write_text(text)
    got = read_spec(model_dir).parameters.get(KEY)
    if got != winner:
        raise RuntimeError(f"{path}: wrote {KEY} {winner} but the config parser reads {got!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=0.5, help="per bucket and mode")
    parser.add_argument("--dry", action="store_true", help="measure, do not write the config")
    args = parser.parse_args(argv)
    result = measure(args.model_dir, seconds=args.seconds)
    if not args.dry:
        write_winner(args.model_dir, result["winner"])
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
