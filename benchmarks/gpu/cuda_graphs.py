"""Do CUDA graphs pay? Per batch bucket, ONNX Runtime's `enable_cuda_graph` against plain runs.

    python -m benchmarks.gpu.cuda_graphs MODEL_DIR [--seconds 0.5] [--buckets 1,8,64]

A CUDA graph replays a whole run's kernel launches at once, saving the per-kernel launch cost
(a few µs × ~100 kernels for ResNet-50): it can only pay where launches, not the kernels, bound a
run — small batches. It needs inputs and outputs at fixed GPU addresses, so both sides are timed
with inputs and outputs resident on the GPU and bound once (cuda.Resident): no host↔device copy
in either. One session with `enable_cuda_graph` captures one graph per bucket (ONNX Runtime's
`gpu_graph_id` run option; ids 0, 1, ...); the baseline is a plain session with the same options
otherwise; the two alternate in blocks of runs, so that drift hits both alike. After timing, fresh
random inputs are copied into both sides' bound buffers and the outputs compared (relative L2
error), proving the replayed graph reads the new inputs.

A bucket "pays" when its graph run is at least 5% faster. convserve's server does not use CUDA
graphs (its batches arrive as host arrays); this says whether adding them would be worth it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu import cuda

PAYS = 1.05
WARM_RUNS = 3  # ONNX Runtime runs a graph id normally before it captures it


def measure(
    model_dir: Path,
    *,
    buckets: tuple[int, ...] | None = None,
    seconds: float = 0.5,
    conv_algo_search: str = "HEURISTIC",
) -> dict[str, Any]:
    model = cuda.load(model_dir)
    sizes = buckets or model.spec.buckets
    plain = cuda.bare_session(model, conv_algo_search)
    graphs = cuda.bare_session(model, conv_algo_search, cuda_graph=True)
    rng = np.random.default_rng()
    rows = []
    for graph_id, size in enumerate(sizes):
        row: dict[str, Any] = {"batch": size}
        try:
            base = cuda.Resident(plain, model, size, graph_id=-1)  # same run options, no capture
            captured = cuda.Resident(graphs, model, size, graph_id=graph_id)
            for _ in range(WARM_RUNS):
                base.run()
                captured.run()
            runs = cuda.interleaved({"plain": base.run, "graph": captured.run}, seconds)
            plain_t, graph_t = runs["plain"], runs["graph"]
            fresh = cuda.feed(model, size, rng)
            base.set_inputs(fresh)
            captured.set_inputs(fresh)
            base.run()
            captured.run()
            want, got = base.results(), captured.results()
            row.update(
                plain_ms=statistics.median(plain_t) * 1e3,
                graph_ms=statistics.median(graph_t) * 1e3,
                rel_error=max(cuda.rel_error(got[k], want[k]) for k in want),
            )
            row["speedup"] = row["plain_ms"] / row["graph_ms"]
            row["pays"] = row["speedup"] >= PAYS
        except Exception as exc:  # a bucket that cannot be captured is a finding, not a crash
            row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        rows.append(row)
    paying = [r["batch"] for r in rows if r.get("pays")]
    return {
        "model": model.name,
        "conv_algo_search": conv_algo_search,
        "buckets": rows,
        "pays_at": paying,
        "verdict": (
            f"CUDA graphs pay at batch {', '.join(map(str, paying))}"
            if paying
            else "CUDA graphs do not pay at any bucket (< 5% faster)"
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--seconds", type=float, default=0.5, help="per bucket and side")
    parser.add_argument("--buckets", help="comma-separated (default: the model's buckets)")
    args = parser.parse_args(argv)
    buckets = tuple(int(b) for b in args.buckets.split(",")) if args.buckets else None
    print(json.dumps(measure(args.model_dir, buckets=buckets, seconds=args.seconds), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
