"""The stories the package is for, with real processes: gunicorn with 4
pre-forked workers, one killed with SIGKILL mid-run, scraped by a real
mmash whose /metrics total must equal the requests served, before and after
`mmash retire` folds the dead workers; and a multiprocessing.Pool whose
workers come and go."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import pytest
from conftest import EXAMPLES, clean_env, counter_total, rust_bin, rust_json


def metric_total(text: str, name: str) -> int:
    """The sum of every sample of ``name`` in Prometheus text, whatever its labels."""
    total = 0
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+\S+)?$", line)
        assert m, f"not a Prometheus sample line: {line!r}"
        if m.group(1) == name:
            total += int(float(m.group(3)))
    return total


class Mmash:
    """A real mmash on 127.0.0.1, on a port the system chose."""

    def __init__(self, env: Dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [rust_bin("mmash"), "--listen", "127.0.0.1:0", "--retire-after", "off", "--rescan", "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: List[str] = []
        self.port: Optional[int] = None
        got = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    got.set()

        threading.Thread(target=pump, daemon=True).start()
        if not got.wait(20):
            self.stop()
            pytest.fail(f"mmash did not say where it listens: {''.join(self.lines)}")

    def metrics(self) -> str:
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            body = r.read().decode()
            assert r.status == 200, body
            return body
        finally:
            c.close()

    def wait_total(self, name: str, want: int, timeout: float = 20) -> None:
        """Polls /metrics until ``name`` sums to ``want``; never more, never down."""
        seen: List[int] = []
        end = time.monotonic() + timeout
        while True:
            got = metric_total(self.metrics(), name)
            assert got <= want and (not seen or got >= seen[-1]), f"{name}: {seen + [got]} (want {want})"
            seen.append(got)
            if got == want:
                return
            if time.monotonic() > end:
                pytest.fail(f"{name} reached {seen[-5:]} and not {want}")
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def gunicorn_bin() -> str:
    p = Path(sys.executable).parent / "gunicorn"
    if not p.exists():
        pytest.fail(f"gunicorn is not installed beside {sys.executable} (python/run-tests.sh installs it)")
    return str(p)


def children(pid: int) -> List[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(x) for x in f.read().split()]


def get(port: int, path: str = "/") -> int:
    """One request; the pid of the worker that served it."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        assert r.status == 200, (r.status, body)
        return int(body)
    finally:
        c.close()


def retire(stats_dir: str, env: Dict[str, str]) -> None:
    r = subprocess.run(
        [rust_bin("mmash"), "retire", "--retire-after", "0", stats_dir], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_gunicorn_workers_add_up_in_mmash(stats_dir: str, tmp_path: Path) -> None:
    env = clean_env(MMSTATS_DIR=stats_dir, PYTHONUNBUFFERED="1")
    log = tmp_path / "gunicorn.log"
    g = subprocess.Popen(
        [gunicorn_bin(), "--preload", "-w", "4", "-b", "127.0.0.1:0", "--chdir", str(EXAMPLES)]
        + ["--graceful-timeout", "10", "--error-logfile", str(log), "gunicorn_app:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    mmash = None
    try:
        end = time.monotonic() + 30
        port = None
        while time.monotonic() < end and (port is None or len(children(g.pid)) < 4):
            m = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", log.read_text() if log.exists() else "")
            port = int(m.group(1)) if m else None
            assert g.poll() is None, log.read_text()
            time.sleep(0.1)
        assert port is not None and len(children(g.pid)) == 4, log.read_text() if log.exists() else "no log"
        served = 0
        pids = set()
        for _ in range(200):
            pids.add(get(port))
            served += 1
        # Mid-run: kill a worker; gunicorn forks a replacement.
        victim = children(g.pid)[0]
        os.kill(victim, signal.SIGKILL)
        end = time.monotonic() + 30
        while victim in children(g.pid) or len(children(g.pid)) < 4:
            assert time.monotonic() < end, "gunicorn did not replace the killed worker"
            time.sleep(0.1)
        for _ in range(200):
            pids.add(get(port))
            served += 1
        assert len(pids) >= 2
        mmash = Mmash(env)
        mmash.wait_total("web_requests_total", served)
        files = rust_json([stats_dir])
        assert counter_total(files, "web.requests") == served
        # The master's own file (it opened the stats before forking) counts nothing.
        master = [f for f in files if f["pid"] == g.pid]
        assert len(master) == 1 and master[0]["stats"]["web.requests"] == 0
        killed = [f for f in files if f["pid"] == victim]
        assert [(f["state"], f["alive"]) for f in killed] == [("active", False)]
        # Fold the dead worker while the others run: still exact.
        retire(stats_dir, env)
        names = os.listdir(stats_dir)
        assert any(n.endswith(".archive.mmstats") for n in names)
        assert not any(f".{victim}." in n for n in names)
        mmash.wait_total("web_requests_total", served)
        for _ in range(50):
            get(port)
            served += 1
        mmash.wait_total("web_requests_total", served)
        # Stop gunicorn: its workers exit normally and mark their files exited.
        g.send_signal(signal.SIGTERM)
        g.wait(30)
        states = {(f["state"], f["alive"]) for f in rust_json([stats_dir]) if f["state"] != "archive"}
        assert states == {("exited", False)}
        retire(stats_dir, env)
        left = rust_json([stats_dir])
        assert [f["state"] for f in left] == ["archive"]
        assert left[0]["stats"]["web.requests"] == served
        mmash.wait_total("web_requests_total", served)
    finally:
        if g.poll() is None:
            g.kill()
            g.wait()
        if mmash is not None:
            mmash.stop()


def test_a_multiprocessing_pool_adds_up(stats_dir: str, tmp_path: Path) -> None:
    env = clean_env(MMSTATS_DIR=stats_dir)
    r = subprocess.run(
        [sys.executable, str(EXAMPLES / "pool_example.py"), "1000"], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("1000 jobs done")
    files = rust_json([stats_dir])
    # maxtasksperchild=5 replaced the workers as they went: 20 of them.
    assert len(files) > 10
    assert counter_total(files, "jobs.done") == 1000
    assert sum(f["stats"]["jobs.work"]["count"] for f in files) == 1000
    # Each worker ended through multiprocessing's finalizers, and said so.
    assert {(f["state"], f["alive"]) for f in files} == {("exited", False)}
    retire(stats_dir, env)
    left = rust_json([stats_dir])
    assert [f["state"] for f in left] == ["archive"] and left[0]["stats"]["jobs.done"] == 1000
    assert left[0]["archive"]["writers"] == len(files)
