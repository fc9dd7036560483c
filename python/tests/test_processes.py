"""Threads, fork and exit, in real processes: counts from a parent, its
threads and every child add up exactly; each thread has its own file; a
forked child gets files of its own; files say how their writer ended."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Dict

from conftest import counter_total, run_script, rust_json

FORK_SCRIPT = """
import os, sys, threading
import mmstats

class Work(mmstats.MmStats):
    done = mmstats.CounterField()
    busy = mmstats.IntField()
    took = mmstats.TimerField()
    state = mmstats.StringField(size=16)

stats = Work()
stats.done.incr(7)
stats.busy = 5
stats.state = "parent"
with stats.took:
    pass

# Threads of the parent, alive while it forks: their files stay theirs.
ready = threading.Barrier(5)
release = threading.Event()
def worker():
    for _ in range(1000):
        stats.done.inc()
    ready.wait()
    release.wait()
threads = [threading.Thread(target=worker) for _ in range(4)]
for t in threads:
    t.start()
ready.wait()

def child(n, grandchild):
    # Counters start at zero in the child's file; gauges and text are inherited.
    assert stats.done.value == 0, stats.done.value
    assert stats.busy == 5 and stats.state == "parent"
    assert stats.filename.endswith(f".{os.getpid()}.{os.getpid()}.mmstats"), stats.filename
    for _ in range(n):
        stats.done.inc()
    stats.busy = 1
    if grandchild:
        pid = os.fork()
        if pid == 0:
            stats.done.incr(50)
            sys.exit(0)
        assert os.waitpid(pid, 0)[1] == 0
    sys.exit(0)

pids = []
for i in range(3):
    pid = os.fork()
    if pid == 0:
        try:
            child(100, grandchild=(i == 0))
        except SystemExit:
            raise
        except BaseException:
            import traceback; traceback.print_exc()
            os._exit(3)
    pids.append(pid)
for pid in pids:
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
release.set()
for t in threads:
    t.join()
stats.done.incr(3)
assert stats.done.value == 10
print(os.getpid())
"""


def test_threads_and_fork_add_up_exactly(stats_dir: str, child_env: Dict[str, str], tmp_path: Path) -> None:
    r = run_script(FORK_SCRIPT, child_env, tmp_path)
    parent = int(r.stdout.split()[-1])
    files = rust_json([stats_dir])
    assert counter_total(files, "done") == 7 + 4 * 1000 + 3 * 100 + 50 + 3
    mine = [f for f in files if f["pid"] == parent]
    children = [f for f in files if f["pid"] != parent]
    # The parent's main thread and its four threads, one file each.
    assert len(mine) == 5 and len({f["tid"] for f in mine}) == 5
    main = next(f for f in mine if f["tid"] == parent)
    assert main["stats"]["done"] == 10 and main["stats"]["took"]["count"] == 1
    # One file per child and grandchild, made by the fork handler: none for
    # the parent's threads, which do not exist in a child.
    assert len(children) == 4 and len({f["pid"] for f in children}) == 4
    assert all(f["tid"] == f["pid"] for f in children)
    assert sorted(f["stats"]["done"] for f in children) == [50, 100, 100, 100]
    assert all(f["stats"]["took"]["count"] == 0 for f in children)
    assert {f["stats"]["state"] for f in children} == {"parent"}
    assert all(f["state"] == "exited" and not f["alive"] for f in files)


THREADS_SCRIPT = """
import threading
import mmstats

class T(mmstats.MmStats):
    n = mmstats.CounterField()

stats = T()
names = {}
barrier = threading.Barrier(111)
def run(i):
    stats.n.incr(i)
    names[i] = stats.filename
    barrier.wait()
threads = [threading.Thread(target=run, args=(i,)) for i in range(111)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert len(set(names.values())) == 111
# A thread started after they ended takes over one of their files (§2.7):
# its counter goes on from there, so the sum stays exact.
def later():
    assert stats.filename in names.values()
    before = stats.n.value
    stats.n.incr(1000)
    print(before)
t = threading.Thread(target=later)
t.start()
t.join()
"""


def test_111_threads_each_get_their_own_file(stats_dir: str, child_env: Dict[str, str], tmp_path: Path) -> None:
    r = run_script(THREADS_SCRIPT, child_env, tmp_path)
    files = rust_json([stats_dir])
    assert len(files) == 112  # the 111 threads' and the main thread's (it made the instance)
    assert len({f["tid"] for f in files}) == 112
    assert counter_total(files, "n") == sum(range(111)) + 1000
    assert int(r.stdout.strip()) in range(111)


EXIT_SCRIPT = """
import os, signal, sys, threading
import mmstats

class E(mmstats.MmStats):
    c = mmstats.CounterField()

how = sys.argv[1] if len(sys.argv) > 1 else os.environ["HOW"]
stats = E(command=how)
stats.c.incr(3)
if how == "thread":
    t = threading.Thread(target=lambda: stats.c.inc())
    t.start()
    t.join()
    print("ready", flush=True)
    sys.stdin.read()
elif how == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
elif how == "_exit":
    os._exit(0)
elif how == "raise":
    raise SystemExit(2)
"""


def test_files_tell_how_their_writer_ended(stats_dir: str, child_env: Dict[str, str], tmp_path: Path) -> None:
    for how in ("exit", "raise", "_exit", "kill"):
        env = dict(child_env, HOW=how)
        run_script(EXIT_SCRIPT, env, tmp_path, check=False)
    script = tmp_path / "writer.py"
    alive = subprocess.Popen(
        [sys.executable, str(script), "thread"],
        env=child_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ready"
        got = {(f["command"], f["tid"] == f["pid"]): f for f in rust_json([stats_dir])}
        # A normal exit (or SystemExit) marks the file exited; _exit and
        # SIGKILL leave it active with no lock: "did not close".
        assert (got[("exit", True)]["state"], got[("exit", True)]["alive"]) == ("exited", False)
        assert (got[("raise", True)]["state"], got[("raise", True)]["alive"]) == ("exited", False)
        assert (got[("_exit", True)]["state"], got[("_exit", True)]["alive"]) == ("active", False)
        assert (got[("kill", True)]["state"], got[("kill", True)]["alive"]) == ("active", False)
        # A thread that ended while its process lives: exited, alive.
        assert (got[("thread", True)]["state"], got[("thread", True)]["alive"]) == ("active", True)
        assert (got[("thread", False)]["state"], got[("thread", False)]["alive"]) == ("exited", True)
        assert all(f["stats"]["c"] == (3 if tid else 1) for (_, tid), f in got.items())
    finally:
        alive.communicate("")
    assert alive.returncode == 0
    # Normal exits removed their lock files; the killed ones' stay, unlocked.
    locks = [n for n in os.listdir(stats_dir) if n.startswith(".lock.")]
    assert len(locks) == 2
    assert all(f["state"] in ("exited", "active") and not f["alive"] for f in rust_json([stats_dir]))


def test_a_killed_writer_reads_as_dead(stats_dir: str, child_env: Dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "w.py").write_text(
        "import sys, mmstats\n"
        "class K(mmstats.MmStats):\n"
        "    c = mmstats.CounterField()\n"
        "s = K()\n"
        "s.c.incr(9)\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    p = subprocess.Popen(
        [sys.executable, str(tmp_path / "w.py")],
        env=child_env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    before = rust_json([stats_dir])
    assert [(f["alive"], f["state"]) for f in before] == [(True, "active")]
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.stdin is not None
    p.stdin.close()
    p.stdout.close()
    after = rust_json([stats_dir])
    assert [(f["alive"], f["state"], f["stats"]["c"]) for f in after] == [(False, "active", 9)]
