"""What the speech corpus is made of: voices, texts, and the rendering of every source clip.

Sources are planned first (all randomness drawn from one ``numpy`` Generator, in a fixed order)
and rendered afterwards, in threads, each job a pure function of its plan — so the corpus is the
same whatever order the renders finish in.

* **speech** — espeak-ng (languages × voice variants, speed 120–220 wpm, pitch 20–80, word gap) and
  flite (kal/kal16, awb, rms; duration stretch and pitch varied), reading 2–3 items drawn from
  :mod:`export.data.speech_text`. Non-English languages read the English text with their
  own letter-to-sound rules; that is wanted, it gives speech sounds of many languages. A voice
  identity is ``espeak:<language>+<variant>`` or ``flite:<speaker>``; val and test hold out whole
  languages, whole variants and one flite speaker each (see :func:`split_voices`). flite's
  ``slt`` voice is reserved for independent evaluation and never used.
* **music** — 20 s excerpts of the Freedoom soundtrack (MIDI, or MUS converted), fluidsynth + a GM
  soundfont: TimGM6mb for train and val, csound's GM bank for test (an instrument set no other
  split hears). Val and test hold out whole songs.
* **synth** — sox-generated coloured noise (filtered, tremolo), tones, sweeps, plucked chords,
  beeps and hum. sox runs with ``-R`` (repeatable), so its noise is deterministic.
* **effects** — Freedoom's sound effects minus every voice (:func:`export.data.wad.is_voice_sound`).
  Val and test hold out whole effects.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from export.data.audio_tools import (
    SAMPLE_RATE,
    TOOL_TIMEOUT_S,
    find_soundfont,
    read_wav_16k,
    require_tool,
    run_tool,
    to_mono_16k,
)
from export.data.errors import DatasetError
from export.data.midi import midi_excerpt, parse_midi, to_midi
from export.data.speech_text import random_text
from export.data.wad import FREEDOOM_WADS, Wad, load_effects

# Languages written in the Latin alphabet, so the built-in text is read with their own rules.
# fmt: off
ESPEAK_LANGUAGES = (
    "af", "ca", "cs", "cy", "da", "de", "en-029", "en-gb", "en-gb-scotland", "en-us", "eo", "es",
    "es-419", "et", "eu", "fi", "fr-be", "fr-fr", "ga", "haw", "hr", "hu", "id", "is", "it", "la",
    "lt", "lv", "mi", "ms", "nb", "nl", "pl", "pt", "pt-br", "ro", "sk", "sl", "sq", "sv", "sw",
    "tr", "vi",
)
# Voice variants (espeak-ng --voices=variant, file names); the robotic/novelty ones are left out.
ESPEAK_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5", "croak", "klatt",
    "klatt2", "klatt3", "klatt4", "whisper", "whisperf", "Alex", "Andy", "Annie", "adam", "aunty",
    "belinda", "benjamin", "boris", "caleb", "david", "edward", "Gene", "gustave", "iven", "linda",
    "max", "Michael", "norbert", "paul", "quincy", "rob", "robert", "steph", "travis", "victor",
    "zac", "grandma", "grandpa",
)
# fmt: on
# flite speaker -> the flite voices that are that speaker (kal and kal16 are one man at 8/16 kHz).
# flite's slt voice is reserved for independent evaluation: never listed here.
FLITE_SPEAKERS: dict[str, tuple[str, ...]] = {
    "kal": ("kal16", "kal"),
    "awb": ("awb",),
    "rms": ("rms",),
}
FLITE_SPLIT = {"train": ["kal"], "val": ["rms"], "test": ["awb"]}
_FLITE_F0 = {"kal": (90, 140), "awb": (90, 140), "rms": (85, 130)}
SPLITS = ("train", "val", "test")
FLITE_SHARE = 0.2  # fraction of speech renders made with flite


@dataclass(frozen=True)
class Source:
    """One rendered clip: 16 kHz mono float32, its kind, split and identity (the split unit)."""

    kind: str  # "speech" | "music" | "synth" | "effects"
    identity: str
    split: str  # "train" | "val" | "test"
    audio: NDArray[np.float32]


@dataclass(frozen=True)
class Job:
    """A planned render: the command lines to run (``{out}``/``{text}``/``{midi}`` filled in)."""

    kind: str
    identity: str
    split: str
    commands: tuple[tuple[str, ...], ...]
    text: str = ""
    midi: bytes = b""
    seconds: float = 0.0  # crop the render to this length (0: keep all)


def _tool_output(command: list[str]) -> str:
    try:
        out = subprocess.run(
            [require_tool(command[0]), *command[1:]],
            capture_output=True,
            timeout=30,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DatasetError(f"cannot run {' '.join(command)}: {exc}") from exc
    return (out.stdout + out.stderr).decode(errors="replace")


def available_voices() -> tuple[list[str], list[str]]:
    """``(espeak languages, espeak variants)`` both wanted and installed; flite's are checked."""
    # `espeak-ng --voices` rows: "Pty Language Age/Gender VoiceName File Other"
    languages = set(re.findall(r"(?m)^\s*\d+\s+(\S+)", _tool_output(["espeak-ng", "--voices"])))
    variants = set(re.findall(r"!v/(\S+)", _tool_output(["espeak-ng", "--voices=variant"])))
    flite = set(_tool_output(["flite", "-lv"]).split())
    langs = [lang for lang in ESPEAK_LANGUAGES if lang in languages]
    vars_ = [v for v in ESPEAK_VARIANTS if v in variants]
    speakers = [s for s, voices in FLITE_SPEAKERS.items() if voices[0] in flite]
    if len(langs) < 5 or len(vars_) < 5 or len(speakers) < len(FLITE_SPEAKERS):
        raise DatasetError(
            f"too few voices installed ({len(langs)} espeak-ng languages, {len(vars_)} variants, "
            f"{len(speakers)} flite speakers): apt-get install espeak-ng flite"
        )
    return langs, vars_


def split_voices(
    rng: np.random.Generator,
    languages: Sequence[str],
    variants: Sequence[str],
    held_out: float = 0.2,
) -> dict[str, dict[str, list[str]]]:
    """Whole languages and whole variants for val and test (``held_out`` each); flite by table."""

    def cut(items: Sequence[str]) -> dict[str, list[str]]:
        order = [items[i] for i in rng.permutation(len(items))]
        k = max(1, round(len(items) * held_out))
        return {"val": sorted(order[:k]), "test": sorted(order[k : 2 * k]),
                "train": sorted(order[2 * k :])}  # fmt: skip

    return {"languages": cut(languages), "variants": cut(variants), "flite": dict(FLITE_SPLIT)}


def plan_speech(
    rng: np.random.Generator, voices: dict[str, dict[str, list[str]]], split: str, count: int
) -> list[Job]:
    jobs = []
    for _ in range(count):
        text = random_text(rng)
        command: tuple[str, ...]
        if rng.random() < FLITE_SHARE:
            speaker = str(rng.choice(voices["flite"][split]))
            voice = str(rng.choice(FLITE_SPEAKERS[speaker]))
            lo, hi = _FLITE_F0[speaker]
            command = (
                "flite", "--setf", f"duration_stretch={rng.uniform(0.8, 1.3):.2f}",
                "--setf", f"int_f0_target_mean={rng.uniform(lo, hi):.0f}",
                "-voice", voice, "-f", "{text}", "-o", "{out}",
            )  # fmt: skip
            identity = f"flite:{speaker}"
        else:
            lang = str(rng.choice(voices["languages"][split]))
            variant = str(rng.choice(voices["variants"][split]))
            command = (
                "espeak-ng", "-v", f"{lang}+{variant}", "-s", str(rng.integers(120, 221)),
                "-p", str(rng.integers(20, 81)), "-g", str(rng.integers(0, 8)),
                "-f", "{text}", "-w", "{out}",
            )  # fmt: skip
            identity = f"espeak:{lang}+{variant}"
        jobs.append(Job("speech", identity, split, (command,), text=text))
    return jobs


def music_songs(wads: Sequence[Path] = FREEDOOM_WADS) -> dict[str, bytes]:
    """Song name → MIDI bytes for every music lump of ``wads`` of 30 s or more (no jingles)."""
    songs: dict[str, bytes] = {}
    for path in wads:
        wad = Wad(path)
        for lump in wad.music_lumps():
            key = f"{path.stem}:{lump.name}"
            try:
                midi = to_midi(wad.read(lump), key)
                if parse_midi(midi, key).duration() >= 30.0:
                    songs[key] = midi
            except DatasetError:
                continue
    if not songs:
        raise DatasetError(f"no playable music in {', '.join(map(str, wads))}")
    return songs


def plan_music(
    rng: np.random.Generator, songs: dict[str, bytes], names: Sequence[str], split: str, count: int
) -> list[Job]:
    soundfont = str(find_soundfont(test=split == "test"))
    jobs = []
    order = [names[i] for i in rng.permutation(len(names))]  # every song once before repeats
    for i in range(count):
        name = order[i % len(order)]
        length = parse_midi(songs[name], name).duration()
        start = float(rng.uniform(0.0, max(0.0, length - 25.0)))
        command = (
            "fluidsynth", "-n", "-i", "-q", "-g", "0.5", "-r", str(SAMPLE_RATE),
            "-T", "raw", "-O", "s16", "-F", "{raw}", soundfont, "{midi}",
        )  # fmt: skip
        midi = midi_excerpt(songs[name], start, 20.0, name)
        font = Path(soundfont).stem
        jobs.append(Job("music", f"{name}@{font}", split, (command,), midi=midi, seconds=20.0))
    return jobs


_NOTES = ("C3", "D3", "E3", "F3", "G3", "A3", "B3", "C4", "D4", "E4", "F4", "G4", "A4", "B4", "C5")


def _sox_effect(rng: np.random.Generator) -> tuple[str, ...]:
    kind = int(rng.integers(6))
    seconds = f"{rng.uniform(3.0, 6.0):.2f}"
    if kind == 0:  # coloured noise, maybe band-limited, maybe pulsing
        colour = str(rng.choice(["whitenoise", "pinknoise", "brownnoise"]))
        tail: tuple[str, ...] = ()
        if rng.random() < 0.5:
            tail += ("band", f"{rng.uniform(200, 4000):.0f}", f"{rng.uniform(100, 1500):.0f}")
        if rng.random() < 0.3:
            tail += ("tremolo", f"{rng.uniform(0.5, 8):.1f}", f"{rng.uniform(20, 90):.0f}")
        return ("synth", seconds, colour, *tail)
    if kind == 1:  # steady tone
        wave = str(rng.choice(["sine", "square", "triangle", "sawtooth"]))
        return ("synth", seconds, wave, f"{rng.uniform(80, 4000):.0f}")
    if kind == 2:  # sweep
        f1, f2 = rng.uniform(100, 6000, size=2)
        wave = str(rng.choice(["sine", "square", "triangle"]))
        return ("synth", seconds, wave, f"{f1:.0f}{rng.choice(['-', ':'])}{f2:.0f}")
    if kind == 3:  # plucked chord, one note per channel, staggered
        notes = [str(n) for n in rng.choice(_NOTES, size=int(rng.integers(2, 5)), replace=False)]
        delays = [f"{0.05 * i:.2f}" for i in range(len(notes))]
        return ("synth", seconds, *(x for n in notes for x in ("pluck", n)), "delay", *delays)
    if kind == 4:  # beeps
        beep, gap = rng.uniform(0.05, 0.4), rng.uniform(0.05, 0.5)
        repeats = str(int(float(seconds) / (beep + gap)))
        freq = f"{rng.uniform(300, 3000):.0f}"
        return ("synth", f"{beep:.2f}", "sine", freq, "pad", "0", f"{gap:.2f}", "repeat", repeats)
    # mains hum with harmonics
    base = float(rng.choice([50.0, 60.0]))
    return ("synth", seconds, "sawtooth", f"{base:.0f}", "lowpass", f"{rng.uniform(200, 1200):.0f}")


def plan_synth(rng: np.random.Generator, split: str, count: int, first_id: int) -> list[Job]:
    jobs = []
    for i in range(count):
        effect = _sox_effect(rng)
        channels = str(max(1, effect.count("pluck")))
        command = ("sox", "-R", "-D", "-n", "-r", str(SAMPLE_RATE), "-c", channels, "-b", "16",
                   "{out}", *effect)  # fmt: skip
        jobs.append(Job("synth", f"sox:{first_id + i}:{effect[2]}", split, (command,)))
    return jobs


def _render_raw(args: list[str], out: Path, seconds: float) -> NDArray[np.float32]:
    """Run a fluidsynth fast render to raw s16 stereo, stopping it once ``seconds`` are out.

    Some Freedoom excerpts make fluidsynth 2.3 render forever (found: gigabytes of output for a
    20 s excerpt whose tempo map says 20 s); the fast render is deterministic sample by sample,
    so the first ``seconds`` are the same however late the process is stopped.
    """
    need = int(seconds * SAMPLE_RATE) * 4  # 2 channels x 2 bytes
    proc = subprocess.Popen(
        [require_tool(args[0]), *args[1:]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    began = time.monotonic()
    try:
        while proc.poll() is None and (not out.exists() or out.stat().st_size < need):
            if time.monotonic() - began > TOOL_TIMEOUT_S:
                raise DatasetError(f"`{' '.join(args)[:200]}` timed out")
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    pcm = np.frombuffer(out.read_bytes()[:need], dtype="<i2")
    if pcm.size < 2:
        raise DatasetError(f"`{' '.join(args)[:200]}` rendered no audio")
    stereo = pcm[: pcm.size // 2 * 2].reshape(-1, 2).astype(np.float32) / 32768.0
    return np.asarray(stereo.mean(axis=1), dtype=np.float32)


def render(job: Job) -> Source:
    """Run one job's commands in a temporary directory; return its 16 kHz mono clip."""
    with tempfile.TemporaryDirectory(prefix="convserve-render-") as tmp:
        files = {"{out}": Path(tmp, "out.wav"), "{text}": Path(tmp, "text.txt")}
        files["{text}"].write_text(job.text, encoding="utf-8")
        files["{midi}"] = Path(tmp, "song.mid")
        files["{midi}"].write_bytes(job.midi)
        files["{raw}"] = Path(tmp, "out.raw")
        for command in job.commands:
            args = [str(files.get(arg, arg)) for arg in command]
            if "{raw}" in command:
                audio = _render_raw(args, files["{raw}"], job.seconds)
            else:
                run_tool(args)
                audio = read_wav_16k(files["{out}"])
    if job.seconds:
        audio = audio[: int(job.seconds * SAMPLE_RATE)]
    return Source(job.kind, job.identity, job.split, audio)


def effect_sources(rng: np.random.Generator, held_out: float = 0.2) -> list[Source]:
    """Freedoom's non-voice sound effects at 16 kHz; whole effects held out for val and test."""
    effects = load_effects(FREEDOOM_WADS)
    names = sorted(effects)
    if len(names) < 6:
        raise DatasetError("too few sound effects in the Freedoom WADs: apt-get install freedoom")
    order = [names[i] for i in rng.permutation(len(names))]
    k = max(1, round(len(names) * held_out))
    split = {name: ("val" if i < k else "test" if i < 2 * k else "train")
             for i, name in enumerate(order)}  # fmt: skip
    return [
        Source("effects", f"freedoom:{name}", split[name], to_mono_16k(*effects[name]))
        for name in names
    ]
