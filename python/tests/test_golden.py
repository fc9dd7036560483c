"""The example file of format-spec.md §9, byte for byte: a 1.0 file (no
lock token, its own flock probed), read by the Python reader as by the Rust
one; and the same layout written by the Python writer."""

from __future__ import annotations

import binascii
from pathlib import Path

from conftest import py_json_text, rust_json, rust_json_text

import mmstats
from mmstats import _format as F
from mmstats import reader

# format-spec.md §9, the xxd dump of specgen.Demo (1.0, live when dumped).
SPEC_EXAMPLE = """
4d4d 5354 4154 5300 0100 0000 0d0c 0b0a 8000 0000 4000 0000 a001 0000 0000 0000
0100 0000 0000 0000 0300 0000 0000 0000 0300 0000 8000 0000 4001 0000 2800 0000
6801 0000 3800 0000 755a 0000 755a 0000 bec5 0600 0000 0000 5841 60ba e544 ea18
4001 0000 0700 0000 4701 0000 0400 0000 0000 0000 0000 0000 0000 0000 0000 0000
4b01 0000 0300 0000 4e01 0000 0900 0000 5701 0000 0000 0000 5701 0000 0000 0000
0100 0000 0000 0000 6801 0000 0800 0000 0000 0000 0000 0000 0000 0000 0000 0000
5701 0000 0500 0000 5c01 0000 0000 0000 5c01 0000 0000 0000 5c01 0000 0000 0000
0200 0000 0000 0000 7001 0000 0800 0000 0000 0000 0000 0000 0000 0000 0000 0000
5c01 0000 0500 0000 6101 0000 0000 0000 6101 0000 0000 0000 6101 0000 0000 0000
0400 0000 0000 0000 7801 0000 2800 0000 0800 0000 0000 0000 0000 0000 0000 0000
7370 6563 6765 6e44 656d 6f72 6571 5265 7175 6573 7473 2e71 7565 7565 7374 6174
6500 0000 0000 0000 0300 0000 0000 0000 feff ffff ffff ffff 0200 0000 0000 0000
0000 0000 0000 0000 0000 0000 0000 0000 0400 0000 0000 0000 6964 6c65 0000 0000
"""


def spec_bytes() -> bytes:
    return binascii.unhexlify("".join(SPEC_EXAMPLE.split()))


def test_the_spec_example_reads_the_same_in_both_readers(tmp_path: Path) -> None:
    p = tmp_path / "specgen.Demo.23157.23157.mmstats"
    p.write_bytes(spec_bytes())
    got = mmstats.read(str(p))
    assert got["version"] == "1.0" and got["pid"] == 23157 and got["created_unix_ns"] == 1795323154925633880
    assert got["alive"] is False and got["state"] == "active" and got["fallbacks"] == 0
    assert got["stats"] == {"req": 3, "queue": -2, "state": "idle"}
    assert got["fields"]["req"]["help"] == "Requests."
    assert py_json_text([str(p)]) == rust_json_text([str(p)])


def test_the_python_writer_lays_the_example_out_the_same(tmp_path: Path) -> None:
    fields = [
        F.FieldDef("req", F.COUNTER, "Requests."),
        F.FieldDef("queue", F.GAUGE),
        F.FieldDef("state", F.TEXT, param0=8),
    ]
    lay = F.lay_out("specgen", "Demo", fields, 23157, 23157, 443838, 1795323154925633880)
    want = bytearray(spec_bytes())
    # The example's values as set, its minor version 0 (ours: 2).
    image = lay.image
    image[F.H_MINOR : F.H_MINOR + 2] = b"\x00\x00"
    image[0x168:0x1A0] = want[0x168:0x1A0]
    assert bytes(image) == bytes(want)


def test_a_python_file_is_valid_for_both_readers(stats_dir: str) -> None:
    class Demo(mmstats.BaseMmStats):
        req = mmstats.CounterField(help="Requests.")
        queue = mmstats.IntField()
        state = mmstats.StringField(size=8)

    s = Demo(command="specgen")
    s.req.incr(3)
    s.queue = -2
    s.state = "idle"
    s.state = "busy"
    r = rust_json([s.filename])[0]
    assert r["stats"] == {"req": 3, "queue": -2, "state": "busy"} and r["version"] == "1.2"
    assert reader.read(s.filename)["stats"] == r["stats"]


def test_the_text_output_and_the_exit_status(tmp_path: Path) -> None:
    import subprocess
    import sys

    p = tmp_path / "specgen.Demo.23157.23157.mmstats"
    p.write_bytes(spec_bytes())
    r = subprocess.run([sys.executable, "-m", "mmstats.slurpstats", str(p)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert 'command "specgen", model "Demo", dead (did not close)' in r.stdout
    assert '  state  "idle"' in r.stdout and "  queue  -2" in r.stdout
    bad = tmp_path / "bad.mmstats"
    bad.write_bytes(b"\0" * 200)
    r = subprocess.run(
        [sys.executable, "-m", "mmstats.slurpstats", "--json", str(p), str(bad), str(tmp_path / "nope")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert "bad magic" in r.stderr and "nope" in r.stderr
    assert r.stdout.count('"file"') == 1
