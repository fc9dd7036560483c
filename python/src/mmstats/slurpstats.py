"""``python -m mmstats.slurpstats``: dump every metric of every stats file,
as text or as the JSON array of format-spec.md §7.7.

With ``--json`` the output is byte for byte what the Rust ``slurpstats
--json`` prints for the same files. Exit status: 0 if everything was read,
1 if an explicit path or a file in your own directory failed, 2 for a
usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional, TextIO

from . import _format as F
from .reader import Histogram, ReadLimits, Snapshot, _Unavailable, dumps, file_json, read_all, scan


def _size(s: str) -> int:
    mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(s[-1:].lower(), 1)
    digits = s[:-1] if mult > 1 else s
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"{s!r} is not a size in bytes (e.g. 65536, 64K, 1M)")
    return int(digits) * mult


def _text_bytes(s: str) -> int:
    n = _size(s)
    if n > F.MAX_TEXT_CAPACITY:
        raise argparse.ArgumentTypeError(
            f"{n} is over {F.MAX_TEXT_CAPACITY} (1M), the largest text capacity the format allows"
        )
    return n


def _age(ns: int) -> str:
    s = max(0.0, time.time() - ns / 1e9)
    if s < 60:
        return f"{s:.2f}s"
    if s < 3600:
        return f"{s / 60:.1f}m"
    if s < 86400:
        return f"{s / 3600:.1f}h"
    return f"{s / 86400:.1f}d"


def _duration(ns: float) -> str:
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g}{unit}"
    return f"{ns:.3g}ns"


def _liveness(s: Snapshot) -> str:
    if s.archive is not None:
        n = s.archive["writers"]
        return f"archive of {n} writer{'' if n == 1 else 's'}"
    if s.alive:
        return {F.STATE_ACTIVE: "alive", F.STATE_EXITED: "exited (process alive)"}.get(
            s.state, f"alive (state word {s.state})"
        )
    return {F.STATE_ACTIVE: "dead (did not close)", F.STATE_EXITED: "dead (exited)"}.get(
        s.state, f"dead (state word {s.state})"
    )


def _value(f) -> str:  # noqa: ANN001
    v = f.value
    if isinstance(v, _Unavailable):
        return f"<unavailable: {v.reason}>"
    if isinstance(v, str):
        return dumps(v)
    if isinstance(v, Histogram):
        n = v.count()
        if n == 0:
            return "count=0"
        show = _duration if f.kind == F.TIMER else (lambda x: f"{x:.6g}")
        text = (
            f"count={n} mean={show(v.sum / n)} p50={show(v.quantile(0.5))} p99={show(v.quantile(0.99))} "
            f"p99.9={show(v.quantile(0.999))} max={show(F.bucket_bounds(v.used[-1][0], v.p)[1])}"
        )
        return text if f.kind == F.TIMER or not f.unit_text else f"{text} {f.unit_text}"
    text = str(v)
    return f"{text} {f.unit_text}" if f.unit_text else text


def _write_text(out: TextIO, s: Snapshot, first: bool) -> None:
    if not first:
        out.write("\n")
    out.write(
        f"{s.path}: pid {s.pid}, tid {s.tid}, command {dumps(s.command)}, model {dumps(s.model)}, "
        f"{_liveness(s)}, age {_age(s.created_ns)}, version {s.version[0]}.{s.version[1]}\n"
    )
    fields = sorted(s.fields, key=lambda f: f.label.encode())
    width = max((len(f.label) for f in fields), default=0)
    for f in fields:
        out.write(f"  {f.label:<{width}}  {_value(f)}\n")


def main(argv: Optional[List[str]] = None) -> int:
    """Runs slurpstats; returns the exit status."""
    p = argparse.ArgumentParser(
        prog="python -m mmstats.slurpstats",
        description="Dump every metric of every mmstats file, as text or JSON.",
    )
    p.add_argument("paths", nargs="*", metavar="PATH", help="stats files, directories or glob patterns")
    p.add_argument("--json", action="store_true", help="print one JSON array with one object per file")
    p.add_argument("--max-text-bytes", type=_text_bytes, metavar="BYTES")
    p.add_argument("--max-fields", type=int, metavar="N")
    p.add_argument("--max-decoded-bytes", type=_size, metavar="BYTES")
    args = p.parse_args(argv)
    limits = ReadLimits()
    if args.max_text_bytes is not None:
        limits.max_text_capacity = args.max_text_bytes
    if args.max_fields is not None:
        limits.max_fields = args.max_fields
    if args.max_decoded_bytes is not None:
        limits.max_decoded = args.max_decoded_bytes
    out = sys.stdout
    ok = True
    foreign = 0

    def warn(msg: str) -> None:
        out.flush()
        print(f"slurpstats: {msg}", file=sys.stderr)

    files, problems = scan(args.paths or None)
    for pr in problems:
        if pr.foreign:
            foreign += 1
        else:
            ok = False
            warn(str(pr))
    if not files and not args.paths and ok:
        warn("no stats files found in the default directories ($MMSTATS_DIR, or /dev/shm/mmstats-*)")
    try:
        if args.json:
            out.write("[")
        first = True
        for found, snap in read_all(files, limits):
            if not isinstance(snap, Snapshot):
                if found.foreign:
                    foreign += 1
                else:
                    ok = False
                    warn(str(snap))
                continue
            if snap.duplicates and not found.foreign:
                warn(
                    f"{snap.path}: {len(snap.duplicates)} field(s) ignored because an earlier field has the same label"
                )
            if args.json:
                out.write("\n" if first else ",\n")
                out.write(dumps(file_json(snap)))
            else:
                _write_text(out, snap, first)
            first = False
        if args.json:
            out.write("]\n" if first else "\n]\n")
        if foreign:
            s = "" if foreign == 1 else "s"
            warn(
                f"skipped {foreign} unreadable or foreign file{s} in other users' directories "
                "(run with a path to see them)"
            )
        out.flush()
    except BrokenPipeError:
        # `slurpstats | head -1`: end quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
