"""Shared helpers: the Rust binaries (required: a missing one fails the
test, it is never skipped), private stats directories, and running writer
scripts in their own processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Dict, List, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "python" / "examples"


def rust_bin(name: str) -> str:
    """The path of a Rust binary of the workspace, which must exist."""
    d = Path(os.environ.get("MMSTATS_BIN_DIR") or REPO / "target" / "debug")
    p = d / name
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(
            f"{p} is missing: build it first (cargo build -p slurpstats -p mmash -p pollstats --bins), "
            "or point MMSTATS_BIN_DIR at the binaries",
            pytrace=False,
        )
    return str(p)


def demo_bin() -> str:
    p = Path(os.environ.get("MMSTATS_DEMO") or REPO / "target" / "debug" / "examples" / "demo")
    if not (p.is_file() and os.access(p, os.X_OK)):
        pytest.fail(f"{p} is missing: build it with `cargo build --example demo`", pytrace=False)
    return str(p)


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment for a child: no MMSTATS_* of the caller, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMSTATS_")}
    env.update(extra)
    return env


def rust_json_text(paths: List[str], env: Optional[Dict[str, str]] = None) -> str:
    """What the Rust ``slurpstats --json PATHS`` prints (it must succeed)."""
    r = subprocess.run(
        [rust_bin("slurpstats"), "--json", *paths], capture_output=True, text=True, env=env or clean_env()
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def rust_json(paths: List[str], env: Optional[Dict[str, str]] = None) -> list:
    return json.loads(rust_json_text(paths, env))


def py_json_text(paths: List[str], env: Optional[Dict[str, str]] = None) -> str:
    """What ``python -m mmstats.slurpstats --json PATHS`` prints."""
    r = subprocess.run(
        [sys.executable, "-m", "mmstats.slurpstats", "--json", *paths],
        capture_output=True,
        text=True,
        env=env or clean_env(),
    )
    assert r.returncode == 0, r.stderr
    return r.stdout


def by_label(objs: list) -> Dict[str, object]:
    """Every file's stats merged by label (the files of one writer)."""
    out: Dict[str, object] = {}
    for o in objs:
        out.update(o["stats"])
    return out


def counter_total(objs: list, label: str) -> int:
    return sum(o["stats"].get(label, 0) for o in objs)


def run_script(
    code: str, env: Dict[str, str], where: Path, timeout: float = 120, check: bool = True, name: str = "writer.py"
) -> subprocess.CompletedProcess:
    """Runs ``code`` as the script ``where/name`` (so its command name is the script's)."""
    script = where / name
    script.write_text(textwrap.dedent(code))
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert r.returncode == 0, f"stdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return r


@pytest.fixture
def stats_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private stats directory, set as MMSTATS_DIR for this test."""
    d = tmp_path / "stats"
    d.mkdir(mode=0o700)
    os.chmod(d, 0o700)
    monkeypatch.setenv("MMSTATS_DIR", str(d))
    return str(d)


@pytest.fixture
def child_env(stats_dir: str) -> Dict[str, str]:
    """The environment of a writer child process using ``stats_dir``."""
    return clean_env(MMSTATS_DIR=stats_dir)
