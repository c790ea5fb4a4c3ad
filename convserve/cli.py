"""The `convserve` command: serving commands from service/, training commands from export/.

Serving (no torch needed): serve, classify, detect-speech, models, health, tune.
Training (the [train] extra): train, ship, export, zoo, build-defaults.
Each side registers its subcommands with ``add_subcommands(subparsers)``; every subcommand sets
``func`` (args -> exit code). When torch is missing, the training commands still appear in
``--help`` and explain how to install them instead of failing with an ImportError.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence

from convserve import __version__

TRAINING_COMMANDS = ("train", "export", "zoo", "build-defaults")


def _training_missing(args: argparse.Namespace) -> int:
    print(
        f"convserve {args.command}: needs the training extra (PyTorch): "
        "pip install torch==2.13.0 && pip install 'convserve[train]'",
        file=sys.stderr,
    )
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convserve",
        description="Train, export and serve classic CNNs (ONNX Runtime over gRPC).",
    )
    parser.add_argument("--version", action="version", version=f"convserve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from service import cli as service_cli

    service_cli.add_subcommands(sub)
    if importlib.util.find_spec("torch") is not None:
        from export import cli as export_cli

        export_cli.add_subcommands(sub)
    else:
        for name in TRAINING_COMMANDS:
            p = sub.add_parser(name, help=f"{name} (needs the [train] extra)")
            p.set_defaults(func=_training_missing)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        return 130
    return code
