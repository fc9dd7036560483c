"""multiprocessing.Pool with mmstats: every worker process counts into a
file of its own, so the totals over all files are exact, however many
workers come and go (``maxtasksperchild`` replaces them as it runs).

    MMSTATS_DIR=/tmp/pool-stats python python/examples/pool_example.py 1000
    MMSTATS_DIR=/tmp/pool-stats slurpstats     # jobs.done sums to 1000
    mmash retire --retire-after 0 /tmp/pool-stats   # fold the dead workers

The parent opens the stats at import; a forked worker gets successors of
its own (counters at zero) at fork. A worker that ends normally marks its
file exited (multiprocessing ends workers with ``os._exit``, so mmstats
hooks multiprocessing's own finalizers for that).
"""

from __future__ import annotations

import multiprocessing
import sys

import mmstats


class JobStats(mmstats.MmStats):
    done = mmstats.CounterField(label="jobs.done", help="Jobs finished.")
    work = mmstats.TimerField(label="jobs.work", help="Time spent on one job.")


stats = JobStats()


def job(n: int) -> int:
    """A small job: sums a range, counted and timed."""
    with stats.work:
        total = sum(range(n % 1000))
    stats.done.inc()
    return total


def main(jobs: int) -> None:
    ctx = multiprocessing.get_context("fork")
    pool = ctx.Pool(4, maxtasksperchild=5)
    try:
        results = pool.map(job, range(jobs), chunksize=10)
    finally:
        pool.close()
        pool.join()
    print(f"{len(results)} jobs done; the parent counted {stats.done.value} itself")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
