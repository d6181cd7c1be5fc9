"""``pedsam weights``: list the official SAM checkpoints, verify a local file, download one."""

from __future__ import annotations

import sys

from pedsam.stream.cli.settings import Values
from pedsam.workers.weights import OFFICIAL, download, verify


def run(args: Values) -> int:
    if args["action"] == "list":
        print(f"{'model':6} {'file':22} {'bytes':>13}  {'md5':32}  url")
        for entry in OFFICIAL.values():
            print(f"{entry.preset:6} {entry.file_name:22} {entry.size:>13,}  {entry.md5}  {entry.url}")
        return 0
    if args["action"] == "verify":
        path, model = args["path"], args["model"]
        checks = verify(path, model)
        marks = {True: "ok  ", False: "FAIL", None: "n/a "}
        for check in checks:
            print(f"{marks[check.ok]} {check.name:9} {check.detail}")
        failed = [c.name for c in checks if c.ok is False]
        official = all(c.ok for c in checks)
        if failed:
            print(f"{path}: does not pass: {', '.join(failed)}")
        elif official:
            print(f"{path}: the official checkpoint")
        else:
            print(f"{path}: loads as {model}; not an official release, so nothing to compare hashes with")
        return 1 if failed else 0

    def show(done: int, total: int | None) -> None:
        share = f" of {total / 1e6:.0f} MB ({100 * done / total:.0f}%)" if total else ""
        print(f"\r{done / 1e6:.0f} MB{share}", end="", file=sys.stderr, flush=True)

    path = download(args["model"], args["dir"], url=args["url"], timeout=args["timeout"], progress=show)
    print(file=sys.stderr)
    print(f"{path}: downloaded and verified; use --checkpoint {path}")
    return 0
