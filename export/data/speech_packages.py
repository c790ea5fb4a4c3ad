"""Recorded speech and sounds that Debian packages ship, and which split each one belongs to.

Every entry of :data:`PACKAGED` is one *source*: one speaker (asterisk prompts), one language's
speaker (KLettres), or one package of sounds; a source is the unit that is held out. The split of
each is fixed here, by hand, so that it can be read and argued with:

* **train** — what the model learns from;
* **val** — held-out sources that choose the checkpoint and the decision threshold;
* **test** — held-out sources that are only ever reported (never used to choose anything).

Asterisk's en_US and es_MX prompts are one speaker (Allison), so they are one source. KLettres
has one speaker per language (letters and syllables read by a child or adult). The reserved
evaluation sets (see the README of issue #9: ktuberling, pocketsphinx, MBROLA, festival, flite's
``slt``, alsa-utils, sound-icons, sound-theme-freedesktop, FluidR3) are never listed and never
read: every path below is a package's own directory, never a shared folder's whole content.
"""

from __future__ import annotations

import io
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from numpy.typing import NDArray

from export.data.audio_tools import require_tool, to_mono_16k
from export.data.errors import DatasetError

SPLITS = ("train", "val", "test")
_AST = Path("/usr/share/asterisk/sounds")
_KL = Path("/usr/share/klettres")


@dataclass(frozen=True)
class Packaged:
    """Files of one source: ``root`` searched with ``pattern`` (sorted, so the order is stable)."""

    name: str  # the source's identity in every report
    kind: str  # "speech" | "music" | "events"
    split: str
    package: str  # the Debian package(s) that ship it, space-separated (errors, model cards)
    licence: str
    root: Path
    pattern: str

    def files(self) -> list[Path]:
        # A few packaged files are empty (asterisk-core-sounds-ru's is.wav is a bare header), and
        # the asterisk prompt sets hold some sounds that are not speech (NOT_SPEECH).
        return sorted(
            p
            for p in self.root.glob(self.pattern)
            if p.is_file() and p.stat().st_size > 1000 and not NOT_SPEECH.search(p.as_posix())
        )


_AST_CORE = "CC-BY-SA-3.0"
# Asterisk's beeps, tone pairs and silence files (1-9 s of nothing) ship beside its prompts.
NOT_SPEECH = re.compile(r"/silence/|/(beep|beeperr|ascending-2tone|descending-2tone)\.\w+$")


def _asterisk(speaker: str, split: str, package: str, licence: str = _AST_CORE) -> Packaged:
    return Packaged(
        f"asterisk:{speaker}", "speech", split, package, licence, _AST / speaker, "**/*.wav"
    )


def _klettres(lang: str, split: str) -> Packaged:
    return Packaged(
        f"klettres:{lang}", "speech", split, "klettres-data", "GPL-2+", _KL / lang, "*/*.ogg"
    )


# KLettres languages per split; each language is read by its own speaker.
KLETTRES_SPLIT = {
    "train": ("ar", "da", "en", "en_GB", "es", "hu", "lt", "ml", "nl", "ru"),
    "val": ("cs", "it", "nb", "nds"),
    "test": ("de", "fr", "he", "pt_BR", "tn", "uk"),
}

PACKAGED: tuple[Packaged, ...] = (
    # --- speech: one speaker each ------------------------------------------------------------
    Packaged("asterisk:allison", "speech", "train",
             "asterisk-core-sounds-en-wav asterisk-core-sounds-es-wav", _AST_CORE, _AST,
             "*_f_Allison/**/*.wav"),
    _asterisk("fr_CA_f_June", "train", "asterisk-core-sounds-fr-wav"),
    _asterisk("ru_RU_f_IvrvoiceRU", "train", "asterisk-core-sounds-ru-wav"),
    _asterisk("it_IT_m_Carlo", "val", "asterisk-core-sounds-it-wav"),
    Packaged("asterisk:es-co", "speech", "val", "asterisk-prompt-es-co", "GPL-2", _AST / "es",
             "*.gsm"),
    _asterisk("it_IT_f_Menardi", "test", "asterisk-prompt-it-menardi-wav", "GPL-2 / CC-BY-SA-3.0"),
    Packaged("asterisk:fr-armelle", "speech", "test", "asterisk-prompt-fr-armelle", "GPL-2+",
             _AST / "fr", "*.gsm"),
    *(_klettres(lang, split) for split, langs in KLETTRES_SPLIT.items() for lang in langs),
    # --- music -------------------------------------------------------------------------------
    Packaged("moh:macroform", "music", "train", "asterisk-moh-opsound-wav", "CC-BY-SA-3.0",
             Path("/usr/share/asterisk/moh"), "macroform-*.wav"),
    Packaged("moh:manolo_camp", "music", "val", "asterisk-moh-opsound-wav", "CC-BY-SA-3.0",
             Path("/usr/share/asterisk/moh"), "manolo_camp-*.wav"),
    Packaged("moh:reno_project", "music", "test", "asterisk-moh-opsound-wav", "CC-BY-SA-3.0",
             Path("/usr/share/asterisk/moh"), "reno_project-*.wav"),
    Packaged("lomiri:ringtones", "music", "test", "lomiri-sounds", "CC-BY-SA-3.0 / CC0",
             Path("/usr/share/sounds/lomiri/ringtones"), "*.ogg"),
    # --- short events: notifications, alerts, clicks -----------------------------------------
    Packaged("oxygen-sounds", "events", "val", "oxygen-sounds", "LGPL-3+",
             Path("/usr/share/sounds"), "Oxygen-*.ogg"),
    Packaged("psi-plus-sounds", "events", "test", "psi-plus-sounds", "GPL-2+",
             Path("/usr/share/psi-plus/sound"), "*.wav"),
    Packaged("eiskaltdcpp-sounds", "events", "test", "eiskaltdcpp-sounds", "GPL-3+",
             Path("/usr/share/eiskaltdcpp/sounds"), "*.wav"),
    Packaged("lomiri:notifications", "events", "test", "lomiri-sounds", "CC-BY-SA-3.0 / CC0",
             Path("/usr/share/sounds/lomiri"), "[cn]*/**/*.ogg"),
)  # fmt: skip


def read_clip(path: Path) -> NDArray[np.float32]:
    """A packaged sound file as 16 kHz mono float32 (raw ``.gsm`` is decoded by sox)."""
    try:
        if path.suffix == ".gsm":
            wav = subprocess.run(
                [require_tool("sox"), str(path), "-t", "wav", "-b", "16", "-"],
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
            audio, rate = sf.read(io.BytesIO(wav), dtype="float32", always_2d=False)
        else:
            audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        raise DatasetError(f"{path}: cannot read audio: {exc}") from exc
    if audio.size == 0:
        raise DatasetError(f"{path}: empty audio file")
    return to_mono_16k(audio, int(rate))


def packaged_sources(kinds: tuple[str, ...] = ("speech", "music", "events")) -> list[Packaged]:
    """Every packaged source of ``kinds``; a missing package is a DatasetError naming it."""
    chosen = [p for p in PACKAGED if p.kind in kinds]
    missing = sorted({p.package for p in chosen if not p.files()})
    if missing:
        raise DatasetError(
            "the speech corpus needs recordings these packages ship: apt-get install "
            + " ".join(missing)
        )
    return chosen
