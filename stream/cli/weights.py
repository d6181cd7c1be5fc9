"""``pedsam weights``: list the official SAM checkpoints, verify a local file, download one."""

from __future__ import annotations

import argparse
import sys

from pedsam.workers.models import PRESETS
from pedsam.workers.weights import OFFICIAL, download, verify

DEFAULT_DIR = "checkpoints"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    sub.add_parser("list", help="the official checkpoints: preset, file, size, MD5, URL")
    check = sub.add_parser("verify", help="check a local checkpoint: size, structure, MD5")
    check.add_argument("path", help="the .pth file")
    check.add_argument("--model", choices=sorted(PRESETS),
                       help="architecture it should fit (default: from its official file name)")
    fetch = sub.add_parser("download", help="download an official checkpoint (needs the network)")
    fetch.add_argument("model", choices=sorted(OFFICIAL))
    fetch.add_argument("--dir", default=DEFAULT_DIR, help=f"folder to put it in (default {DEFAULT_DIR}/)")
    fetch.add_argument("--url", help="a mirror to fetch from instead of Meta's address")
    fetch.add_argument("--timeout", type=float, default=15.0, help="network timeout, seconds (default 15)")


def run(args: argparse.Namespace) -> int:
    if args.weights_command == "list":
        print(f"{'model':6} {'file':22} {'bytes':>13}  {'md5':32}  url")
        for entry in OFFICIAL.values():
            print(f"{entry.preset:6} {entry.file_name:22} {entry.size:>13,}  {entry.md5}  {entry.url}")
        return 0
    if args.weights_command == "verify":
        checks = verify(args.path, args.model)
        marks = {True: "ok  ", False: "FAIL", None: "n/a "}
        for check in checks:
            print(f"{marks[check.ok]} {check.name:9} {check.detail}")
        failed = [c.name for c in checks if c.ok is False]
        official = all(c.ok for c in checks)
        if failed:
            print(f"{args.path}: does not pass: {', '.join(failed)}")
        elif official:
            print(f"{args.path}: the official checkpoint")
        else:
            print(f"{args.path}: loads as {args.model}; not an official release, so nothing to compare hashes with")
        return 1 if failed else 0

    def show(done: int, total: int | None) -> None:
        share = f" of {total / 1e6:.0f} MB ({100 * done / total:.0f}%)" if total else ""
        print(f"\r{done / 1e6:.0f} MB{share}", end="", file=sys.stderr, flush=True)

    path = download(args.model, args.dir, url=args.url, timeout=args.timeout, progress=show)
    print(file=sys.stderr)
    print(f"{path}: downloaded and verified; use --checkpoint {path}")
    return 0
