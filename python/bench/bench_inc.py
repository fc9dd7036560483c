"""One counter increment: mmstats' ``stats.ok.inc()`` against
prometheus_client's multiprocess ``Counter.inc()``, 1,000,000 times each,
in the same run.

    python python/bench/bench_inc.py            # needs prometheus_client

Both write into files under a fresh temporary directory (mmstats' through
MMSTATS_DIR, prometheus_client's through PROMETHEUS_MULTIPROC_DIR). The
million increments of each are timed in rounds of 50,000, alternating
between the two, so that both see the same machine; the per-operation time
is the median round (the minimum is printed too). Prints both and the ratio.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

TOTAL = 1_000_000
ROUND = 50_000


def main() -> int:
    tmp = tempfile.mkdtemp(prefix="bench-inc-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = os.path.join(tmp, "prom")
    os.environ["MMSTATS_DIR"] = os.path.join(tmp, "mmstats")
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    os.makedirs(os.environ["MMSTATS_DIR"], mode=0o700)
    try:
        from prometheus_client import Counter
    except ImportError:
        print("bench_inc: needs prometheus_client (pip install prometheus_client)", file=sys.stderr)
        return 2
    import mmstats

    class Stats(mmstats.MmStats):
        ok = mmstats.CounterField(label="status.2xx")

    stats = Stats()
    if stats.filename is None:
        print(f"bench_inc: mmstats fell back to private memory: {stats.fallback}", file=sys.stderr)
        return 1
    prom = Counter("status_2xx", "Responses with a 2xx status.")

    def run_mmstats(n: int) -> None:
        for _ in range(n):
            stats.ok.inc()

    def run_prom(n: int) -> None:
        for _ in range(n):
            prom.inc()

    times = {"mmstats": [], "prometheus_client": []}
    for _ in range(TOTAL // ROUND):
        for name, fn in (("mmstats", run_mmstats), ("prometheus_client", run_prom)):
            t = time.perf_counter_ns()
            fn(ROUND)
            times[name].append((time.perf_counter_ns() - t) / ROUND)
    assert stats.ok.value == TOTAL, stats.ok.value
    assert prom._value.get() == TOTAL
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    print(f"Python {sys.version.split()[0]}, {TOTAL:,} increments each, median (min) of {TOTAL // ROUND} rounds")
    for k in times:
        print(f"  {k:<26} {med[k]:8.1f} ns/op  ({low[k]:.1f})")
    print(
        f"  ratio prometheus_client / mmstats: {med['prometheus_client'] / med['mmstats']:.1f}x "
        f"({low['prometheus_client'] / low['mmstats']:.1f}x by the minimum)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
