"""Doom WAD files: the lump directory, DMX digital sounds, and which sounds are voices.

WAD layout (little-endian): header ``"IWAD"|"PWAD"``, int32 lump count, int32 directory offset; the
directory is ``count`` entries of int32 offset, int32 size, 8-byte NUL-padded name. Music lumps are
named ``D_*`` (MUS or MIDI, see :mod:`export.data.midi`); sound effects ``DS*`` are DMX sounds:
uint16 format (3), uint16 sample rate, uint32 sample count *including* 16 pad bytes at each end,
then unsigned 8-bit PCM.

The speech corpus uses sound effects as *non-speech*, so every vocal sound must be left out: a
monster's growl or a player's grunt is neither clearly speech nor something we want the model to
learn as "not speech". :func:`is_voice_sound` is the rule, deliberately broad:

* names ending in SIT / ACT / PAIN / DTH / DETH / DIEHI (optionally + one digit): monster sight,
  idle ("active"), pain and death calls, and the player's pain/death (DSPLPAIN, DSPLDETH, DSPDIEHI);
  a bare "PN"/"DT" suffix would also catch the door sounds (DSDOROPN), so the Commander Keen
  pain/death sounds DSKEENPN / DSKEENDT are named one by one;
* names ending in ATK: several attack sounds are vocal (the demon's snarl DSSGTATK, the lost soul's
  scream DSSKLATK). This also drops a few non-vocal ones (fireballs); that cost is accepted;
* the player's grunts DSOOF and DSNOWAY; everything of the boss brain (DSBOS*), whose sight
  sound in Doom II is reversed speech; DSRADIO, which is unknown in content and could be a voice.

Known limitation: the rule is by name, so a PWAD that puts a voice under an effect's name (DSPISTOL
saying "bang") fools it. Freedoom's lumps are checked by a test.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.data.errors import DatasetError

FREEDOOM_WADS = (
    Path("/usr/share/games/doom/freedoom2.wad"),
    Path("/usr/share/games/doom/freedoom1.wad"),
)

_VOICE_SUFFIX = re.compile(r"(SIT|ACT|PAIN|DTH|DETH|DIEHI|ATK)[0-9]?$")
_VOICE_NAMES = frozenset({"DSOOF", "DSNOWAY", "DSKEENPN", "DSKEENDT", "DSRADIO"})
_VOICE_PREFIXES = ("DSBOS",)


@dataclass(frozen=True)
class Lump:
    """One directory entry of a WAD."""

    name: str
    offset: int
    size: int


class Wad:
    """A WAD file read into memory, with its lump directory parsed and checked."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        try:
            self.data = self.path.read_bytes()
        except OSError as exc:
            raise DatasetError(
                f"{self.path}: cannot read WAD ({exc.strerror or exc}); "
                "the Freedoom WADs come from `apt-get install freedoom`"
            ) from exc
        if len(self.data) < 12:
            raise DatasetError(f"{self.path}: not a WAD: {len(self.data)} bytes")
        ident, count, table = struct.unpack_from("<4sii", self.data, 0)
        if ident not in (b"IWAD", b"PWAD"):
            raise DatasetError(f"{self.path}: not a WAD: header {ident!r}")
        if count < 0 or table < 12 or table + 16 * count > len(self.data):
            raise DatasetError(
                f"{self.path}: lump directory ({count} entries at {table}) lies outside the file"
            )
        self.kind = ident.decode("ascii")
        self.lumps: list[Lump] = []
        for i in range(count):
            offset, size, raw = struct.unpack_from("<ii8s", self.data, table + 16 * i)
            name = raw.split(b"\0", 1)[0].decode("ascii", errors="replace").upper()
            if offset < 0 or size < 0 or offset + size > len(self.data):
                raise DatasetError(f"{self.path}: lump {name} lies outside the file")
            self.lumps.append(Lump(name, offset, size))

    def read(self, lump: Lump) -> bytes:
        return self.data[lump.offset : lump.offset + lump.size]

    def find(self, name: str) -> Lump | None:
        """The last lump called ``name`` (later lumps override earlier ones, as in the engine)."""
        matches = [lump for lump in self.lumps if lump.name == name.upper()]
        return matches[-1] if matches else None

    def music_lumps(self) -> list[Lump]:
        return [lump for lump in self.lumps if lump.name.startswith("D_") and lump.size > 0]

    def sound_lumps(self) -> list[Lump]:
        return [lump for lump in self.lumps if lump.name.startswith("DS") and lump.size > 0]


def decode_dmx_sound(data: bytes, source: str = "<lump>") -> tuple[NDArray[np.float32], int]:
    """A DMX (format 3) sound lump → ``(float32 samples in [-1, 1], sample rate)``."""
    if len(data) < 8 + 32:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for a DMX sound")
    fmt, rate, count = struct.unpack_from("<HHI", data, 0)
    if fmt != 3:
        raise DatasetError(f"{source}: DMX sound format {fmt}, expected 3")
    if b"WAVEfmt" in data[:16]:  # Freedoom's DSHOOF: a WAV file with its first bytes overwritten
        raise DatasetError(f"{source}: holds an embedded WAV, not DMX PCM")
    if not 4000 <= rate <= 48000:
        raise DatasetError(f"{source}: implausible sample rate {rate}")
    if count < 32 or 8 + count > len(data):
        raise DatasetError(f"{source}: sample count {count} does not fit {len(data) - 8} bytes")
    pcm = np.frombuffer(data, dtype=np.uint8, offset=8 + 16, count=count - 32)
    return ((pcm.astype(np.float32) - 128.0) / 128.0), rate


def is_voice_sound(name: str) -> bool:
    """True for lumps that are (or may be) a monster's or player's voice; see module docstring."""
    name = name.upper()
    return (
        name in _VOICE_NAMES
        or name.startswith(_VOICE_PREFIXES)
        or _VOICE_SUFFIX.search(name) is not None
    )


def select_effect_names(names: Iterable[str]) -> list[str]:
    """The sound lump names usable as non-speech: ``DS*`` and not a voice. Sorted, unique."""
    return sorted(
        {n.upper() for n in names if n.upper().startswith("DS") and not is_voice_sound(n)}
    )


def load_effects(wads: Iterable[Path]) -> dict[str, tuple[NDArray[np.float32], int]]:
    """Decode every non-voice DMX sound of ``wads``; the first WAD wins for a repeated name.

    Lumps that are not valid DMX sounds (placeholders, an embedded WAV) are skipped.
    """
    effects: dict[str, tuple[NDArray[np.float32], int]] = {}
    for path in wads:
        wad = Wad(path)
        chosen = set(select_effect_names(lump.name for lump in wad.sound_lumps()))
        for lump in wad.sound_lumps():
            if lump.name not in chosen or lump.name in effects:
                continue
            try:
                effects[lump.name] = decode_dmx_sound(wad.read(lump), f"{path}:{lump.name}")
            except DatasetError:
                continue
    return effects
