"""In-process ceilings on CUDA: what a server of the model could at most do on this machine.

    python -m benchmarks.gpu.ceiling MODEL_DIR [--jpeg DIR] [--seconds 1]

tensor: the server's own session (OrtRuntime on CUDA, the model's config, warmed on every bucket)
at each batch size, on the server's path — numpy batch in, IO binding copies it to the GPU, outputs
back to numpy — on fresh random inputs. The best batch's rows/s is the ceiling the server's
throughput is held against. At that batch the same model is also timed with its inputs and outputs
resident on the GPU (no copies: the GPU's compute alone), to show what the copies cost.

jpeg: the ClassifyImage pipeline without the server — convserve's decode_image (Pillow decode,
resize, crop, normalise, as the data plane calls it) in a pool of one thread per core (the
server's default preprocess threads), feeding batches to the same session; decoding runs ahead of
inference by two batches, so the CPU and the GPU work at once, as in the server.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.gpu import cuda
from service.preprocess.image import decode_image

BATCHES = (1, 2, 4, 8, 16, 32, 64, 128)


def tensor(
    model_dir: Path, *, batches: tuple[int, ...] = BATCHES, seconds: float = 1.0
) -> dict[str, Any]:
    model = cuda.load(model_dir)
    limit = model.spec.max_batch_size
    sizes = tuple(b for b in batches if b <= limit) if model.spec.batching else (1,)
    runtime = cuda.runtime(model)
    runtime.warmup(model.spec.buckets)  # the server's warm-up, before its READY
    rng = np.random.default_rng()
    rows = []
    for size in sizes:
        data = cuda.feed(model, size, rng)
        runtime.run(data)
        rows.append(cuda.summary(size, cuda.timed(partial(runtime.run, data), seconds)))
    search = model.spec.parameters.get("cudnn_conv_algo_search", "HEURISTIC")
    runtime.close()
    best = max(rows, key=lambda r: r["rows_per_s"])
    session = cuda.bare_session(model, search)
    resident = cuda.Resident(session, model, best["batch"])
    resident.run()
    compute = cuda.summary(best["batch"], cuda.timed(resident.run, seconds))
    return {
        "model": model.name,
        "kind": "tensor",
        "conv_algo_search": search,
        "batches": rows,
        "best_batch": best["batch"],
        "ceiling_rows_per_s": best["rows_per_s"],
        "gpu_resident_rows_per_s": compute["rows_per_s"],
    }


def jpeg(
    model_dir: Path,
    images: list[bytes],
    *,
    batches: tuple[int, ...] = (16, 64),
    seconds: float = 2.0,
    threads: int = 0,
) -> dict[str, Any]:
    model = cuda.load(model_dir)
    spec = model.spec
    if spec.image is None:
        raise ValueError(f"{model.name} is not an image classification model")
    threads = threads or os.cpu_count() or 1
    runtime = cuda.runtime(model)
    runtime.warmup(spec.buckets)
    name = spec.inputs[0].name
    rows = []
    with ThreadPoolExecutor(threads, thread_name_prefix="decode") as pool:
        for size in [b for b in batches if b <= spec.max_batch_size] or [spec.max_batch_size]:
            count = 0

            def submit(i: int) -> Future[np.ndarray]:
                return pool.submit(decode_image, images[i % len(images)], spec.image)

            warm = [decode_image(images[i % len(images)], spec.image) for i in range(size)]
            runtime.run({name: np.stack(warm)})
            start = time.perf_counter()  # before the first decode: all of them are counted
            ahead = collections.deque(submit(i) for i in range(2 * size))
            issued = len(ahead)
            while time.perf_counter() - start < seconds:
                rows_ = [ahead.popleft().result() for _ in range(size)]
                ahead.extend(submit(issued + i) for i in range(size))
                issued += size
                runtime.run({name: np.stack(rows_)})
                count += size
            elapsed = time.perf_counter() - start
            for f in ahead:
                f.cancel()
            rows.append({"batch": size, "images_per_s": count / elapsed})
    runtime.close()
    best = max(rows, key=lambda r: r["images_per_s"])
    return {
        "model": model.name,
        "kind": "jpeg",
        "decode_threads": threads,
        "images": len(images),
        "batches": rows,
        "best_batch": best["batch"],
        "ceiling_rows_per_s": best["images_per_s"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--jpeg", type=Path, help="folder of JPEGs: the pipeline ceiling")
    parser.add_argument("--seconds", type=float, default=1.0, help="per batch size")
    args = parser.parse_args(argv)
    if args.jpeg:
        images = [p.read_bytes() for p in sorted(args.jpeg.glob("*.jpg"))]
        result = jpeg(args.model_dir, images, seconds=args.seconds)
    else:
        result = tensor(args.model_dir, seconds=args.seconds)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
