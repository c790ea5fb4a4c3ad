"""Speech corpus: WAD lumps, DMX sounds, the voice rule, MUS → MIDI, and a tiny real build."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from export.data import audio_tools, speech_sources, speech_synth
from export.data.errors import DatasetError
from export.data.midi import MIDI_MAGIC, midi_excerpt, mus_to_midi, parse_midi, to_midi
from export.data.speech import (
    KIND_NAMES,
    SAMPLE_RATE,
    WINDOW_SAMPLES,
    SpeechCorpus,
    build_speech_corpus,
    cache_path,
    default_cache_dir,
)
from export.data.speech_dataset import SpeechWindowDataset
from export.data.speech_packages import PACKAGED
from export.data.wad import (
    FREEDOOM_WADS,
    Wad,
    decode_dmx_sound,
    is_voice_sound,
    load_effects,
    select_effect_names,
)

HAVE_WADS = all(p.is_file() for p in FREEDOOM_WADS)
HAVE_TOOLS = all(shutil.which(t) for t in ("espeak-ng", "flite", "sox", "fluidsynth"))
needs_wads = pytest.mark.skipif(not HAVE_WADS, reason="freedoom not installed")
HAVE_PACKAGES = all(p.files() for p in PACKAGED) and all(
    p.is_file() for p in (audio_tools.SOUNDFONT[0], audio_tools.TEST_SOUNDFONT[0])
)
needs_all = pytest.mark.skipif(
    not (HAVE_WADS and HAVE_TOOLS and HAVE_PACKAGES),
    reason="speech corpus tools or packages missing (scripts/packages/train.txt)",
)

# The brief's list of monster and player vocalisations ("?" = any one trailing character),
# written out independently of the rule in export.data.wad.
# fmt: off
VOICES = (
    "DSPOSIT?", "DSBGSIT?", "DSSGTSIT", "DSCACSIT", "DSBRSSIT", "DSCYBSIT", "DSSPISIT",
    "DSKNTSIT", "DSVIPAIN", "DSPOPAIN", "DSPODTH?", "DSBGDTH?", "DSSGTDTH", "DSCACDTH",
    "DSBRSDTH", "DSCYBDTH", "DSSPIDTH", "DSKNTDTH", "DSPOSACT", "DSBGACT", "DSDMACT", "DSDMPAIN",
    "DSPLPAIN", "DSPLDETH", "DSPDIEHI", "DSSKLDTH", "DSMANSIT", "DSMANDTH", "DSPESIT", "DSPEDTH",
    "DSVILSIT", "DSVILDTH", "DSVILACT", "DSBSPSIT", "DSBSPDTH", "DSBSPACT", "DSKEENPN",
    "DSKEENDT", "DSNOWAY", "DSOOF", "DSMNPAIN", "DSPEPAIN", "DSSKESIT", "DSSKEACT", "DSSKEDTH",
    "DSSSSIT", "DSSSDTH", "DSBOSSIT", "DSBOSPN", "DSBOSDTH", "DSSKLATK", "DSSGTATK",
)
# fmt: on
VOICE_RE = re.compile("|".join(v.replace("?", "[0-9A-Z]?") + "$" for v in VOICES))


def test_voice_rule_on_the_brief_list() -> None:
    for name in VOICES:
        for concrete in {name.replace("?", ""), name.replace("?", "1"), name.replace("?", "3")}:
            assert is_voice_sound(concrete), concrete
    # Not over-broad: these are machines, weapons and doors (DSDOROPN ends in "PN").
    keep = ["DSPISTOL", "DSSHOTGN", "DSDOROPN", "DSDORCLS", "DSBDOPN", "DSBAREXP", "DSTELEPT",
            "DSPLASMA", "DSSAWUP", "DSSWTCHN", "DSITEMUP", "DSSTNMOV"]  # fmt: skip
    assert not any(is_voice_sound(n) for n in keep)
    expanded = [v.replace("?", "2") for v in VOICES]
    assert select_effect_names([*keep, *expanded, "D_E1M1", "DPPISTOL"]) == sorted(keep)


@needs_wads
@pytest.mark.parametrize("path", FREEDOOM_WADS, ids=lambda p: p.name)
def test_freedoom_wad_directory_and_effects(path: Path) -> None:
    wad = Wad(path)
    assert wad.kind == "IWAD" and len(wad.lumps) > 1000
    music = wad.music_lumps()
    assert len(music) >= 30
    assert all(wad.read(lump)[:4] in (b"MThd", b"MUS\x1a") for lump in music)
    sounds = [lump.name for lump in wad.sound_lumps()]
    chosen = select_effect_names(sounds)
    assert len(chosen) >= 25
    assert not [n for n in chosen if VOICE_RE.match(n) or is_voice_sound(n)]
    # The rule did remove the voices this WAD really has.
    assert {"DSPOSIT1", "DSPLPAIN", "DSOOF", "DSSGTDTH"} <= set(sounds) - set(chosen)


@needs_wads
def test_dmx_decoding_real_and_synthetic() -> None:
    wad = Wad(FREEDOOM_WADS[0])
    lump = wad.find("DSPISTOL")
    assert lump is not None
    raw = wad.read(lump)
    audio, rate = decode_dmx_sound(raw)
    count = struct.unpack_from("<I", raw, 4)[0]
    assert rate == struct.unpack_from("<H", raw, 2)[0] and 4000 <= rate <= 48000
    assert audio.shape == (count - 32,) and audio.dtype == np.float32
    assert -1.0 <= audio.min() < audio.max() < 1.0 and audio.std() > 0.01
    pcm = np.random.default_rng().integers(0, 256, 100, dtype=np.uint8)
    body = bytes([pcm[0]] * 16) + pcm.tobytes() + bytes([pcm[-1]] * 16)
    audio, rate = decode_dmx_sound(struct.pack("<HHI", 3, 11025, len(body)) + body)
    assert rate == 11025
    np.testing.assert_array_equal(audio, (pcm.astype(np.float32) - 128) / 128)
    with pytest.raises(DatasetError, match="format 0"):
        decode_dmx_sound(struct.pack("<HHI", 0, 11025, len(body)) + body)
    with pytest.raises(DatasetError, match="does not fit"):
        decode_dmx_sound(struct.pack("<HHI", 3, 11025, len(body) + 5) + body)
    effects = load_effects(FREEDOOM_WADS)
    assert "DSPISTOL" in effects and not any(is_voice_sound(n) for n in effects)
    # Freedoom's DSHOOF is a WAV file whose first two bytes were overwritten: rejected, not noise.
    assert "DSHOOF" not in effects
    hoof = wad.find("DSHOOF")
    assert hoof is not None
    with pytest.raises(DatasetError, match="embedded WAV"):
        decode_dmx_sound(wad.read(hoof))


def test_wad_header_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.wad"
    bad.write_bytes(b"JUNK" + bytes(8))
    with pytest.raises(DatasetError, match="not a WAD"):
        Wad(bad)
    bad.write_bytes(b"PWAD" + struct.pack("<ii", 5, 12))
    with pytest.raises(DatasetError, match="outside the file"):
        Wad(bad)
    good = tmp_path / "tiny.wad"
    lump = b"hello"
    good.write_bytes(
        b"PWAD" + struct.pack("<ii", 1, 17) + lump + struct.pack("<ii8s", 12, 5, b"DSX")
    )
    wad = Wad(good)
    assert [(x.name, wad.read(x)) for x in wad.lumps] == [("DSX", lump)]
    with pytest.raises(DatasetError, match="freedoom"):
        Wad(tmp_path / "absent.wad")


def _mus(events: bytes, instruments: tuple[int, ...] = (30,)) -> bytes:
    start = 16 + 2 * len(instruments)
    header = b"MUS\x1a" + struct.pack("<HHHHHH", len(events), start, 3, 0, len(instruments), 0)
    return header + struct.pack(f"<{len(instruments)}H", *instruments) + events


MUS_SCORE = bytes(
    [
        0x40, 0, 30,  # ch0 instrument 30 -> program change
        0x40, 3, 100,  # ch0 volume -> CC 7
        0x90, 0x80 | 60, 100, 70,  # ch0 play 60 at volume 100, then delay 70
        0x80, 60, 0x81, 0x00,  # ch0 release 60, then delay 128 (two-byte number)
        0x1F, 36,  # ch15 (percussion) play 36, last volume of that channel (127)
        0x19, 50,  # ch9 -> MIDI channel 10
        0x21, 128,  # ch1 pitch bend centre -> 8192
        0x30, 11,  # ch0 system "all notes off" -> CC 123
        0x60,  # score end
    ]
)  # fmt: skip


def test_mus_to_midi() -> None:
    midi = mus_to_midi(_mus(MUS_SCORE))
    assert midi[:4] == MIDI_MAGIC and to_midi(_mus(MUS_SCORE)) == midi
    parsed = parse_midi(midi)
    assert parsed.fmt == 0 and parsed.division == 70 and len(parsed.tracks) == 1
    events = [(e.tick, e.message.hex()) for e in parsed.tracks[0]]
    assert events == [
        (0, "ff510307a120"),  # 500000 µs per quarter at 70 ticks = 140 ticks per second
        (0, "c01e"),
        (0, "b00764"),
        (0, "903c64"),
        (70, "803c40"),
        (198, "99247f"),
        (198, "9a327f"),
        (198, "e10040"),
        (198, "b07b00"),
        (198, "ff2f00"),
    ]
    assert parsed.duration() == pytest.approx(198 / 140)
    with pytest.raises(DatasetError, match="truncated"):
        mus_to_midi(_mus(MUS_SCORE)[:-12])
    with pytest.raises(DatasetError, match="neither MIDI nor MUS"):
        to_midi(b"RIFF0000")


@needs_all
def test_converted_mus_renders_with_fluidsynth(tmp_path: Path) -> None:
    (tmp_path / "s.mid").write_bytes(mus_to_midi(_mus(MUS_SCORE)))
    args = ["fluidsynth", "-n", "-i", "-q", "-r", "16000", "-T", "wav", "-F", "out.wav"]
    args += [str(audio_tools.find_soundfont()), "s.mid"]
    subprocess.run(args, cwd=tmp_path, check=True, capture_output=True, timeout=60)
    audio, rate = sf.read(tmp_path / "out.wav")
    assert rate == 16000 and len(audio) > 16000 and np.abs(audio).max() > 1e-3


@needs_wads
def test_midi_excerpt_of_a_real_song() -> None:
    wad = Wad(FREEDOOM_WADS[0])
    song = to_midi(wad.read(wad.music_lumps()[0]))
    full = parse_midi(song)
    assert full.duration() > 40
    cut = parse_midi(midi_excerpt(song, 20.0, 10.0))
    assert len(cut.tracks) == len(full.tracks) and cut.division == full.division
    assert cut.duration() == pytest.approx(10.0, abs=0.05)
    programs = [e for t in cut.tracks for e in t if 0xC0 <= e.message[0] <= 0xCF]
    notes = [e for t in cut.tracks for e in t if 0x90 <= e.message[0] <= 0x9F and e.message[2]]
    assert programs and notes and min(e.tick for e in programs) == 0


def test_missing_tool_names_the_package(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DatasetError, match="apt-get install espeak-ng"):
        audio_tools.require_tool("espeak-ng")
    with pytest.raises(DatasetError, match="apt-get install"):
        build_speech_corpus(tmp_path / "cache", n_train=10, n_val=4, n_test=4, progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


def test_cache_location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONVSERVE_CACHE_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "speech"
    a = cache_path(None, seed=0, n_train=10, n_val=4, n_test=4)
    assert a.parent == tmp_path / "speech" and a.suffix == ".npz"
    assert a != cache_path(None, seed=1, n_train=10, n_val=4, n_test=4)
    assert a != cache_path(None, seed=0, n_train=10, n_val=4, n_test=6)
    assert (
        cache_path(tmp_path / "x", seed=0, n_train=10, n_val=4, n_test=4).parent == tmp_path / "x"
    )


SIZES = {"train": 40, "val": 21, "test": 24}
TINY = {"seed": 7, "n_train": 40, "n_val": 21, "n_test": 24, "progress": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> SpeechCorpus:
    if not (HAVE_WADS and HAVE_TOOLS and HAVE_PACKAGES):
        pytest.skip("speech corpus tools or packages missing")
    return build_speech_corpus(tmp_path_factory.mktemp("speech-a"), **TINY)


@needs_all
def test_tiny_corpus_shapes_balance_and_range(tiny: SpeechCorpus) -> None:
    for split, n in SIZES.items():
        d = tiny.split(split)
        x, y, kinds = d["x"], d["y"], d["kind"]
        assert x.shape == (n, WINDOW_SAMPLES) and x.dtype == np.float32
        assert y.shape == (n,) and y.dtype == np.int64 and set(y.tolist()) == {0, 1}
        assert int(y.sum()) == n // 2  # balanced (odd n: one more non-speech window)
        assert np.isfinite(x).all() and np.abs(x).max() <= 1.0
        assert np.all((kinds == KIND_NAMES.index("speech")) == (y == 1))
        assert np.abs(x).max(axis=1).min() > 0  # no empty window: dither at least
        names = tiny.source_names(split)
        assert d["src"].min() >= 0 and d["src"].max() < len(names)
        # the level spreads over tens of dB (gain -45..0 dBFS), speech included
        peak_db = 20 * np.log10(np.abs(x[y == 1]).max(axis=1))
        assert peak_db.min() < -12 and peak_db.max() > -12
    assert WINDOW_SAMPLES == SAMPLE_RATE == tiny.metadata["sample_rate"]
    assert tiny.path is not None and tiny.path.is_file()


# Drawn in every split on purpose: steady backgrounds and silence (see export.data.speech).
SHARED = {"sox-synth", "synth:silence", *(f"synth:{n}" for n in speech_synth.NOISES)}


@needs_all
def test_tiny_corpus_splits_hold_out_whole_sources(tiny: SpeechCorpus) -> None:
    pools = {s: {p["name"] for p in tiny.metadata["pools"][s]} for s in SIZES}
    # Rendered pools keep one name in every split, with disjoint members (voices, songs, effects).
    grouped = {"espeak-ng", "freedoom-effects", "freedoom-music@TimGM6mb"}
    members = {s: set(tiny.metadata["members"][s]) for s in SIZES}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not (pools[a] & pools[b]) - SHARED - grouped, (a, b)
        assert not {m for m in members[a] & members[b] if not m.startswith("synth:sox")}
    assert any(m.startswith("speech:espeak:") for m in members["test"])
    assert any(m.startswith("effects:freedoom:") for m in members["val"])
    for key in ("languages", "variants", "flite"):
        parts = tiny.metadata["voices"][key]
        assert not set(parts["train"]) & set(parts["val"]) and not set(parts["val"]) & set(
            parts["test"]
        ), key
    songs = tiny.metadata["songs"]
    assert not set(songs["train"]) & (set(songs["val"]) | set(songs["test"]))
    for split in SIZES:  # the windows really come from their own split's sources
        d = tiny.split(split)
        used = {tiny.source_names(split)[i] for i in np.unique(d["src"])}
        assert used <= pools[split] | {"synth:silence"}
        speech_used = {tiny.source_names(split)[i] for i in np.unique(d["src"][d["y"] == 1])}
        assert speech_used and not speech_used & SHARED


def test_no_reserved_source_is_listed() -> None:
    reserved = ("ktuberling", "pocketsphinx", "mbrola", "festival", "festvox", "alsa",
                "sound-icons", "freedesktop", "fluid", "slt")  # fmt: skip
    listed = [str(p.root / p.pattern).lower() + p.package.lower() for p in PACKAGED]
    assert not [s for s in listed for r in reserved if r in s]
    assert "slt" not in speech_sources.FLITE_SPEAKERS
    assert "fluid" not in str(audio_tools.SOUNDFONT).lower() + str(audio_tools.TEST_SOUNDFONT)
    names = [p.name for p in PACKAGED]
    assert len(names) == len(set(names))
    assert {p.split for p in PACKAGED} == {"train", "val", "test"}
    assert all(k in ("speech", "music", "events") for k in {p.kind for p in PACKAGED})


@needs_all
def test_tiny_corpus_is_deterministic_and_cached(tiny: SpeechCorpus, tmp_path: Path) -> None:
    again = build_speech_corpus(tmp_path / "b", **TINY)
    for split in SIZES:
        for name, value in again.split(split).items():
            np.testing.assert_array_equal(value, tiny.split(split)[name], err_msg=name)
    assert again.metadata["source_names"] == tiny.metadata["source_names"]
    assert tiny.path is not None
    cached = build_speech_corpus(tiny.path.parent, **TINY)
    np.testing.assert_array_equal(cached.x_train, tiny.x_train)
    other = build_speech_corpus(tmp_path / "c", **{**TINY, "seed": 8})
    assert not np.array_equal(other.x_train, tiny.x_train)


@needs_all
def test_speech_window_dataset(tiny: SpeechCorpus) -> None:
    ds = SpeechWindowDataset(tiny.x_train, tiny.y_train, augment=True)
    for i in range(len(ds)):
        x, label = ds[i]
        assert x.shape == (1, WINDOW_SAMPLES) and x.dtype == torch.float32
        assert float(x.abs().max()) <= 1.0 and label == tiny.y_train[i]
    plain = SpeechWindowDataset(tiny.x_train, tiny.y_train)
    np.testing.assert_array_equal(plain[0][0][0].numpy(), tiny.x_train[0])
    batch, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=8)))
    assert batch.shape == (8, 1, WINDOW_SAMPLES) and labels.dtype == torch.int64
