"""The Python writer and reader against the Rust ones: every field class
read back exactly by the Rust slurpstats, and the Python slurpstats
printing what the Rust one prints, byte for byte, on the same files:
Python-written files, the Rust demo's, archives folded by `mmash retire`."""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path
from typing import Dict

from conftest import clean_env, demo_bin, py_json_text, run_script, rust_bin, rust_json, rust_json_text

import mmstats
from mmstats import reader


class Every(mmstats.MmStats):
    count = mmstats.CounterField(label="count", help="  Requests served.  ")
    u64 = mmstats.UInt64Field()
    u32 = mmstats.UIntField()
    i32 = mmstats.IntField()
    i16 = mmstats.ShortField()
    u16 = mmstats.UShortField()
    i8 = mmstats.ByteField()
    flag = mmstats.BoolField(initial=True)
    f32 = mmstats.FloatField()
    f64 = mmstats.DoubleField()
    text = mmstats.StringField(size=16, labels={"lang": "fr", "code": "2=00"})
    const = mmstats.StaticTextField(value="v1.2.3")
    s_u32 = mmstats.StaticUIntField(value=4_000_000_000)
    s_i64 = mmstats.StaticInt64Field(value=-(2**40))
    s_u64 = mmstats.StaticUInt64Field(value=2**50)
    s_f32 = mmstats.StaticFloatField(value=0.1)
    s_f64 = mmstats.StaticDoubleField(value=0.1)
    avg = mmstats.AverageField()
    mavg = mmstats.MovingAverageField(size=2)
    timer = mmstats.TimerField(timer=lambda: 0.0)
    hist = mmstats.HistogramField(unit="bytes")


def test_every_field_class_reads_back_exactly(stats_dir: str) -> None:
    s = Every(label_prefix="e.")
    s.count.incr(41)
    s.count.inc()
    s.u64 = 2**62 + 3
    s.u32 = 2**32 - 1
    s.i32 = -(2**31)
    s.i16 = 32767
    s.u16 = 65535
    s.i8 = -128
    s.f32 = 1.1
    s.f64 = -2.5e-300
    s.text = "naïve café au lait"  # 20 bytes: cut to 16 on a boundary
    for v in (1.0, 2.0, 4.0):
        s.avg.add(v)
        s.mavg.add(v)
    for ns in (100, 1000, 1250, 10**9, 2**45):
        s.timer.record_ns(ns)
    for b in range(1, 101):
        s.hist.record(b)
    got = rust_json([s.filename])[0]
    st, fl = got["stats"], got["fields"]
    assert st["e.count"] == 42
    assert (st["e.u64"], st["e.u32"], st["e.i32"], st["e.i16"], st["e.u16"], st["e.i8"]) == (
        2**62 + 3,
        2**32 - 1,
        -(2**31),
        32767,
        65535,
        -128,
    )
    assert st["e.flag"] == 1
    assert st["e.f32"] == s.f32 == 1.100000023841858 and st["e.f64"] == -2.5e-300
    assert st["e.text"] == s.text == "naïve café au "
    assert st["e.const"] == "v1.2.3"
    assert (st["e.s_u32"], st["e.s_i64"], st["e.s_u64"]) == (4_000_000_000, -(2**40), 2**50)
    assert st["e.s_f32"] == s.s_f32 and st["e.s_f64"] == 0.1
    assert st["e.avg"] == 7.0 / 3 and st["e.mavg"] == 3.0
    t = st["e.timer"]
    assert (t["count"], t["sum"]) == (5, 100 + 1000 + 1250 + 10**9 + 2**45)
    # The spec's worked examples (§5.2), and the clamp into the last bucket.
    assert [b[:2] for b in t["buckets"]] == [
        [100, 100],
        [1000, 1007],
        [1248, 1263],
        [998244352, 1006632959],
        [4363686772736, 4398046511103],
    ]
    h = st["e.hist"]
    assert (h["count"], h["sum"], h["p50"], h["p99"], h["min"], h["max"]) == (100, 5050, 50, 99, 1, 100)
    kinds = {k: v["kind"] for k, v in fl.items()}
    assert kinds == {
        "e.count": "counter",
        **{f"e.{k}": "gauge" for k in ("u64", "u32", "i32", "i16", "u16", "i8", "flag", "s_u32", "s_i64", "s_u64")},
        **{f"e.{k}": "gauge_f64" for k in ("f32", "f64", "s_f32", "s_f64", "avg", "mavg")},
        "e.text": "text",
        "e.const": "constant",
        "e.org.python.version": "constant",
        "e.timer": "timer",
        "e.hist": "histogram",
    }
    assert fl["e.count"]["help"] == "Requests served."
    assert fl["e.text"]["static_labels"] == {"lang": "fr", "code": "2=00"}
    assert fl["e.hist"]["unit"] == "bytes" and fl["e.timer"]["unit"] == "ns"
    assert got["command"] and got["model"] == "Every" and got["fallbacks"] == 0
    # And the Python reader says the same, byte for byte.
    assert py_json_text([s.filename]) == rust_json_text([s.filename])


def test_floats_print_as_serde_json_prints_them(stats_dir: str) -> None:
    values = [0.0, -0.0, 1.0, 0.1, 123.0, 1e15, 1e16, 1.5e16, 12345678.9, 1e-5, 1e-6, 1.5e-7, -2.5e-300]
    values += [5e-324, 1.7976931348623157e308, 2.0**53 + 2, 1 / 3, math.pi * 1e21, 0.00012345, float("nan")]
    values += [float("inf"), -float("inf")]

    class Floats(mmstats.BaseMmStats):
        pass

    fields: Dict[str, mmstats.DoubleField] = {f"x{i:02}": mmstats.DoubleField() for i in range(len(values))}
    for k, f in fields.items():
        f.__set_name__(Floats, k)
        setattr(Floats, k, f)
    s = Floats()
    for (k, _), v in zip(sorted(fields.items()), values):
        setattr(s, k, v)
    rust = rust_json_text([s.filename])
    assert py_json_text([s.filename]) == rust
    assert reader.dumps(reader.read(s.filename)) + "\n" in rust


def test_python_reader_equals_rust_on_the_demo_and_its_archive(tmp_path: Path) -> None:
    d = tmp_path / "demo"
    d.mkdir(mode=0o700)
    env = clean_env(MMSTATS_DIR=str(d))
    for _ in range(3):
        subprocess.run([demo_bin(), "--seconds", "0.2"], env=env, check=True, capture_output=True)
    # A Python writer beside them, alive while it is read, and its files' text.
    run_script(
        """
        import mmstats
        class Web(mmstats.MmStats):
            hits = mmstats.CounterField()
            state = mmstats.StringField(size=8)
        s = Web()
        s.hits.incr(5)
        s.state = 'done\\n"q"\\t\\x01'
        """,
        env,
        tmp_path,
    )
    # The default scan ($MMSTATS_DIR), a directory argument and a glob.
    for args in ([], [str(d)], [str(d) + "/"], [str(d / "*.mmstats")]):
        rust = rust_json_text(args, env)
        assert rust.count('"file"') == 4
        assert py_json_text(args, env) == rust, args
    # Fold the dead demos into an archive: the archive is read, its folded
    # files are not, and both readers agree.
    r = subprocess.run([rust_bin("mmash"), "retire", "--retire-after", "0", str(d)], env=env, capture_output=True)
    assert r.returncode == 0, r.stderr
    rust = rust_json_text([str(d)], env)
    objs = rust_json([str(d)], env)
    archives = [o for o in objs if o["state"] == "archive"]
    assert len(archives) == 2 and all("archive" in o for o in archives)
    assert {o["archive"]["writers"] for o in archives} == {3, 1}
    assert py_json_text([str(d)], env) == rust
    assert [o["file"] for o in mmstats.discover([str(d)])] == [o["file"] for o in objs]


def test_a_file_folded_while_it_is_read_is_counted_once(tmp_path: Path) -> None:
    d = tmp_path / "fold"
    d.mkdir(mode=0o700)
    env = clean_env(MMSTATS_DIR=str(d))
    subprocess.run([demo_bin(), "--seconds", "0.1"], env=env, check=True, capture_output=True)
    first = rust_json([str(d)], env)
    total = sum(o["stats"]["demo.status.2xx"] for o in first)
    # An archive that already holds a file still listed: only the archive counts.
    found, _ = reader.scan([str(d)])
    subprocess.run([rust_bin("mmash"), "retire", "--retire-after", "0", str(d)], env=env, check=True)
    read = reader.read_all(found)
    assert [os.path.basename(f.path) for f, _ in read] == ["demo.web.archive.mmstats"]
    assert sum(s.fields[[f.label for f in s.fields].index("demo.status.2xx")].value for _, s in read) == total
