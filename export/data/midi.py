"""Doom music: MUS → Standard MIDI, and cutting short excerpts out of a MIDI file.

MUS (https://doomwiki.org/wiki/MUS): header ``"MUS\\x1a"``, uint16 score length, uint16 score
offset, uint16 primary / secondary channel counts, uint16 instrument count, uint16 reserved, the
instrument list, then the score. Each event byte is ``last(1) type(3) channel(4)``; when ``last`` is
set a variable-length delay in 1/140 s ticks follows the event's data. MUS channel 15 is percussion
(MIDI channel 9); MUS channels 9–14 move up one to skip it. We write a format-0 MIDI file with
70 ticks per quarter note at 500000 µs per quarter, i.e. 140 ticks per second, so MUS delays carry
over unchanged.

Freedoom ships its music as MIDI already; the converter is here for WADs that use MUS (Doom's own).

:func:`midi_excerpt` keeps ``[start, start + duration)`` of a MIDI file so fluidsynth renders only
what we use: events before ``start`` other than notes (program changes, controllers, tempo) are kept
at time 0 so the excerpt sounds with the right instruments; notes already sounding at ``start`` are
lost. Every channel gets all-notes-off at the end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from export.data.errors import DatasetError

MUS_MAGIC = b"MUS\x1a"
MIDI_MAGIC = b"MThd"
_MUS_TICKS_PER_QUARTER = 70
_DEFAULT_TEMPO = 500_000  # µs per quarter note
# MUS controller number -> MIDI controller (0 is the program change, handled apart).
_MUS_CONTROLLERS = {1: 0, 2: 1, 3: 7, 4: 10, 5: 11, 6: 91, 7: 93, 8: 64, 9: 67}
# MUS system event -> MIDI channel-mode controller.
_MUS_SYSTEM = {10: 120, 11: 123, 12: 126, 13: 127, 14: 121}


def _vlq(value: int) -> bytes:
    out = [value & 0x7F]
    value >>= 7
    while value:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    return bytes(reversed(out))


def _read_vlq(data: bytes, pos: int, source: str) -> tuple[int, int]:
    value = 0
    for _ in range(4):
        if pos >= len(data):
            raise DatasetError(f"{source}: truncated variable-length number")
        byte = data[pos]
        pos += 1
        value = (value << 7) | (byte & 0x7F)
        if not byte & 0x80:
            return value, pos
    raise DatasetError(f"{source}: variable-length number longer than 4 bytes")


def _midi_file(fmt: int, division: int, tracks: list[bytes]) -> bytes:
    header = MIDI_MAGIC + struct.pack(">IHHH", 6, fmt, len(tracks), division)
    return header + b"".join(b"MTrk" + struct.pack(">I", len(t)) + t for t in tracks)


def mus_to_midi(data: bytes, source: str = "<mus>") -> bytes:
    """Convert a MUS lump to a format-0 Standard MIDI File."""
    if data[:4] != MUS_MAGIC or len(data) < 16:
        raise DatasetError(f"{source}: not a MUS lump (header {data[:4]!r})")
    score_len: int
    score_start: int
    score_len, score_start = struct.unpack_from("<HH", data, 4)
    if score_start + score_len > len(data):
        raise DatasetError(f"{source}: MUS score ({score_len} bytes at {score_start}) is truncated")
    track = bytearray(b"\x00\xff\x51\x03" + _DEFAULT_TEMPO.to_bytes(3, "big"))
    volume = [127] * 16
    delay = 0
    pos, end = score_start, score_start + score_len

    def emit(*message: int) -> None:
        nonlocal delay
        track.extend(_vlq(delay) + bytes(message))
        delay = 0

    def arg() -> int:
        nonlocal pos
        if pos >= end:
            raise DatasetError(f"{source}: MUS event truncated at byte {pos}")
        pos += 1
        return data[pos - 1]

    while pos < end:
        event = arg()
        kind, mus_channel = (event >> 4) & 0x7, event & 0xF
        ch = 9 if mus_channel == 15 else mus_channel + (1 if mus_channel >= 9 else 0)
        if kind == 0:  # release note
            emit(0x80 | ch, arg() & 0x7F, 64)
        elif kind == 1:  # play note, optional new volume
            note = arg()
            if note & 0x80:
                volume[ch] = arg() & 0x7F
            emit(0x90 | ch, note & 0x7F, volume[ch])
        elif kind == 2:  # pitch bend: 0..255, 128 = centre -> 14-bit
            bend = arg() * 64
            emit(0xE0 | ch, bend & 0x7F, (bend >> 7) & 0x7F)
        elif kind == 3:  # system event
            controller = arg() & 0x7F
            if controller in _MUS_SYSTEM:
                emit(0xB0 | ch, _MUS_SYSTEM[controller], 0)
        elif kind == 4:  # controller change; 0 = instrument
            controller, value = arg() & 0x7F, arg() & 0x7F
            if controller == 0:
                emit(0xC0 | ch, value)
            elif controller in _MUS_CONTROLLERS:
                emit(0xB0 | ch, _MUS_CONTROLLERS[controller], value)
        elif kind == 5:  # end of measure: nothing to write
            pass
        elif kind == 6:  # score end
            break
        else:  # 7: unused, one data byte
            arg()
        if event & 0x80:
            ticks, pos = _read_vlq(data, pos, source)
            delay += ticks
    emit(0xFF, 0x2F, 0x00)
    return _midi_file(0, _MUS_TICKS_PER_QUARTER, [bytes(track)])


def to_midi(data: bytes, source: str = "<music>") -> bytes:
    """A music lump as MIDI: MIDI is passed through, MUS converted, anything else rejected."""
    if data[:4] == MIDI_MAGIC:
        return data
    if data[:4] == MUS_MAGIC:
        return mus_to_midi(data, source)
    raise DatasetError(f"{source}: neither MIDI nor MUS (header {data[:4]!r})")


@dataclass(frozen=True)
class _Event:
    tick: int
    message: bytes  # status byte included, running status expanded

    @property
    def is_note(self) -> bool:
        return 0x80 <= self.message[0] <= 0x9F

    @property
    def is_end_of_track(self) -> bool:
        return self.message[:2] == b"\xff\x2f"


@dataclass(frozen=True)
class MidiFile:
    """A parsed Standard MIDI File: format, ticks per quarter, events per track."""

    fmt: int
    division: int
    tracks: list[list[_Event]]

    def seconds_to_tick(self, seconds: float) -> int:
        """Tick at which ``seconds`` have elapsed, following the tempo map."""
        return _tempo_walk(self, seconds=seconds)[0]

    def duration(self) -> float:
        """Seconds until the last event."""
        last = max((e.tick for t in self.tracks for e in t), default=0)
        return _tempo_walk(self, tick=last)[1]


def _tempo_walk(
    midi: MidiFile, *, seconds: float | None = None, tick: int | None = None
) -> tuple[int, float]:
    tempos = sorted(
        (e.tick, int.from_bytes(e.message[3:6], "big"))
        for t in midi.tracks
        for e in t
        if e.message[:2] == b"\xff\x51" and len(e.message) >= 6
    )
    at_tick, at_sec, tempo = 0, 0.0, _DEFAULT_TEMPO
    for change_tick, new_tempo in [*tempos, (1 << 62, _DEFAULT_TEMPO)]:
        per_tick = tempo / 1e6 / midi.division
        next_sec = at_sec + (change_tick - at_tick) * per_tick
        if seconds is not None and seconds <= next_sec:
            return at_tick + int((seconds - at_sec) / per_tick), seconds
        if tick is not None and tick <= change_tick:
            return tick, at_sec + (tick - at_tick) * per_tick
        at_tick, at_sec, tempo = change_tick, next_sec, new_tempo
    raise AssertionError("unreachable: the sentinel tempo change ends every walk")


def parse_midi(data: bytes, source: str = "<midi>") -> MidiFile:
    """Parse a Standard MIDI File (formats 0 and 1, metrical time)."""
    if data[:4] != MIDI_MAGIC or len(data) < 14:
        raise DatasetError(f"{source}: not a MIDI file (header {data[:4]!r})")
    _, fmt, ntracks, division = struct.unpack_from(">IHHH", data, 4)
    if division & 0x8000 or division == 0:
        raise DatasetError(f"{source}: SMPTE or zero time division is not supported")
    pos, tracks = 8 + struct.unpack_from(">I", data, 4)[0], []
    for _ in range(ntracks):
        if data[pos : pos + 4] != b"MTrk" or pos + 8 > len(data):
            raise DatasetError(f"{source}: expected a track (MTrk) at byte {pos}")
        (length,) = struct.unpack_from(">I", data, pos + 4)
        if pos + 8 + length > len(data):
            raise DatasetError(f"{source}: track at byte {pos} is truncated")
        body, pos = data[pos + 8 : pos + 8 + length], pos + 8 + length
        events, p, tick, running = [], 0, 0, 0
        while p < len(body):
            delta, p = _read_vlq(body, p, source)
            tick += delta
            if p >= len(body):
                raise DatasetError(f"{source}: truncated MIDI track")
            byte = body[p]
            if byte == 0xFF:  # meta: FF type length data
                size, q = _read_vlq(body, p + 2, source)
                message, p = body[p : q + size], q + size
            elif byte in (0xF0, 0xF7):  # sysex: F0 length data
                size, q = _read_vlq(body, p + 1, source)
                message, p = body[p : q + size], q + size
            else:  # channel message, maybe with running status (meta/sysex do not reset it)
                if byte & 0x80:
                    running, p = byte, p + 1
                elif not running:
                    raise DatasetError(f"{source}: data byte without a running status")
                size = 1 if 0xC0 <= running <= 0xDF else 2
                message, p = bytes([running]) + body[p : p + size], p + size
            if p > len(body):
                raise DatasetError(f"{source}: truncated MIDI event")
            events.append(_Event(tick, message))
        tracks.append(events)
    return MidiFile(fmt, division, tracks)


def midi_excerpt(data: bytes, start: float, duration: float, source: str = "<midi>") -> bytes:
    """``duration`` seconds of a MIDI file from ``start`` seconds on, as MIDI bytes."""
    midi = parse_midi(data, source)
    first, last = midi.seconds_to_tick(start), midi.seconds_to_tick(start + duration)
    out_tracks = []
    for index, events in enumerate(midi.tracks):
        kept = [
            _Event(max(0, e.tick - first), e.message)
            for e in events
            if not e.is_end_of_track and e.tick < last and (e.tick >= first or not e.is_note)
        ]
        end = last - first
        if index == 0:
            kept += [_Event(end, bytes([0xB0 | ch, 123, 0])) for ch in range(16)]
        kept.append(_Event(end, b"\xff\x2f\x00"))
        body, now = bytearray(), 0
        for e in kept:
            body += _vlq(e.tick - now) + e.message
            now = e.tick
        out_tracks.append(bytes(body))
    return _midi_file(1 if len(out_tracks) > 1 else 0, midi.division, out_tracks)
