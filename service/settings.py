"""Server settings: one frozen object, built once at start-up and passed down explicitly.

Every field can be set by a command-line flag (`--grpc-port`) or an environment variable
(`CONVSERVE_GRPC_PORT`); a flag beats the variable, the variable beats the default. Each field's
help text lives in its metadata, `dataclasses.field(metadata=_help(...))`: the one source for
--help, `describe()` and docs/limits.md. Fields declared with `metadata=_limit(...)` bound what
one client can make the server do; `limits()` lists them, and docs/limits.md is checked against
that list by a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import re
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from service.errors import SettingsError

ENV_PREFIX = "CONVSERVE_"
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
_LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
_HELP = "help"
_LIMIT = "limit"


def _help(text: str) -> dict[str, object]:
    """Field metadata: the help text (--help, `describe()`, docs/limits.md)."""
    return {_HELP: text, _LIMIT: False}


def _limit(text: str) -> dict[str, object]:
    """Field metadata of a setting that bounds a client's demands (`limits()`, docs/limits.md)."""
    return {_HELP: text, _LIMIT: True}


@dataclass(frozen=True)
class Settings:
    repository: Path = dataclasses.field(
        default=Path("model_repository"),
        metadata=_help(
            "Model repository directory (Triton layout: <model>/config.pbtxt, "
            "<model>/<n>/model.onnx)."
        ),
    )
    grpc_host: str = dataclasses.field(
        default="0.0.0.0", metadata=_help("Address the gRPC server binds to.")
    )
    grpc_port: int = dataclasses.field(
        default=8001, metadata=_help("gRPC port; 0 picks a free port (logged at start-up).")
    )
    http_host: str = dataclasses.field(
        default="0.0.0.0",
        metadata=_help("Address the HTTP server (KServe v2 REST and the task API) binds to."),
    )
    http_port: int = dataclasses.field(
        default=8000,
        metadata=_help(
            "HTTP port (KServe v2 REST, /v1/classify, /v1/detect-speech); 0 picks a free port, "
            "-1 disables HTTP."
        ),
    )
    metrics_host: str = dataclasses.field(
        default="0.0.0.0", metadata=_help("Address the Prometheus /metrics HTTP server binds to.")
    )
    metrics_port: int = dataclasses.field(
        default=8002,
        metadata=_help(
            "Prometheus /metrics port; 0 picks a free port, -1 disables the metrics server."
        ),
    )
    device: str = dataclasses.field(
        default="auto",
        metadata=_help(
            "Execution device: auto (CUDA when available, else CPU), cpu, cuda or cuda:N."
        ),
    )
    default_image_model: str = dataclasses.field(
        default="mobilenet_v2",
        metadata=_help("Model that ClassifyImage uses when a request names none."),
    )
    default_speech_model: str = dataclasses.field(
        default="speech_cnn",
        metadata=_help("Model that DetectSpeech uses when a request names none."),
    )
    max_message_bytes: int = dataclasses.field(
        default=64 * 1024 * 1024,
        metadata=_limit(
            "Largest gRPC message accepted or sent, in bytes (RESOURCE_EXHAUSTED past it)."
        ),
    )
    max_image_pixels: int = dataclasses.field(
        default=40_000_000,
        metadata=_limit(
            "Largest decoded image accepted, in pixels, checked from the header before decoding "
            "(guards against decompression bombs; INVALID_ARGUMENT past it)."
        ),
    )
    max_image_bytes: int = dataclasses.field(
        default=32 * 1024 * 1024,
        metadata=_limit("Largest encoded image accepted, in bytes (INVALID_ARGUMENT past it)."),
    )
    max_audio_seconds: float = dataclasses.field(
        default=600.0,
        metadata=_limit(
            "Longest audio clip accepted by DetectSpeech, in seconds (INVALID_ARGUMENT past it)."
        ),
    )
    max_queue_size: int = dataclasses.field(
        default=1024,
        metadata=_limit(
            "Requests queued per model version before RESOURCE_EXHAUSTED, when config.pbtxt "
            "sets none."
        ),
    )
    max_concurrent_streams: int = dataclasses.field(
        default=256,
        metadata=_limit(
            "Concurrent gRPC streams (RPCs) per connection; also the server-wide cap on open "
            "StreamDetectSpeech calls (RESOURCE_EXHAUSTED past it)."
        ),
    )
    max_stream_seconds: float = dataclasses.field(
        default=3600.0,
        metadata=_limit(
            "Longest StreamDetectSpeech stream, in seconds of audio (INVALID_ARGUMENT past it, "
            "which ends the stream)."
        ),
    )
    grace_period_s: float = dataclasses.field(
        default=30.0,
        metadata=_limit(
            "Seconds in-flight requests get to finish after SIGTERM before the server stops."
        ),
    )
    tls_cert: Path | None = dataclasses.field(
        default=None,
        metadata=_help(
            "Server certificate chain (PEM file) for gRPC over TLS; needs tls-key. "
            "Unset: plaintext."
        ),
    )
    tls_key: Path | None = dataclasses.field(
        default=None, metadata=_help("Private key (PEM file) of tls-cert.")
    )
    tls_client_ca: Path | None = dataclasses.field(
        default=None,
        metadata=_help(
            "CA certificates (PEM file) for mutual TLS: when set, every client must present a "
            "certificate signed by one of them. Needs tls-cert and tls-key."
        ),
    )
    preprocess_threads: int = dataclasses.field(
        default=0, metadata=_help("Threads decoding images and audio; 0 = one per CPU core.")
    )
    intra_op_threads: int = dataclasses.field(
        default=0,
        metadata=_help(
            "ONNX Runtime intra-op threads per session; 0 = automatic "
            "(cores split across instances)."
        ),
    )
    log_level: str = dataclasses.field(
        default="INFO", metadata=_help("Log level: DEBUG, INFO, WARNING, ERROR or CRITICAL.")
    )
    load_models: tuple[str, ...] = dataclasses.field(
        default=(),
        metadata=_help(
            "Models to load at start-up (comma-separated); empty = every model in the repository."
        ),
    )

    def __post_init__(self) -> None:
        # Case is not meaningful in these two; normalise so comparisons elsewhere stay simple.
        object.__setattr__(self, "log_level", self.log_level.upper())
        object.__setattr__(self, "device", self.device.lower())
        _validate(self)

    @classmethod
    def from_sources(
        cls,
        args: Mapping[str, object] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> Settings:
        """Build settings from explicit values (non-None wins), then CONVSERVE_* variables.

        `args` may be `vars(argparse_namespace)`: keys that are not fields are ignored, values may
        be typed or strings. `env` defaults to os.environ; an empty variable counts as unset so a
        compose file can blank a value out.
        """
        args = args or {}
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            convert = _converters()[field.name]
            raw = args.get(field.name)
            source = f"--{_flag(field.name)}"
            if raw is None:
                raw = env.get(_env_name(field.name)) or None
                source = _env_name(field.name)
            if raw is None:
                continue
            try:
                values[field.name] = convert(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{source}: {exc}") from None
        return cls(**values)  # type: ignore[arg-type]

    @staticmethod
    def add_arguments(parser: argparse.ArgumentParser) -> None:
        """Add one flag per field (kebab-case, default None so the environment can fill in)."""
        for field in dataclasses.fields(Settings):
            default = field.default
            if isinstance(default, tuple):
                default = ",".join(default) or "(all)"
            elif default is None:
                default = "(unset)"
            help_text = (
                f"{field.metadata[_HELP]} [env {_env_name(field.name)}; default {default}]"
            ).replace("%", "%%")  # argparse formats help with %
            parser.add_argument(
                f"--{_flag(field.name)}",
                dest=field.name,
                default=None,
                metavar=field.name.upper(),
                help=help_text,
            )

    @staticmethod
    def limits() -> list[SettingInfo]:
        """The fields declared with `_limit`, in declaration order (docs/limits.md lists them)."""
        return [info for info in Settings.describe() if info.limit]

    @staticmethod
    def describe() -> list[SettingInfo]:
        """Every field with its flag, environment variable, default and documentation."""
        return [
            SettingInfo(
                name=f.name,
                flag=f"--{_flag(f.name)}",
                env=_env_name(f.name),
                default=f.default,
                doc=f.metadata[_HELP],
                limit=bool(f.metadata.get(_LIMIT)),
            )
            for f in dataclasses.fields(Settings)
        ]

    def log_summary(self, logger: logging.Logger) -> None:
        """Log every setting on one line, so a deployment's effective config is in its log."""
        pairs = (f"{f.name}={getattr(self, f.name)!s}" for f in dataclasses.fields(self))
        logger.info("settings: %s", " ".join(pairs))


@dataclass(frozen=True)
class SettingInfo:
    """One Settings field as documentation sees it (Settings.describe)."""

    name: str
    flag: str
    env: str
    default: object
    doc: str
    limit: bool


def _flag(name: str) -> str:
    return name.replace("_", "-")


def _env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _to_int(raw: object) -> int:
    if isinstance(raw, bool):
        raise ValueError(f"expected an integer, got {raw!r}")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip().replace("_", ""))
        except ValueError:
            pass
    raise ValueError(f"expected an integer, got {raw!r}")


def _to_float(raw: object) -> float:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        return float(raw)
    if isinstance(raw, str):
        try:
            return float(raw.strip())
        except ValueError:
            pass
    raise ValueError(f"expected a number, got {raw!r}")


def _to_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    return raw.strip()


def _to_path(raw: object) -> Path:
    if isinstance(raw, Path):
        return raw
    return Path(_to_str(raw))


def _to_optional_path(raw: object) -> Path | None:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    return _to_path(raw)


def _to_names(raw: object) -> tuple[str, ...]:
    if isinstance(raw, str):
        items: list[object] = list(raw.split(","))
    elif isinstance(raw, (list, tuple)):
        items = list(raw)
    else:
        raise ValueError(f"expected a comma-separated list, got {raw!r}")
    names = tuple(_to_str(item) for item in items)
    return tuple(name for name in names if name)


_BY_TYPE: dict[object, Callable[[object], object]] = {
    int: _to_int,
    float: _to_float,
    str: _to_str,
    Path: _to_path,
    Path | None: _to_optional_path,
    tuple[str, ...]: _to_names,
}


@functools.cache
def _converters() -> dict[str, Callable[[object], object]]:
    hints = typing.get_type_hints(Settings)
    return {f.name: _BY_TYPE[hints[f.name]] for f in dataclasses.fields(Settings)}


def _validate(s: Settings) -> None:
    """Reject values that would fail later in a less obvious place."""
    problems: list[str] = []

    def check(ok: bool, field: str, want: str) -> None:
        if not ok:
            value = getattr(s, field)
            problems.append(f"{_flag(field)} ({_env_name(field)}) must be {want}, got {value!r}")

    check(0 <= s.grpc_port <= 65535, "grpc_port", "between 0 and 65535")
    check(-1 <= s.metrics_port <= 65535, "metrics_port", "between -1 and 65535")
    check(-1 <= s.http_port <= 65535, "http_port", "between -1 and 65535")
    check(
        s.http_port <= 0 or s.http_port not in (s.grpc_port, s.metrics_port),
        "http_port",
        "different from grpc-port and metrics-port",
    )
    check(bool(s.http_host), "http_host", "a host name or address")
    check(
        s.metrics_port <= 0 or s.metrics_port != s.grpc_port,
        "metrics_port",
        "different from grpc-port",
    )
    check(bool(s.grpc_host), "grpc_host", "a host name or address")
    check(bool(s.metrics_host), "metrics_host", "a host name or address")
    check(bool(_DEVICE_RE.match(s.device)), "device", "auto, cpu, cuda or cuda:N")
    check(bool(s.default_image_model), "default_image_model", "a model name")
    check(bool(s.default_speech_model), "default_speech_model", "a model name")
    check(s.max_message_bytes >= 1024, "max_message_bytes", "at least 1024")
    check(s.max_image_pixels > 0, "max_image_pixels", "positive")
    check(s.max_image_bytes > 0, "max_image_bytes", "positive")
    check(s.max_audio_seconds > 0, "max_audio_seconds", "positive")
    check(s.max_queue_size > 0, "max_queue_size", "positive")
    check(s.max_concurrent_streams > 0, "max_concurrent_streams", "positive")
    check(s.max_stream_seconds > 0, "max_stream_seconds", "positive")
    check(s.grace_period_s >= 0, "grace_period_s", "zero or more")
    check(s.preprocess_threads >= 0, "preprocess_threads", "zero (auto) or more")
    check(s.intra_op_threads >= 0, "intra_op_threads", "zero (auto) or more")
    check(s.log_level.upper() in _LOG_LEVELS, "log_level", "one of " + ", ".join(_LOG_LEVELS))
    check(
        (s.tls_cert is None) == (s.tls_key is None),
        "tls_key" if s.tls_cert is not None else "tls_cert",
        "set together with " + ("tls-cert" if s.tls_cert is not None else "tls-key"),
    )
    check(
        s.tls_client_ca is None or s.tls_cert is not None,
        "tls_client_ca",
        "used with tls-cert and tls-key (mutual TLS needs TLS)",
    )
    bad_names = [n for n in s.load_models if "/" in n or "\\" in n or n in (".", "..")]
    check(not bad_names, "load_models", "plain model directory names")
    if problems:
        raise SettingsError("invalid settings: " + "; ".join(problems))
