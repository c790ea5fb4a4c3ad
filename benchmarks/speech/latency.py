"""Latency per 1 s window at batch 1 on ONE CPU core: speech_cnn and silero-vad in ONNX Runtime.

    .venv/bin/python -m benchmarks.speech.latency [--model weights/speech_cnn]

Both sessions run with intra_op_num_threads=1 and inter_op_num_threads=1. speech_cnn: one run per
window. silero-vad: the 31 runs of 512 samples (+ 64 of context) that cover one second, with
its state carried between them, as it is used for streaming. Reports median, p90 and minimum
over ``--repeats`` windows of fresh random audio after a warm-up, plus speech_cnn's parameter
count and multiply-adds. Without ``--model`` a freshly initialised speech_cnn is timed (the cost
does not depend on the weights). Writes ``latency.json`` / ``latency.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speech.scorers import CHUNK, CONTEXT, Silero, SpeechCNN  # noqa: E402

RESULTS = ROOT / "benchmarks" / "speech" / "results"


def _stats(seconds: list[float]) -> dict[str, float]:
    ms = np.array(seconds) * 1e3
    return {"p50_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "min_ms": float(ms.min())}  # fmt: skip


def time_speech_cnn(model: SpeechCNN, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    x = (rng.standard_normal((repeats + 20, 1, 16_000)) * 0.1).astype(np.float32)
    out = []
    for i, w in enumerate(x):
        t0 = time.perf_counter()
        model.sess.run(None, {model.input: w})
        if i >= 20:
            out.append(time.perf_counter() - t0)
    return _stats(out)


def time_silero(vad: Silero, repeats: int, rng: np.random.Generator) -> dict[str, float]:
    sr = np.array(16_000, dtype=np.int64)
    out = []
    for i in range(repeats + 5):
        audio = (rng.standard_normal(16_000) * 0.1).astype(np.float32)
        state, context = np.zeros((2, 1, 128), np.float32), np.zeros((1, CONTEXT), np.float32)
        t0 = time.perf_counter()
        for c in range(16_000 // CHUNK):
            chunk = audio[None, c * CHUNK : (c + 1) * CHUNK]
            _, state = vad.sess.run(
                None, {"input": np.concatenate([context, chunk], 1), "state": state, "sr": sr}
            )
            context = chunk[:, -CONTEXT:]
        if i >= 5:
            out.append(time.perf_counter() - t0)
    return _stats(out)


def model_size(source: Path | None) -> dict[str, int]:
    import torch

    from export.models import get_model

    model = get_model("speech_cnn").eval()
    macs = 0

    def hook(m: Any, inputs: Any, output: Any) -> None:
        nonlocal macs
        if isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.Linear):
            per_out = m.weight[0].numel() if not isinstance(m, torch.nn.Linear) else m.in_features
            macs += int(output.numel() * per_out)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(torch.randn(1, 16_000))
        macs += int(model.frontend.mel.numel() * 99)  # the mel matmul
    for h in handles:
        h.remove()
    return {"parameters": sum(p.numel() for p in model.parameters()), "multiply_adds": macs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, help="weights dir, checkpoint or .onnx")
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--no-silero", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    rng = np.random.default_rng()
    with tempfile.TemporaryDirectory() as tmp:
        source = args.model
        if source is None:
            from export.models import get_model
            from export.onnx_export import export_onnx

            source = Path(tmp, "speech_cnn.onnx")
            export_onnx(get_model("speech_cnn"), (16_000,), source)
        result: dict[str, Any] = {
            "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, load average "
            + ", ".join(f"{v:.2f}" for v in os.getloadavg()),
        }
        result["speech_cnn"] = time_speech_cnn(SpeechCNN(source), args.repeats, rng)
        result["speech_cnn"].update(model_size(args.model))
    if not args.no_silero:
        result["silero_vad"] = time_silero(Silero(), args.repeats, rng)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latency.json").write_text(json.dumps(result, indent=1) + "\n")
    lines = ["# Latency per 1 s window, batch 1, one CPU thread (ONNX Runtime)", "",
             f"Machine: {result['machine']}.", "",
             "| model | p50 ms | p90 ms | min ms |", "|---|---|---|---|"]  # fmt: skip
    for name in ("speech_cnn", "silero_vad"):
        if name in result:
            r = result[name]
            lines.append(f"| {name} | {r['p50_ms']:.3f} | {r['p90_ms']:.3f} | {r['min_ms']:.3f} |")
    s = result["speech_cnn"]
    lines += ["", f"speech_cnn: {s['parameters']:,} parameters, "
              f"{s['multiply_adds'] / 1e6:.1f} M multiply-adds per window."]  # fmt: skip
    text = "\n".join(lines) + "\n"
    (args.out / "latency.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
