"""Writing a model into a Triton-layout model repository (docs/model-repository.md), atomically.

    <repo>/<name>/config.pbtxt      protobuf text, Triton's ModelConfig (rendered by render_config)
    <repo>/<name>/labels.txt        one class name per line (the output's label_filename)
    <repo>/<name>/<version>/model.onnx

:class:`VersionStage` is the only way files get there. It makes a hidden staging directory inside
the repository first (``<repo>/.<name>.staging-<random>``, same filesystem, so every later step is a
``rename``), the caller exports and checks the model in it, and :meth:`VersionStage.commit` moves
it in: a new model directory is renamed into place whole; for an existing one the staged version
directory is renamed to the next free integer (never overwriting a version), then ``labels.txt``
and ``config.pbtxt`` are each replaced with ``os.replace``. Any failure before the commit removes
the staging directory, so a failed export leaves nothing behind; an unwritable repository is an
:class:`ExportError` before any work is done.

Known limitation: the commit is three renames, not one, so a reader may briefly see the new
version directory with the previous ``config.pbtxt``. Both describe the same model name and a
reader polling the repository sees the final state one poll later.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from export.errors import ExportError
from service import layout
from service.layout import CONFIG_FILENAME, LABELS_FILENAME
from service.layout import DEFAULT_MODEL_FILENAME as MODEL_FILENAME

DEFAULT_MAX_QUEUE_DELAY_US = 1000
DEFAULT_MAX_QUEUE_SIZE = 1024


def _num(value: float) -> str:
    """``0.286`` -> ``"0.2860"`` (the docs' style) unless four decimals would lose precision."""
    short = f"{value:.4f}"
    return short if float(short) == float(value) else repr(float(value))


@dataclass(frozen=True)
class ImageInput:
    """An image model's input and the preprocessing the server must apply (C×size×size)."""

    size: int
    channels: int  # 1: grayscale, 3: rgb
    mean: tuple[float, ...]  # per channel (or one for all), on the [0, 1] scale
    std: tuple[float, ...]
    resize_size: int | None = None  # shorter side -> resize_size, then centre-crop size
    interpolation: str = "bilinear"

    @property
    def dims(self) -> list[int]:
        return [self.channels, self.size, self.size]

    def parameters(self) -> dict[str, str]:
        params = {"task": "image_classification", "image_size": str(self.size)}
        if self.resize_size is not None and self.resize_size != self.size:
            params["resize_size"] = str(self.resize_size)
        params["color"] = "rgb" if self.channels == 3 else "grayscale"
        params["mean"] = ",".join(_num(v) for v in self.mean)
        params["std"] = ",".join(_num(v) for v in self.std)
        if self.interpolation != "bilinear":
            params["interpolation"] = self.interpolation
        params["output_activation"] = "softmax"
        return params

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "image",
            "size": self.size,
            "channels": self.channels,
            "color": "rgb" if self.channels == 3 else "grayscale",
            "mean": list(self.mean),
            "std": list(self.std),
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class AudioInput:
    """A speech model's input (one window of mono float samples) and how audio is windowed."""

    sample_rate: int = 16000
    window_samples: int = 16000
    hop_samples: int | None = None  # default: half a window
    speech_index: int = 1
    threshold: float = 0.5

    @property
    def dims(self) -> list[int]:
        return [self.window_samples]

    def parameters(self) -> dict[str, str]:
        hop = self.hop_samples if self.hop_samples is not None else self.window_samples // 2
        return {
            "task": "speech_detection",
            "sample_rate": str(self.sample_rate),
            "window_samples": str(self.window_samples),
            "hop_samples": str(hop),
            "speech_index": str(self.speech_index),
            "threshold": str(self.threshold),
            "output_activation": "softmax",
        }

    def to_dict(self) -> dict[str, object]:
        return {
            "kind": "audio",
            "sample_rate": self.sample_rate,
            "window_samples": self.window_samples,
            "hop_samples": self.hop_samples,
            "speech_index": self.speech_index,
            "threshold": self.threshold,
        }


def input_from_dict(data: Mapping[str, Any]) -> ImageInput | AudioInput:
    """Inverse of ``to_dict`` (checkpoints store the input description as a plain dict)."""
    d = dict(data)
    kind = d.pop("kind", "image")
    d.pop("color", None)
    if kind == "audio":
        return AudioInput(**d)
    d["mean"] = tuple(float(v) for v in d["mean"])
    d["std"] = tuple(float(v) for v in d["std"])
    return ImageInput(**d)


@dataclass(frozen=True)
class ModelConfig:
    """The parts of Triton's ModelConfig that ``convserve export`` writes."""

    name: str
    input: ImageInput | AudioInput
    num_classes: int
    input_name: str = "input"
    output_name: str = "logits"
    max_batch_size: int = 64
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    instance_count: int = 1
    # Omitted by default, as in docs/model-repository.md: the server then pads batches to powers
    # of two up to max_batch_size, and Triton sends whatever is queued without waiting for a size.
    preferred_batch_sizes: tuple[int, ...] = ()
    # The server's default rule, written out so the file says how it batches (and Triton, which
    # ignores the parameter, is unaffected); tests/export checks it equals the server's default.
    batch_policy: str = "eager"
    extra_parameters: dict[str, str] = field(default_factory=dict)

    def parameters(self) -> dict[str, str]:
        return {
            **self.input.parameters(),
            "batch_policy": self.batch_policy,
            **self.extra_parameters,
        }


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def render_config(cfg: ModelConfig) -> str:
    """``config.pbtxt`` text, laid out as in docs/model-repository.md."""
    if cfg.max_batch_size < 1:
        raise ExportError(f"--max-batch-size must be at least 1, got {cfg.max_batch_size}")
    too_big = [b for b in cfg.preferred_batch_sizes if not 1 <= b <= cfg.max_batch_size]
    if too_big:
        raise ExportError(
            f"preferred batch sizes {too_big} are outside 1..{cfg.max_batch_size} (max batch size)"
        )
    dims = ", ".join(str(d) for d in cfg.input.dims)
    fmt = " format: FORMAT_NCHW" if isinstance(cfg.input, ImageInput) else ""
    lines = [
        f"name: {_quote(cfg.name)}",
        'platform: "onnxruntime_onnx"',
        f"max_batch_size: {cfg.max_batch_size}",
        f"input [ {{ name: {_quote(cfg.input_name)} data_type: TYPE_FP32{fmt} "
        f"dims: [ {dims} ] }} ]",
        f"output [ {{ name: {_quote(cfg.output_name)} data_type: TYPE_FP32 "
        f"dims: [ {cfg.num_classes} ] label_filename: {_quote(LABELS_FILENAME)} }} ]",
        "dynamic_batching {",
        *(
            [f"  preferred_batch_size: [ {', '.join(str(b) for b in cfg.preferred_batch_sizes)} ]"]
            if cfg.preferred_batch_sizes
            else []
        ),
        f"  max_queue_delay_microseconds: {cfg.max_queue_delay_us}",
        f"  default_queue_policy {{ max_queue_size: {cfg.max_queue_size} }}",
        "}",
        f"instance_group [ {{ count: {cfg.instance_count} kind: KIND_AUTO }} ]",
        "version_policy: { latest: { num_versions: 1 } }",
    ]
    lines += [
        f"parameters {{ key: {_quote(k)} value: {{ string_value: {_quote(v)} }} }}"
        for k, v in cfg.parameters().items()
    ]
    return "\n".join(lines) + "\n"


def check_model_name(name: str) -> str:
    if not layout.PORTABLE_NAME.match(name):
        raise ExportError(
            f"invalid model name {name!r}: use letters, digits, '_', '.', '-' (starting with a "
            "letter or digit), e.g. --name lenet5_fashion"
        )
    return name


# The version-folder and servable-model rules are the server's own (service.layout).
versions = layout.versions
has_servable_version = layout.has_servable_version


@dataclass(frozen=True)
class WrittenVersion:
    model_dir: Path
    version: int

    @property
    def model_path(self) -> Path:
        return self.model_dir / str(self.version) / MODEL_FILENAME


def _unwritable(repository: Path, exc: OSError) -> ExportError:
    return ExportError(
        f"cannot write to model repository {repository}: {exc.strerror or exc}; "
        "pass a writable --repository directory"
    )


class VersionStage:
    """Stage one model version in the repository; ``commit`` moves it in, leaving stages on error.

    with VersionStage(repo, "lenet5_fashion") as stage:
        torch.onnx.export(..., stage.model_path)
        written = stage.commit(config_text, labels)
    """

    def __init__(self, repository: Path | str, name: str) -> None:
        self.repository = Path(repository)
        self.name = check_model_name(name)
        try:
            self.repository.mkdir(parents=True, exist_ok=True)
            self.dir = Path(tempfile.mkdtemp(prefix=f".{name}.staging-", dir=self.repository))
        except OSError as exc:
            raise _unwritable(self.repository, exc) from exc
        self._version_dir = self.dir / "staged"
        self._version_dir.mkdir()
        self.committed: WrittenVersion | None = None

    @property
    def model_path(self) -> Path:
        return self._version_dir / MODEL_FILENAME

    def __enter__(self) -> VersionStage:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def commit(self, config_text: str, labels: Sequence[str]) -> WrittenVersion:
        """Write config + labels into the stage and move everything into ``<repo>/<name>``."""
        try:
            labels_text = layout.labels_text(labels)
        except ValueError as exc:
            raise ExportError(str(exc)) from None
        if not self.model_path.is_file():
            raise ExportError(f"nothing to commit: {self.model_path} was not written")
        try:
            (self.dir / LABELS_FILENAME).write_text(labels_text, "utf-8")
            (self.dir / CONFIG_FILENAME).write_text(config_text, "utf-8")
            self.committed = self._move_in()
        except OSError as exc:
            raise _unwritable(self.repository, exc) from exc
        finally:
            self.discard()
        return self.committed

    def _move_in(self) -> WrittenVersion:
        model_dir = self.repository / self.name
        if not model_dir.exists():
            self._version_dir.rename(self.dir / "1")
            try:
                self.dir.rename(model_dir)  # a brand-new model appears whole, in one rename
                return WrittenVersion(model_dir, 1)
            except OSError:
                if not model_dir.exists():  # not a race with another exporter: a real error
                    raise
                (self.dir / "1").rename(self._version_dir)
        version = (versions(model_dir) or [0])[-1] + 1
        while True:
            try:
                target = model_dir / str(version)
                if target.exists():  # rename() would silently replace an empty directory
                    raise FileExistsError(target)
                self._version_dir.rename(target)
                break
            except OSError as exc:  # taken meanwhile by a concurrent export: try the next one
                if not isinstance(exc, FileExistsError) and not target.exists():
                    raise
                version += 1
        os.replace(self.dir / LABELS_FILENAME, model_dir / LABELS_FILENAME)
        os.replace(self.dir / CONFIG_FILENAME, model_dir / CONFIG_FILENAME)
        return WrittenVersion(model_dir, version)
