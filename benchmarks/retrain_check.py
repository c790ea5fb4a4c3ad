"""Retrain a shipped model from its card's recipe and compare with the card.

    .venv/bin/python benchmarks/retrain_check.py lenet5_fashion [--weights-dir weights]

Runs the card's `convserve train` recipe (same seed, same torch thread count) into
.cache/retrain/, then reports whether the weights are bit-identical to the shipped
model.safetensors (they are, on the machine and torch build the card names: training is
deterministic) and how every validation metric compares. Another CPU, another torch build or
another thread count may round differently and give close but unequal weights; the metric
deltas say how close. Results: benchmarks/results/retrain-<name>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    import torch
    from safetensors.torch import load_file

    from export.card import DEFAULT_WEIGHTS_DIR, WEIGHTS_FILENAME, read_card, retrain_config
    from export.checkpoint import load_checkpoint
    from export.train import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("name", help="a folder of weights/, e.g. lenet5_fashion")
    parser.add_argument("--weights-dir", type=Path, default=DEFAULT_WEIGHTS_DIR)
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "retrain")
    args = parser.parse_args(argv)
    folder = args.weights_dir / args.name
    card = read_card(folder)
    threads = int(card["training"].get("torch_threads") or torch.get_num_threads())
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = train(retrain_config(card, args.out / args.name, progress=False))
    seconds = time.perf_counter() - start
    shipped = load_file(str(folder / WEIGHTS_FILENAME))
    retrained = load_checkpoint(result.last)["state_dict"]
    identical = shipped.keys() == retrained.keys() and all(
        torch.equal(shipped[k], retrained[k].contiguous()) for k in shipped
    )
    final = result.history[-1]
    metrics = {
        k: {
            "card": card["metrics"][k],
            "retrained": final[k],
            "delta": final[k] - card["metrics"][k],
        }
        for k in final
        if k.startswith("val_") and isinstance(card["metrics"].get(k), float)
    }
    report = {
        "name": args.name,
        "command": card["command"],
        "torch_threads": threads,
        "wall_seconds": round(seconds, 1),
        "card_wall_seconds": card["training"]["wall_seconds"],
        "weights_bit_identical": identical,
        "metrics": metrics,
    }
    out = ROOT / "benchmarks" / "results" / f"retrain-{args.name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
