"""docs/limits.md lists every limit with its default, flag and environment variable: the tables are
rendered here from Settings (and from the constants in the code) and compared with the file."""

from __future__ import annotations

import dataclasses

from PIL import Image

from service.dataplane.speech import MAX_CHUNKS_IN_FLIGHT
from service.preprocess.audio import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from service.servicers.kserve import STREAM_WINDOW
from service.settings import Settings
from tests.service.doc_sections import DOCS, check_section, table

LIMITS_DOC = DOCS / "limits.md"


def _default(name: str, value: object) -> str:
    if isinstance(value, int) and name.endswith("_bytes") and value % (1 << 20) == 0:
        return f"{value} ({value >> 20} MiB)"
    if isinstance(value, int):
        return f"{value:,}".replace(",", "_")
    return f"{value:g}" if isinstance(value, float) else str(value)


def render_settings_limits() -> str:
    rows = [
        (f"`{i.name}`", _default(i.name, i.default), f"`{i.flag}`", f"`{i.env}`", i.doc)
        for i in Settings.limits()
    ]
    return table(("limit", "default", "flag", "environment variable", "what it bounds"), rows)


def render_fixed_limits() -> str:
    """Limits that are constants in the code, not settings (each row names where it lives)."""
    rows = [
        (
            "audio sample rate",
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            "`service/preprocess/audio.py` MIN_SAMPLE_RATE, MAX_SAMPLE_RATE",
            "INVALID_ARGUMENT outside it (WAV header or `sample_rate`)",
        ),
        (
            "window batches in flight per DetectSpeech call",
            str(MAX_CHUNKS_IN_FLIGHT),
            "`service/servicers/task.py` MAX_CHUNKS_IN_FLIGHT",
            "one long clip cannot fill a model's whole queue",
        ),
        (
            "requests in flight per ModelStreamInfer stream",
            str(STREAM_WINDOW),
            "`service/servicers/kserve.py` STREAM_WINDOW",
            "further requests on the stream wait (back-pressure, no error)",
        ),
        (
            "Pillow's process-wide pixel guard",
            f"{Image.MAX_IMAGE_PIXELS:_} (error at twice that)",
            "`PIL.Image.MAX_IMAGE_PIXELS`",
            "a backstop behind `--max-image-pixels`; a limit above it needs Pillow's raised too",
        ),
    ]
    return table(("limit", "value", "where", "effect"), rows)


def test_settings_limits_table_is_current() -> None:
    check_section(LIMITS_DOC, "settings-limits", render_settings_limits())


def test_fixed_limits_table_is_current() -> None:
    check_section(LIMITS_DOC, "fixed-limits", render_fixed_limits())


def test_every_max_setting_is_declared_a_limit() -> None:
    """A new max_* setting must be declared with _limit() so that the docs list it."""
    limits = {i.name for i in Settings.limits()}
    for field in dataclasses.fields(Settings):
        if field.name.startswith("max_"):
            assert field.name in limits, f"{field.name}: declare it with _limit(...)"
    assert {"max_message_bytes", "max_image_pixels", "max_audio_seconds", "max_queue_size"} <= (
        limits
    )
    assert "max_concurrent_streams" in limits and "grace_period_s" in limits
