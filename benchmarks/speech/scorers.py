"""The two detectors side by side: our ``speech_cnn`` (ONNX) and silero-vad (ONNX from its wheel).

Both run in ONNX Runtime on the CPU with one intra-op thread, and both give a speech probability.

* **speech_cnn** scores a 1 s window directly (softmax of its two logits). A checkpoint, a shipped
  weights folder or an ONNX file is accepted; the first two are exported to ONNX first.
* **silero-vad** is a streaming model: 512-sample chunks (32 ms) with a recurrent state and 64
  samples of context, exactly as ``silero_vad.utils_vad.OnnxWrapper`` feeds it. A window's score is
  an aggregate of its 31 chunk probabilities, ``max`` or the k-th largest (k = 6, about 0.2 s,
  matching our label rule: at least 0.2 s of speech). The aggregate is chosen on the validation
  split like the threshold, never on test. The state starts at zero for each 1 s clip (cold
  start); long audio (:mod:`benchmarks.speech.long_audio`) runs it as one stream.

silero-vad is fetched at benchmark set-up only: ``pip download --no-deps silero-vad==VERSION``
into ``.cache/silero`` and the ONNX file read out of the wheel. It is never a dependency of
``service/`` or ``export/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[2]
SILERO_VERSION = "6.2.3"
SILERO_CACHE = ROOT / ".cache" / "silero"
CHUNK, CONTEXT = 512, 64
KTH = 6  # ~0.2 s of 32 ms chunks


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def silero_onnx(cache: Path = SILERO_CACHE) -> Path:
    """silero-vad's ONNX model, extracted from its PyPI wheel (downloaded once into ``cache``)."""
    target = cache / f"silero_vad-{SILERO_VERSION}.onnx"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob(f"silero_vad-{SILERO_VERSION}-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache),
             f"silero-vad=={SILERO_VERSION}"],
            check=True,
        )  # fmt: skip
        wheels = sorted(cache.glob(f"silero_vad-{SILERO_VERSION}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        target.write_bytes(wheel.read("silero_vad/data/silero_vad.onnx"))
    return target


class Silero:
    """silero-vad over batches of equal-length audio; chunk probabilities (N, n_chunks)."""

    def __init__(self, path: Path | None = None, threads: int = 1) -> None:
        self.sess = session(path or silero_onnx(), threads)

    def chunk_probs(self, audio: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
        audio = np.atleast_2d(audio).astype(np.float32)
        n_chunks = audio.shape[1] // CHUNK
        out = np.empty((len(audio), n_chunks), np.float32)
        for lo in range(0, len(audio), batch):
            x = audio[lo : lo + batch]
            state = np.zeros((2, len(x), 128), np.float32)
            context = np.zeros((len(x), CONTEXT), np.float32)
            sr = np.array(16000, dtype=np.int64)
            for c in range(n_chunks):
                chunk = x[:, c * CHUNK : (c + 1) * CHUNK]
                feed = {"input": np.concatenate([context, chunk], 1), "state": state, "sr": sr}
                prob, state = self.sess.run(None, feed)
                out[lo : lo + batch, c] = prob[:, 0]
                context = chunk[:, -CONTEXT:]
        return out


def aggregate(chunk_probs: NDArray[np.float32], how: str) -> NDArray[np.float32]:
    """A window score from its chunk probabilities: ``max`` or ``kth`` (k-th largest)."""
    if how == "max":
        return chunk_probs.max(axis=1)
    return np.sort(chunk_probs, axis=1)[:, -KTH]


def _export(model: Any, path: Path) -> Path:
    from export.onnx_export import export_onnx

    export_onnx(model, (16_000,), path)
    return path


def speech_cnn_onnx(source: Path, workdir: Path) -> Path:
    """An ONNX file of speech_cnn from an .onnx, a checkpoint (.pt) or a weights folder."""
    if source.suffix == ".onnx":
        return source
    if source.suffix == ".pt":
        from export.checkpoint import build_model, load_checkpoint

        return _export(build_model(load_checkpoint(source), str(source)), workdir / "model.onnx")
    import torch
    from safetensors.torch import load_file

    from export.models import get_model

    file = source / "model.safetensors" if source.is_dir() else source
    card = file.with_name("card.json")
    kwargs = json.loads(card.read_text()).get("model_kwargs", {}) if card.is_file() else {}
    model = get_model("speech_cnn", **kwargs)
    model.load_state_dict(load_file(str(file)))
    with torch.no_grad():
        return _export(model, workdir / "model.onnx")


class SpeechCNN:
    """Our model: speech probability of (N, 16000) windows."""

    def __init__(self, source: Path, threads: int = 1) -> None:
        with tempfile.TemporaryDirectory(prefix="speech-bench-") as tmp:
            self.sess = session(speech_cnn_onnx(source, Path(tmp)), threads)  # read into memory
        self.input = self.sess.get_inputs()[0].name

    def probs(self, windows: NDArray[np.float32], batch: int = 256) -> NDArray[np.float32]:
        out = []
        for lo in range(0, len(windows), batch):
            logits = self.sess.run(None, {self.input: windows[lo : lo + batch]})[0]
            z = logits - logits.max(axis=1, keepdims=True)
            p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
            out.append(p[:, 1])
        return np.concatenate(out).astype(np.float32)
