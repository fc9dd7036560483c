"""The behaviours mmstats 0.8's own test suite pinned, on format 1.2: each
value is checked through the model and, where it shows, through the Rust
slurpstats reading the file."""

from __future__ import annotations

import mmap
import os
import threading
import time

from conftest import by_label, rust_json

import mmstats


def test_two_instances_of_one_model_share_nothing(stats_dir: str) -> None:
    class LaserStats(mmstats.MmStats):
        blue = mmstats.UIntField()
        red = mmstats.UIntField()

    a = LaserStats(filename="mmstats-test-laserstats-a")
    b = LaserStats(filename="mmstats-test-laserstats-b")
    a.blue = 1
    a.red = 2
    b.blue = 42
    assert (a.blue, a.red, b.blue, b.red) == (1, 2, 42, 0)
    assert a.filename != b.filename
    ra, rb = rust_json([a.filename]), rust_json([b.filename])
    assert (ra[0]["stats"]["blue"], ra[0]["stats"]["red"]) == (1, 2)
    assert (rb[0]["stats"]["blue"], rb[0]["stats"]["red"]) == (42, 0)
    # 0.8 templates gain what the format needs: {pid}, {tid} and .mmstats.
    assert os.path.basename(a.filename).startswith("mmstats-test-laserstats-a.")
    assert a.filename.endswith(f".{os.getpid()}.{threading.get_native_id()}.mmstats")


def test_the_label_prefix_is_stored_in_the_file(stats_dir: str) -> None:
    class StatsA(mmstats.MmStats):
        f2 = mmstats.UIntField(label="f.secondary")
        f1 = mmstats.UIntField()

    a = StatsA(filename="prefix1")
    b = StatsA(filename="prefix2", label_prefix="org.mmstats.")
    a.f1, b.f1, a.f2, b.f2 = 2, 3, 4, 5
    assert (a.f1, b.f1, a.f2, b.f2) == (2, 3, 4, 5)
    assert b.label_prefix == "org.mmstats."
    sa, sb = rust_json([a.filename])[0]["stats"], rust_json([b.filename])[0]["stats"]
    assert sa["f1"] == 2 and sa["f.secondary"] == 4
    assert not any(k.startswith("org.mmstats.") for k in sa)
    assert sb["org.mmstats.f1"] == 3 and sb["org.mmstats.f.secondary"] == 5
    with open(b.filename, "rb") as f:
        assert b"org.mmstats.f.secondary" in f.read()


def test_very_long_labels(stats_dir: str) -> None:
    page = mmap.PAGESIZE

    class BigStats(mmstats.MmStats):
        f1 = mmstats.UIntField(label="f" + "o" * page)
        f2 = mmstats.UIntField(label="f" + "0" * page)
        f3 = mmstats.BoolField(label="f2" * page)

    bs = BigStats()
    assert bs.size > 3 * page
    bs.f1, bs.f2, bs.f3 = 1, 2, True
    assert (bs.f1, bs.f2, bs.f3) == (1, 2, True)
    stats = rust_json([bs.filename])[0]["stats"]
    assert stats["f" + "o" * page] == 1
    assert stats["f" + "0" * page] == 2
    assert stats["f2" * page] == 1


def test_counter_inc_incr_and_value(stats_dir: str) -> None:
    class SimpleCounter(mmstats.MmStats):
        counter = mmstats.CounterField()
        other = mmstats.CounterField(label="other")

    s = SimpleCounter()
    assert s.counter.value == 0
    s.counter.inc()
    s.counter.inc()
    s.counter.inc(3)
    s.counter.incr()
    s.counter.incr(amount=10)
    assert s.counter.value == 16
    assert rust_json([s.filename])[0]["stats"]["counter"] == 16
    s.other.inc(-4)  # wraps as the u64 it is, never negative
    assert s.other.value == 2**64 - 4
    s.other.inc(5)
    assert s.other.value == 1
    s.counter.value = 0
    assert s.counter.value == 0
    s.counter.inc(2**64 + 7)
    assert s.counter.value == 7
    stats = by_label(rust_json([s.filename]))
    assert (stats["counter"], stats["other"]) == (7, 1)


def test_integer_fields_wrap_as_their_c_types(stats_dir: str) -> None:
    class MyStats(mmstats.BaseMmStats):
        zebras = mmstats.IntField()
        apples = mmstats.UIntField()
        a = mmstats.ShortField()
        b = mmstats.UShortField()
        c = mmstats.ByteField()
        big = mmstats.UInt64Field()

    m = MyStats()
    assert (m.zebras, m.apples, m.a, m.b, m.c, m.big) == (0, 0, 0, 0, 0, 0)
    m.apples = 1
    m.zebras = -9001
    assert (m.apples, m.zebras) == (1, -9001)
    m.apples = -100
    assert m.apples == 2**32 - 100
    m.a = -1
    m.b = 2**16 - 1
    assert (m.a, m.b) == (-1, 2**16 - 1)
    m.b = -2
    assert m.b == 2**16 - 2
    m.c = 200
    assert m.c == 200 - 256
    m.big = 2**64 - 1
    assert m.big == 2**64 - 1
    s = rust_json([m.filename])[0]["stats"]
    assert (s["zebras"], s["apples"], s["a"], s["b"], s["c"]) == (-9001, 2**32 - 100, -1, 2**16 - 2, -56)
    # A gauge is an i64 in the format: readers show 2^64 - 1 as -1.
    assert s["big"] == -1


def test_bools(stats_dir: str) -> None:
    class BoolFields(mmstats.BaseMmStats):
        a = mmstats.BoolField()
        b = mmstats.BoolField(initial=True)

    s = BoolFields()
    assert s.a is False and s.b is True
    s.a = "Anything truthy at all"
    assert s.a is True
    assert rust_json([s.filename])[0]["stats"] == {"a": 1, "b": 1}
    s.a = []
    assert s.a is False
    s.b = False
    s.a = s.b
    assert s.a is False and s.b is False


def test_floats_and_mixed_prefixes(stats_dir: str) -> None:
    class MixedStats(mmstats.MmStats):
        a = mmstats.UIntField()
        b = mmstats.BoolField()
        c = mmstats.IntField()
        d = mmstats.BoolField(label="The Bool")
        e = mmstats.ShortField(label="shortie")
        f = mmstats.FloatField()
        g = mmstats.DoubleField()

    m1 = MixedStats(label_prefix="m1::")
    m2 = MixedStats(label_prefix="m2::")
    for i in range(10):
        m1.a, m2.a = i, i * 2
        m1.b, m2.b = True, False
        m1.c, m2.c = -i, -i * 2
        m1.d, m2.d = False, True
        m1.e, m2.e = 1, i * 10
    m1.f = m1.g = 1.0 / 3
    assert (m1.a, m2.a, m1.b, m2.b, m1.c, m2.c, m1.d, m2.d, m1.e, m2.e) == (
        9,
        18,
        True,
        False,
        -9,
        -18,
        False,
        True,
        1,
        90,
    )
    # FloatField keeps 0.8's float32 precision; DoubleField is exact.
    assert 0.3 < m1.f < 0.4 and m1.f != 1.0 / 3
    assert m1.g == 1.0 / 3
    s1, s2 = rust_json([m1.filename])[0]["stats"], rust_json([m2.filename])[0]["stats"]
    assert "m2::shortie" not in s1 and s2["m2::shortie"] == 90
    assert s1["m1::f"] == m1.f and s1["m1::g"] == 1.0 / 3


def test_utf8_strings_are_cut_on_a_character_boundary(stats_dir: str) -> None:
    class StrTest(mmstats.MmStats):
        f = mmstats.FloatField()
        s = mmstats.StringField(10)
        c = mmstats.CounterField()

    st = StrTest()
    assert (st.f, st.c.value, st.s) == (0.0, 0, "")
    st.s = "a" * 11
    assert st.s == "a" * 10
    st.s = "b"
    st.f = 1.0
    st.c.inc()
    assert (st.s, st.f, st.c.value) == ("b", 1.0, 1)
    st.s = "\u2764" * 11
    # 3 bytes each: only 3 fit in 10 bytes of UTF-8.
    assert st.s == "\u2764" * 3
    stats = rust_json([st.filename])[0]["stats"]
    assert stats["s"] == "\u2764" * 3 and stats["c"] == 1 and stats["f"] == 1.0


def test_static_fields_are_set_at_open(stats_dir: str) -> None:
    calls = []

    def version() -> str:
        calls.append(1)
        return "something cool"

    class StaticStats(mmstats.BaseMmStats):
        a = mmstats.StaticTextField(label="text", value=version)
        n = mmstats.StaticUIntField(label="n", value=lambda: 7)
        i = mmstats.StaticInt64Field(label="i", value=-5)
        u = mmstats.StaticUInt64Field(label="u", value=2**40)
        x = mmstats.StaticFloatField(label="x", value=0.5)
        y = mmstats.StaticDoubleField(label="y", value=time.time)

    m = StaticStats()
    assert m.a == "something cool" and len(calls) == 1
    assert (m.n, m.i, m.u, m.x) == (7, -5, 2**40, 0.5)
    try:
        m.n = 3
        raise AssertionError("a static field was set")
    except AttributeError:
        pass
    obj = rust_json([m.filename])[0]
    assert obj["stats"]["text"] == "something cool"
    assert obj["fields"]["text"]["kind"] == "constant"
    assert obj["stats"]["y"] == m.y and abs(m.y - time.time()) < 60
    assert (obj["stats"]["n"], obj["stats"]["i"], obj["stats"]["u"]) == (7, -5, 2**40)


def test_average(stats_dir: str) -> None:
    class AvgTest(mmstats.MmStats):
        avg = mmstats.AverageField()

    at = AvgTest()
    assert at.avg.value == 0.0
    for _ in range(3):
        at.avg.add(1)
        assert at.avg.value == 1.0
    at.avg.add(-3)
    assert at.avg.value == 0.0
    at.avg.add(1)
    assert 0 < at.avg.value < 1
    obj = rust_json([at.filename])[0]
    assert obj["stats"]["avg"] == at.avg.value and obj["fields"]["avg"]["kind"] == "gauge_f64"


def test_moving_averages_of_other_sizes(stats_dir: str) -> None:
    class MATest(mmstats.MmStats):
        m1 = mmstats.MovingAverageField()
        a = mmstats.AverageField()
        m2 = mmstats.MovingAverageField()

    stats = MATest()
    assert stats.m1.value == 0.0
    stats.m1.add(1)
    assert stats.m1.value == 1.0
    stats.m1.add(2)
    assert stats.m1.value == 1.5
    for i in range(1000):
        stats.m1.add(1)
        stats.a.add(i)
        stats.m2.add(i)
    assert stats.m1.value == 1.0
    assert stats.a.value < stats.m2.value

    class MATest2(mmstats.MmStats):
        m1 = mmstats.MovingAverageField(size=1)
        m2 = mmstats.MovingAverageField()
        m3 = mmstats.MovingAverageField(size=1000)

    s2 = MATest2()
    for _ in range(2):
        for i in range(1000):
            s2.m1.add(i)
            s2.m2.add(i)
            s2.m3.add(i)
        assert s2.m1.value == 999.0
        assert s2.m1.value > s2.m2.value > s2.m3.value
    assert s2.m2.value == sum(range(900, 1000)) / 100
    assert s2.m3.value == sum(range(1000)) / 1000
    stats_read = rust_json([s2.filename])[0]["stats"]
    assert (stats_read["m1"], stats_read["m2"], stats_read["m3"]) == (999.0, 949.5, 499.5)


def test_timer_last_and_value(stats_dir: str) -> None:
    ticks = iter(range(0, 10**6, 2))

    class TTest(mmstats.MmStats):
        m1 = mmstats.MovingAverageField()
        t1 = mmstats.TimerField()
        c = mmstats.CounterField()
        t2 = mmstats.TimerField(timer=lambda: next(ticks) / 1000)

    stats = TTest()
    with stats.t1 as timer:
        assert stats.t1.value == 0.0 and stats.t2.value == 0.0 and stats.t2.last == 0.0
        time.sleep(0.002)
        e = timer.elapsed
        assert e > 0.0 and timer.elapsed > e
    assert stats.t1.value == stats.t1.last > 0.0
    oldval, last = stats.t1.value, stats.t1.last
    stats.t1.start()
    stats.t1.stop()
    assert stats.t1.last < last
    assert stats.t1.value < oldval
    # The custom clock: each reading 2 ms after the last.
    with stats.t2:
        pass
    assert stats.t2.last == 0.002
    t = rust_json([stats.filename])[0]
    assert t["fields"]["t1"]["kind"] == "timer" and t["fields"]["t1"]["unit"] == "ns"
    assert t["stats"]["t1"]["count"] == 2
    assert t["stats"]["t2"]["count"] == 1 and t["stats"]["t2"]["sum"] == 2_000_000


def test_cmd_repeated_in_a_filename_template(stats_dir: str) -> None:
    class CmdStats(mmstats.MmStats):
        c = mmstats.CounterField()

    s = CmdStats(filename="{CMD}-{CMD}-{PID}-{TID}.mmstats", command="my app")
    name = os.path.basename(s.filename)
    assert name == f"my_app-my_app-{os.getpid()}-{threading.get_native_id()}.mmstats"
    assert rust_json([s.filename])[0]["command"] == "my app"
    p = CmdStats(path=os.path.join(stats_dir, "{CMD}"), filename="x-{TID}-{PID}", command="cmd")
    assert p.filename == os.path.join(stats_dir, "cmd", f"x-{threading.get_native_id()}-{os.getpid()}.mmstats")


def test_subclassing() -> None:
    class ParentStats(mmstats.MmStats):
        a = mmstats.UIntField()
        b = mmstats.UIntField()

    class ChildAStats(ParentStats):
        a = mmstats.BoolField()
        c = mmstats.UIntField()

    class ChildBStats(ChildAStats):
        b = mmstats.BoolField()
        c = mmstats.BoolField()

    assert isinstance(ParentStats.a, mmstats.UIntField)
    assert isinstance(ParentStats.b, mmstats.UIntField)
    assert not hasattr(ParentStats, "c")
    assert isinstance(ChildAStats.a, mmstats.BoolField)
    assert isinstance(ChildAStats.b, mmstats.UIntField)
    assert isinstance(ChildAStats.c, mmstats.UIntField)
    assert isinstance(ChildBStats.a, mmstats.BoolField)
    assert isinstance(ChildBStats.b, mmstats.BoolField)
    assert isinstance(ChildBStats.c, mmstats.BoolField)


def test_default_fields_are_header_facts(stats_dir: str) -> None:
    class Plain(mmstats.MmStats):
        c = mmstats.CounterField()

    before = time.time_ns()
    s = Plain()
    obj = rust_json([s.filename])[0]
    assert obj["pid"] == os.getpid() and obj["tid"] == threading.get_native_id()
    assert before - 10**9 <= obj["created_unix_ns"] <= time.time_ns()
    st = os.stat(s.filename)
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert obj["stats"]["org.python.version"].startswith(".".join(map(str, os.sys.version_info[:2])))
    assert obj["model"] == "Plain" and obj["alive"] is True and obj["state"] == "active"
