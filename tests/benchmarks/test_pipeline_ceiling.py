"""benchmarks/pipeline_ceiling.py: the in-process pipeline answers what the server answers for the
same files (it runs the server's code), and its accounting of items, rows and audio seconds."""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image

from benchmarks.pipeline_ceiling import image_stage, load_runtime, measure, speech_stage
from service.settings import Settings


def png(rng: np.random.Generator) -> bytes:
    h, w = (int(v) for v in rng.integers(4, 40, 2))
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def wav(rng: np.random.Generator, samples: int) -> bytes:
    x = rng.uniform(-0.01, 0.01, samples)
    loud = int(rng.integers(0, samples // 2))
    x[loud : loud + samples // 3] = rng.uniform(-0.9, 0.9, len(x[loud : loud + samples // 3]))
    buf = io.BytesIO()
    soundfile.write(buf, x.astype(np.float32), 16000, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def post(server: Any, path: str, body: bytes) -> Any:
    request = urllib.request.Request(server.url("http", path), data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def pipeline(model_dir: Any, kind: str) -> tuple[Any, Any]:
    settings = Settings()
    spec, runtime = load_runtime(model_dir, settings)
    stage = image_stage(spec, settings) if kind == "image" else speech_stage(spec)
    names = (spec.inputs[0].name, spec.outputs[0].name)

    def infer(rows: np.ndarray) -> np.ndarray:
        return runtime.run({names[0]: rows})[names[1]]

    return stage, infer


def test_classification_equals_the_servers(server, tiny_repository) -> None:
    rng = np.random.default_rng()
    stage, infer = pipeline(tiny_repository / "tiny_image", "image")
    for _ in range(3):
        image = png(rng)
        rows, context = stage.prepare(image)
        ours = stage.finish(infer(rows), context)
        theirs = post(server, "/v1/classify?model=tiny_image&top_k=5", image)["classes"]
        assert [(r.index, r.label) for r in ours] == [(c["index"], c["label"]) for c in theirs]
        assert [r.score for r in ours] == pytest.approx([c["score"] for c in theirs], rel=1e-5)


def test_speech_windows_equal_the_servers(server, tiny_repository) -> None:
    rng = np.random.default_rng()
    stage, infer = pipeline(tiny_repository / "tiny_speech", "speech")
    clip = wav(rng, int(rng.integers(4000, 12000)))
    rows, context = stage.prepare(clip)
    windows, segments = stage.finish(infer(rows), context)
    theirs = post(server, "/v1/detect-speech?model=tiny_speech", clip)
    assert [(w.start_s, w.end_s) for w in windows] == [
        pytest.approx((t["start_s"], t["end_s"])) for t in theirs["windows"]
    ]
    assert [w.probability for w in windows] == pytest.approx(
        [t["speech_probability"] for t in theirs["windows"]], rel=1e-5, abs=1e-7
    )
    assert len(segments) == len(theirs["segments"])


def test_measure_counts_items_rows_and_audio(tiny_repository) -> None:
    rng = np.random.default_rng()
    stage, infer = pipeline(tiny_repository / "tiny_speech", "speech")
    clips = [wav(rng, 4000) for _ in range(5)]  # 0.25 s: 4 windows of 1600, hop 800
    batch = int(rng.integers(1, 6))
    result = measure(clips, stage, infer, batch=batch, threads=2, seconds=0.3)
    assert result["items"] > 0 and result["batch"] == batch
    assert result["audio_s_per_s"] == pytest.approx(0.25 * result["items_per_s"])
    # Rows run before the clock started belong to items counted after it: at most a batch.
    assert 0 < result["rows_per_s"] <= 4 * result["items_per_s"]

    stage, infer = pipeline(tiny_repository / "tiny_image", "image")
    result = measure([png(rng) for _ in range(5)], stage, infer, batch=batch, threads=2,
                     seconds=0.3)  # fmt: skip
    assert result["items"] > 0
    assert result["rows_per_s"] == pytest.approx(result["items_per_s"])
    assert result["audio_s_per_s"] == 0
