"""Fixtures for the servicer/server tests: a tiny model repository (built with onnx.helper, no
torch) and the real server, run in-process on its own event loop thread so that tests can use
plain synchronous gRPC clients (ours, the generated stubs, grpcurl, tritonclient in a subprocess).

Models (all CPU, microseconds per batch):
  tiny_image   input [N,1,8,8] → Flatten → Gemm → logits [N,10], 10 labels; max batch 8, 2 ms
  tiny_speech  audio [N,1600] → mean|x| → logits [N,2] = (2 - 40·m, 40·m - 2): loud = speech;
               max batch 4 (so long clips need several batches), 16 kHz, 1600/800 window/hop
  batchy       tiny_image's graph, 50 ms batch delay: concurrent requests share batches
  slow         tiny_image's graph, 1.5 s batch delay: deadlines expire in the queue
  small_queue  tiny_image's graph, 1 s delay, queue of 2 requests: the third is refused
  half         generic: x FP16 [N,4] → Mul by 2 → y FP16 [N,4], and mask BOOL [N,4] → out BOOL
               (datatypes other than FP32 on the KServe API)
  (the image models name Triton's waiting rule, `batch_policy: delay`, so their delays hold
  requests in the queue as these tests need; the default rule is tested in test_batch_policy.py)
  broken       a valid config with a corrupt model.onnx: not loaded at start (the server must be
               ready), loaded on demand by the tests → UNAVAILABLE
  bad_config   an unusable config.pbtxt (not loaded at start either)
"""

from __future__ import annotations

import asyncio
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from service._proto.convserve.v1 import inference_pb2_grpc as task_grpc
from service._proto.inference import grpc_service_pb2_grpc as kserve_grpc
from service.server import Server
from service.settings import Settings
from tests.service.onnx_builders import _model

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[2]
IMAGE_LABELS = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
]
IMAGE_MODELS = {  # name -> (max_batch_size, delay_us, max_queue_size)
    "tiny_image": (8, 2000, 64),
    "batchy": (8, 50_000, 64),
    "slow": (8, 1_500_000, 64),
    "small_queue": (8, 1_000_000, 2),
}
STARTED = ("tiny_image", "tiny_speech", "batchy", "slow", "small_queue", "half")

IMAGE_CONFIG = """
name: "{name}"
platform: "onnxruntime_onnx"
max_batch_size: {max_batch_size}
input [ {{ name: "input" data_type: TYPE_FP32 format: FORMAT_NCHW dims: [ 1, 8, 8 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 10 ] label_filename: "labels.txt" }} ]
dynamic_batching {{
  max_queue_delay_microseconds: {delay_us}
  default_queue_policy {{ max_queue_size: {queue} }}
}}
instance_group [ {{ count: 1 kind: KIND_CPU }} ]
parameters {{ key: "batch_policy" value: {{ string_value: "delay" }} }}
parameters {{ key: "task" value: {{ string_value: "image_classification" }} }}
parameters {{ key: "image_size" value: {{ string_value: "8" }} }}
parameters {{ key: "color" value: {{ string_value: "grayscale" }} }}
parameters {{ key: "mean" value: {{ string_value: "0.5" }} }}
parameters {{ key: "std" value: {{ string_value: "0.25" }} }}
parameters {{ key: "output_activation" value: {{ string_value: "softmax" }} }}
"""

SPEECH_CONFIG = """
name: "tiny_speech"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [ { name: "audio" data_type: TYPE_FP32 dims: [ 1600 ] } ]
output [ { name: "logits" data_type: TYPE_FP32 dims: [ 2 ] label_filename: "labels.txt" } ]
dynamic_batching { max_queue_delay_microseconds: 1000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "task" value: { string_value: "speech_detection" } }
parameters { key: "sample_rate" value: { string_value: "16000" } }
parameters { key: "window_samples" value: { string_value: "1600" } }
parameters { key: "hop_samples" value: { string_value: "800" } }
parameters { key: "speech_index" value: { string_value: "1" } }
parameters { key: "threshold" value: { string_value: "0.5" } }
"""


def image_model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    weight = rng.standard_normal((64, 10)).astype(np.float32)
    bias = rng.standard_normal(10).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Flatten", ["input"], ["flat"], axis=1),
            helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
        ],
        "tiny_image",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(weight, "weight"), numpy_helper.from_array(bias, "bias")],
    )
    return _model(graph)


def speech_model() -> onnx.ModelProto:
    scale = np.array([[-40.0, 40.0]], dtype=np.float32)
    bias = np.array([2.0, -2.0], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["audio"], ["magnitude"]),
            helper.make_node("ReduceMean", ["magnitude"], ["level"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["level", "scale"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        ],
        "tiny_speech",
        [helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", 1600])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])],
        [numpy_helper.from_array(scale, "scale"), numpy_helper.from_array(bias, "bias")],
    )
    return _model(graph)


HALF_CONFIG = """
name: "half"
platform: "onnxruntime_onnx"
max_batch_size: 4
input [
  { name: "x" data_type: TYPE_FP16 dims: [ 4 ] },
  { name: "mask" data_type: TYPE_BOOL dims: [ 4 ] }
]
output [
  { name: "y" data_type: TYPE_FP16 dims: [ 4 ] },
  { name: "flipped" data_type: TYPE_BOOL dims: [ 4 ] }
]
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "task" value: { string_value: "generic" } }
"""


def half_model() -> onnx.ModelProto:
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["y"]),
            helper.make_node("Not", ["mask"], ["flipped"]),
        ],
        "half",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT16, ["N", 4]),
            helper.make_tensor_value_info("mask", TensorProto.BOOL, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT16, ["N", 4]),
            helper.make_tensor_value_info("flipped", TensorProto.BOOL, ["N", 4]),
        ],
        [numpy_helper.from_array(np.array(2.0, dtype=np.float16), "two")],
    )
    return _model(graph)


def build_repository(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, (max_batch_size, delay_us, queue) in IMAGE_MODELS.items():
        model_dir = root / name
        (model_dir / "1").mkdir(parents=True)
        (model_dir / "config.pbtxt").write_text(
            IMAGE_CONFIG.format(
                name=name, max_batch_size=max_batch_size, delay_us=delay_us, queue=queue
            )
        )
        (model_dir / "labels.txt").write_text("\n".join(IMAGE_LABELS) + "\n")
        onnx.save(image_model(), model_dir / "1" / "model.onnx")
    speech = root / "tiny_speech"
    (speech / "1").mkdir(parents=True)
    (speech / "config.pbtxt").write_text(SPEECH_CONFIG)
    (speech / "labels.txt").write_text("no_speech\nspeech\n")
    onnx.save(speech_model(), speech / "1" / "model.onnx")
    half = root / "half"
    (half / "1").mkdir(parents=True)
    (half / "config.pbtxt").write_text(HALF_CONFIG)
    onnx.save(half_model(), half / "1" / "model.onnx")
    broken = root / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "config.pbtxt").write_text(
        IMAGE_CONFIG.format(name="broken", max_batch_size=8, delay_us=1000, queue=8)
    )
    (broken / "labels.txt").write_text("\n".join(IMAGE_LABELS) + "\n")
    (broken / "1" / "model.onnx").write_bytes(b"this is not an ONNX protobuf \x00\xff" * 8)
    bad_config = root / "bad_config"
    (bad_config / "1").mkdir(parents=True)
    (bad_config / "config.pbtxt").write_text('name: "bad_config"\nmax_batch_size: -3\n')
    return root


def make_settings(repository: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "repository": repository,
        "grpc_host": "127.0.0.1",
        "grpc_port": 0,
        "metrics_host": "127.0.0.1",
        "metrics_port": 0,
        "http_host": "127.0.0.1",
        "http_port": 0,
        "device": "cpu",
        "default_image_model": "tiny_image",
        "default_speech_model": "tiny_speech",
        "preprocess_threads": 2,
        "intra_op_threads": 1,
        "grace_period_s": 5.0,
        "log_level": "WARNING",
        "load_models": STARTED,
    }
    values.update(overrides)
    return Settings.from_sources(values, env={})


class ServerThread:
    """The real `service.server.Server` on an event loop of its own, in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.server: Server | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="convserve-test-server", daemon=True)

    @property
    def target(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.grpc_port}"

    @property
    def http(self) -> str:
        """Base URL of the HTTP port."""
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.http_port}"

    def start(self, timeout: float = 120.0) -> ServerThread:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("test server did not start")
        if self._error is not None:
            raise self._error
        return self

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a coroutine on the server's loop (to reach the repository, say) and wait."""
        assert self.loop is not None
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    def stop(self, timeout: float = 60.0) -> None:
        if self.loop is not None and self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            self.server = await Server(self.settings).start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        await self._stop.wait()
        await self.server.stop()


@pytest.fixture(scope="session")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_repository(tmp_path_factory.mktemp("model_repository"))


@pytest.fixture(scope="session")
def server(repository: Path) -> Iterator[ServerThread]:
    thread = ServerThread(make_settings(repository)).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def channel(server: ServerThread) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.target) as ch:
        yield ch


@pytest.fixture(scope="session")
def task_stub(channel: grpc.Channel) -> task_grpc.InferenceStub:
    return task_grpc.InferenceStub(channel)


@pytest.fixture(scope="session")
def kserve_stub(channel: grpc.Channel) -> kserve_grpc.GRPCInferenceServiceStub:
    return kserve_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture
def rng() -> np.random.Generator:
    """A fresh generator per test; the seed is printed, so a failure shows how to replay it."""
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"rng seed: {seed} (replay: np.random.default_rng({seed}))")
    return np.random.default_rng(seed)


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll `check` until it holds (for effects that land just after a reply is sent)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition did not hold in time")
        time.sleep(0.01)


def png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def with_text_chunks(png: bytes, count: int) -> bytes:
    """`png` with `count` zTXt chunks of 1 MB text each (1 KB compressed) after its IHDR: a
    small file that Pillow spends tens of milliseconds inflating while it opens it."""
    body = b"k\0\0" + zlib.compress(b"\0" * (1024 * 1024 - 100), 9)
    ztxt = struct.pack(">I", len(body)) + b"zTXt" + body
    ztxt += struct.pack(">I", zlib.crc32(b"zTXt" + body))
    return png[:33] + ztxt * count + png[33:]  # 8-byte signature + 25-byte IHDR chunk


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def speech_clip(rate: int = 16000) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """1 s silence-ish, 0.6 s loud tone, 0.8 s quiet, 0.5 s loud: two speech stretches."""
    rng = np.random.default_rng(5)
    parts = [
        (1.0, 0.001),
        (0.6, 0.5),
        (0.8, 0.001),
        (0.5, 0.5),
        (0.3, 0.001),
    ]
    chunks = []
    loud = []
    t = 0.0
    for seconds, amplitude in parts:
        n = int(seconds * rate)
        phase = np.arange(n) / rate * 2 * np.pi * 440
        chunks.append(amplitude * np.sin(phase) + 0.0005 * rng.standard_normal(n))
        if amplitude > 0.1:
            loud.append((t, t + seconds))
        t += seconds
    return np.concatenate(chunks).astype(np.float32), loud
