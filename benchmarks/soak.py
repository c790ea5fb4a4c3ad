#!/usr/bin/env python3
"""Bounded soak: many mixed requests against a real `python -m service serve` process, every answer
checked, resident memory watched, and the server's request counters reconciled with the client's.

    python benchmarks/soak.py                       # ./model_repository, 100,000 requests
    python benchmarks/soak.py --repository /srv/models --requests 20000 --concurrency 64
    python benchmarks/soak.py --tiny                # generated tiny models

Workload, drawn from a seeded generator: encoded images (PNG/JPEG) through ClassifyImage, WAV clips
through DetectSpeech and float32 tensors through the KServe v2 ModelInfer, over every image and
speech model of the repository (`--models` to choose; a model's share is inversely proportional to
its input size, at least 1%, so a big network does not starve the rest). Clients are grpc.aio
stubs over `--channels` channels with a semaphore capping in-flight requests at `--concurrency`.

Expected answers: before the soak, each fixed input is sent once on its own; that answer is the
reference (checked for the v2 tensors against ONNX Runtime run in this process). Every soak reply
must match it (class, score and speech probability within tolerances meant for batch-size-dependent
float rounding, not for wrong answers); v2 outputs must be allclose.

The run is bounded in count (`--requests`) and time (`--max-seconds`: no new request after it, and
every call has its own deadline), so it always ends. It reports requests, duration, req/s,
latencies, errors (non-OK statuses), mismatches and lost requests (issued, never answered), the
server's resident memory (VmRSS from /proc) before the soak, after it and its peak, and whether
`convserve_requests_total` per method and status moved by exactly the client's counts. Writes
<out>/soak.json and <out>/soak.md; exit status 0 only when nothing was lost, mismatched or failed
and the counters agree.

Without `--repository` (./model_repository, built by `convserve build-defaults`) it falls back to
tiny generated models (onnx.helper; tests/service/onnx_builders.py) and says so in the report.
tests/service/test_soak_small.py runs this same code with 2,000 requests.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python benchmarks/soak.py` from anywhere
    sys.path.insert(0, str(ROOT))

from service._proto.convserve.v1 import inference_pb2 as tpb  # noqa: E402
from service._proto.convserve.v1 import inference_pb2_grpc as tpb_grpc  # noqa: E402
from service._proto.inference import grpc_service_pb2 as kpb  # noqa: E402
from service._proto.inference import grpc_service_pb2_grpc as kpb_grpc  # noqa: E402
from service.config import read_spec  # noqa: E402
from service.process import ServerProcess, ServerStartError, loopback_env, serve_command  # noqa: E402
from service.servicers import converters  # noqa: E402
from service.spec import ModelSpec  # noqa: E402

COUNTER = re.compile(r"^convserve_requests_total\{([^}]*)\} (\S+)$", re.M)
LABEL = re.compile(r'(\w+)="([^"]*)"')
METHODS = {"classify": "ClassifyImage", "speech": "DetectSpeech", "infer": "ModelInfer"}
SCORE_TOL = 1e-3  # top-1 score; a wrong answer differs by far more
PROB_TOL = 1e-4  # speech probability
MARGIN = 1e-3  # top-1 vs top-2 gap below which the top-1 index is not compared (a near tie)
CALL_TIMEOUT_S = 60.0


@dataclass
class SoakConfig:
    repository: Path | None = None  # None: generate tiny models
    requests: int = 100_000
    concurrency: int = 64
    channels: int = 4
    max_seconds: float = 600.0
    mix: tuple[float, float, float] = (0.4, 0.2, 0.4)  # classify, speech, infer
    models: tuple[str, ...] = ()  # empty: every image/speech model
    device: str = "cpu"
    seed: int = 0
    inputs_per_model: int = 8
    rss_every_s: float = 1.0
    out: Path | None = ROOT / "benchmarks" / "results"
    note: str = ""


@dataclass
class SoakResult:
    mode: str
    models: list[str]
    requests_planned: int
    requests_issued: int = 0
    requests_completed: int = 0
    lost: int = 0
    mismatched: int = 0
    errors: int = 0
    duration_s: float = 0.0
    requests_per_s: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    by_kind: dict[str, int] = field(default_factory=dict)
    by_model: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)  # "Method STATUS" -> count
    server_counters: dict[str, int] = field(default_factory=dict)  # same keys, from /metrics
    counters_match: bool = False
    rss_mib: dict[str, float] = field(default_factory=dict)
    rss_samples: list[tuple[float, int, float]] = field(default_factory=list)  # (s, done, MiB)
    server_exit_code: int | None = None
    time_bound_hit: bool = False
    examples: list[str] = field(default_factory=list)  # first mismatches / errors
    config: dict[str, Any] = field(default_factory=dict)
    host: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.mismatched == 0
            and self.errors == 0
            and self.counters_match
            and self.requests_completed == self.requests_issued
            and self.server_exit_code == 0
        )


# ---- the repository -----------------------------------------------------------------------------


def build_tiny_repository(root: Path) -> Path:
    """tiny_image (image_classification, 1×4×4), tiny_speech (1600-sample windows) and echo (a
    v2 model whose output repeats its input ids): microseconds per batch, so the soak exercises
    the server, not ONNX Runtime."""
    from tests.service import onnx_builders

    onnx_builders.write_model(root, "tiny_image", max_batch_size=32, delay_us=1000, queue=1024)
    onnx_builders.write_model(
        root, "tiny_speech", kind="speech", max_batch_size=32, delay_us=1000, queue=1024
    )
    onnx_builders.write_model(
        root, "echo", kind="echo", max_batch_size=32, delay_us=1000, queue=1024
    )
    return root


def read_specs(repository: Path, names: tuple[str, ...]) -> dict[str, ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for model_dir in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        if names and model_dir.name not in names:
            continue
        spec = read_spec(model_dir)
        if spec.task in ("image_classification", "speech_detection", "generic"):
            specs[spec.name] = spec
    missing = set(names) - set(specs)
    if missing:
        raise SystemExit(f"soak: models not found in {repository}: {', '.join(sorted(missing))}")
    return specs


# ---- fixed inputs -------------------------------------------------------------------------------


@dataclass
class Item:
    """One fixed input: the request to send and the reference answer to compare with."""

    kind: str  # classify | speech | infer
    model: str
    request: Any
    expected: Any = None
    margin: float = 1.0  # classify: top-1 minus top-2 score of the reference


def _image(rng: np.random.Generator, spec: ModelSpec, index: int) -> bytes:
    from PIL import Image, ImageDraw

    channels, height, width = (int(d) for d in spec.inputs[0].dims)
    # A little bigger than the model input, so decoding and resizing both do work.
    h, w = max(height, 16) + 8 * index, max(width, 16) + 5 * index
    base = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8) // 4
    im = Image.fromarray(base)
    draw = ImageDraw.Draw(im)
    for _ in range(4):
        x0, y0 = int(rng.integers(0, w // 2)), int(rng.integers(0, h // 2))
        x1, y1 = int(rng.integers(w // 2, w)), int(rng.integers(h // 2, h))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if index % 2 else draw.rectangle)((x0, y0, x1, y1), fill=color)
    if channels == 1:
        im = im.convert("L")
    buf = io.BytesIO()
    im.save(buf, format="JPEG" if index % 3 == 2 else "PNG", quality=90)
    return buf.getvalue()


def _wav(rng: np.random.Generator, index: int) -> bytes:
    import soundfile as sf

    rate = (16000, 16000, 8000, 44100)[index % 4]
    seconds = 1.0 + 0.5 * (index % 5)
    n = int(rate * seconds)
    t = np.arange(n) / rate
    start, stop = rng.uniform(0.1, 0.5) * seconds, rng.uniform(0.6, 0.95) * seconds
    loud = np.where((t > start) & (t < stop), rng.uniform(0.3, 0.8), 0.003)
    x = loud * np.sin(2 * np.pi * rng.uniform(150, 900) * t) + 0.002 * rng.standard_normal(n)
    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def _tensor(rng: np.random.Generator, spec: ModelSpec, index: int) -> kpb.ModelInferRequest:
    rows = 1 + index % min(4, max(spec.max_batch_size, 1)) if spec.batching else 0
    request = kpb.ModelInferRequest(model_name=spec.name, id=f"{spec.name}-{index}")
    for t in spec.inputs:
        shape = ((rows,) if spec.batching else ()) + tuple(int(d) for d in t.dims)
        if t.name == "x" and spec.task == "generic":  # the echo model: ids, then table indices
            x = np.stack(
                [np.arange(rows) + 1000 * index, rng.integers(0, 10, rows)], axis=1
            ).astype(np.float32)
        else:
            x = rng.standard_normal(shape).astype(t.np_dtype)
        request.inputs.add(name=t.name, datatype=t.datatype, shape=list(x.shape))
        request.raw_input_contents.append(x.tobytes())
    return request


def make_items(specs: dict[str, ModelSpec], per_model: int, seed: int) -> list[Item]:
    rng = np.random.default_rng(seed)
    items: list[Item] = []
    for name, spec in specs.items():
        fixed = all(-1 not in t.dims for t in spec.inputs)
        for i in range(per_model):
            if spec.task == "image_classification":
                request = tpb.ClassifyImageRequest(model=name, image=_image(rng, spec, i), top_k=3)
                items.append(Item("classify", name, request))
            elif spec.task == "speech_detection":
                items.append(
                    Item("speech", name, tpb.DetectSpeechRequest(model=name, audio=_wav(rng, i)))
                )
            if fixed and all(t.datatype == "FP32" for t in spec.inputs):
                items.append(Item("infer", name, _tensor(rng, spec, i)))
    return items


# ---- comparing answers --------------------------------------------------------------------------


def _outputs(reply: kpb.ModelInferResponse) -> dict[str, np.ndarray]:
    return converters.raw_tensors(reply.outputs, reply.raw_output_contents)


def mismatch(item: Item, reply: Any) -> str | None:
    """Why `reply` does not match the item's reference answer (None when it does)."""
    exp = item.expected
    if item.kind == "classify":
        if reply.model != exp.model or len(reply.classes) != len(exp.classes):
            return f"model/class count {reply.model}/{len(reply.classes)}"
        top = exp.classes[0]
        got = {c.index: c.score for c in reply.classes}
        if item.margin >= MARGIN and reply.classes[0].index != top.index:
            return f"top-1 {reply.classes[0].index} != {top.index}"
        if top.index not in got or abs(got[top.index] - top.score) > SCORE_TOL:
            return f"top-1 score {got.get(top.index)} != {top.score}"
        return None
    if item.kind == "speech":
        if len(reply.windows) != len(exp.windows):
            return f"{len(reply.windows)} windows != {len(exp.windows)}"
        if abs(reply.speech_probability - exp.speech_probability) > PROB_TOL:
            return f"p {reply.speech_probability} != {exp.speech_probability}"
        return None
    got_out, exp_out = _outputs(reply), exp
    if reply.id != item.request.id or set(got_out) != set(exp_out):
        return f"id/outputs {reply.id} {sorted(got_out)}"
    for name, want in exp_out.items():
        if got_out[name].shape != want.shape or not np.allclose(
            got_out[name], want, rtol=1e-4, atol=1e-5
        ):
            return f"output {name} differs (max {np.abs(got_out[name] - want).max():.3g})"
    return None


def _check_reference(repository: Path, item: Item) -> str | None:
    """The v2 reference answer against ONNX Runtime in this process (the server is not its own
    judge); the classify/speech references are checked by the test-suite's exact comparisons."""
    import onnxruntime as ort

    request, cache = item.request, _check_reference.__dict__.setdefault("sessions", {})
    session = cache.get(item.model)
    if session is None:
        path = repository / item.model / "1" / "model.onnx"
        session = cache[item.model] = ort.InferenceSession(
            str(path), providers=["CPUExecutionProvider"]
        )
    feed = converters.raw_tensors(request.inputs, request.raw_input_contents)
    names = list(item.expected)
    for name, want in zip(names, session.run(names, feed), strict=True):
        if not np.allclose(item.expected[name], want, rtol=1e-4, atol=1e-5):
            return f"reference {item.request.id}: {name} differs from ONNX Runtime in-process"
    return None


# ---- the server process -------------------------------------------------------------------------


class SoakServer:
    """`python -m service serve` (service.process) plus what the soak reads from it."""

    def __init__(self, repository: Path, models: list[str], device: str, log: Path) -> None:
        self.log_path = log
        cmd = serve_command(
            repository,
            "--load-models", ",".join(models), "--device", device,
            "--log-level", "WARNING", "--grace-period-s", "30",
            module="service",
        )  # fmt: skip
        self.process = ServerProcess(
            cmd, name="soak server", env=loopback_env(), cwd=ROOT, log_path=log
        )
        self.target = self.metrics_url = ""

    def wait_ready(self, timeout: float = 300.0) -> None:
        try:
            self.process.wait_ready(timeout)
        except ServerStartError as exc:
            raise SystemExit(f"soak: {exc}") from None
        self.target = str(self.process.endpoint("grpc"))
        self.metrics_url = self.process.url("metrics", "/metrics")

    def rss_mib(self) -> float:
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return math.nan
        found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.M)
        return int(found.group(1)) / 1024 if found else math.nan

    def counters(self) -> Counter[str]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            text = response.read().decode()
        out: Counter[str] = Counter()
        for labels, value in COUNTER.findall(text):
            d = dict(LABEL.findall(labels))
            if d.get("method") in METHODS.values():
                out[f"{d['method']} {d['status']}"] += int(float(value))
        return out

    def stop(self, timeout: float = 60.0) -> int | None:
        return self.process.stop(timeout)


# ---- the soak -----------------------------------------------------------------------------------


class Clients:
    def __init__(self, target: str, channels: int) -> None:
        options = [
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.use_local_subchannel_pool", 1),  # one connection per channel, not shared
        ]
        self.channels = [
            grpc.aio.insecure_channel(target, options=options) for _ in range(channels)
        ]
        self.task = [tpb_grpc.InferenceStub(c) for c in self.channels]
        self.kserve = [kpb_grpc.GRPCInferenceServiceStub(c) for c in self.channels]

    async def call(self, item: Item, n: int, timeout: float) -> Any:
        i = n % len(self.channels)
        if item.kind == "classify":
            return await self.task[i].ClassifyImage(item.request, timeout=timeout)
        if item.kind == "speech":
            return await self.task[i].DetectSpeech(item.request, timeout=timeout)
        return await self.kserve[i].ModelInfer(item.request, timeout=timeout)

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.channels))


def _weights(items: list[Item], specs: dict[str, ModelSpec], mix: tuple[float, ...]) -> np.ndarray:
    """Per item: the kind's share, split across its models by inverse input size (≥ 1% each)."""
    kinds = dict(zip(("classify", "speech", "infer"), mix, strict=True))
    present = {k: v for k, v in kinds.items() if any(i.kind == k for i in items)}
    total = sum(present.values())
    weights = np.zeros(len(items))
    for kind, share in present.items():
        models = sorted({i.model for i in items if i.kind == kind})
        size = {m: math.prod(max(int(d), 1) for d in specs[m].inputs[0].dims) for m in models}
        per_model = np.array([1.0 / size[m] for m in models])
        per_model = np.maximum(per_model / per_model.sum(), 0.01)
        per_model /= per_model.sum()
        for m, w in zip(models, per_model, strict=True):
            mine = [j for j, i in enumerate(items) if i.kind == kind and i.model == m]
            weights[mine] = share / total * w / len(mine)
    return weights / weights.sum()


async def _references(clients: Clients, items: list[Item]) -> None:
    for n, item in enumerate(items):
        reply = await clients.call(item, n, CALL_TIMEOUT_S)
        if item.kind == "infer":
            item.expected = _outputs(reply)
        else:
            item.expected = reply
        if item.kind == "classify" and len(reply.classes) > 1:
            item.margin = reply.classes[0].score - reply.classes[1].score


async def _soak(
    cfg: SoakConfig, server: SoakServer, items: list[Item], weights: np.ndarray, res: SoakResult
) -> None:
    clients = Clients(server.target, cfg.channels)
    try:
        await _references(clients, items)
        # Warm-up traffic, so the "before" memory is the steady-state footprint, not start-up.
        warm = min(len(items) * 4, max(cfg.requests // 50, len(items)))
        await asyncio.gather(*(clients.call(items[n % len(items)], n, 60) for n in range(warm)))
        before = server.counters()
        rng = np.random.default_rng(cfg.seed + 1)
        order = rng.choice(len(items), size=cfg.requests, p=weights)
        gate = asyncio.Semaphore(cfg.concurrency)
        statuses: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        models: Counter[str] = Counter()
        latencies: list[float] = []
        done = 0
        start = time.monotonic()
        stop_at = start + cfg.max_seconds
        res.rss_samples.append((0.0, 0, server.rss_mib()))

        async def sample_rss() -> None:
            while True:
                await asyncio.sleep(cfg.rss_every_s)
                res.rss_samples.append((time.monotonic() - start, done, server.rss_mib()))

        async def one(n: int, item: Item) -> None:
            nonlocal done
            t0 = time.monotonic()
            try:
                timeout = max(min(CALL_TIMEOUT_S, stop_at + 30 - t0), 1.0)
                reply = await clients.call(item, n, timeout)
                status = "OK"
                why = mismatch(item, reply)
                if why is not None:
                    res.mismatched += 1
                    if len(res.examples) < 10:
                        res.examples.append(f"mismatch #{n} {item.kind} {item.model}: {why}")
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
                res.errors += 1
                if len(res.examples) < 10:
                    details = exc.details()
                    res.examples.append(f"error #{n} {item.kind} {item.model}: {status} {details}")
            except Exception as exc:  # a bug in this script: count it, do not lose the request
                status = "CLIENT_ERROR"
                res.errors += 1
                res.examples.append(f"client error #{n}: {exc!r}")
            finally:
                gate.release()
            latencies.append(time.monotonic() - t0)
            statuses[f"{METHODS[item.kind]} {status}"] += 1
            kinds[item.kind] += 1
            models[item.model] += 1
            done += 1

        sampler = asyncio.create_task(sample_rss())
        tasks: set[asyncio.Task[None]] = set()
        for n, index in enumerate(order):
            await gate.acquire()
            if time.monotonic() >= stop_at:
                gate.release()
                res.time_bound_hit = True
                break
            task = asyncio.create_task(one(n, items[index]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            res.requests_issued += 1
        if tasks:  # every call has its own deadline; this bound is a backstop
            _, pending = await asyncio.wait(set(tasks), timeout=CALL_TIMEOUT_S + 30)
            for task in pending:
                task.cancel()
            res.lost = len(pending)
        res.duration_s = time.monotonic() - start
        sampler.cancel()
        res.rss_samples.append((res.duration_s, done, server.rss_mib()))
        res.requests_completed = done
        res.requests_per_s = done / res.duration_s if res.duration_s else 0.0
        res.statuses = dict(sorted(statuses.items()))
        res.by_kind = dict(sorted(kinds.items()))
        res.by_model = dict(sorted(models.items()))
        if latencies:
            ms = np.asarray(latencies) * 1000
            res.latency_ms = {
                q: round(float(np.percentile(ms, p)), 2)
                for q, p in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
            }
        # The server counts a call just before its reply goes out; allow it a moment.
        deadline = time.monotonic() + 10
        while True:
            after = server.counters()
            delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0)}
            res.server_counters = dict(sorted(delta.items()))
            res.counters_match = res.server_counters == res.statuses
            if res.counters_match or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    finally:
        await clients.close()


def run_soak(cfg: SoakConfig) -> SoakResult:
    with tempfile.TemporaryDirectory(prefix="convserve-soak-") as tmp:
        if cfg.repository is None:
            repository, mode = build_tiny_repository(Path(tmp) / "repo"), "tiny generated models"
        else:
            repository, mode = cfg.repository, f"repository {cfg.repository}"
        specs = read_specs(repository, cfg.models)
        items = make_items(specs, cfg.inputs_per_model, cfg.seed)
        if not items:
            raise SystemExit(f"soak: no image or speech models in {repository}")
        used = sorted({i.model for i in items})
        res = SoakResult(mode=mode, models=used, requests_planned=cfg.requests, note=cfg.note)
        res.config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
        res.host = {
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "grpc": grpc.__version__,
        }
        server = SoakServer(repository, used, cfg.device, Path(tmp) / "server.log")
        try:
            server.wait_ready()
            asyncio.run(_soak(cfg, server, items, _weights(items, specs, cfg.mix), res))
            for item in items:
                if item.kind == "infer" and item.expected is not None:
                    why = _check_reference(repository, item)
                    if why is not None:
                        res.mismatched += 1
                        res.examples.append(why)
        finally:
            res.server_exit_code = server.stop()
            log = server.log_path.read_text() if server.log_path.exists() else ""
            if "Traceback" in log:
                res.examples.append("server log has a traceback: " + log[-1500:])
                res.errors += 1
        _memory(res)
        res.host["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    if cfg.out is not None:
        write_report(res, cfg.out)
    return res


def _memory(res: SoakResult) -> None:
    samples = [(t, d, m) for t, d, m in res.rss_samples if not math.isnan(m)]
    if not samples:
        return
    first, last = samples[0], samples[-1]
    # "Steady" starts once a tenth of the requests are done: allocator pools and caches are
    # full by then, so growth after it is what a leak would look like.
    steady = next((s for s in samples if s[1] >= 0.1 * max(last[1], 1)), first)
    res.rss_mib = {
        "before": round(first[2], 1),
        "at_10_percent": round(steady[2], 1),
        "after": round(last[2], 1),
        "peak": round(max(m for _, _, m in samples), 1),
        "growth": round(last[2] - first[2], 1),
        "growth_after_10_percent": round(last[2] - steady[2], 1),
    }
    # A leak grows with the requests served; allocator noise does not. The least-squares slope
    # over the second half, in MiB per 10,000 requests, tells the two apart better than two points.
    half = samples[len(samples) // 2 :]
    if len(half) >= 3 and half[-1][1] > half[0][1]:
        done = np.array([d for _, d, _ in half], dtype=np.float64)
        mib = np.array([m for _, _, m in half], dtype=np.float64)
        res.rss_mib["slope_second_half_per_10k"] = round(
            float(np.polyfit(done, mib, 1)[0]) * 1e4, 2
        )
    res.rss_samples = [(round(t, 1), d, round(m, 1)) for t, d, m in samples]


# ---- report -------------------------------------------------------------------------------------


def write_report(res: SoakResult, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "soak.json").write_text(json.dumps(asdict(res) | {"ok": res.ok}, indent=2) + "\n")
    rss = res.rss_mib
    head, tail = res.rss_samples[:10], res.rss_samples[10:][-10:]
    lines = [
        "# Soak",
        "",
        f"Written by `benchmarks/soak.py` ({res.mode}; models {', '.join(res.models)}).",
        *([f"\n{res.note}"] if res.note else []),
        "",
        f"**{'PASS' if res.ok else 'FAIL'}**: {res.requests_completed:,} requests in "
        f"{res.duration_s:.1f} s ({res.requests_per_s:,.0f} req/s) at concurrency "
        f"{res.config.get('concurrency')} over {res.config.get('channels')} channels; "
        f"{res.errors} errors, {res.mismatched} mismatched, {res.lost} lost; server counters "
        f"{'match' if res.counters_match else 'DO NOT match'} the client's; server exit code "
        f"{res.server_exit_code}.",
        "",
        "| figure | value |",
        "|---|---|",
        f"| requests planned / issued / completed | {res.requests_planned:,} / "
        f"{res.requests_issued:,} / {res.requests_completed:,} |",
        f"| time bound hit | {res.time_bound_hit} (max {res.config.get('max_seconds')} s) |",
        f"| duration | {res.duration_s:.1f} s |",
        f"| throughput | {res.requests_per_s:,.0f} req/s |",
        "| latency p50 / p90 / p99 / max | "
        + " / ".join(str(res.latency_ms.get(q)) for q in ("p50", "p90", "p99", "max"))
        + " ms |",
        f"| errors (non-OK) / mismatched / lost | {res.errors} / {res.mismatched} / {res.lost} |",
        f"| server RSS before / after / peak | {rss.get('before')} / {rss.get('after')} / "
        f"{rss.get('peak')} MiB |",
        f"| RSS growth (whole soak / after the first 10%) | {rss.get('growth')} / "
        f"{rss.get('growth_after_10_percent')} MiB |",
        f"| RSS trend over the second half | {rss.get('slope_second_half_per_10k')} MiB per "
        "10,000 requests |",
        f"| host | {res.host.get('cpus')} CPUs, load average "
        f"{res.host.get('load_average_at_start')} at start, "
        f"{res.host.get('load_average_at_end')} at end (shared machine) |",
        "",
        "Requests by method and status, client vs the server's `convserve_requests_total` delta:",
        "",
        "| method status | client | server |",
        "|---|---|---|",
        *[
            f"| {k} | {res.statuses.get(k, 0):,} | {res.server_counters.get(k, 0):,} |"
            for k in sorted(set(res.statuses) | set(res.server_counters))
        ],
        "",
        "By model: " + ", ".join(f"{m} {n:,}" for m, n in res.by_model.items()) + ".",
        "",
        "Resident memory of the server process (VmRSS) over the run, every "
        f"{res.config.get('rss_every_s')} s (seconds, requests done, MiB), first and last ten:",
        "",
        "```",
        *[f"{t:7.1f} s {d:>8,} {m:8.1f}" for t, d, m in head],
        *(["    ..."] if tail and res.rss_samples.index(tail[0]) > len(head) else []),
        *[f"{t:7.1f} s {d:>8,} {m:8.1f}" for t, d, m in tail],
        "```",
    ]
    if res.examples:
        lines += ["", "First problems:", "", *[f"- {e}" for e in res.examples]]
    (out / "soak.md").write_text("\n".join(lines) + "\n")


def rewrite_report(json_path: Path) -> None:
    """Re-render soak.md (and soak.json) from a saved soak.json, e.g. after a report change."""
    data = json.loads(json_path.read_text())
    data.pop("ok", None)
    res = SoakResult(**data)
    res.rss_samples = [tuple(s) for s in res.rss_samples]  # type: ignore[misc]
    _memory(res)
    write_report(res, json_path.parent)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repository",
        type=Path,
        default=ROOT / "model_repository",
        help="model repository (default ./model_repository; tiny models if absent)",
    )
    parser.add_argument("--tiny", action="store_true", help="use generated tiny models")
    parser.add_argument("--models", default="", help="comma-separated models (default: all)")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--channels", type=int, default=4)
    parser.add_argument("--max-seconds", type=float, default=600.0)
    parser.add_argument("--mix", default="0.4,0.2,0.4", help="classify,speech,infer shares")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args(argv)  # fmt: skip
    repository: Path | None = args.repository
    note = ""
    has_models = (
        repository is not None
        and repository.is_dir()
        and any((p / "config.pbtxt").is_file() for p in repository.iterdir())
    )
    if args.tiny:
        repository = None
    elif not has_models:
        note = (
            f"NOTE: {repository} holds no models (build it with `convserve build-defaults`); "
            "this run used tiny generated models instead."
        )
        print(note, file=sys.stderr)
        repository = None
    mix = tuple(float(v) for v in args.mix.split(","))
    cfg = SoakConfig(
        repository=repository,
        requests=args.requests,
        concurrency=args.concurrency,
        channels=args.channels,
        max_seconds=args.max_seconds,
        mix=mix,  # type: ignore[arg-type]
        models=tuple(m for m in args.models.split(",") if m),
        device=args.device,
        seed=args.seed,
        out=args.out,
        note=note,
    )
    res = run_soak(cfg)
    print((args.out / "soak.md").read_text())
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
