"""`python -m bench [NAME ...]`: run benchmarks, print their tables, write the results file."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from bench.common import (
    BenchUnavailable,
    Lab,
    Section,
    default_results_path,
    machine_facts,
    write_results,
)
from watcher.logs import configure_logging

NAMES = ("throughput", "latency", "requests", "poll", "memory", "startup")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="registry-watcher benchmarks (see bench/README.md). No NAME: run all.",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"one or more of: {', '.join(NAMES)}, all"
    )
    p.add_argument(
        "--repeat", type=int, default=3, help="runs per figure; medians are reported (3)"
    )
    p.add_argument("--n", type=int, default=200, help="throughput: images (200)")
    p.add_argument(
        "--naive-sample",
        type=int,
        default=10,
        help="throughput: images the CLI loop verifies per run (10)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=None,
        help="throughput: in flight (the registry's max_concurrency, 8)",
    )
    p.add_argument(
        "--rates", type=_floats, default=[10.0, 50.0, 100.0], help="latency: pushes/s (10,50,100)"
    )
    p.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="latency: seconds per rate (10; the issue's figure is 30)",
    )
    p.add_argument("--per-format", type=int, default=5, help="requests: digests per format (5)")
    p.add_argument("--repos", type=int, default=20, help="poll: repositories (20)")
    p.add_argument("--tags", type=int, default=20, help="poll: tags per repository (20)")
    p.add_argument("--changed", type=float, default=1.0, help="poll: percent of tags changed (1)")
    p.add_argument(
        "--sizes",
        type=_ints,
        default=[10_000, 100_000],
        help="memory: digests in the store (10000,100000)",
    )
    p.add_argument(
        "--soak",
        type=float,
        default=0.5,
        help="memory: soak minutes (0.5; the issue's figure is 10)",
    )
    p.add_argument("--soak-rate", type=float, default=10.0, help="memory: soak pushes/s (10)")
    p.add_argument(
        "--smoke", action="store_true", help="tiny sizes, one run each: checks the benchmarks work"
    )
    p.add_argument(
        "--out", type=Path, default=None, help="results file (bench/results/<date>.json)"
    )
    p.add_argument(
        "--workdir", type=Path, default=None, help="where registries and stores live (a temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the workdir")
    return p


def apply_smoke(args: argparse.Namespace) -> None:
    """Tiny sizes: every benchmark runs end to end in seconds (the test suite's smoke run)."""
    args.repeat = 1
    args.n = 8
    args.naive_sample = 1
    args.rates = [5.0]
    args.duration = 1.0
    args.per_format = 1
    args.repos = 2
    args.tags = 3
    args.changed = 20.0
    args.sizes = [200]
    args.soak = 0.04
    args.soak_rate = 5.0


def runners(args: argparse.Namespace) -> dict[str, Callable[[Lab], Awaitable[Section]]]:
    from bench import latency, memory, per_digest, poll, startup, throughput

    return {
        "throughput": lambda lab: throughput.run(
            lab,
            n=args.n,
            repeat=args.repeat,
            naive_sample=args.naive_sample,
            concurrency=args.concurrency,
        ),
        "latency": lambda lab: latency.run(
            lab, rates=args.rates, duration=args.duration, repeat=args.repeat
        ),
        "requests": lambda lab: per_digest.run(lab, per_format=args.per_format, repeat=args.repeat),
        "poll": lambda lab: poll.run(
            lab, repos=args.repos, tags=args.tags, changed_percent=args.changed, repeat=args.repeat
        ),
        "memory": lambda lab: memory.run(
            lab,
            sizes=args.sizes,
            repeat=args.repeat,
            soak_minutes=args.soak,
            soak_rate=args.soak_rate,
        ),
        "startup": lambda lab: startup.run(lab, repeat=args.repeat),
    }


async def run_all(
    args: argparse.Namespace, names: Sequence[str], lab: Lab
) -> tuple[list[Section], int]:
    sections: list[Section] = []
    failures = 0
    table = runners(args)
    for name in names:
        print(f"-- running {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            section = await table[name](lab)
        except BenchUnavailable as exc:
            print(f"bench: {name} cannot run here: {exc}", file=sys.stderr)
            failures += 1
            continue
        except Exception:
            print(f"bench: {name} failed:\n{traceback.format_exc()}", file=sys.stderr)
            failures += 1
            continue
        section.seconds = time.perf_counter() - started
        sections.append(section)
        print(section.render(), flush=True)
        print(flush=True)
    return sections, failures


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    names = list(dict.fromkeys(args.names)) or ["all"]
    if "all" in names:
        names = list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        parser().error(
            f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(NAMES)}"
        )
    if args.repeat < 1:
        parser().error("--repeat must be at least 1")
    if args.smoke:
        apply_smoke(args)
    configure_logging("json", "warning")
    started = datetime.now(UTC)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="registry-watcher-bench-"))
    lab = Lab(workdir)
    try:
        machine = machine_facts(workdir)
        sections, failures = asyncio.run(run_all(args, names, lab))
    finally:
        lab.close()
        if not args.keep and args.workdir is None:
            lab.remove()
    out = args.out or default_results_path(started)
    raw_argv = list(sys.argv[1:] if argv is None else argv)
    write_results(out, sections, machine, raw_argv, started)
    print(f"results: {out}")
    return 1 if failures else 0
