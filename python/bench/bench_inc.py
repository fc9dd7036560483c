"""One counter increment: mmstats' ``stats.ok.inc()`` against
prometheus_client's multiprocess ``Counter.inc()``, 1,000,000 times each,
in the same run.

    python python/bench/bench_inc.py            # needs prometheus_client

Both write into files under a fresh temporary directory (mmstats' through
MMSTATS_DIR, prometheus_client's through PROMETHEUS_MULTIPROC_DIR). The
increments are timed in 1,000 rounds of 1,000, alternating between the two,
so that both meet the same machine. Prints each one's minimum and median
time per increment over its rounds, and the ratios. The minimum is the
cost of the code itself; on a busy machine the median also holds time spent
waiting for a CPU, and more of it for the slower one, whose rounds are
longer and so are preempted more often.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

TOTAL = 1_000_000
BATCH = 1_000


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

    times: dict = {"mmstats": [], "prometheus_client": []}
    for _ in range(TOTAL // BATCH):
        for name, fn in (("mmstats", run_mmstats), ("prometheus_client", run_prom)):
            start = time.perf_counter_ns()
            fn(BATCH)
            times[name].append((time.perf_counter_ns() - start) / BATCH)
    total = TOTAL
    assert stats.ok.value == total, stats.ok.value
    assert prom._value.get() == total
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    print(f"Python {sys.version.split()[0]}: {TOTAL:,} increments each, {TOTAL // BATCH} rounds of {BATCH:,}")
    for k in times:
        print(f"  {k:<18} min {low[k]:7.1f} ns/op, median {med[k]:7.1f} ns/op")
    print(
        f"  prometheus_client / mmstats: {low['prometheus_client'] / low['mmstats']:.1f}x by the minimums, "
        f"{med['prometheus_client'] / med['mmstats']:.1f}x by the medians"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
