"""A reader hammering a text field that a Python writer rewrites never sees
a torn value; and the directory rules of format-spec.md §2.1, with the
fallback to a private directory when /dev/shm/mmstats-EUID is squatted and
to private memory when no file can be made."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict

import pytest
from conftest import clean_env, run_script, rust_bin, rust_json

import mmstats
from mmstats import reader

HAMMER = """
import os, sys, time
import mmstats

class Hammer(mmstats.MmStats):
    text = mmstats.StringField(size=64)
    n = mmstats.CounterField()

s = Hammer()
# Every value is one character repeated; its length and character change
# on every write, so a torn read shows as a mix of both.
values = [c * k for k in (1, 7, 8, 9, 31, 64) for c in "abcxyz"] + ["\u00e9" * 32, "\u2764" * 21]
print(s.filename, flush=True)
deadline = time.monotonic() + 20
i = 0
while not os.path.exists(sys.argv[1]) and time.monotonic() < deadline:
    s.text = values[i % len(values)]
    s.n.inc()
    i += 1
"""


def _whole(v: object) -> bool:
    return isinstance(v, str) and len(v) > 0 and v == v[0] * len(v)


def test_a_reader_never_sees_a_torn_text(stats_dir: str, child_env: Dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "hammer.py").write_text(HAMMER)
    stop = tmp_path / "stop"
    w = subprocess.Popen(
        [sys.executable, str(tmp_path / "hammer.py"), str(stop)], env=child_env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert w.stdout is not None
        path = w.stdout.readline().strip()
        seen = set()
        reads = 0
        with reader.Reader(path) as r:
            end = time.monotonic() + 3
            while time.monotonic() < end:
                snap = r.snapshot()
                v = {f.label: f.value for f in snap.fields}["text"]
                if v == "":
                    continue
                assert _whole(v), f"torn: {v!r}"
                seen.add(v)
                reads += 1
        for _ in range(20):
            v = rust_json([path])[0]["stats"]["text"]
            assert v == "" or _whole(v), f"torn: {v!r}"
            seen.add(v)
        counted = rust_json([path])[0]["stats"]["n"]
    finally:
        stop.touch()
        w.wait(timeout=30)
    assert w.returncode == 0
    # The writer was busy throughout: many distinct values, many writes.
    assert reads > 100 and len(seen) > 10 and counted > 1000, (reads, len(seen), counted)


class Small(mmstats.BaseMmStats):
    c = mmstats.CounterField()


def test_unusable_directories_fall_back_to_private_memory(tmp_path: Path) -> None:
    before = mmstats.fallbacks().count
    open_dir = tmp_path / "everyone"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    a = Small(path=str(open_dir))
    a.c.incr(5)  # the application runs the same
    assert a.c.value == 5 and a.filename is None
    assert "writable by group or other users" in (a.fallback or "")
    blocker = tmp_path / "file"
    blocker.write_text("")
    b = Small(path=str(blocker / "sub"))
    b.c.inc()
    assert b.filename is None and b.fallback
    fb = mmstats.fallbacks()
    assert fb.count == before + 2 and fb.last_error == b.fallback
    assert not [n for n in os.listdir(open_dir) if n.endswith(".mmstats")]
    # A file made after that tells readers how many instances went missing.
    good = tmp_path / "good"
    good.mkdir(mode=0o700)
    c = Small(path=str(good))
    assert c.fallback is None
    assert rust_json([c.filename])[0]["fallbacks"] == fb.count


SQUAT = """
import os, mmstats
class Sq(mmstats.MmStats):
    c = mmstats.CounterField()
s = Sq()
s.c.incr(int(os.environ["N"]))
print(s.filename)
print(mmstats.fallbacks().count)
"""


def _shm(tmp_path: Path) -> Path:
    root = tmp_path / "shm"
    root.mkdir()
    os.chmod(root, 0o1777)
    return root


def test_the_default_directory_is_made_for_us(tmp_path: Path) -> None:
    root = _shm(tmp_path)
    env = clean_env(MMSTATS_SCAN_ROOT=str(root), N="2")
    r = run_script(SQUAT, env, tmp_path)
    d = root / f"mmstats-{os.geteuid()}"
    assert r.stdout.split()[0].startswith(str(d) + "/")
    assert stat.S_IMODE(os.stat(d).st_mode) & 0o022 == 0
    # Found by the Rust slurpstats' default scan, with no argument.
    assert [f["stats"]["c"] for f in rust_json([], env)] == [2]


@pytest.mark.parametrize("squat", ["foreign owner", "writable by others", "not a directory", "foreign symlink"])
def test_a_squatted_default_directory_falls_back_to_a_private_one(tmp_path: Path, squat: str) -> None:
    if os.geteuid() != 0 and squat.startswith("foreign"):
        pytest.fail("making another user's directory needs root (CI runs the tests as root)")
    root = _shm(tmp_path)
    euid = os.geteuid()
    default = root / f"mmstats-{euid}"
    other = 4242 if euid != 4242 else 4243
    if squat == "foreign owner":
        default.mkdir(mode=0o755)
        os.chown(default, other, other)
    elif squat == "writable by others":
        default.mkdir()
        os.chmod(default, 0o777)
    elif squat == "not a directory":
        default.write_text("")
    else:
        target = tmp_path / "theirs"
        target.mkdir()
        os.symlink(target, default)
        os.lchown(default, other, other)
    # Entries that are not ours to use: skipped, in byte order.
    planted = tmp_path / "planted"
    planted.mkdir(mode=0o700)
    os.symlink(planted, root / f"mmstats-{euid}-0link")
    (root / f"mmstats-{euid}-1open").mkdir()
    os.chmod(root / f"mmstats-{euid}-1open", 0o777)
    if euid == 0:
        (root / f"mmstats-{euid}-2theirs").mkdir(mode=0o700)
        os.chown(root / f"mmstats-{euid}-2theirs", other, other)
    (root / f"mmstats-{euid}0-notours").mkdir(mode=0o700)
    env = clean_env(MMSTATS_SCAN_ROOT=str(root), N="3")
    r = run_script(SQUAT, env, tmp_path)
    path, count = r.stdout.split()
    d = Path(path).parent
    assert d.parent == root and d.name.startswith(f"mmstats-{euid}-") and len(d.name) == len(f"mmstats-{euid}-") + 8
    assert d.name[-8:].isalnum() and d.name[-8:].islower() or d.name[-8:].isdigit()
    st = os.lstat(d)
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == euid and stat.S_IMODE(st.st_mode) == 0o700
    assert count == "0"  # a file was made: no fallback to private memory
    assert not os.listdir(planted)
    # A second writer uses the same private directory.
    r2 = run_script(SQUAT, dict(env, N="4"), tmp_path)
    assert Path(r2.stdout.split()[0]).parent == d
    # The Rust readers' default scan finds both, with no argument. (It also
    # reports the planted entries we own, so its exit status is 1.)
    out = subprocess.run([rust_bin("slurpstats"), "--json"], capture_output=True, text=True, env=env)
    assert "mmstats-" in out.stderr
    files = json.loads(out.stdout)
    assert sorted(f["stats"]["c"] for f in files) == [3, 4]
    assert all(f["file"].startswith(str(d) + "/") for f in files)
