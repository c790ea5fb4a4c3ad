"""The compute ceiling: in-process ONNX Runtime throughput per batch size, no server at all.

    python -m benchmarks.ort_ceiling --repository .cache/bench-repo --models resnet50 lenet5_fashion

For each model, the session is built by convserve's own `service.runtime.OrtRuntime` with the
server's defaults (graph optimisation ALL, sequential execution, inter-op 1 thread, intra-op
`--intra-op-threads` (0: automatic, as in the server: ONNX Runtime's pool, or one thread for a
model too small for the pool to pay), no spinning, CPU EP) and warmed up as the server does, so
the options cannot drift from what the server runs. Then, at each batch size 1, 2, 4, ..., 64 (up
to the model's max_batch_size), one warm-up run and as many timed runs as fit in
`--seconds` (at least `--min-runs`, at most `--max-runs`), on random float32 inputs prepared
beforehand. Rows/s = rows × runs / time; the best batch size's rows/s is the ceiling a server of
this model can approach on this machine. The per-batch run time is also what the latency target
"p99 ≤ batch compute time + max_queue_delay + 1 ms" is measured against.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from service.config import read_spec
from service.runtime import OrtRuntime

BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64)


def measure_model(
    repository: Path,
    model: str,
    *,
    seconds: float,
    min_runs: int,
    max_runs: int,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    intra_op_threads: int = 0,
) -> dict[str, Any]:
    model_dir = repository / model
    spec = read_spec(model_dir)
    version = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    runtime = OrtRuntime(
        version / spec.model_filename, spec, "cpu", intra_op_threads=intra_op_threads
    )
    # The server's warm-up, which also settles automatic intra-op threads (runtime._fit_threads).
    sizes = [b for b in batch_sizes if not spec.batching or b <= spec.max_batch_size]
    runtime.warmup(sizes)  # the sizes measured, not every bucket: ResNet-50 at 64 takes seconds
    rng = np.random.default_rng(0)
    rows_out: list[dict[str, Any]] = []
    for size in sizes:
        feed = {
            t.name: rng.standard_normal((size, *t.dims)).astype(t.np_dtype) for t in spec.inputs
        }
        runtime.run(feed)  # warm-up: first run of a shape allocates
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < max_runs and (
            len(times) < min_runs or time.perf_counter() - start < seconds
        ):
            t0 = time.perf_counter()
            runtime.run(feed)
            times.append(time.perf_counter() - t0)
        total = sum(times)
        rows_out.append(
            {
                "batch": size,
                "runs": len(times),
                "rows_per_s": size * len(times) / total,
                "batch_ms_p50": statistics.median(times) * 1e3,
                "batch_ms_min": min(times) * 1e3,
                "batch_ms_mean": total / len(times) * 1e3,
            }
        )
        print(
            f"  {model:>16} batch {size:>3}: {rows_out[-1]['rows_per_s']:9.1f} rows/s, "
            f"{rows_out[-1]['batch_ms_p50']:8.2f} ms/batch (p50 of {len(times)})",
            file=sys.stderr,
            flush=True,
        )
    runtime.close()
    best = max(rows_out, key=lambda r: r["rows_per_s"])
    return {
        "model": model,
        "provider": runtime.provider,
        "intra_op_threads": runtime.intra_op_threads,
        "max_queue_delay_ms": spec.max_queue_delay_s * 1e3,
        "batches": rows_out,
        "best_batch": best["batch"],
        "ceiling_rows_per_s": best["rows_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument("--min-runs", type=int, default=3)
    parser.add_argument("--max-runs", type=int, default=5000)
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    parser.add_argument("--intra-op-threads", type=int, default=0)
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    results = [
        measure_model(
            args.repository,
            m,
            seconds=args.seconds,
            min_runs=args.min_runs,
            max_runs=args.max_runs,
            batch_sizes=sizes,
            intra_op_threads=args.intra_op_threads,
        )
        for m in args.models
    ]
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
