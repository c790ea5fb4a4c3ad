"""`convserve tune MODEL`: search a model's batching config on a running server.

    convserve tune lenet5_fashion --server 127.0.0.1:8001 --p99-ms 10 --time-budget 300 \
        --output tuned/config.pbtxt

Sweeps max batch size, queue delay, batch policy, instance count and intra-op threads
(service/tune/space.py) by coordinate descent (service/tune/search.py): each trial loads a
candidate through Triton's config override on RepositoryModelLoad and measures it with
service/loadgen.py, the load generator benchmarks/ uses. It finds (1) the most throughput whose
p99 stays under --p99-ms and (2) the lowest p99 at a target rate (--rate; default half of (1)),
writes the winner (--goal) as config.pbtxt or prints its diff, and writes every trial as JSON
and a plot (SVG) beside it. The model's own config.pbtxt is loaded back at the end, also after
Ctrl-C. docs/tune.md explains the method and its limits.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from service.client import DEFAULT_SERVER, SERVER_ENV
from service.loadgen import kserve_payloads, metadata_inputs, parse_input
from service.tune.control import Control, TuneError
from service.tune.progress import Progress
from service.tune.report import Report
from service.tune.space import Limits
from service.tune.tuner import Options, Tuner

DESCRIPTION = (
    "Search a model's batching config on a running server: max batch size, queue delay, batch "
    "policy, instance count and intra-op threads, by coordinate descent, each candidate loaded "
    "through the load override and measured with closed-loop load. Finds the most throughput "
    "whose p99 stays under --p99-ms and the lowest p99 at a target rate, writes the winner as "
    "config.pbtxt (or prints the diff) with every trial as JSON and an SVG plot beside it, and "
    "loads the model's own config.pbtxt back at the end, also after Ctrl-C. See docs/tune.md."
)
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "tune",
        help="find a model's best batching config on a running server",
        description=DESCRIPTION,
    )
    p.add_argument("model", metavar="MODEL")
    p.add_argument(
        "--server", default=None, help=f"HOST:PORT (default ${SERVER_ENV}, else {DEFAULT_SERVER})"
    )
    p.add_argument("--p99-ms", type=float, required=True, help="p99 latency budget (ms)")
    p.add_argument(
        "--time-budget", type=float, default=300.0, help="seconds for the whole search (300)"
    )
    p.add_argument("--output", type=Path, default=None, help="write the winning config.pbtxt")
    p.add_argument("--diff", action="store_true", help="print the diff against the current one")
    p.add_argument(
        "--goal",
        choices=("throughput", "latency"),
        default="throughput",
        help="which winner to write: best throughput under the budget, or best p99 at --rate",
    )
    p.add_argument("--rate", type=float, default=0.0, help="target requests/s (0: half the best)")
    p.add_argument(
        "--run-seconds", type=float, default=0.0, help="measured seconds per run (0: from budget)"
    )
    p.add_argument("--max-batch", type=int, default=64, help="largest max_batch_size tried (64)")
    p.add_argument("--max-instances", type=int, default=4, help="most instances tried (4)")
    p.add_argument("--max-threads", type=int, default=4, help="most intra-op threads tried (4)")
    p.add_argument("--max-concurrency", type=int, default=64, help="most requests in flight (64)")
    p.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="NAME:DATATYPE:D1,D2",
        help="an input's shape without the batch axis (default: the model's metadata)",
    )
    p.add_argument("--report", type=Path, default=None, help="trials JSON and plot path stem")
    p.set_defaults(func=command)


def command(args: argparse.Namespace) -> int:
    problem = _usage_problem(args)
    if problem:
        print(f"convserve tune: {problem}", file=sys.stderr)
        return EXIT_USAGE
    target = args.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    run_s = args.run_seconds or min(3.0, max(0.5, args.time_budget / 100))
    options = Options(
        model=args.model,
        p99_ms=args.p99_ms,
        time_budget_s=args.time_budget,
        rate=args.rate,
        run_s=run_s,
        warmup_s=max(0.25, run_s / 4),
        limits=Limits(args.max_batch, args.max_instances, args.max_threads),
        max_concurrency=args.max_concurrency,
    )
    stem = args.report or (
        args.output.parent / args.output.stem if args.output else Path(args.model)
    )
    report = Report(options, target, stem)
    with Control(target) as control:
        try:
            original = control.check(args.model)
            inputs = [parse_input(i) for i in args.input] or metadata_inputs(target, args.model)
            payloads = kserve_payloads(args.model, inputs)
        except (TuneError, ValueError) as exc:
            print(f"convserve tune: {exc}", file=sys.stderr)
            return EXIT_FAILED
        progress = Progress(sys.stderr, options.time_budget_s)
        with asyncio.Runner() as runner:
            tuner = Tuner(options, control, runner, payloads, progress)
            interrupted = False
            try:
                tuner.tune(original)
            except KeyboardInterrupt:
                interrupted = True
            finally:
                progress.close()
                restored = _restore(tuner, args.model, target)
    if tuner.outcome is None:
        return EXIT_INTERRUPTED
    report.write(tuner.outcome, interrupted=interrupted, restored=restored)
    if interrupted:
        print(f"convserve tune: interrupted; {report.artifacts()}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(report.table(tuner.outcome))
    chosen = report.winner(tuner.outcome, args.goal)
    if chosen is None:
        print(f"convserve tune: {report.no_winner(tuner.outcome, args.goal)}", file=sys.stderr)
        return EXIT_FAILED
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(report.config_text(tuner.outcome, args.goal))
        print(f"wrote {args.output} (best {args.goal})")
    if args.diff:
        print(report.diff(tuner.outcome, args.goal), end="")
    print(report.artifacts())
    return EXIT_OK if restored else EXIT_FAILED


def _restore(tuner: Tuner, model: str, target: str) -> bool:
    """Load the model's config.pbtxt back; say so, or say how to do it by hand."""
    try:
        seconds = tuner.restore()
    except TuneError as exc:
        print(
            f"convserve tune: could not load {model}'s config.pbtxt back on {target}: {exc}; "
            "reload it (RepositoryModelLoad without parameters) or restart the server",
            file=sys.stderr,
        )
        return False
    except KeyboardInterrupt:
        print(
            f"convserve tune: interrupted while restoring: {model} may still run a trial config; "
            "reload it (RepositoryModelLoad without parameters)",
            file=sys.stderr,
        )
        return False
    if seconds:
        print(f"restored {model}'s config.pbtxt on {target} ({seconds:.1f} s)", file=sys.stderr)
    return True


def _usage_problem(args: argparse.Namespace) -> str:
    if not args.output and not args.diff:
        return "give --output PATH (write the winning config.pbtxt) or --diff (print its diff)"
    checks = [
        (args.p99_ms > 0, "--p99-ms must be more than 0"),
        (args.time_budget > 0, "--time-budget must be more than 0"),
        (args.rate >= 0, "--rate must be 0 (half the best throughput) or more"),
        (args.run_seconds >= 0, "--run-seconds must be 0 (automatic) or more"),
        (args.max_batch >= 1, "--max-batch must be at least 1"),
        (args.max_instances >= 1, "--max-instances must be at least 1"),
        (args.max_threads >= 0, "--max-threads must be 0 or more"),
        (args.max_concurrency >= 1, "--max-concurrency must be at least 1"),
    ]
    return next((message for ok, message in checks if not ok), "")
