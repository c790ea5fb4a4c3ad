"""The training half of ``convserve``: ``train``, ``ship``, ``export``, ``zoo``, ``build-defaults``.

``convserve/cli.py`` mounts these next to the serving commands through :func:`add_subcommands`;
:func:`main` runs them alone (``python -m export.cli ...``). Every handler returns an exit code and
turns an :class:`ExportError` (or a data-layer error) into one line on stderr, exit status 1::

    convserve train: error: unknown architecture 'lenet6'; known: alexnet, ... (see `convserve zoo`)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from export.errors import ExportError

Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        from export.data.errors import DatasetError

        try:
            return handler(args)
        except (ExportError, DatasetError) as exc:
            print(f"convserve {args.command}: error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"convserve {args.command}: interrupted", file=sys.stderr)
            return 130

    return run


def _threads(args: argparse.Namespace) -> None:
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)


def _train(args: argparse.Namespace) -> int:
    from export.train import TrainConfig, train

    _threads(args)
    cfg = TrainConfig(
        arch=args.arch,
        dataset=args.dataset,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        optimizer=args.optimizer,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        limit=args.limit,
        eval_limit=args.eval_limit,
        out=args.out,
        resume=args.resume,
        seed=args.seed,
        device=args.device,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
    )
    result = train(cfg)
    best = f"{result.best_value:.4f}" if result.best_value is not None else "-"
    print(f"best validation {result.best_metric} {best} in {result.seconds:.1f}s")
    print(f"checkpoints: {result.last} {result.best}")
    print(f"curves: {result.curves}")
    return 0


def _ship(args: argparse.Namespace) -> int:
    from export.card import CARD_MD, DEFAULT_WEIGHTS_DIR, ship

    _threads(args)
    folder = ship(args.checkpoint, args.name, args.weights_dir or DEFAULT_WEIGHTS_DIR, args.metrics)
    print(f"shipped {args.checkpoint} -> {folder}/ (model.safetensors, card.json, {CARD_MD})")
    return 0


def _default_name(source: Any) -> str:
    dataset = str(source.metadata.get("dataset") or "")
    suffix = {"fashion-mnist": "fashion", "speech": "", "": ""}.get(dataset, Path(dataset).name)
    name = f"{source.arch}_{suffix}" if suffix and suffix not in source.arch else source.arch
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name)


def _export(args: argparse.Namespace) -> int:
    from export.checkpoint import looks_like_checkpoint
    from export.onnx_export import export_to_repository, source_from_arch, source_from_checkpoint

    _threads(args)
    if looks_like_checkpoint(args.model):
        if args.pretrained:
            raise ExportError("--pretrained applies to an architecture name, not a checkpoint")
        source = source_from_checkpoint(args.model)
    else:
        source = source_from_arch(args.model, pretrained=args.pretrained, seed=args.seed)
    name = args.name or _default_name(source)
    result = export_to_repository(
        source,
        args.repository,
        name,
        fp16=args.fp16,
        opset=args.opset,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
    )
    precision = "fp16 (fp32 input/output)" if args.fp16 else "fp32"
    print(f"exported {source.arch} from {source.origin}")
    print(f"  -> {result.model_path} (version {result.version}, opset {result.opset}, {precision})")
    for p in result.parity:
        print(
            f"  parity batch {p.batch_size}: max abs diff {p.max_abs_diff:.3g} "
            f"(tolerance {p.tolerance:.3g}, onnxruntime CPU)"
        )
    return 0


def _zoo(args: argparse.Namespace) -> int:
    from export.models.zoo import zoo_table

    rows = zoo_table()
    if args.json:
        import json

        print(json.dumps(rows, indent=2, default=list))
        return 0
    print(format_zoo(rows))
    return 0


def format_zoo(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: name, family, task, parameters, input shape, classes."""
    header = ("architecture", "family", "task", "parameters", "input", "classes")
    body = [
        (
            str(r["name"]),
            str(r["family"]),
            str(r["task"]).replace("_", " "),
            f"{int(r['params']):,}",
            "×".join(str(d) for d in r["input_shape"]),
            str(r["num_classes"]),
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    right = {3, 5}
    lines = [
        "  ".join(
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in [header, *body]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _build_defaults(args: argparse.Namespace) -> int:
    from export.card import DEFAULT_WEIGHTS_DIR
    from export.defaults import build_defaults

    _threads(args)
    results = build_defaults(
        args.repository,
        quick=args.quick,
        retrain=args.retrain,
        weights_dir=args.weights_dir or DEFAULT_WEIGHTS_DIR,
        cache_dir=args.cache_dir,
        progress=not args.no_progress,
        only=tuple(args.only) if args.only else None,
    )
    print(f"\n{'model':<16} {'status':<8} {'wall s':>8} {'top-1':>8}  split")
    for r in results:
        top1 = f"{r.top1:.4f}" if r.top1 is not None else "-"
        print(f"{r.name:<16} {r.status:<8} {r.seconds:>8.1f} {top1:>8}  {r.top1_split or '-'}")
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register train, export, zoo and build-defaults on an ``add_subparsers()`` object."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")

    p = subparsers.add_parser(
        "train",
        parents=[common],
        help="train an architecture",
        description="Train ARCH; checkpoints and curves go to OUT/ARCH-DATASET/.",
    )
    p.add_argument("arch", help="registered architecture (see `convserve zoo`)")
    p.add_argument(
        "--dataset",
        default="fashion-mnist",
        help="fashion-mnist, speech, or an image-folder PATH (default: fashion-mnist)",
    )
    p.add_argument("--epochs", type=int, default=5, help="total epochs (default: 5)")
    p.add_argument("--batch-size", type=int, help="default: 128 images, 64 speech windows")
    p.add_argument("--lr", type=float, help="peak learning rate (default: 2e-3 adamw, 0.05 sgd)")
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.0)
    p.add_argument("--limit", type=int, help="train on a random subset of N samples")
    p.add_argument("--eval-limit", type=int, help="evaluate on a random subset of N samples")
    p.add_argument("--out", type=Path, default=Path("runs"), help="output root (default: runs)")
    p.add_argument("--resume", type=Path, metavar="CKPT", help="continue from a checkpoint")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    p.add_argument("--data-root", type=Path, help="Fashion-MNIST IDX directory")
    p.add_argument("--cache-dir", type=Path, help="speech corpus cache directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_guarded(_train))

    p = subparsers.add_parser(
        "ship",
        parents=[common],
        help="turn a training run into shipped weights + model card",
        description="Write WEIGHTS_DIR/NAME/: model.safetensors, card.json, card.md and "
        "curves.png from CHECKPOINT (usually a run's last.pt) and an optional JSON of extra "
        "metrics, data sources and limitations (see export/card.py).",
    )
    p.add_argument("checkpoint", type=Path, metavar="CHECKPOINT")
    p.add_argument("--name", required=True, help="model name, e.g. resnet_fashion")
    p.add_argument("--weights-dir", type=Path, help="default: the repository's weights/")
    p.add_argument("--metrics", type=Path, metavar="JSON", help="extra metrics/sources/limits")
    p.set_defaults(func=_guarded(_ship))

    p = subparsers.add_parser(
        "export",
        parents=[common],
        help="export to ONNX into a repository",
        description="Export ARCH (random or --pretrained weights) or a "
        "CHECKPOINT to <repository>/<name>/<next version>/model.onnx, "
        "with config.pbtxt and labels.txt, after an ONNX Runtime parity check.",
    )
    p.add_argument("model", metavar="ARCH|CHECKPOINT")
    p.add_argument(
        "--repository",
        type=Path,
        default=Path("model_repository"),
        help="model repository directory (default: model_repository)",
    )
    p.add_argument("--name", help="model name in the repository (default: from arch and dataset)")
    p.add_argument("--pretrained", action="store_true", help="real ImageNet weights (mobilenet_v2)")
    p.add_argument(
        "--fp16", action="store_true", help="FP16 weights/activations, FP32 input/output"
    )
    p.add_argument("--max-batch-size", type=int, default=64)
    p.add_argument("--max-queue-delay-us", type=int, default=1000)
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--seed", type=int, default=0, help="seed of random weights")
    p.set_defaults(func=_guarded(_export))

    p = subparsers.add_parser("zoo", help="list the registered architectures")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_guarded(_zoo))

    p = subparsers.add_parser(
        "build-defaults",
        parents=[common],
        help="export the shipped default models into a model repository",
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train each model from its card's recipe instead of exporting the shipped weights",
    )
    p.add_argument("--weights-dir", type=Path, help="default: the repository's weights/")
    p.add_argument("--repository", type=Path, default=Path("model_repository"))
    p.add_argument(
        "--quick", action="store_true", help="any training: 1 epoch on small subsets (CI, tests)"
    )
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path(".cache/convserve"),
        help="checkpoints and reports (default: .cache/convserve)",
    )
    p.add_argument("--only", nargs="+", metavar="NAME", help="build only these default models")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_guarded(_build_defaults))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="convserve", description="convserve training commands")
    add_subcommands(parser.add_subparsers(dest="command", required=True, metavar="COMMAND"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
