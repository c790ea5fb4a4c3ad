"""Per second of long audio: speech_cnn and silero-vad on minutes of held-out recordings.

    .venv/bin/python -m benchmarks.speech.long_audio --model weights/speech_cnn

Builds long files from the packaged recordings and generators of one split (no TTS: those need
rendering): speech utterances of one held-out speaker at a time, separated by pauses and by
non-speech segments (music, events, steady noise) of that split, over a continuous background
bed (room tone, fan, hum, ...) at 5-30 dB below the speech, with one channel effect per file.
Every 10 ms frame's truth is known (the utterances' activity masks), so each second is labelled
speech (>= 0.2 s of speech, the corpus's rule), no speech (none), or ambiguous (in between; not
scored). ``val`` files choose each model's threshold (and silero's aggregate); ``test`` files are
reported. speech_cnn scores each second as one window (the server's windows with a 1 s hop);
silero-vad runs as one stream per file and a second's score aggregates its 32 ms chunks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speech import metrics  # noqa: E402
from benchmarks.speech.scorers import CHUNK, Silero, SpeechCNN, aggregate  # noqa: E402
from export.data import speech_channel as channel  # noqa: E402
from export.data import speech_synth as synth  # noqa: E402
from export.data.speech_mix import HOP, MIN_SPEECH_S, Pool, _cut  # noqa: E402
from export.data.speech_packages import packaged_sources  # noqa: E402

SR = 16_000
RESULTS = ROOT / "benchmarks" / "speech" / "results"


def _pools(split: str) -> dict[str, list[Pool]]:
    pools: dict[str, list[Pool]] = {"speech": [], "other": []}
    for p in packaged_sources():
        if p.split == split:
            key = "speech" if p.kind == "speech" else "other"
            pools[key].append(Pool(p.name, p.kind, split, list(p.files())))
    for name, gen in synth.EVENTS[split].items():
        pools["other"].append(Pool(f"synth:{name}", "events", split, [gen]))
    return pools


def make_file(rng: np.random.Generator, pools: dict[str, list[Pool]], seconds: int) -> tuple[
    NDArray[np.float32], NDArray[np.bool_], str
]:  # fmt: skip
    """(audio, 10 ms speech mask, speaker) of one long file."""
    speaker = pools["speech"][int(rng.integers(len(pools["speech"])))]
    n = seconds * SR
    audio, mask = np.zeros(n, np.float32), np.zeros(n // HOP, bool)
    at = int(rng.uniform(0.2, 2.0) * SR) // HOP * HOP
    while at < n - SR:
        if rng.random() < 0.6:  # an utterance (1-3 clips back to back)
            for _ in range(int(rng.integers(1, 4))):
                if at >= n - SR // 10:
                    break
                clip, active = speaker.draw(rng)
                end = min(n, at + len(active) * HOP)
                frames = (end - at) // HOP
                level = 1.0 / (np.sqrt(np.mean(np.square(clip[active.repeat(HOP)]))) + 1e-9)
                audio[at:end] += clip[: end - at] * np.float32(level)
                mask[at // HOP : at // HOP + frames] |= active[:frames]
                at = end + int(rng.uniform(0.05, 0.3) * SR) // HOP * HOP
        else:  # a non-speech segment
            pool = pools["other"][int(rng.integers(len(pools["other"])))]
            seg = _cut(rng, pool.draw(rng)[0])[: int(rng.uniform(0.5, 1.0) * SR)]
            end = min(n, at + len(seg))
            audio[at:end] += seg[: end - at] / (float(np.abs(seg).max()) + 1e-9) * 2.0
            at = end
        at += int(rng.uniform(0.3, 3.0) * SR) // HOP * HOP
    bed_gen = list(synth.NOISES.values())[int(rng.integers(len(synth.NOISES)))]
    bed = np.resize(bed_gen(rng), n)
    bed *= np.float32(10 ** (-rng.uniform(5, 30) / 20) / (np.sqrt(np.mean(bed**2)) + 1e-9))
    audio += bed
    effect = str(rng.choice(["none", "reverb", "phone", "narrow"]))
    if effect == "reverb":
        audio = channel.reverb(audio, rng)
    elif effect in ("phone", "narrow"):
        audio = getattr(channel, effect)(audio)
    audio *= np.float32(10 ** (rng.uniform(-30, -1) / 20) / (np.abs(audio).max() + 1e-9))
    return audio.astype(np.float32), mask, f"{speaker.name} ({effect})"


def second_labels(mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """1 speech, 0 no speech, -1 ambiguous, per whole second."""
    per_s = mask[: len(mask) // 100 * 100].reshape(-1, 100).sum(axis=1)
    return np.where(per_s >= MIN_SPEECH_S * 100, 1, np.where(per_s == 0, 0, -1))


def score_files(files: list[NDArray[np.float32]], ours: SpeechCNN, vad: Silero | None) -> dict[
    str, Any
]:  # fmt: skip
    out: dict[str, Any] = {"speech_cnn": [], "silero_chunks": []}
    for audio in files:
        seconds = len(audio) // SR
        out["speech_cnn"].append(ours.probs(audio[: seconds * SR].reshape(seconds, SR)))
        if vad is not None:
            probs = vad.chunk_probs(audio[None, :])[0]
            per_second = SR / CHUNK
            rows = [probs[int(i * per_second) : int((i + 1) * per_second)] for i in range(seconds)]
            width = min(len(r) for r in rows)
            out["silero_chunks"].append(np.stack([r[:width] for r in rows]))
    return out


def evaluate(
    model: Path, *, silero: bool, files: int, seconds: int, seed: int = 0
) -> dict[str, Any]:
    ours, vad = SpeechCNN(model), (Silero() if silero else None)
    data: dict[str, Any] = {}
    for i, split in enumerate(("val", "test")):
        rng = np.random.default_rng([seed, 9, i])
        pools = _pools(split)
        made = [make_file(rng, pools, seconds) for _ in range(files)]
        labels = np.concatenate([second_labels(m) for _, m, _ in made])
        scores = score_files([a for a, _, _ in made], ours, vad)
        data[split] = {"labels": labels, "scores": scores, "files": [d for _, _, d in made]}
    keep = {s: data[s]["labels"] >= 0 for s in data}
    y = {s: data[s]["labels"][keep[s]] for s in data}
    model_scores = {s: {"speech_cnn": np.concatenate(data[s]["scores"]["speech_cnn"])[keep[s]]}
                    for s in data}  # fmt: skip
    result: dict[str, Any] = {"files_per_split": files, "seconds_per_file": seconds}
    if vad is not None:
        chunks = {s: np.concatenate(data[s]["scores"]["silero_chunks"])[keep[s]] for s in data}

        def val_acc(how: str) -> float:
            sc = aggregate(chunks["val"], how)
            return metrics.rates(y["val"], sc, metrics.best_threshold(y["val"], sc))[
                "balanced_accuracy"
            ]

        how = max(("max", "kth"), key=val_acc)
        result["silero_aggregate"] = how
        for s in data:
            model_scores[s]["silero_vad"] = aggregate(chunks[s], how)
    thresholds = {m: metrics.best_threshold(y["val"], sc) for m, sc in model_scores["val"].items()}
    result["thresholds"] = thresholds
    for s in data:
        result[s] = {
            "seconds_scored": int(keep[s].sum()),
            "seconds_ambiguous": int((~keep[s]).sum()),
            "speech_seconds": int(y[s].sum()),
            "files": data[s]["files"],
            **{m: metrics.summary(y[s], sc, thresholds[m]) for m, sc in model_scores[s].items()},
        }
        if vad is not None:  # silero's own default threshold, for reference
            sc = model_scores[s]["silero_vad"]
            result[s]["silero_vad_default_0.5"] = metrics.summary(y[s], sc, 0.5)
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="weights dir, checkpoint or .onnx")
    p.add_argument("--no-silero", action="store_true", help="speech_cnn only")
    p.add_argument("--files", type=int, default=12, help="long files per split (default 12)")
    p.add_argument("--seconds", type=int, default=60, help="length of each file (default 60)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    result = evaluate(args.model, silero=not args.no_silero, files=args.files, seconds=args.seconds)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "long_audio.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    t = result["test"]
    lines = [
        f"# Per second of long audio (test split: {args.files} files x {args.seconds} s)",
        "",
        f"{t['seconds_scored']} seconds scored ({t['speech_seconds']} speech), "
        f"{t['seconds_ambiguous']} ambiguous seconds left out; thresholds chosen on val files.",
        "",
        "| model | balanced acc | ROC AUC | recall | false alarm | threshold |",
        "|---|---|---|---|---|---|",
    ]
    for m in [*result["thresholds"], "silero_vad_default_0.5"]:
        if m not in t:
            continue
        r = t[m]
        lines.append(
            f"| {m} | {r['balanced_accuracy']:.3f} | {r['roc_auc']:.3f} | {r['recall']:.3f} | "
            f"{r['false_alarm']:.3f} | {r['threshold']:.3f} |"
        )
    text = "\n".join(lines) + "\n"
    (args.out / "long_audio.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
