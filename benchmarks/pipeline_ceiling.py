"""In-process pipeline ceilings for the task API: decode + preprocess + ONNX Runtime, no server.

    python -m benchmarks.pipeline_ceiling --repository .cache/bench-repo \
        --case mobilenet_v2:jpeg --case lenet5_fashion:png --case speech_cnn:wav10s \
        --batch-sizes 1,8,64 --seconds 3

What ClassifyImage / DetectSpeech could answer per second on this machine if the server cost
nothing (no gRPC or HTTP, no queue, no event loop), computed with the server's own code and
settings: the decoders (service.preprocess: decode_image with the server's default limits;
prepare_audio + split_windows), the session (service.runtime.OrtRuntime, created and warmed
as the server's loader does, with automatic intra-op threads), the answers
(service.dataplane.postprocess: activation + top-k; speech probabilities, windows and
segments), and a decoding pool of the server's size (`--preprocess-threads`, by default the
server's: one thread per core).

Pipelined as in the server: the pool decodes ahead (`threads + 2 × batch` items in flight)
while this thread runs ONNX Runtime on batches of B rows (an image is one row, a clip one row
per window; a clip's windows may span batches, as the batcher packs them) and finishes each item
as its last row comes back. Items cycle through the inputs of one kind (benchmarks/inputs.py).
Each batch size B of `--batch-sizes` (up to the model's max_batch_size) is measured for
`--seconds` after one untimed batch; the ceiling is the best B. Reports items/s (images or
clips), rows/s, for audio audio seconds per second, and the CPU time this process spent per item
(all threads: the decoding pool and ONNX Runtime's), which unlike items/s hardly depends on what
else the machine runs. Prints one JSON list.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import inputs as bench_inputs
from service.config import read_spec
from service.dataplane import postprocess
from service.preprocess import ImageLimits, decode_image, prepare_audio, split_windows
from service.runtime import OrtRuntime
from service.settings import Settings
from service.spec import ModelSpec

IMAGE_KINDS = ("jpeg", "png")
AUDIO_KINDS = ("wav", "wav1s", "wav10s", "wav60s")


@dataclass
class Stage:
    """How one model turns an item into rows and rows back into an answer."""

    prepare: Callable[[bytes], tuple[np.ndarray, Any]]  # worker thread: (rows, context)
    finish: Callable[[np.ndarray, Any], Any]  # outputs of the item's rows, context -> answer
    seconds_of: Callable[[Any], float]  # audio seconds of an item (0 for images)


def image_stage(spec: ModelSpec, settings: Settings) -> Stage:
    assert spec.image is not None, f"{spec.name} is not an image model"
    image, tensor = spec.image, spec.inputs[0]
    limits = ImageLimits(max_pixels=settings.max_image_pixels, max_bytes=settings.max_image_bytes)

    def prepare(data: bytes) -> tuple[np.ndarray, Any]:
        x = decode_image(data, image, limits).astype(tensor.np_dtype, copy=False)
        return x[None], None

    def finish(logits: np.ndarray, context: Any) -> list[postprocess.Ranked]:
        scores = postprocess.activate(logits[0], spec.output_activation)
        return postprocess.top_k(scores, 5, spec.labels)

    return Stage(prepare, finish, lambda context: 0.0)


def speech_stage(spec: ModelSpec) -> Stage:
    audio, speech, tensor = spec.audio, spec.speech, spec.inputs[0]
    assert audio is not None and speech is not None, f"{spec.name} is not a speech model"

    def prepare(data: bytes) -> tuple[np.ndarray, Any]:
        x = prepare_audio(data, None, 0, audio)
        windows, starts = split_windows(x, audio)
        shape = tuple(windows.shape[1] if d == -1 else d for d in tensor.dims)
        rows = windows.reshape((len(windows), *shape)).astype(tensor.np_dtype, copy=False)
        return rows, (len(x), starts)

    def finish(logits: np.ndarray, context: Any) -> tuple[list[Any], list[tuple[float, float]]]:
        length, starts = context
        probs = postprocess.speech_probabilities(
            logits, spec.output_activation, speech.speech_index
        )
        ends = np.minimum(starts + audio.window_samples, length)
        windows = postprocess.window_results(starts, ends, probs, audio.sample_rate)
        return windows, postprocess.segments(windows, speech.threshold)

    return Stage(prepare, finish, lambda context: context[0] / audio.sample_rate)


def load_runtime(model_dir: Path, settings: Settings) -> tuple[ModelSpec, OrtRuntime]:
    """The session as service.loader.start_version builds and warms it (one CPU instance)."""
    spec = read_spec(model_dir, default_max_queue_size=settings.max_queue_size)
    version = max((p for p in model_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    threads = spec.intra_op_threads or settings.intra_op_threads
    runtime = OrtRuntime(version / spec.model_filename, spec, "cpu", intra_op_threads=threads)
    runtime.warmup(spec.buckets)
    return spec, runtime


def measure(
    items: list[bytes],
    stage: Stage,
    infer: Callable[[np.ndarray], np.ndarray],
    *,
    batch: int,
    threads: int,
    seconds: float,
) -> dict[str, Any]:
    """Items through the pipeline for `seconds` (after one untimed batch); see the docstring."""
    ahead = threads + 2 * batch
    with ThreadPoolExecutor(threads, thread_name_prefix="preprocess") as pool:
        submitted: collections.deque[Future[tuple[np.ndarray, Any]]] = collections.deque()
        waiting: collections.deque[tuple[int, Any]] = collections.deque()  # (rows, context)
        rows_in: list[np.ndarray] = []
        outs: list[np.ndarray] = []
        counts = {"items": 0, "rows": 0, "audio_s": 0.0}
        k, cpu0 = 0, time.process_time()
        start = end = time.perf_counter()
        timing = False

        def run(rows: np.ndarray) -> None:
            outs.append(infer(rows))
            counts["rows"] += len(rows)
            done = np.concatenate(outs) if len(outs) > 1 else outs[0]
            while waiting and len(done) >= waiting[0][0]:
                n, context = waiting.popleft()
                stage.finish(done[:n], context)
                done = done[n:]
                counts["items"] += 1
                counts["audio_s"] += stage.seconds_of(context)
            outs[:] = [done] if len(done) else []

        while True:
            now = time.perf_counter()
            if not timing and counts["rows"] >= batch:  # first batch done: start the clock
                timing, start, cpu0 = True, now, time.process_time()
                counts.update(items=0, rows=0, audio_s=0.0)
            feeding = not timing or now - start < seconds
            while feeding and len(submitted) < ahead:
                submitted.append(pool.submit(stage.prepare, items[k % len(items)]))
                k += 1
            if not submitted and not rows_in:
                break
            if submitted:
                rows, context = submitted.popleft().result()
                waiting.append((len(rows), context))
                rows_in.append(rows)
            buffered = np.concatenate(rows_in) if len(rows_in) > 1 else rows_in[0]
            while len(buffered) >= batch or (not submitted and len(buffered)):
                run(buffered[:batch])
                buffered = buffered[batch:]
            rows_in[:] = [buffered] if len(buffered) else []
            end = time.perf_counter()
    cpu = time.process_time() - cpu0
    elapsed = end - start
    return {
        "batch": batch,
        "threads": threads,
        "seconds": elapsed,
        "items": counts["items"],
        "items_per_s": counts["items"] / elapsed,
        "rows_per_s": counts["rows"] / elapsed,
        "audio_s_per_s": counts["audio_s"] / elapsed,
        "cpu_us_per_item": cpu / max(counts["items"], 1) * 1e6,
    }


def ceiling(
    repository: Path,
    model: str,
    kind: str,
    *,
    batch_sizes: tuple[int, ...],
    seconds: float,
    threads: int = 0,
) -> dict[str, Any]:
    settings = Settings()
    threads = threads or settings.preprocess_threads or (os.cpu_count() or 1)
    spec, runtime = load_runtime(repository / model, settings)
    stage = speech_stage(spec) if kind in AUDIO_KINDS else image_stage(spec, settings)
    items = bench_inputs.load(kind)
    tensor, output = spec.inputs[0].name, spec.outputs[0].name

    def infer(rows: np.ndarray) -> np.ndarray:
        return runtime.run({tensor: rows})[output]

    sizes = [b for b in batch_sizes if b <= max(spec.max_batch_size, 1)] or [1]
    runs = []
    for b in sizes:
        runs.append(measure(items, stage, infer, batch=b, threads=threads, seconds=seconds))
        print(
            f"  {model:>16} {kind:>6} batch {b:>3}: {runs[-1]['items_per_s']:9.1f} items/s"
            + (f", {runs[-1]['audio_s_per_s']:.0f} audio s/s" if kind in AUDIO_KINDS else ""),
            file=sys.stderr,
            flush=True,
        )
    runtime.close()
    best = max(runs, key=lambda r: r["items_per_s"])
    return {
        "model": model,
        "input": kind,
        "intra_op_threads": runtime.intra_op_threads,
        "preprocess_threads": threads,
        "runs": runs,
        "best_batch": best["batch"],
        "ceiling_items_per_s": best["items_per_s"],
        "ceiling_audio_s_per_s": best["audio_s_per_s"],
        "cpu_us_per_item": min(r["cpu_us_per_item"] for r in runs),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repository", type=Path, required=True)
    parser.add_argument(
        "--case", action="append", required=True, help="MODEL:KIND (jpeg, png, wav, wav1s, ...)"
    )
    parser.add_argument("--batch-sizes", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=3.0, help="per batch size")
    parser.add_argument("--preprocess-threads", type=int, default=0, help="0: the server's")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    results = []
    for case in args.case:
        model, _, kind = case.partition(":")
        if kind not in (*IMAGE_KINDS, *AUDIO_KINDS):
            parser.error(f"--case {case}: KIND must be one of {IMAGE_KINDS + AUDIO_KINDS}")
        results.append(
            ceiling(args.repository, model, kind, batch_sizes=sizes, seconds=args.seconds,
                    threads=args.preprocess_threads)
        )  # fmt: skip
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
