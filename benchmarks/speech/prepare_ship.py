"""Turn a speech_cnn training run + its held-out evaluation into what ``convserve ship`` takes.

    .venv/bin/python -m benchmarks.speech.prepare_ship runs/speech_cnn-speech/best.pt \\
        --heldout benchmarks/speech/results/heldout.json --out runs/speech_cnn-speech/ship
    convserve ship runs/speech_cnn-speech/ship/best.pt --name speech_cnn \\
        --metrics runs/speech_cnn-speech/ship/extra.json

Writes two files into ``--out``:

* ``<checkpoint name>``: the checkpoint with the decision threshold chosen on the **val** split
  (``heldout.json``'s ``thresholds.speech_cnn``) written into its serving preprocessing, so the
  exported config.pbtxt carries ``threshold``;
* ``extra.json``: the card's extra metrics (test-split overall and per-source numbers beside
  silero-vad's, per-condition numbers, long-audio and latency results when given), its data
  sources with licences and split, and the limitations of what was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from export.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from export.data.speech_packages import PACKAGED  # noqa: E402

GENERATED = [
    {"name": "espeak-ng voices (val/test hold out whole languages and variants)",
     "licence": "GPL-3+", "origin": "Debian espeak-ng", "split": "train/val/test"},
    {"name": "flite voices kal (train), rms (val), awb (test); slt reserved, never used",
     "licence": "BSD-style (flite)", "origin": "Debian flite", "split": "train/val/test"},
    {"name": "Freedoom music (whole songs held out) and non-voice sound effects",
     "licence": "BSD-3-Clause (Freedoom)", "origin": "Debian freedoom", "split": "train/val/test"},
    {"name": "TimGM6mb soundfont (train/val music)", "licence": "GPL-2",
     "origin": "Debian timgm6mb-soundfont", "split": "train/val"},
    {"name": "csound GM soundfont (test music only)", "licence": "LGPL-2.1+",
     "origin": "Debian csound-soundfont", "split": "test"},
    {"name": "sox and NumPy synthesised events and noises (event kinds split by kind)",
     "licence": "generated", "origin": "sox, export/data/speech_synth.py",
     "split": "train/val/test"},
]  # fmt: skip

LIMITATIONS = [
    "Decides per 1 s window: a window is speech when at least 0.2 s of it is speech.",
    "Real recorded voices in training are few: 3 asterisk prompt speakers (studio, 8 kHz) and "
    "10 KLettres speakers (isolated letters and syllables), plus espeak-ng and flite; no "
    "spontaneous conversation, crowds, children's play or far-field meeting audio.",
    "The held-out test sources are of the same kinds (prompt sets, spoken letters, TTS, packaged "
    "sounds): good held-out numbers are evidence of generalisation, not a guarantee on your audio.",
    "Sung vocals are in none of the splits: music with singing is undefined (often speech).",
    "The decision threshold was chosen on the val split; lower it for recall, raise it for fewer "
    "false alarms.",
]


def _round(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def extra_metrics(heldout: dict[str, Any], long_audio: dict[str, Any] | None,
                  latency: dict[str, Any] | None) -> dict[str, Any]:  # fmt: skip
    test, models = heldout["test"], list(heldout["thresholds"])
    metrics: dict[str, Any] = {"threshold": _round(heldout["thresholds"]["speech_cnn"])}
    for m in models:
        for key in ("balanced_accuracy", "roc_auc", "recall", "false_alarm"):
            metrics[f"test_{key}" if m == "speech_cnn" else f"{m}_test_{key}"] = _round(
                test["overall"][m][key]
            )
        metrics[f"val_balanced_accuracy_at_threshold_{m}"] = _round(
            heldout["val"]["overall"][m]["balanced_accuracy"]
        )
    table: dict[str, dict[str, Any]] = {}
    for name, row in sorted(test["sources"].items(), key=lambda kv: (kv[1]["kind"], kv[0])):
        what = "recall" if row["kind"] == "speech" else "false_alarm"
        cells: dict[str, Any] = {"n": row["n"]}
        for m in models:
            cells[f"{m} {what.replace('_', ' ')}"] = _round(row[m][what])
            cells[f"{m} AUC"] = _round(row[m]["roc_auc"])
        table[f"{name} ({row['kind']})"] = cells
    metrics["test_per_source"] = table
    metrics["test_per_condition"] = {
        name: {
            "n": row["n"],
            **{m: _round(row[m].get("balanced_accuracy", row[m]["recall"])) for m in models},
        }
        for name, row in test["conditions"].items()
    }
    if long_audio is not None:
        metrics["long_audio_test_per_second"] = {
            m: {k: _round(long_audio["test"][m][k]) for k in ("balanced_accuracy", "roc_auc")}
            for m in long_audio["thresholds"]
        }
    if latency is not None:
        metrics["latency_ms_per_window_one_core"] = {
            m: {k: _round(latency[m][k]) for k in ("p50_ms", "p90_ms")}
            for m in ("speech_cnn", "silero_vad") if m in latency
        }  # fmt: skip
    return metrics


def data_sources() -> list[dict[str, str]]:
    return [
        {"name": p.name, "licence": p.licence, "origin": f"Debian {p.package}", "split": p.split}
        for p in PACKAGED
    ] + GENERATED


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--heldout", type=Path, required=True, help="heldout.json (with --silero)")
    p.add_argument("--long-audio", type=Path, help="long_audio.json")
    p.add_argument("--latency", type=Path, help="latency.json")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    heldout = json.loads(args.heldout.read_text())
    long_audio = json.loads(args.long_audio.read_text()) if args.long_audio else None
    latency = json.loads(args.latency.read_text()) if args.latency else None
    ckpt = load_checkpoint(args.checkpoint, expected_arch="speech_cnn")
    threshold = float(heldout["thresholds"]["speech_cnn"])
    if not 0.0 < threshold <= 1.0:
        raise SystemExit(f"threshold {threshold} from {args.heldout} is outside (0, 1]")
    ckpt["preprocessing"] = {**ckpt["preprocessing"], "threshold": round(threshold, 4)}
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(ckpt, args.out / args.checkpoint.name)
    extra = {
        "metrics": extra_metrics(heldout, long_audio, latency),
        "data_sources": data_sources(),
        "limitations": LIMITATIONS,
        "notes": (
            "Checkpoint chosen by val_balanced_accuracy on the val split (held-out sources); "
            "decision threshold chosen on val; every test_* number is on the test split, whose "
            "sources neither training nor those choices saw. silero-vad (PyPI silero-vad "
            f"{heldout.get('silero_version', '')}) is scored on the same windows with its "
            "threshold and window aggregate also chosen on val. Reproduce the table with "
            "`python -m benchmarks.speech.heldout --model weights/speech_cnn --silero`."
        ),
    }
    (args.out / "extra.json").write_text(json.dumps(extra, indent=1) + "\n")
    print(
        f"threshold {threshold:.4f} -> {args.out / args.checkpoint.name}; {args.out / 'extra.json'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
