"""The `registry-watcher` command line: argument parsing and exit codes, nothing else.

Exit codes are the contract's: verify and scan exit 0 for verified/no_policy, 1 for a failing
verdict, 2 for usage or configuration errors, 3 when something could not be decided; trace
exits 0 when the digest is known and 4 when the watcher never saw it.
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
from watcher.metrics import Metrics
from watcher.policy.glob import GlobError
from watcher.refs import Digest, ImageReference, ReferenceError, parse_digest
from watcher.registry.errors import RegistryError
from watcher.store import StoreMissing, StoreOutdated, StoreUnavailable, open_store
from watcher.store.sqlite import SqliteStore
from watcher.verdicts import ImageVerdict, Verdict
from watcher.verify.trust import Trust, TrustError, load_trust

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_ERROR, EXIT_UNKNOWN = 0, 1, 2, 3, 4


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

    scan = sub.add_parser(
        "scan", help="verify every existing tag of the watched repositories; coverage table"
    )
    scan.add_argument("-c", "--config", required=True, type=Path)
    scan.add_argument(
        "globs",
        nargs="*",
        metavar="GLOB",
        help="only repositories matching: acme/* (repository glob) or host/acme/** (image glob)",
    )
    scan.add_argument("--output", choices=["text", "json"], default="text")
    scan.add_argument(
        "--recheck", action="store_true", help="verify again even where a stored verdict holds"
    )
    scan.add_argument(
        "--policy-file",
        type=Path,
        action="append",
        default=[],
        help="ClusterImagePolicy file overlaid on the configured policies (with --what-if)",
    )
    scan.add_argument(
        "--what-if",
        action="store_true",
        help="judge the recorded inventory under --policy-file; changes nothing",
    )

    trace = sub.add_parser("trace", help="the recorded history of one digest")
    trace.add_argument("-c", "--config", required=True, type=Path)
    trace.add_argument("target", metavar="DIGEST|IMAGE")
    trace.add_argument("--output", choices=["text", "json"], default="text")

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


def _fail(message: str, code: int) -> int:
    print(f"registry-watcher: {message}", file=sys.stderr)
    return code


async def scan_command(
    config: Config,
    globs: Sequence[str],
    *,
    output: str = "text",
    recheck: bool = False,
    policy_files: Sequence[Path] = (),
    what_if: bool = False,
    tty: bool | None = None,
    metrics: Metrics | None = None,
) -> int:
    """``scan`` (or, with ``what_if``, a what-if run); prints the report, returns the code."""
    from watcher.scan import RichProgress, Scanner, check_globs, render_text

    if what_if != bool(policy_files):
        return _fail("--what-if and --policy-file go together", EXIT_USAGE)
    if what_if and recheck:
        return _fail("--recheck does not apply to --what-if (it reads the record)", EXIT_USAGE)
    try:
        check_globs(globs)
        trust = load_trust(config.trust.trusted_root, config.state_dir)
    except (GlobError, TrustError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    if what_if:
        return await _what_if(config, trust, globs, policy_files, output, metrics)
    try:
        store = await open_store(config.store.url)
    except StoreUnavailable as exc:
        return _fail(str(exc), EXIT_USAGE)
    show_progress = sys.stderr.isatty() if tty is None else tty
    try:
        async with Engine(config, trust, metrics) as engine:
            scanner = Scanner(config, engine, store, recheck=recheck)
            if show_progress:
                with RichProgress() as progress:
                    scanner.progress = progress
                    report = await scanner.run(globs)
            else:
                report = await scanner.run(globs)
    finally:
        await store.close()
    if output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(render_text(report))
    return report.exit_code


async def _what_if(
    config: Config,
    trust: Trust,
    globs: Sequence[str],
    policy_files: Sequence[Path],
    output: str,
    metrics: Metrics | None,
) -> int:
    from watcher.whatif import load_proposed, what_if

    try:
        proposed = load_proposed(policy_files)
    except ConfigError as exc:
        return _fail(f"invalid policy file: {exc}", EXIT_USAGE)
    try:
        store = await open_store(config.store.url, readonly=True)
    except (StoreMissing, StoreOutdated, StoreUnavailable) as exc:
        return _fail(f"{exc}; run scan (or the daemon) first", EXIT_USAGE)
    try:
        async with Engine(config, trust, metrics) as engine:
            report = await what_if(config, engine, store, policy_files, proposed, globs)
    finally:
        await store.close()
    if output == "json":
        print(json.dumps(report.to_json(), indent=2))
    else:
        sys.stdout.write(report.render_text())
    return report.exit_code


async def _resolve(
    config: Config, trust: Trust, store: SqliteStore, target: str
) -> tuple[Digest | None, str]:
    """The digest a DIGEST|IMAGE argument names: the store's tags first, then the registry."""
    if target.startswith("sha256:"):
        return parse_digest(target), ""
    ref = ImageReference.parse(target)
    if ref.digest is not None:
        return ref.digest, ""
    tag = ref.tag or "latest"
    registry = config.registry_for(ref)
    name = registry.name if registry is not None else ref.registry
    known = (await store.current_tags(name, ref.repository)).get(tag)
    if known is not None:
        return known, ""
    async with Engine(config, trust) as engine:
        _, client = await engine.client_for(ref)
        head = await client.head_manifest(ref.repository, tag)
    if head is None:
        return None, f"{ref.name}:{tag} does not exist in the registry"
    return head.digest, ""


async def trace_command(config: Config, target: str, output: str = "text") -> int:
    """``trace``: print one digest's recorded history; 4 when it was never seen."""
    from watcher.trace import build_trace, render_text

    try:
        trust = load_trust(config.trust.trusted_root, config.state_dir)
    except TrustError as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        store = await open_store(config.store.url, readonly=True)
    except StoreMissing as exc:
        return _fail(f"{target}: unknown digest ({exc})", EXIT_UNKNOWN)
    except (StoreOutdated, StoreUnavailable) as exc:
        return _fail(str(exc), EXIT_USAGE)
    try:
        try:
            digest, why = await _resolve(config, trust, store, target)
        except ReferenceError as exc:
            return _fail(str(exc), EXIT_USAGE)
        except RegistryError as exc:
            return _fail(f"cannot resolve {target}: {exc}", EXIT_ERROR)
        if digest is None:
            return _fail(f"{target}: unknown image: {why}", EXIT_UNKNOWN)
        doc = await build_trace(store, config, digest, public_good=trust.is_public_good)
    finally:
        await store.close()
    if doc is None:
        return _fail(
            f"{digest}: unknown digest: this watcher never recorded it (store {config.store.url})",
            EXIT_UNKNOWN,
        )
    if output == "json":
        print(json.dumps(doc, indent=2))
    else:
        sys.stdout.write(render_text(doc))
    return EXIT_OK


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
    if args.command == "scan":
        return asyncio.run(
            scan_command(
                config,
                args.globs,
                output=args.output,
                recheck=args.recheck,
                policy_files=args.policy_file,
                what_if=args.what_if,
            )
        )
    if args.command == "trace":
        return asyncio.run(trace_command(config, args.target, args.output))
    return EXIT_USAGE
