"""The soak's code path at CI size: 2,000 mixed requests (ClassifyImage, DetectSpeech, ModelInfer)
at concurrency 32 against a real `python -m service serve` process on tiny generated models,
bounded at 30 s. Zero lost, mismatched or failed requests, the server's counters equal the
client's, and the server exits 0. benchmarks/soak.py runs the same code with 100,000 requests."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest

from benchmarks import soak
from service._proto.convserve.v1 import inference_pb2 as tpb
from service._proto.inference import grpc_service_pb2 as kpb

pytestmark = pytest.mark.timeout(180)


def test_soak_small(tmp_path: Path) -> None:
    cfg = soak.SoakConfig(
        repository=None,
        requests=2000,
        concurrency=32,
        channels=4,
        max_seconds=30,
        inputs_per_model=6,
        rss_every_s=0.5,
        out=tmp_path,
    )
    res = soak.run_soak(cfg)
    summary = (tmp_path / "soak.md").read_text()
    assert res.requests_issued == res.requests_completed == 2000, summary
    assert res.lost == 0 and res.mismatched == 0 and res.errors == 0, summary
    assert res.counters_match, (res.statuses, res.server_counters)
    assert sum(res.statuses.values()) == 2000
    assert set(res.by_kind) == {"classify", "speech", "infer"}  # the whole mix ran
    assert res.server_exit_code == 0
    assert res.rss_mib["after"] > 0 and len(res.rss_samples) >= 2
    assert (tmp_path / "soak.json").is_file() and "PASS" in summary


def _item(kind: str) -> soak.Item:
    if kind == "classify":
        expected = tpb.ClassifyImageResponse(model="m", version="1")
        expected.classes.add(index=2, label="bird", score=0.7)
        expected.classes.add(index=0, label="cat", score=0.2)
        return soak.Item(kind, "m", tpb.ClassifyImageRequest(model="m"), expected, margin=0.5)
    if kind == "speech":
        expected = tpb.DetectSpeechResponse(speech_probability=0.9)
        expected.windows.add(speech_probability=0.9)
        return soak.Item(kind, "m", tpb.DetectSpeechRequest(model="m"), expected)
    request = kpb.ModelInferRequest(model_name="m", id="r1")
    return soak.Item(kind, "m", request, {"y": np.array([[1.0, 2.0]], np.float32)})


def _infer_reply(y: np.ndarray, ident: str = "r1") -> kpb.ModelInferResponse:
    reply = kpb.ModelInferResponse(model_name="m", id=ident)
    reply.outputs.add(name="y", datatype="FP32", shape=list(y.shape))
    reply.raw_output_contents.append(y.astype(np.float32).tobytes())
    return reply


def test_the_soak_notices_wrong_answers() -> None:
    """The comparison the soak relies on: equal answers pass, wrong ones are caught."""
    item = _item("classify")
    assert soak.mismatch(item, copy.deepcopy(item.expected)) is None
    swapped = copy.deepcopy(item.expected)
    swapped.classes[0].index, swapped.classes[1].index = 0, 2
    assert "top-1" in (soak.mismatch(item, swapped) or "")
    off = copy.deepcopy(item.expected)
    off.classes[0].score = 0.6
    assert "score" in (soak.mismatch(item, off) or "")

    item = _item("speech")
    assert soak.mismatch(item, copy.deepcopy(item.expected)) is None
    wrong = copy.deepcopy(item.expected)
    wrong.speech_probability = 0.5
    assert soak.mismatch(item, wrong) is not None
    wrong.windows.add(speech_probability=0.5)
    assert "windows" in (soak.mismatch(item, wrong) or "")

    item = _item("infer")
    assert soak.mismatch(item, _infer_reply(np.array([[1.0, 2.0]]))) is None
    assert soak.mismatch(item, _infer_reply(np.array([[1.0, 2.1]]))) is not None
    assert soak.mismatch(item, _infer_reply(np.array([[1.0, 2.0]]), ident="r2")) is not None
