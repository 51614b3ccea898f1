"""`noojee-rejects`: list the reject file by code; re-send records once the cause is fixed.

    noojee-rejects list   [--file noojee-rejects.jsonl] [--format text|json]
    noojee-rejects resend --config config.json [--file ...] [--code 104 ...] [--key C0017 ...]

`resend` sends the chosen records again, exactly as they were sent (same lead, ids and endpoint;
upsert fallbacks apply: 101 -> insert, 112 -> update), through the same paced delivery as a run.
The reject file is then rewritten to hold only what is still pending: lines not chosen, and the
chosen ones that were rejected again (with their new code). Local rejects (code `local`) are
never re-sent: the record itself must be fixed at the source and loaded again.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from target_noojee.cli_config import (
    EXIT_CONFIG,
    EXIT_FAILED,
    config_arg,
    text_streams_escape_what_utf8_cannot_hold,
)
from target_noojee.delivery import DeliveryStopped, Job
from target_noojee.ledger import open_ledger
from target_noojee.pipeline import DEFAULTS, Pipeline
from target_noojee.rejects import exclusive, read_entries, rewrite
from target_noojee.settings import ConfigError, resolve_stream_settings

LOGGER = logging.getLogger("target_noojee")


def group_by_code(entries: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Entries per code, codes in order (numbers first, then `local` and transport labels), each
    code's entries by key: concurrent calls reject in any order, a listing should not change."""
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for entry in sorted(entries, key=lambda e: str(e.get("key"))):
        groups[str(entry.get("code"))].append(entry)
    return dict(sorted(groups.items(), key=lambda kv: (not kv[0].isdigit(), kv[0].zfill(4))))


def selected(entry: Mapping[str, Any], codes: set[str], keys: set[str]) -> bool:
    """Whether a line is chosen by --code / --key (both empty: every line)."""
    if not codes and not keys:
        return True
    return str(entry.get("code")) in codes or str(entry.get("key")) in keys


def _job(pipeline: Pipeline, config: Mapping[str, Any], entry: Mapping[str, Any]) -> Job:
    try:
        fallback = resolve_stream_settings(config, str(entry.get("stream"))).fallback_disposition
    except ConfigError:
        fallback = None
    return pipeline.reject_job(entry, fallback)


def resend(config: Mapping[str, Any], path: Path, codes: set[str], keys: set[str]) -> int:
    """Re-send the chosen rejects; mark them resolved in the ledger's database and rewrite the
    file with what is still pending. Returns the exit code."""
    with exclusive(path):
        entries = read_entries(path)
        rows = [
            (row, e)
            for row, e in stored_rejects(config)
            if selected(e, codes, keys) and e.get("code") != "local"
        ]
        if rows:
            chosen = [e for _row, e in rows]
        else:  # a reject file from before the database kept them
            chosen = [e for e in entries if selected(e, codes, keys) and e.get("code") != "local"]
        kept = [e for e in entries if e not in chosen]
        if not chosen:
            print("nothing to re-send", file=sys.stderr)
            return 0
        with tempfile.TemporaryDirectory(prefix="noojee-resend-") as scratch:
            again = Path(scratch) / "rejects.jsonl"
            pipeline = Pipeline({**config, "reject_file": str(again), "progress_interval_s": 10})
            failure: DeliveryStopped | None = None
            jobs: list[tuple[int, dict[str, Any]]] = []
            try:
                for entry in chosen:
                    job = _job(pipeline, config, entry)
                    jobs.append((job.seq, entry))
                    pipeline.delivery.submit(job)
                pipeline.delivery.wait_settled()
            except DeliveryStopped as exc:
                failure = exc
                pipeline.shutdown()
            finally:
                pipeline.close()
            still = read_entries(again)
            # Chosen lines neither delivered nor rejected again (the run stopped) stay pending.
            settled = [pipeline.watermark.settled(seq) for seq, _e in jobs]
            unsent = [e for (_seq, e), done in zip(jobs, settled, strict=True) if not done]
            unsent += chosen[len(jobs) :]
            rewrite(path, kept + still + unsent)
            if rows:
                ledger = open_ledger(config)
                try:  # a reject sent again is resolved; a new reject of it has its own row
                    ledger.resolve_rejects(
                        row for (row, _e), done in zip(rows, settled, strict=False) if done
                    )
                finally:
                    ledger.close()
        delivered = pipeline.stats.total("delivered")
        print(
            f"re-sent {len(chosen)}: delivered {delivered}, rejected again {len(still)}"
            + (f", not sent {len(unsent)}" if unsent else "")
            + f"; {len(kept + still + unsent)} line(s) left in {path}",
            file=sys.stderr,
        )
        if failure is not None:
            print(f"resend stopped: {failure}", file=sys.stderr)
            return EXIT_CONFIG if failure.setting else EXIT_FAILED
        return 0


def stored_rejects(config: Mapping[str, Any]) -> list[tuple[int, dict[str, Any]]]:
    """The unresolved rejects the ledger's database holds for the config's PBX."""
    if not config.get("base_url"):
        return []
    ledger = open_ledger(config)
    try:
        return ledger.open_rejects()
    finally:
        ledger.close()


def list_entries(path: Path, fmt: str, config: Mapping[str, Any] | None = None) -> int:
    """Print the rejects grouped by code: the ledger's database when the config names the PBX
    (the source of truth), else the reject file."""
    stored = [e for _row, e in stored_rejects(config or {})]
    groups = group_by_code(stored if stored else read_entries(path))
    if fmt == "json":
        print(json.dumps({code: [e.get("key") for e in lines] for code, lines in groups.items()}))
        return 0
    if not groups:
        print(f"{path}: no rejected records")
        return 0
    for code, lines in groups.items():
        sample = str(lines[0].get("message", ""))
        keys = ", ".join(str(e.get("key")) for e in lines[:10])
        more = f" and {len(lines) - 10} more" if len(lines) > 10 else ""
        print(f"{code}: {len(lines)} record(s) — {sample}")
        print(f"    keys: {keys}{more}")
    return 0


CONFIG_HELP = "the target's config file (default: its TARGET_NOOJEE_* environment)"


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    text_streams_escape_what_utf8_cannot_hold()
    parser = argparse.ArgumentParser(prog="noojee-rejects", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("list", help="list rejected records grouped by code")
    show.add_argument("--file", type=Path)
    show.add_argument("--config", type=Path, help=CONFIG_HELP)
    show.add_argument("--format", choices=["text", "json"], default="text")
    again = sub.add_parser("resend", help="re-send chosen records once the cause is fixed")
    again.add_argument("--config", type=Path, help=CONFIG_HELP)
    again.add_argument("--file", type=Path)
    again.add_argument("--code", action="append", default=[], help="a code to re-send (repeat)")
    again.add_argument("--key", action="append", default=[], help="a record key (repeat)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    config = config_arg(args.config, "noojee-rejects")
    if config is None:
        return EXIT_CONFIG
    path = args.file or Path(config.get("reject_file") or DEFAULTS["reject_file"])
    try:
        return _run(args, config, path)
    except ConfigError as exc:  # the ledger cannot open, a setting is wrong: one line
        print(f"noojee-rejects: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _run(args: argparse.Namespace, config: Mapping[str, Any], path: Path) -> int:
    if args.command == "list":
        return list_entries(path, args.format, None if args.file else config)
    for name in ("base_url", "api_key"):
        if not config.get(name):
            print(f"config lacks `{name}`", file=sys.stderr)
            return EXIT_CONFIG
    try:
        return resend(config, path, set(args.code), set(args.key))
    except BlockingIOError:
        print(f"a target-noojee run is writing {path}; try again when it ends", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
