"""The serving half of the `convserve` command: serve, classify, detect-speech, models, health.

`add_subcommands(subparsers)` mounts these next to the training commands in the top-level CLI;
`main(argv)` runs them on their own (`python -m service ...`). Client commands talk to
--server (default $CONVSERVE_SERVER, else 127.0.0.1:8001). A server error prints one line
(`convserve: cat.jpg: NOT_FOUND: unknown model 'x'`) and exits 1; `health` exits 0 only when
the server reports SERVING, for container health checks. Client commands speak TLS when given
--tls-ca (and mutual TLS with --tls-cert/--tls-key as well).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from service.client import DEFAULT_SERVER, SERVER_ENV, ConvserveClient, describe_error
from service.errors import SettingsError
from service.settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
Handler = Callable[[argparse.Namespace], int]


def build_parser(prog: str = "convserve") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Serve classic CNNs over gRPC and query a running server."
    )
    add_subcommands(parser.add_subparsers(dest="command", metavar="COMMAND"))
    return parser


def add_subcommands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add serve, classify, detect-speech, models and health to an existing sub-parser set."""
    serve = subparsers.add_parser(
        "serve",
        help="run the gRPC server",
        description="Serve a model repository over gRPC (task API, KServe v2, health, "
        "reflection) with Prometheus metrics. Every flag can also be set as CONVSERVE_<NAME>.",
    )
    Settings.add_arguments(serve)
    serve.set_defaults(func=_serve)

    classify = subparsers.add_parser("classify", help="classify images with a running server")
    classify.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    classify.add_argument("--model", default="", help="model name (default: the server's)")
    classify.add_argument("--version", default="", help="model version (default: latest)")
    classify.add_argument("--top-k", type=int, default=5, help="classes to show (default 5)")
    _client_arguments(classify)
    classify.set_defaults(func=_usage_errors(_classify))

    speech = subparsers.add_parser(
        "detect-speech", help="detect speech in audio files with a running server"
    )
    speech.add_argument("audio", nargs="+", type=Path, metavar="AUDIO")
    speech.add_argument("--model", default="", help="model name (default: the server's)")
    speech.add_argument("--version", default="", help="model version (default: latest)")
    speech.add_argument(
        "--threshold", type=float, default=0.0, help="decision threshold (default: the model's)"
    )
    _client_arguments(speech)
    speech.set_defaults(func=_usage_errors(_detect_speech))

    models = subparsers.add_parser("models", help="list the models of a running server")
    _client_arguments(models)
    models.set_defaults(func=_usage_errors(_models))

    health = subparsers.add_parser(
        "health", help="exit 0 if the server reports SERVING (container health checks)"
    )
    health.add_argument(
        "--service", default="", help="a service or model name (default: the whole server)"
    )
    _client_arguments(health, json_flag=False, timeout=5.0)
    health.set_defaults(func=_usage_errors(_health))

    from service import tune

    tune.add_parser(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Handler | None = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return func(args)


# ---- subcommands ---------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from service.server import EXIT_STARTUP_FAILED, serve  # the server's imports are heavier

    try:
        settings = Settings.from_sources(vars(args))
    except SettingsError as exc:
        print(f"convserve: {exc}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    return asyncio.run(serve(settings))


def _each_file(
    args: argparse.Namespace,
    paths: list[Path],
    call: Callable[[ConvserveClient, bytes], Any],
    show: Callable[[Path, Any, TextIO], None],
) -> int:
    """Send every file, print each reply (or collect them for --json); one bad file fails alone."""
    results: list[dict[str, Any]] = []
    failed = False
    with _client(args) as client:
        for path in paths:
            try:
                reply = call(client, path.read_bytes())
            except (OSError, grpc.RpcError) as exc:
                failed = True
                _error(path, exc)
                continue
            if args.json:
                results.append({"file": str(path), **_dict(reply)})
            else:
                show(path, reply, sys.stdout)
    if args.json:
        _dump(results)
    return EXIT_ERROR if failed else EXIT_OK


def _classify(args: argparse.Namespace) -> int:
    return _each_file(
        args,
        args.images,
        lambda client, data: client.classify(
            data, model=args.model, version=args.version, top_k=args.top_k
        ),
        _print_classes,
    )


def _detect_speech(args: argparse.Namespace) -> int:
    return _each_file(
        args,
        args.audio,
        lambda client, data: client.detect_speech(
            data, model=args.model, version=args.version, threshold=args.threshold
        ),
        _print_speech,
    )


def _models(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            reply = client.list_models()
        except grpc.RpcError as exc:
            _error(None, exc)
            return EXIT_ERROR
    if args.json:
        _dump([_dict(m) for m in reply.models])
        return EXIT_OK
    rows: list[tuple[str, ...]] = [("NAME", "TASK", "VERSIONS", "STATE", "PROVIDER", "DEFAULT")]
    for m in reply.models:
        rows.append(
            (
                m.name,
                m.task or "-",
                ",".join(v.version for v in m.versions) or "-",
                ",".join(v.state for v in m.versions) or "-",
                ",".join(sorted({v.provider for v in m.versions if v.provider})) or "-",
                "yes" if m.is_default else "",
            )
        )
    _table(rows, sys.stdout)
    return EXIT_OK


def _health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        try:
            status = client.health(args.service)
        except grpc.RpcError as exc:
            _error(None, exc)
            return EXIT_ERROR
    print(status)
    return EXIT_OK if status == "SERVING" else EXIT_ERROR


# ---- helpers -------------------------------------------------------------------------------


def _client_arguments(
    parser: argparse.ArgumentParser, *, json_flag: bool = True, timeout: float = 30.0
) -> None:
    parser.add_argument(
        "--server",
        default=None,
        help=f"HOST:PORT of the server (default ${SERVER_ENV}, else {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--timeout", type=float, default=timeout, help=f"seconds per call (default {timeout:g})"
    )
    if json_flag:
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tls = parser.add_argument_group("TLS (plaintext unless one of these is given)")
    tls.add_argument(
        "--tls-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help="CA certificate(s) to verify the server with (default: the system's roots)",
    )
    tls.add_argument(
        "--tls-cert", type=Path, default=None, metavar="PEM", help="client certificate (mutual TLS)"
    )
    tls.add_argument(
        "--tls-key", type=Path, default=None, metavar="PEM", help="client private key (mutual TLS)"
    )
    tls.add_argument(
        "--tls-server-name",
        default="",
        metavar="NAME",
        help="name to expect in the server's certificate (default: the --server host)",
    )


def _client(args: argparse.Namespace) -> ConvserveClient:
    target = args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    try:
        return ConvserveClient(
            target,
            timeout=args.timeout if args.timeout > 0 else None,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_server_name=args.tls_server_name,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    except OSError as exc:
        raise _UsageError(f"{exc.filename}: cannot read: {exc.strerror or exc}") from None


class _UsageError(Exception):
    """A client option that cannot work (an unreadable certificate...): one line, exit 2."""


def _usage_errors(handler: Handler) -> Handler:
    """Wrap a client command so that a _UsageError prints one line and exits 2."""

    @functools.wraps(handler)
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except _UsageError as exc:
            print(f"convserve: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


def _error(path: Path | None, exc: BaseException) -> None:
    if isinstance(exc, grpc.RpcError):
        text = describe_error(exc)
    elif isinstance(exc, OSError):
        text = f"cannot read: {exc.strerror or exc}"
    else:  # pragma: no cover - only the two kinds above are caught
        text = str(exc)
    where = f"{path}: " if path is not None else ""
    print(f"convserve: {where}{text}", file=sys.stderr)


def _dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def _dump(value: object) -> None:
    json.dump(value, sys.stdout, indent=2)
    sys.stdout.write("\n")


def _print_classes(path: Path, reply: Any, out: TextIO) -> None:
    out.write(f"{path}  ({reply.model} v{reply.version})\n")
    rows: list[tuple[str, ...]] = [("RANK", "LABEL", "SCORE", "INDEX")]
    rows += [
        (str(rank), c.label, f"{c.score:.4f}", str(c.index))
        for rank, c in enumerate(reply.classes, 1)
    ]
    _table(rows, out, indent="  ")


def _print_speech(path: Path, reply: Any, out: TextIO) -> None:
    decision = "speech" if reply.is_speech else "no speech"
    out.write(
        f"{path}  ({reply.model} v{reply.version})  {decision}  "
        f"p={reply.speech_probability:.4f}  {reply.duration_s:.2f} s\n"
    )
    if reply.segments:
        spans = ", ".join(f"{s.start_s:.2f}-{s.end_s:.2f}" for s in reply.segments)
        out.write(f"  segments (s): {spans}\n")
    else:
        out.write("  segments (s): none\n")


def _table(rows: Sequence[Sequence[str]], out: TextIO, indent: str = "") -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write(indent + "  ".join(cells).rstrip() + "\n")
