"""The bad-input matrix: every kind of broken, odd or oversized input a client can send, one test
each, against the real server with real gRPC clients.

Each case asserts the documented gRPC status and that the message is actionable (it names the
problem: the limit, or what was expected and what came), or for valid-but-unusual inputs (16-bit,
CMYK, animated, stereo, 48 kHz...) that the answer equals in-process preprocessing + ONNX
Runtime. After every case the server must still answer a good request.

The case table is also docs/errors.md's: each case's status and message are compared with the
documented row (numbers and byte strings masked), and `test_docs_list_every_case` checks that
the doc lists exactly these cases. CONVSERVE_UPDATE_DOCS=1 rewrites the table from a run.

The server here has tight limits so that the limit cases are cheap: 1 MiB messages, 512 KiB
images, 4 M pixels, 5 s of audio.
"""

from __future__ import annotations

import io
import math
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from PIL import Image

from service._proto.convserve.v1 import inference_pb2 as pb
from service._proto.convserve.v1 import inference_pb2_grpc as pb_grpc
from service._proto.inference import grpc_service_pb2 as kpb
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc
from service.errors import INTERNAL_MESSAGE
from service.preprocess.audio import AudioSpec, prepare_audio, split_windows
from service.preprocess.image import ImageLimits, ImageSpec, decode_image
from service.servicers import converters, postprocess
from tests.service.conftest import STARTED, ServerThread, eventually, make_settings
from tests.service.doc_sections import DOCS, check_section, parse_table, section, table, updating

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
ERRORS_DOC = DOCS / "errors.md"

MAX_MESSAGE = 1 << 20
MAX_IMAGE_BYTES = 512 << 10
MAX_PIXELS = 4_000_000
MAX_AUDIO_S = 5.0
IMAGE_SPEC = ImageSpec(height=8, width=8, channels=1, mean=(0.5,), std=(0.25,))
IMAGE_LIMITS = ImageLimits(max_pixels=MAX_PIXELS, max_bytes=MAX_IMAGE_BYTES)
AUDIO_SPEC = AudioSpec(
    sample_rate=16000, window_samples=1600, hop_samples=800, max_seconds=MAX_AUDIO_S
)


# ---- the server and what a case gets to work with -----------------------------------------------


@dataclass
class Ctx:
    server: ServerThread
    task: pb_grpc.InferenceStub
    kserve: kpb_grpc.GRPCInferenceServiceStub
    image_session: ort.InferenceSession
    speech_session: ort.InferenceSession
    cache: dict[str, bytes] = field(default_factory=dict)

    def metric(self, **labels: str) -> float:
        assert self.server.server is not None
        registry = self.server.server.metrics.registry
        return registry.get_sample_value("convserve_requests_total", labels) or 0.0

    def queue_depth(self, model: str) -> int:
        assert self.server.server is not None
        return self.server.server.repository.get(model).queue_depth


@pytest.fixture(scope="module")
def ctx(repository: Path) -> Iterator[Ctx]:
    settings = make_settings(
        repository,
        max_message_bytes=MAX_MESSAGE,
        max_image_bytes=MAX_IMAGE_BYTES,
        max_image_pixels=MAX_PIXELS,
        max_audio_seconds=MAX_AUDIO_S,
        load_models=STARTED,
        metrics_port=-1,
    )
    thread = ServerThread(settings).start()

    def session(name: str) -> ort.InferenceSession:
        path = repository / name / "1" / "model.onnx"
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    # The client's own receive limit is raised so that replies are limited by the server only.
    options = [("grpc.max_receive_message_length", 8 * MAX_MESSAGE)]
    with grpc.insecure_channel(thread.target, options=options) as channel:
        yield Ctx(
            thread,
            pb_grpc.InferenceStub(channel),
            kpb_grpc.GRPCInferenceServiceStub(channel),
            session("tiny_image"),
            session("tiny_speech"),
        )
    thread.stop()


# ---- inputs -------------------------------------------------------------------------------------


def encode(im: Image.Image, fmt: str, **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def noise(rng: np.random.Generator, h: int, w: int, channels: int = 0) -> np.ndarray:
    shape = (h, w, channels) if channels else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def gradient(h: int, w: int, rng: np.random.Generator) -> Image.Image:
    """A large image that compresses well (noise this size would not fit a message)."""
    y, x = np.mgrid[0:h, 0:w]
    phase = rng.uniform(0, 6.28)
    pixels = 127.5 + 127.5 * np.sin(x / 97.0 + phase) * np.cos(y / 61.0)
    return Image.fromarray(pixels.astype(np.uint8))


def gray_png(rng: np.random.Generator, h: int = 16, w: int = 16) -> bytes:
    return encode(Image.fromarray(noise(rng, h, w)), "PNG")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def raw_png(width: int, height: int, idat: bytes) -> bytes:
    """A grayscale 8-bit PNG assembled by hand (for headers Pillow would never write)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", idat)
        + _chunk(b"IEND", b"")
    )


def png_bomb(c: Ctx) -> bytes:
    """8000×8000 black pixels: 64 MB decoded from ~60 KB (cached: it takes a moment to make)."""
    if "bomb" not in c.cache:
        side = 8000
        rows = b"\0" * ((side + 1) * side)  # filter byte 0 + one byte per pixel, per row
        c.cache["bomb"] = raw_png(side, side, zlib.compress(rows, 9))
    return c.cache["bomb"]


def exif_rotated_jpeg(rng: np.random.Generator) -> bytes:
    im = Image.fromarray(noise(rng, 12, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    return encode(im, "JPEG", quality=95, exif=exif.tobytes())


def animated(rng: np.random.Generator, fmt: str) -> bytes:
    frames = [Image.fromarray(noise(rng, 16, 16, 3)) for _ in range(3)]
    if fmt == "GIF":
        frames = [f.convert("P") for f in frames]
    return encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=40, loop=0)


def wav(samples: np.ndarray, rate: int = 16000, subtype: str = "FLOAT") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, samples, rate, format="WAV", subtype=subtype)
    return buf.getvalue()


def tone(rng: np.random.Generator, seconds: float, rate: int, channels: int = 1) -> np.ndarray:
    n = int(seconds * rate)
    t = np.arange(n) / rate
    loud = np.where((t > seconds / 3) & (t < 2 * seconds / 3), 0.6, 0.01)
    x = loud * np.sin(2 * np.pi * rng.uniform(200, 800) * t)
    x = x + 0.002 * rng.standard_normal(n)
    if channels > 1:
        x = np.stack([x * (1 - 0.2 * c) for c in range(channels)], axis=1)
    return x.astype(np.float64)


def bad_format_wav(rng: np.random.Generator) -> bytes:
    data = bytearray(wav(tone(rng, 0.5, 16000), subtype="PCM_16"))
    data[20:22] = struct.pack("<H", 0x7777)  # fmt chunk: an audio format code nobody defines
    return bytes(data)


def infer(
    model: str, x: np.ndarray, name: str = "input", datatype: str | None = None, **kwargs: Any
) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model, **kwargs)
    request.inputs.add(
        name=name, datatype=datatype or converters.datatype_of(x.dtype), shape=list(x.shape)
    )
    request.raw_input_contents.append(x.tobytes())
    return request


def image_x(rng: np.random.Generator, n: int = 1) -> np.ndarray:
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32)


# ---- expected answers (in-process preprocessing + ONNX Runtime) ---------------------------------


def expect_image(c: Ctx, request: pb.ClassifyImageRequest, reply: pb.ClassifyImageResponse) -> None:
    x = decode_image(request.image, IMAGE_SPEC, IMAGE_LIMITS)
    logits = c.image_session.run(None, {"input": x[None]})[0][0]
    scores = postprocess.activate(logits, "softmax")
    k = min(request.top_k or 5, 10)
    order = np.argsort(-scores.astype(np.float64), kind="stable")[:k]
    assert [cl.index for cl in reply.classes] == order.tolist()
    np.testing.assert_allclose([cl.score for cl in reply.classes], scores[order], rtol=1e-5)
    assert reply.model == (request.model or "tiny_image") and reply.version == "1"


def expect_speech(c: Ctx, request: pb.DetectSpeechRequest, reply: pb.DetectSpeechResponse) -> None:
    samples = np.asarray(request.samples, np.float32) if len(request.samples) else None
    x = prepare_audio(request.audio or None, samples, request.sample_rate, AUDIO_SPEC)
    windows, _ = split_windows(x, AUDIO_SPEC)
    logits = c.speech_session.run(None, {"audio": windows})[0]
    p = postprocess.speech_probabilities(logits, "softmax", 1)
    assert len(reply.windows) == len(windows)
    np.testing.assert_allclose(
        [w.speech_probability for w in reply.windows], p, rtol=1e-5, atol=1e-7
    )
    assert math.isclose(reply.speech_probability, float(p.max()), rel_tol=1e-5)
    assert math.isclose(reply.duration_s, len(x) / 16000, rel_tol=1e-6)
    assert reply.is_speech  # every clip used here has a loud stretch


# ---- special runners (deadlines, cancels, queues, message size) ---------------------------------

Outcome = tuple[grpc.StatusCode, str, Any]


def run_expired_deadline(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`slow` batches every 1.5 s; a 0.3 s deadline passes in its queue."""
    labels = {"model": "slow", "method": "ClassifyImage", "status": "DEADLINE_EXCEEDED"}
    before = c.metric(**labels)
    request = pb.ClassifyImageRequest(model="slow", image=gray_png(rng))
    started = time.monotonic()
    try:
        c.task.ClassifyImage(request, timeout=0.3)
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    else:
        raise AssertionError("the deadline did not expire")
    assert time.monotonic() - started < 1.2  # not held until the batch ran
    # Either side's timer may fire first: the server's message, or the client library's.
    assert "deadline" in message.lower(), message
    eventually(lambda: c.metric(**labels) == before + 1)  # the server saw it expire too
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)  # and dropped it from the queue
    return code, message, None


def run_client_cancel(c: Ctx, rng: np.random.Generator) -> Outcome:
    labels = {"model": "slow", "method": "ClassifyImage", "status": "CANCELLED"}
    before = c.metric(**labels)
    future = c.task.ClassifyImage.future(
        pb.ClassifyImageRequest(model="slow", image=gray_png(rng)), timeout=10
    )
    eventually(lambda: c.queue_depth("slow") == 1)
    assert future.cancel()
    eventually(lambda: c.queue_depth("slow") == 0, timeout=1.0)
    eventually(lambda: c.metric(**labels) == before + 1)
    return future.code(), future.details() or "", None


def run_queue_overflow(c: Ctx, rng: np.random.Generator) -> Outcome:
    """`small_queue` holds 2 requests for up to 1 s: the third is refused at once, and the two
    queued ones are still answered."""
    queued = [
        c.task.ClassifyImage.future(
            pb.ClassifyImageRequest(model="small_queue", image=gray_png(rng)), timeout=10
        )
        for _ in range(2)
    ]
    eventually(lambda: c.queue_depth("small_queue") == 2)
    try:
        c.task.ClassifyImage(
            pb.ClassifyImageRequest(model="small_queue", image=gray_png(rng)), timeout=10
        )
    except grpc.RpcError as exc:
        code, message = exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    else:
        raise AssertionError("the third request was not refused")
    for future in queued:
        assert len(future.result(timeout=10).classes) == 5
    return code, message, None


# ---- the cases ----------------------------------------------------------------------------------

Make = Callable[[Ctx, np.random.Generator], Any]


@dataclass(frozen=True)
class Case:
    id: str
    rpc: str  # ClassifyImage | DetectSpeech | StreamDetectSpeech | ModelInfer
    what: str  # the input, for the docs
    make: Make | None  # builds the request (a list of messages for streams)
    status: grpc.StatusCode
    fragments: tuple[str, ...] = ()  # the actionable part: each must be in the message
    check: Callable[[Ctx, Any, Any], None] | None = None  # for OK: the expected answer
    run: Callable[[Ctx, np.random.Generator], Outcome] | None = None
    masked: bool = True  # compare the message with the doc (numbers and bytes masked)


def row(
    id: str,
    rpc: str,
    what: str,
    make: Make | None,
    status: grpc.StatusCode,
    *fragments: str,
    **kwargs: Any,
) -> Case:
    return Case(id, rpc, what, make, status, fragments, **kwargs)


def img(**kwargs: Any) -> Callable[[bytes], pb.ClassifyImageRequest]:
    return lambda data: pb.ClassifyImageRequest(image=data, **kwargs)


def speech(data: bytes, **kwargs: Any) -> pb.DetectSpeechRequest:
    return pb.DetectSpeechRequest(audio=data, **kwargs)


def samples(x: np.ndarray, rate: int = 16000, **kwargs: Any) -> pb.DetectSpeechRequest:
    return pb.DetectSpeechRequest(
        samples=np.asarray(x, np.float32).tolist(), sample_rate=rate, **kwargs
    )


def _nan_wav(rng: np.random.Generator, value: float) -> bytes:
    x = tone(rng, 0.5, 16000)
    x[rng.integers(0, len(x))] = value
    return wav(x)


def _infer_variant(rng: np.random.Generator, change: Callable[[kpb.ModelInferRequest], None]):
    request = infer("tiny_image", image_x(rng))
    change(request)
    return request


def _contents_request(rng: np.random.Generator, count: int) -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name="tiny_image")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[1, 1, 8, 8])
    tensor.contents.fp32_contents.extend(rng.standard_normal(count).tolist())
    return request


def _both_contents_and_raw(rng: np.random.Generator) -> kpb.ModelInferRequest:
    request = infer("tiny_image", image_x(rng))
    request.inputs[0].contents.fp32_contents.extend(rng.standard_normal(64).tolist())
    return request


def _missing_input(rng: np.random.Generator) -> kpb.ModelInferRequest:
    return infer("half", rng.standard_normal((1, 4)).astype(np.float16), name="x")


def _unknown_output(rng: np.random.Generator) -> kpb.ModelInferRequest:
    request = infer("tiny_image", image_x(rng))
    request.outputs.add(name="probabilities")
    return request


def _stream(*messages: pb.StreamDetectSpeechRequest) -> list[pb.StreamDetectSpeechRequest]:
    return list(messages)


CASES: list[Case] = [
    # -- images: broken bytes ----------------------------------------------------------------
    row(
        "image/empty",
        "ClassifyImage",
        "image = b'' (nothing set)",
        lambda c, r: img()(b""),
        INVALID,
        "exactly one of image",
    ),
    row(
        "image/truncated-png",
        "ClassifyImage",
        "PNG cut in half",
        lambda c, r: img()(gray_png(r, 64, 64)[:400]),
        INVALID,
        "cannot decode PNG image",
    ),
    row(
        "image/truncated-jpeg",
        "ClassifyImage",
        "JPEG cut in half",
        lambda c, r: img()(
            (lambda b: b[: len(b) // 2])(encode(Image.fromarray(noise(r, 64, 64)), "JPEG"))
        ),
        INVALID,
        "cannot decode JPEG image",
        "truncated",
    ),
    row(
        "image/random-bytes",
        "ClassifyImage",
        "4 KiB of random bytes",
        lambda c, r: img()(b"\x00rnd" + r.bytes(4096)),
        INVALID,
        "cannot decode image: not a JPEG, PNG",
    ),
    row(
        "image/text",
        "ClassifyImage",
        "a text file",
        lambda c, r: img()(b"hello, this is not an image\n" * 4),
        INVALID,
        "not a JPEG, PNG",
        "starting b'hello",
    ),
    row(
        "image/wav-bytes",
        "ClassifyImage",
        "a WAV file sent as an image",
        lambda c, r: img()(wav(tone(r, 0.1, 16000))),
        INVALID,
        "not a JPEG, PNG",
        "RIFF",
    ),
    row(
        "image/png-bad-crc",
        "ClassifyImage",
        "PNG whose header checksum is wrong",
        lambda c, r: img()((lambda b: b[:29] + bytes([b[29] ^ 0xFF]) + b[30:])(gray_png(r))),
        INVALID,
        "starts like a PNG but is corrupt",
    ),
    # -- images: limits ----------------------------------------------------------------------
    row(
        "image/png-bomb",
        "ClassifyImage",
        "PNG decompression bomb: 8000×8000 (64 Mpx) in 60 KB",
        lambda c, r: img()(png_bomb(c)),
        INVALID,
        "8000×8000",
        f"limit of {MAX_PIXELS}",
        "--max-image-pixels",
    ),
    row(
        "image/png-header-lies",
        "ClassifyImage",
        "PNG header claiming 100000×100000 pixels",
        lambda c, r: img()(raw_png(100_000, 100_000, zlib.compress(b"\0" * 100))),
        INVALID,
        "10000000000 pixels",
        f"limit of {MAX_PIXELS}",
    ),
    row(
        "image/too-many-pixels",
        "ClassifyImage",
        "real 2100×2000 image (4.2 Mpx > 4 Mpx limit)",
        lambda c, r: img()(encode(gradient(2000, 2100, r), "PNG")),
        INVALID,
        "2100×2000 = 4200000 pixels",
        f"limit of {MAX_PIXELS}",
        "--max-image-pixels",
    ),
    row(
        "image/too-many-bytes",
        "ClassifyImage",
        "600 KiB PNG of noise (> 512 KiB image limit)",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 800, 800)), "PNG", compress_level=0)),
        INVALID,
        f"limit of {MAX_IMAGE_BYTES}",
        "--max-image-bytes",
    ),
    row(
        "image/huge-within-limits",
        "ClassifyImage",
        "1900×2000 image (3.8 Mpx, under the limit)",
        lambda c, r: img()(encode(gradient(2000, 1900, r), "PNG")),
        OK,
        check=expect_image,
    ),
    # -- images: valid but unusual (must succeed) --------------------------------------------
    row(
        "image/1x1",
        "ClassifyImage",
        "1×1 PNG",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 1, 1)), "PNG")),
        OK,
        check=expect_image,
    ),
    row(
        "image/16-bit-png",
        "ClassifyImage",
        "16-bit grayscale PNG",
        lambda c, r: img()(
            encode(Image.fromarray(r.integers(0, 65536, (16, 16), dtype=np.uint16)), "PNG")
        ),
        OK,
        check=expect_image,
    ),
    row(
        "image/cmyk-jpeg",
        "ClassifyImage",
        "CMYK JPEG",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 16, 16, 4), "CMYK"), "JPEG")),
        OK,
        check=expect_image,
    ),
    row(
        "image/palette-png",
        "ClassifyImage",
        "palette (P) PNG",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 16, 16, 3)).convert("P"), "PNG")),
        OK,
        check=expect_image,
    ),
    row(
        "image/rgba-png",
        "ClassifyImage",
        "RGBA PNG with varying alpha",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 16, 16, 4), "RGBA"), "PNG")),
        OK,
        check=expect_image,
    ),
    row(
        "image/animated-gif",
        "ClassifyImage",
        "animated GIF, 3 frames (first frame used)",
        lambda c, r: img()(animated(r, "GIF")),
        OK,
        check=expect_image,
    ),
    row(
        "image/animated-png",
        "ClassifyImage",
        "animated PNG (APNG), 3 frames",
        lambda c, r: img()(animated(r, "PNG")),
        OK,
        check=expect_image,
    ),
    row(
        "image/exif-rotated-jpeg",
        "ClassifyImage",
        "JPEG with EXIF orientation 6 (rotated)",
        lambda c, r: img()(exif_rotated_jpeg(r)),
        OK,
        check=expect_image,
    ),
    row(
        "image/webp",
        "ClassifyImage",
        "lossless WebP",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 16, 16, 3)), "WEBP", lossless=True)),
        OK,
        check=expect_image,
    ),
    row(
        "image/tiff",
        "ClassifyImage",
        "TIFF",
        lambda c, r: img()(encode(Image.fromarray(noise(r, 16, 16, 3)), "TIFF")),
        OK,
        check=expect_image,
    ),
    # -- task API: ClassifyImage specifics ---------------------------------------------------
    row(
        "classify/image-and-tensor",
        "ClassifyImage",
        "both image and tensor set",
        lambda c, r: pb.ClassifyImageRequest(
            image=gray_png(r), tensor=pb.Tensor(values=[0.5] * 64)
        ),
        INVALID,
        "exactly one of image (encoded bytes) and tensor",
    ),
    row(
        "classify/top-k-huge",
        "ClassifyImage",
        "top_k = 4294967295 (clamped to the 10 classes)",
        lambda c, r: img(top_k=2**32 - 1)(gray_png(r)),
        OK,
        check=expect_image,
    ),
    row(
        "classify/tensor-wrong-shape",
        "ClassifyImage",
        "tensor of shape 3×8×8 for a 1×8×8 model",
        lambda c, r: pb.ClassifyImageRequest(
            tensor=pb.Tensor(shape=[3, 8, 8], values=r.random(192).tolist())
        ),
        INVALID,
        "shape 3×8×8, expected 1×8×8",
    ),
    row(
        "classify/tensor-raw-length",
        "ClassifyImage",
        "tensor raw bytes of the wrong length",
        lambda c, r: pb.ClassifyImageRequest(tensor=pb.Tensor(shape=[1, 8, 8], raw=r.bytes(255))),
        INVALID,
        "raw is 255 bytes, expected 256",
    ),
    row(
        "classify/tensor-nan",
        "ClassifyImage",
        "tensor holding a NaN",
        lambda c, r: pb.ClassifyImageRequest(
            tensor=pb.Tensor(values=[*r.random(63).tolist(), math.nan])
        ),
        INVALID,
        "NaN or infinite",
    ),
    row(
        "classify/speech-model",
        "ClassifyImage",
        "ClassifyImage on a speech model",
        lambda c, r: img(model="tiny_speech")(gray_png(r)),
        INVALID,
        "'tiny_speech' is a speech_detection model",
        "needs a image_classification model",
    ),
    row(
        "classify/generic-model",
        "ClassifyImage",
        "ClassifyImage on a generic (KServe-only) model",
        lambda c, r: img(model="half")(gray_png(r)),
        INVALID,
        "'half' is a generic model",
    ),
    row(
        "classify/unknown-model",
        "ClassifyImage",
        "unknown model name",
        lambda c, r: img(model="no_such_model")(gray_png(r)),
        NOT_FOUND,
        "'no_such_model' not found",
        "available:",
    ),
    row(
        "classify/unknown-version",
        "ClassifyImage",
        "unknown version of a known model",
        lambda c, r: img(model="tiny_image", version="7")(gray_png(r)),
        NOT_FOUND,
        "no version '7'",
        "versions: 1",
    ),
    # -- audio -------------------------------------------------------------------------------
    row(
        "audio/zero-samples",
        "DetectSpeech",
        "WAV with 0 samples",
        lambda c, r: speech(wav(np.zeros(0))),
        INVALID,
        "audio has no samples",
    ),
    row(
        "audio/wrong-header",
        "DetectSpeech",
        "WAV whose fmt chunk names an unknown format",
        lambda c, r: speech(bad_format_wav(r)),
        INVALID,
        "cannot decode audio",
        "starting b'RIFF",
    ),
    row(
        "audio/not-audio",
        "DetectSpeech",
        "PNG bytes sent as audio",
        lambda c, r: speech(gray_png(r)),
        INVALID,
        "cannot decode audio",
        "send WAV",
    ),
    row(
        "audio/truncated-wav",
        "DetectSpeech",
        "WAV cut after its header",
        lambda c, r: speech(wav(tone(r, 0.5, 16000), subtype="PCM_16")[:40]),
        INVALID,
        "audio",
    ),
    row(
        "audio/8-bit",
        "DetectSpeech",
        "8-bit unsigned WAV",
        lambda c, r: speech(wav(tone(r, 0.5, 16000), subtype="PCM_U8")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/24-bit",
        "DetectSpeech",
        "24-bit PCM WAV",
        lambda c, r: speech(wav(tone(r, 0.5, 16000), subtype="PCM_24")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/float64",
        "DetectSpeech",
        "64-bit float WAV",
        lambda c, r: speech(wav(tone(r, 0.5, 16000), subtype="DOUBLE")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/stereo",
        "DetectSpeech",
        "stereo WAV (averaged to mono)",
        lambda c, r: speech(wav(tone(r, 0.5, 16000, channels=2), subtype="PCM_16")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/8khz",
        "DetectSpeech",
        "8 kHz WAV (resampled to 16 kHz)",
        lambda c, r: speech(wav(tone(r, 0.5, 8000), 8000, subtype="PCM_16")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/48khz",
        "DetectSpeech",
        "48 kHz WAV (resampled to 16 kHz)",
        lambda c, r: speech(wav(tone(r, 0.5, 48000), 48000, subtype="PCM_16")),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/too-long",
        "DetectSpeech",
        "6 s WAV (> 5 s limit)",
        lambda c, r: speech(wav(tone(r, 6.0, 8000), 8000, subtype="PCM_U8")),
        INVALID,
        "6.0 s",
        f"limit of {MAX_AUDIO_S:g} s",
        "--max-audio-seconds",
    ),
    row(
        "audio/nan-sample",
        "DetectSpeech",
        "float WAV holding a NaN",
        lambda c, r: speech(_nan_wav(r, math.nan)),
        INVALID,
        "NaN or infinite",
    ),
    row(
        "audio/inf-sample",
        "DetectSpeech",
        "float WAV holding +Inf",
        lambda c, r: speech(_nan_wav(r, math.inf)),
        INVALID,
        "NaN or infinite",
    ),
    row(
        "audio/samples-nan",
        "DetectSpeech",
        "samples field holding a NaN",
        lambda c, r: samples(np.append(tone(r, 0.2, 16000), math.nan)),
        INVALID,
        "NaN or infinite",
    ),
    row(
        "audio/samples-no-rate",
        "DetectSpeech",
        "samples without sample_rate",
        lambda c, r: samples(tone(r, 0.2, 16000), rate=0),
        INVALID,
        "positive sample_rate",
    ),
    row(
        "audio/samples-rate-out-of-range",
        "DetectSpeech",
        "samples at 100 Hz",
        lambda c, r: samples(tone(r, 0.5, 100), rate=100),
        INVALID,
        "100 Hz",
        "outside 1000..384000 Hz",
    ),
    row(
        "audio/samples-too-long",
        "DetectSpeech",
        "6 s of samples at 1 kHz (> 5 s limit)",
        lambda c, r: samples(tone(r, 6.0, 1000), rate=1000),
        INVALID,
        f"limit of {MAX_AUDIO_S:g} s",
    ),
    row(
        "audio/samples-ok",
        "DetectSpeech",
        "float samples at 22.05 kHz",
        lambda c, r: samples(tone(r, 0.5, 22050), rate=22050),
        OK,
        check=expect_speech,
    ),
    row(
        "audio/audio-and-samples",
        "DetectSpeech",
        "both audio and samples set",
        lambda c, r: pb.DetectSpeechRequest(audio=b"RIFF", samples=[0.1], sample_rate=16000),
        INVALID,
        "exactly one of audio (encoded bytes) and samples",
    ),
    row(
        "audio/threshold-nan",
        "DetectSpeech",
        "threshold = NaN",
        lambda c, r: speech(wav(tone(r, 0.5, 16000)), threshold=math.nan),
        INVALID,
        "threshold must be in (0, 1]",
        "got nan",
    ),
    row(
        "audio/threshold-above-1",
        "DetectSpeech",
        "threshold = 1.5",
        lambda c, r: speech(wav(tone(r, 0.5, 16000)), threshold=1.5),
        INVALID,
        "threshold must be in (0, 1]",
        "got 1.5",
    ),
    row(
        "audio/image-model",
        "DetectSpeech",
        "DetectSpeech on an image model",
        lambda c, r: speech(wav(tone(r, 0.5, 16000)), model="tiny_image"),
        INVALID,
        "'tiny_image' is a image_classification model",
        "needs a speech_detection model",
    ),
    row(
        "audio/unknown-model",
        "DetectSpeech",
        "unknown model name",
        lambda c, r: speech(wav(tone(r, 0.5, 16000)), model="nope"),
        NOT_FOUND,
        "'nope' not found",
    ),
    row(
        "stream/nan-chunk",
        "StreamDetectSpeech",
        "a stream chunk holding a NaN",
        lambda c, r: _stream(pb.StreamDetectSpeechRequest(samples=[0.1, math.nan, 0.2])),
        INVALID,
        "audio chunk contains NaN",
    ),
    row(
        "stream/odd-pcm-bytes",
        "StreamDetectSpeech",
        "pcm_s16le chunk with an odd byte count",
        lambda c, r: _stream(pb.StreamDetectSpeechRequest(pcm_s16le=r.bytes(101))),
        INVALID,
        "pcm_s16le has 101 bytes",
        "even",
    ),
    row(
        "stream/unknown-model",
        "StreamDetectSpeech",
        "stream naming an unknown model",
        lambda c, r: _stream(pb.StreamDetectSpeechRequest(model="nope", samples=[0.1])),
        NOT_FOUND,
        "'nope' not found",
    ),
    # -- KServe v2 ModelInfer ----------------------------------------------------------------
    row(
        "v2/wrong-shape",
        "ModelInfer",
        "input shape [1, 64] for dims [1, 8, 8]",
        lambda c, r: infer("tiny_image", image_x(r).reshape(1, 64)),
        INVALID,
        "expected shape [-1, 1, 8, 8], got [1, 64]",
    ),
    row(
        "v2/negative-dim",
        "ModelInfer",
        "input shape [-1, 1, 8, 8] (a metadata shape)",
        lambda c, r: _infer_variant(r, lambda q: q.inputs[0].shape.__setitem__(0, -1)),
        INVALID,
        "negative dimension",
        "send the actual sizes",
    ),
    row(
        "v2/zero-batch",
        "ModelInfer",
        "input shape [0, 1, 8, 8]",
        lambda c, r: infer("tiny_image", np.zeros((0, 1, 8, 8), np.float32)),
        INVALID,
        "batch size 0",
        "1 to 8 rows",
    ),
    row(
        "v2/wrong-datatype",
        "ModelInfer",
        "FP64 data for an FP32 input",
        lambda c, r: infer("tiny_image", image_x(r).astype(np.float64)),
        INVALID,
        "expected datatype FP32, got FP64",
    ),
    row(
        "v2/unknown-datatype",
        "ModelInfer",
        "datatype 'FLOAT32' (not a KServe name)",
        lambda c, r: infer("tiny_image", image_x(r), datatype="FLOAT32"),
        INVALID,
        "expected datatype FP32, got FLOAT32",
    ),
    row(
        "v2/raw-wrong-length",
        "ModelInfer",
        "raw_input_contents 4 bytes short",
        lambda c, r: _infer_variant(
            r, lambda q: q.raw_input_contents.__setitem__(0, q.raw_input_contents[0][:-4])
        ),
        INVALID,
        "raw content is 252 bytes, expected 256",
    ),
    row(
        "v2/raw-count",
        "ModelInfer",
        "two raw_input_contents for one input",
        lambda c, r: _infer_variant(r, lambda q: q.raw_input_contents.append(b"")),
        INVALID,
        "raw_input_contents has 2 entries for 1 inputs",
    ),
    row(
        "v2/contents-count",
        "ModelInfer",
        "fp32_contents with 63 values for 64",
        lambda c, r: _contents_request(r, 63),
        INVALID,
        "63 values in fp32_contents",
        "64 expected",
    ),
    row(
        "v2/contents-and-raw",
        "ModelInfer",
        "both contents and raw_input_contents",
        lambda c, r: _both_contents_and_raw(r),
        INVALID,
        "both contents and raw_input_contents",
    ),
    row(
        "v2/missing-input",
        "ModelInfer",
        "one of two inputs missing",
        lambda c, r: _missing_input(r),
        INVALID,
        "missing input(s) 'mask'",
        "'half'",
    ),
    row(
        "v2/unknown-input",
        "ModelInfer",
        "input named 'pixels' (model has 'input')",
        lambda c, r: infer("tiny_image", image_x(r), name="pixels"),
        INVALID,
        "unknown input 'pixels'",
        "inputs: input",
    ),
    row(
        "v2/unknown-output",
        "ModelInfer",
        "output 'probabilities' requested (model has 'logits')",
        lambda c, r: _unknown_output(r),
        INVALID,
        "unknown output 'probabilities'",
        "outputs: logits",
    ),
    row(
        "v2/batch-too-big",
        "ModelInfer",
        "9 rows for max_batch_size 8",
        lambda c, r: infer("tiny_image", image_x(r, 9)),
        INVALID,
        "batch size 9 exceeds max_batch_size 8",
    ),
    row(
        "v2/no-model-name",
        "ModelInfer",
        "model_name empty",
        lambda c, r: infer("", image_x(r)),
        INVALID,
        "model_name is required",
    ),
    row(
        "v2/unknown-model",
        "ModelInfer",
        "unknown model name",
        lambda c, r: infer("nope", image_x(r)),
        NOT_FOUND,
        "'nope' not found",
        "available:",
    ),
    row(
        "v2/unknown-version",
        "ModelInfer",
        "unknown version",
        lambda c, r: infer("tiny_image", image_x(r), model_version="3"),
        NOT_FOUND,
        "no version '3'",
    ),
    # -- transport and load ------------------------------------------------------------------
    row(
        "transport/message-too-large",
        "ClassifyImage",
        "1.2 MiB request (> 1 MiB message limit)",
        lambda c, r: img()(b"\x89PNG" + r.bytes(1_200_000)),
        EXHAUSTED,
        "larger than max",
        f"vs. {MAX_MESSAGE}",
    ),
    row(
        "transport/v2-message-too-large",
        "ModelInfer",
        "ModelInfer of 1.1 MiB",
        lambda c, r: infer("tiny_image", r.standard_normal((4500, 1, 8, 8)).astype(np.float32)),
        EXHAUSTED,
        "larger than max",
        f"vs. {MAX_MESSAGE}",
    ),
    row(
        "transport/expired-deadline",
        "ClassifyImage",
        "0.3 s deadline, model batching every 1.5 s",
        None,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        run=run_expired_deadline,
        masked=False,
    ),
    row(
        "transport/client-cancel",
        "ClassifyImage",
        "client cancels while queued",
        None,
        grpc.StatusCode.CANCELLED,
        "cancelled",
        run=run_client_cancel,
    ),
    row(
        "transport/queue-overflow",
        "ClassifyImage",
        "third request for a queue of 2",
        None,
        EXHAUSTED,
        "queue of model 'small_queue' version 1 is full (2 requests)",
        run=run_queue_overflow,
    ),
]


def _invoke(c: Ctx, case: Case, rng: np.random.Generator) -> tuple[Outcome, Any]:
    if case.run is not None:
        return case.run(c, rng), None
    assert case.make is not None
    request = case.make(c, rng)
    try:
        if case.rpc == "StreamDetectSpeech":
            reply: Any = list(c.task.StreamDetectSpeech(iter(request), timeout=10))
        elif case.rpc == "ModelInfer":
            reply = c.kserve.ModelInfer(request, timeout=10)
        else:
            reply = getattr(c.task, case.rpc)(request, timeout=10)
    except grpc.RpcError as exc:
        return (exc.code(), exc.details() or "", None), request  # type: ignore[attr-defined]
    return (OK, "", reply), request


# ---- the documentation table --------------------------------------------------------------------

_observed: dict[str, tuple[str, str]] = {}


def mask(message: str) -> str:
    """Stable form of a message: byte strings and numbers replaced."""
    message = re.sub(r"""b(['"])(?:\\.|(?!\1).)*\1""", "b'…'", message)
    return re.sub(r"\d+(?:\.\d+)?", "N", message)


def _example(case: Case, message: str) -> str:
    return "— (answered)" if case.status == OK else message


def _doc_rows() -> dict[str, list[str]]:
    return {r[0].strip("`"): r for r in parse_table(section(ERRORS_DOC, "matrix"))}


def render_doc() -> str:
    rows = []
    for case in CASES:
        status, message = _observed[case.id]
        rows.append((f"`{case.id}`", case.rpc, case.what, status, message))
    return table(("case", "RPC", "input", "status", "example message"), rows)


@pytest.fixture(scope="module")
def doc_rows() -> Iterator[dict[str, list[str]]]:
    yield {} if updating() else _doc_rows()
    if updating() and len(_observed) == len(CASES):
        check_section(ERRORS_DOC, "matrix", render_doc())


def test_docs_list_every_case() -> None:
    if updating():
        pytest.skip("rewriting docs/errors.md")
    documented = [(r[0].strip("`"), r[3]) for r in parse_table(section(ERRORS_DOC, "matrix"))]
    expected = [(case.id, case.status.name) for case in CASES]
    assert documented == expected, "docs/errors.md is out of date: run with CONVSERVE_UPDATE_DOCS=1"


def test_the_matrix_is_big_enough() -> None:
    assert len(CASES) >= 40
    assert len({case.id for case in CASES}) == len(CASES)


# ---- the test -----------------------------------------------------------------------------------


def _good_request(c: Ctx, rng: np.random.Generator) -> None:
    request = pb.ClassifyImageRequest(image=gray_png(rng, 8, 8))
    expect_image(c, request, c.task.ClassifyImage(request, timeout=10))


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(
    ctx: Ctx, doc_rows: dict[str, list[str]], case: Case, rng: np.random.Generator
) -> None:
    (code, message, reply), request = _invoke(ctx, case, rng)
    assert code == case.status, f"{case.id}: {code.name}: {message}"
    if code == OK:
        assert case.check is not None
        case.check(ctx, request, reply)
    else:
        # Actionable: says what is wrong, never the generic INTERNAL text.
        assert message and message != INTERNAL_MESSAGE and len(message) >= 15, message
        for fragment in case.fragments:
            assert fragment in message, f"{case.id}: {fragment!r} not in {message!r}"
    _observed[case.id] = (code.name, _example(case, message))
    if not updating():
        documented = doc_rows.get(case.id)
        assert documented is not None, f"{case.id} is not in docs/errors.md"
        assert documented[3] == code.name
        if case.masked:
            assert mask(documented[4]) == mask(_example(case, message)), (
                f"{case.id}: docs/errors.md says {documented[4]!r}, the server said {message!r} "
                "(regenerate with CONVSERVE_UPDATE_DOCS=1)"
            )
    # Whatever happened, the server still answers a good request correctly.
    _good_request(ctx, rng)
