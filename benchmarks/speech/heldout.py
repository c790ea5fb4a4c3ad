"""Held-out-source evaluation of speech_cnn, with silero-vad side by side, per source.

    .venv/bin/python -m benchmarks.speech.heldout --model weights/speech_cnn [--silero]

Reads the speech corpus (built and cached by ``export.data.speech``; the default sizes unless
given), scores its ``val`` and ``test`` splits, picks each detector's decision threshold on
``val`` (maximum balanced accuracy; for silero-vad also its window aggregate), and reports on
``test``, sources that neither training nor that choice saw: overall balanced accuracy and ROC
AUC, then per source (speech sources: recall; non-speech sources: false-alarm rate; AUC of the
source's windows against all windows of the other class) and per condition. Writes
``heldout.json`` and ``heldout.md`` into ``--out``. ``--limit N`` scores a seeded stratified
subset of N windows per split (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.speech import metrics  # noqa: E402
from benchmarks.speech.scorers import SILERO_VERSION, Silero, SpeechCNN, aggregate  # noqa: E402
from export.data.speech import KIND_NAMES, SpeechCorpus, build_speech_corpus  # noqa: E402
from export.data.speech_mix import COND_BITS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "speech" / "results"


def subset(y: NDArray[Any], limit: int | None, seed: int) -> NDArray[np.int64]:
    """Seeded stratified subset of ``limit`` indices (half per class); all when no limit."""
    if limit is None or limit >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(np.flatnonzero(y == c))[: limit // 2] for c in (0, 1)]
    return np.sort(np.concatenate(picks))


def conditions(cond: NDArray[Any], x: NDArray[np.float32], kind: NDArray[Any]) -> dict[str, Any]:
    peak_db = 20 * np.log10(np.abs(x).max(axis=1) + 1e-12)
    masks = {name: (cond & bit) > 0 for name, bit in COND_BITS.items()}
    channel = sum(COND_BITS[k] for k in ("reverb", "phone", "gsm", "mulaw", "narrow"))
    masks["clean channel"] = (cond.astype(np.int64) & channel) == 0
    masks["quiet (peak < -30 dBFS)"] = (peak_db < -30) & (kind != KIND_NAMES.index("silence"))
    return masks


def report(
    corpus: SpeechCorpus, split: str, idx: NDArray[np.int64], scores: dict[str, NDArray[Any]],
    thresholds: dict[str, float],
) -> dict[str, Any]:  # fmt: skip
    d = {k: v[idx] for k, v in corpus.split(split).items()}
    names = corpus.source_names(split)
    y = d["y"]
    out: dict[str, Any] = {"overall": {}, "sources": {}, "conditions": {}}
    for model, s in scores.items():
        out["overall"][model] = metrics.summary(y, s, thresholds[model])
    for source in np.unique(d["src"]):
        mask = d["src"] == source
        label = int(y[mask][0])
        kind = KIND_NAMES[int(d["kind"][mask][0])] if label == 0 else "speech"
        row: dict[str, Any] = {"kind": kind, "n": int(mask.sum())}
        for model, s in scores.items():
            r = metrics.rates(y[mask], s[mask], thresholds[model])
            other = y != label
            both = mask | other
            r["roc_auc"] = metrics.roc_auc(y[both], s[both])
            row[model] = r
        out["sources"][names[source]] = row
    for name, mask in conditions(d["cond"], d["x"], d["kind"]).items():
        if mask.any():
            out["conditions"][name] = {
                "n": int(mask.sum()),
                **{m: metrics.summary(y[mask], s[mask], thresholds[m]) for m, s in scores.items()},
            }
    return out


def _fmt(v: float) -> str:
    return "—" if v != v else f"{v:.3f}"  # nan -> dash


def markdown(result: dict[str, Any]) -> str:
    models = sorted(result["thresholds"], key=lambda m: m != "speech_cnn")  # ours first
    lines = [f"# speech_cnn vs silero-vad on held-out sources ({result['split']} split)", ""]
    lines.append("Thresholds (chosen on val): " + ", ".join(
        f"{m} {result['thresholds'][m]:.3f}" for m in models) + (
        f"; silero window aggregate: {result['silero_aggregate']}"
        if "silero_aggregate" in result else ""))  # fmt: skip
    lines += [
        "",
        "| model | balanced acc | ROC AUC | recall | false alarm | n |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        o = result["test"]["overall"][m]
        lines.append(f"| {m} | {_fmt(o['balanced_accuracy'])} | {_fmt(o['roc_auc'])} | "
                     f"{_fmt(o['recall'])} | {_fmt(o['false_alarm'])} | {o['n']} |")  # fmt: skip
    default = result["test"].get("silero_vad_default_0.5")
    if default:
        lines.append(
            f"| silero_vad at its default 0.5 | {_fmt(default['balanced_accuracy'])} | "
            f"{_fmt(default['roc_auc'])} | {_fmt(default['recall'])} | "
            f"{_fmt(default['false_alarm'])} | {default['n']} |"
        )
    head = "| source | kind | n | " + " | ".join(
        f"{m} recall / FA | {m} AUC" for m in models) + " |"  # fmt: skip
    lines += ["", "Per source (speech: recall; non-speech: false-alarm rate):", "", head,
              "|" + "---|" * (3 + 2 * len(models))]  # fmt: skip
    for name, row in sorted(
        result["test"]["sources"].items(), key=lambda kv: (kv[1]["kind"], kv[0])
    ):
        cells = []
        for m in models:
            r = row[m]
            value = r["recall"] if row["kind"] == "speech" else r["false_alarm"]
            cells += [_fmt(value), _fmt(r["roc_auc"])]
        lines.append(f"| {name} | {row['kind']} | {row['n']} | " + " | ".join(cells) + " |")
    lines += ["", "Per condition (balanced accuracy; recall where a condition has only speech):"]
    lines += ["", "| condition | n | " + " | ".join(models) + " |"]
    lines += ["|" + "---|" * (2 + len(models))]
    for name, row in result["test"]["conditions"].items():
        cells = [_fmt(row[m].get("balanced_accuracy", row[m]["recall"])) for m in models]
        lines.append(f"| {name} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _val_accuracy(y: NDArray[Any], chunks: NDArray[np.float32], how: str) -> float:
    score = aggregate(chunks, how)
    return metrics.rates(y, score, metrics.best_threshold(y, score))["balanced_accuracy"]


def plot(result: dict[str, Any], arrays: dict[str, NDArray[Any]], path: Path) -> None:
    """ROC curves on test, and per-source recall / false-alarm bars, both models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = sorted(result["thresholds"], key=lambda m: m != "speech_cnn")
    fig, (roc, bars) = plt.subplots(1, 2, figsize=(15, 6), gridspec_kw={"width_ratios": [1, 2]})
    y = arrays["y_test"].astype(bool)
    for m in models:
        s = arrays[f"{m}_test"]
        grid = np.unique(np.concatenate([[-1.0, 2.0], s]))[::-1]
        tpr = [(s[y] >= t).mean() for t in grid]
        fpr = [(s[~y] >= t).mean() for t in grid]
        auc = result["test"]["overall"][m]["roc_auc"]
        roc.plot(fpr, tpr, label=f"{m} (AUC {auc:.3f})")
        o = result["test"]["overall"][m]
        roc.plot([o["false_alarm"]], [o["recall"]], "o", color=roc.lines[-1].get_color())
    roc.set(xlabel="false-alarm rate", ylabel="recall", title="test split: ROC (dot: threshold)")
    roc.grid(alpha=0.3)
    roc.legend()
    rows = sorted(
        result["test"]["sources"].items(), key=lambda kv: (kv[1]["kind"] != "speech", kv[0])
    )
    x = np.arange(len(rows))
    for i, m in enumerate(models):
        values = [r[m]["recall"] if r["kind"] == "speech" else r[m]["false_alarm"] for _, r in rows]
        bars.bar(x + (i - 0.5) * 0.4, values, 0.4, label=m)
    bars.set_xticks(x, [n for n, _ in rows], rotation=70, ha="right", fontsize=8)
    bars.set(ylabel="speech sources: recall | others: false-alarm rate", title="per source")
    bars.grid(alpha=0.3, axis="y")
    bars.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def evaluate(
    model: Path, *, silero: bool, limit: int | None, cache_dir: Path | None,
    sizes: dict[str, int], seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    corpus = build_speech_corpus(cache_dir, **sizes, progress=False)
    idx = {s: subset(corpus.split(s)["y"], limit, seed + i) for i, s in enumerate(("val", "test"))}
    x = {s: corpus.split(s)["x"][idx[s]] for s in idx}
    y = {s: corpus.split(s)["y"][idx[s]] for s in idx}
    ours = SpeechCNN(model)
    began = time.perf_counter()
    scores = {s: {"speech_cnn": ours.probs(x[s])} for s in idx}
    seconds = {"speech_cnn": time.perf_counter() - began}
    thresholds = {"speech_cnn": metrics.best_threshold(y["val"], scores["val"]["speech_cnn"])}
    result: dict[str, Any] = {"split": "test", "model": str(model)}
    if silero:
        vad = Silero()
        began = time.perf_counter()
        chunks = {s: vad.chunk_probs(x[s]) for s in idx}
        seconds["silero_vad"] = time.perf_counter() - began
        best = max(("max", "kth"), key=lambda how: _val_accuracy(y["val"], chunks["val"], how))
        for s in idx:
            scores[s]["silero_vad"] = aggregate(chunks[s], best)
        thresholds["silero_vad"] = metrics.best_threshold(y["val"], scores["val"]["silero_vad"])
        result["silero_aggregate"] = best
        result["silero_version"] = SILERO_VERSION
    result["thresholds"] = thresholds
    result["seconds"] = seconds
    result["corpus"] = {"path": str(corpus.path), **{k: corpus.metadata[k] for k in
                        ("version", "seed", "n_train", "n_val", "n_test")}}  # fmt: skip
    result["val"] = {"overall": {m: metrics.summary(y["val"], scores["val"][m], t)
                                 for m, t in thresholds.items()}}  # fmt: skip
    result["test"] = report(corpus, "test", idx["test"], scores["test"], thresholds)
    if silero:  # silero's own default (0.5), for reference beside the val-chosen threshold
        result["test"]["silero_vad_default_0.5"] = metrics.summary(
            y["test"], scores["test"]["silero_vad"], 0.5
        )
    result["_arrays"] = {"y_test": y["test"], **{f"{m}_test": v for m, v in scores["test"].items()}}
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True, help="weights dir, checkpoint or .onnx")
    p.add_argument("--silero", action="store_true", help="also run silero-vad (fetched once)")
    p.add_argument("--limit", type=int, help="score a stratified subset of N windows per split")
    p.add_argument("--cache-dir", type=Path, help="speech corpus cache directory")
    p.add_argument("--windows", type=int, nargs=3, metavar=("TRAIN", "VAL", "TEST"),
                   help="corpus sizes (default: the corpus's own)")  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="where heldout.{json,md} go")
    args = p.parse_args(argv)
    sizes = (
        dict(zip(("n_train", "n_val", "n_test"), args.windows, strict=True)) if args.windows else {}
    )
    result = evaluate(
        args.model, silero=args.silero, limit=args.limit, cache_dir=args.cache_dir, sizes=sizes
    )
    args.out.mkdir(parents=True, exist_ok=True)
    arrays = result.pop("_arrays")
    (args.out / "heldout.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    np.savez_compressed(args.out / "heldout_scores.npz", **arrays)  # for the plots
    plot(result, arrays, args.out / "heldout.png")
    text = markdown(result)
    (args.out / "heldout.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
