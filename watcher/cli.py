"""The `registry-watcher` command line: argument parsing and exit codes, nothing else.

Exit codes are the contract's: verify exits 0 for verified/no_policy, 1 for a failing
verdict, 2 for usage or configuration errors, 3 when it could not decide.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from watcher import __version__
from watcher.config import Config, ConfigError, load_config
from watcher.engine import Engine
from watcher.logs import configure_logging
from watcher.refs import ImageReference, ReferenceError
from watcher.verdicts import ImageVerdict, Verdict
from watcher.verify.trust import TrustError, load_trust

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR = 0, 1, 2, 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="registry-watcher",
        description="Watch container registries and prove who signed every pushed digest.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--log-format", choices=["json", "console"], default="json")
    parser.add_argument(
        "--log-level", default=None, help="default: info for run, warning otherwise"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    verify = sub.add_parser("verify", help="verify one image (tag or digest) now")
    verify.add_argument("-c", "--config", required=True, type=Path)
    verify.add_argument("image")
    verify.add_argument("--output", choices=["text", "json"], default="text")

    run = sub.add_parser("run", help="the daemon: webhooks, polling, verification, metrics")
    run.add_argument("-c", "--config", required=True, type=Path)

    check = sub.add_parser("check-config", help="validate the config and policy files")
    check.add_argument("-c", "--config", required=True, type=Path)
    return parser


def _print_text(verdict: ImageVerdict) -> None:
    doc = verdict.to_json()
    print(f"{doc['image']}  {doc['verdict']}  (severity {doc['severity']})")
    for p in doc["policies"]:
        print(f"  policy {p['name']} [{p['mode']}]: {p['verdict']}")
    for s in doc["signatures"]:
        who = s["subject"] or (s["key_id"] and f"key {s['key_id'][:16]}…") or "?"
        state = "valid" if s["valid"] else f"INVALID: {s['error']}"
        tlog = f" tlog #{s['tlog']['log_index']}" if s["tlog"] else ""
        print(f"  signature [{s['format']}] {who}: {state}{tlog}")
    for a in doc["attestations"]:
        state = "valid" if a["valid"] else f"INVALID: {a['error']}"
        print(f"  attestation {a['predicate_type']} by {a['subject'] or '?'}: {state}")
    for s in doc["extra_signers"]:
        print(f"  extra signer: {s['subject'] or s['key_id']} (issuer {s['issuer']})")
    for r in doc["reasons"]:
        print(f"  - {r}")


def _exit_code(verdict: ImageVerdict) -> int:
    if verdict.error or verdict.verdict is Verdict.ERROR:
        return EXIT_ERROR
    return EXIT_FAIL if verdict.verdict.failing else EXIT_OK


async def verify_image(config: Config, image: str, output: str) -> int:
    """Verify one image now and print its verdict; returns the exit code."""
    try:
        ref = ImageReference.parse(image)
    except ReferenceError as exc:
        print(f"registry-watcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trust = load_trust(config.trust.trusted_root, config.state_dir)
    except TrustError as exc:
        print(f"registry-watcher: {exc}", file=sys.stderr)
        return EXIT_USAGE
    async with Engine(config, trust) as engine:
        verdict = await engine.verify_reference(ref)
    if output == "json":
        print(json.dumps(verdict.to_json(), indent=2))
    else:
        _print_text(verdict)
    return _exit_code(verdict)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and `python -m watcher`."""
    args = _parser().parse_args(argv)
    level = args.log_level or ("info" if args.command == "run" else "warning")
    configure_logging(args.log_format, level)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"registry-watcher: invalid configuration: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.command == "check-config":
        n = len(config.policies)
        print(f"{args.config}: valid ({len(config.registries)} registries, {n} policies)")
        return EXIT_OK
    if args.command == "run":
        from watcher.daemon.app import run_daemon

        return asyncio.run(run_daemon(args.config, config))
    if args.command == "verify":
        return asyncio.run(verify_image(config, args.image, args.output))
    return EXIT_USAGE
