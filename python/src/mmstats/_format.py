"""The byte layout of format 1.2 (format-spec.md §3 to §5): every offset,
code and size the writer and the reader use, and the histogram arithmetic.

Nothing here touches a mapping. All integers are little-endian.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Optional, Sequence, Tuple

MAGIC = b"MMSTATS\x00"
VERSION_MAJOR = 1
VERSION_MINOR = 2
BYTE_ORDER_MARK = 0x0A0B0C0D
U64 = (1 << 64) - 1
MAX_FILE_LEN = 1 << 30
MAX_TEXT_CAPACITY = 1 << 20

# Header (§3.1), 128 bytes. Each offset follows the previous one.
H_MAGIC = 0x00
H_MAJOR = H_MAGIC + 8
H_MINOR = H_MAJOR + 2
H_BOM = H_MINOR + 2
H_HEADER_LEN = H_BOM + 4
H_RECORD_LEN = H_HEADER_LEN + 4
H_FILE_LEN = H_RECORD_LEN + 4
H_STATE = H_FILE_LEN + 8
H_FIELD_COUNT = H_STATE + 8
H_FIELD_CAPACITY = H_FIELD_COUNT + 8
H_FIELD_TABLE_OFF = H_FIELD_CAPACITY + 4
H_STRINGS_OFF = H_FIELD_TABLE_OFF + 4
H_STRINGS_LEN = H_STRINGS_OFF + 4
H_VALUES_OFF = H_STRINGS_LEN + 4
H_VALUES_LEN = H_VALUES_OFF + 4
H_PID = H_VALUES_LEN + 4
H_TID = H_PID + 4
H_PROC_START = H_TID + 4
H_CREATED_NS = H_PROC_START + 8
H_COMMAND = H_CREATED_NS + 8
H_MODEL = H_COMMAND + 8
H_LOCK_TOKEN = H_MODEL + 8
H_FALLBACKS = H_LOCK_TOKEN + 8
HEADER_LEN = H_FALLBACKS + 8
assert HEADER_LEN == 128 and H_PID == 0x48 and H_LOCK_TOKEN == 0x70

# The header as one struct: magic, major, minor, bom, header_len,
# record_len, file_len, state, field_count, field_capacity, field_table_off,
# strings_off, strings_len, values_off, values_len, pid, tid, proc_start,
# created_ns, command (off, len), model (off, len), lock_token, fallbacks.
HEADER = struct.Struct("<8sHHIIIQQQIIIIIIIIQQIIIIQQ")
assert HEADER.size == HEADER_LEN

# Archive header extension (§2.8).
A_WRITERS = HEADER_LEN
A_SINCE_NS = A_WRITERS + 8
A_FOLDED_NS = A_SINCE_NS + 8
A_FOLDS = A_FOLDED_NS + 8
A_ID_COUNT = A_FOLDS + 8
A_IDS = A_ID_COUNT + 8 + 24
ID_LEN = 40
assert A_IDS == 0xC0
SOURCE_ID = struct.Struct("<QQQIIQ")  # lock_token, created_ns, proc_start, pid, name_hash, absent_ns
assert SOURCE_ID.size == ID_LEN

# Field record (§3.2), 64 bytes: label, help, unit_text, static_labels
# (each off, len), kind, unit, flags, value_off, value_len, param0, param1.
RECORD = struct.Struct("<IIIIIIIIHHIIIQQ")
RECORD_LEN = RECORD.size
assert RECORD_LEN == 64

# Writer states (§2.5).
STATE_ACTIVE = 1
STATE_EXITED = 2
STATE_ARCHIVE = 3

# Kinds (§4.1).
COUNTER = 1
GAUGE = 2
GAUGE_F64 = 3
TEXT = 4
CONSTANT = 5
HISTOGRAM = 6
TIMER = 7
KIND_NAMES = {
    COUNTER: "counter",
    GAUGE: "gauge",
    GAUGE_F64: "gauge_f64",
    TEXT: "text",
    CONSTANT: "constant",
    HISTOGRAM: "histogram",
    TIMER: "timer",
}

# Units (§4.2): code -> canonical text, and the texts the writer maps to codes.
UNIT_TEXTS = {0: "", 1: "ns", 2: "us", 3: "ms", 4: "s", 5: "bytes"}
UNIT_CODES = {"ns": 1, "us": 2, "\u00b5s": 2, "ms": 3, "s": 4, "bytes": 5, "B": 5}

# Histogram layouts (§5.3): (precision bits p, max bits m).
TIMER_LAYOUT = (6, 42)
HISTOGRAM_LAYOUT = (6, 64)


def align8(n: int) -> int:
    """``n`` rounded up to a multiple of 8."""
    return (n + 7) & ~7


def text_value_len(capacity: int) -> int:
    """Bytes of a text or constant value of ``capacity`` bytes (§4.3)."""
    return 8 + 2 * (8 + align8(capacity))


def text_buffer_word(capacity: int, buffer: int) -> int:
    """Word index, within a text value, of buffer ``buffer``'s length word."""
    return 1 + buffer * (1 + align8(capacity) // 8)


def valid_layout(p: int, m: int) -> bool:
    """Whether ``(p, m)`` is a histogram layout of §5.1."""
    return 1 <= p <= 12 and p < m <= 64


def buckets(p: int, m: int) -> int:
    """Number of buckets of layout ``(p, m)``."""
    return (m - p + 1) << p


def hist_value_len(p: int, m: int) -> int:
    """Bytes of a histogram or timer value of layout ``(p, m)``."""
    return 8 + 8 * buckets(p, m)


def bucket_index(v: int, p: int, m: int) -> int:
    """The bucket that counts value ``v`` (§5.1)."""
    top = (1 << m) - 1
    if v > top:
        v = top
    s = (v | 1).bit_length() - 1 - p
    if s < 0:
        s = 0
    return (s << p) + (v >> s)


def bucket_bounds(i: int, p: int) -> Tuple[int, int]:
    """The smallest and largest value that bucket ``i`` counts (§5.1)."""
    sub = 1 << p
    if i < 2 * sub:
        return i, i
    s = (i >> p) - 1
    lower = (sub + (i & (sub - 1))) << s
    return lower, lower + (1 << s) - 1


def value_len(kind: int, param0: int, param1: int) -> Optional[int]:
    """The value length ``kind`` needs, or None if its parameters are invalid (R3)."""
    if kind in (COUNTER, GAUGE, GAUGE_F64):
        return 8
    if kind in (TEXT, CONSTANT):
        if param0 > MAX_TEXT_CAPACITY:
            return None
        return text_value_len(param0)
    if kind in (HISTOGRAM, TIMER):
        if not valid_layout(param0, param1):
            return None
        return hist_value_len(param0, param1)
    return None


class FieldDef(NamedTuple):
    """One field as the writer lays it out."""

    label: str
    kind: int
    help: str = ""
    unit_text: str = ""
    static_labels: Sequence[Tuple[str, str]] = ()
    param0: int = 0
    param1: int = 0

    def encoded_static_labels(self) -> str:
        return "\n".join(f"{k}={v}" for k, v in self.static_labels)


class Layout(NamedTuple):
    """A laid-out file image: the bytes and where each value lives."""

    image: bytearray
    values_off: int
    value_offsets: Tuple[int, ...]


def check_label(label: str) -> Optional[str]:
    """Why ``label`` is not a valid label (§3.2), or None."""
    if not label:
        return "empty label"
    for c in label:
        o = ord(c)
        if o < 0x20 or 0x7F <= o <= 0x9F:
            return "label contains a control character"
    return None


def lay_out(
    command: str,
    model: str,
    fields: Sequence[FieldDef],
    pid: int,
    tid: int,
    proc_start: int,
    created_ns: int,
) -> Layout:
    """Builds the whole image of a new file (§2.3 step 1, §3): header with
    ``state = 1``, field table, string table, zeroed values. The lock token
    and fallback count are filled in at publication.

    Raises ValueError for an invalid definition (a bug in the model).
    """
    labels = set()
    lens = []
    for f in fields:
        why = check_label(f.label)
        if why is None and f.label in labels:
            why = "label used twice in one model"
        if why is None:
            for k, v in f.static_labels:
                if not k or "=" in k or "\n" in k or "\r" in k or "\n" in v or "\r" in v:
                    why = f"static label {k!r}={v!r} is not valid"
        n = value_len(f.kind, f.param0, f.param1)
        if why is None and n is None:
            why = "invalid kind parameters"
        if why is not None:
            raise ValueError(f"field {f.label!r}: {why}")
        labels.add(f.label)
        lens.append(n)
    enc = [
        (
            f.label.encode(),
            f.help.strip().encode(),
            f.unit_text.encode(),
            f.encoded_static_labels().encode(),
        )
        for f in fields
    ]
    cmd_b, model_b = command.encode(), model.encode()
    table_off = HEADER_LEN
    strings_off = table_off + len(fields) * RECORD_LEN
    string_bytes = len(cmd_b) + len(model_b) + sum(len(s) for e in enc for s in e)
    strings_len = align8(string_bytes)
    values_off = strings_off + strings_len
    values_len = align8(sum(lens))
    file_len = values_off + values_len
    if file_len > MAX_FILE_LEN:
        raise ValueError(f"model {model!r} too large: {file_len} bytes")
    image = bytearray(file_len)
    fill = strings_off

    def push(b: bytes) -> Tuple[int, int]:
        nonlocal fill
        off = fill
        image[off : off + len(b)] = b
        fill += len(b)
        return off, len(b)

    cmd_ref = push(cmd_b)
    model_ref = push(model_b)
    offsets = []
    voff = values_off
    for i, (f, e, n) in enumerate(zip(fields, enc, lens)):
        refs = [push(s) for s in e]
        unit = UNIT_CODES.get(f.unit_text, 0)
        RECORD.pack_into(
            image,
            table_off + i * RECORD_LEN,
            *refs[0],
            *refs[1],
            *refs[2],
            *refs[3],
            f.kind,
            unit,
            0,
            voff,
            n,
            f.param0,
            f.param1,
        )
        offsets.append(voff)
        voff += n
    HEADER.pack_into(
        image,
        0,
        MAGIC,
        VERSION_MAJOR,
        VERSION_MINOR,
        BYTE_ORDER_MARK,
        HEADER_LEN,
        RECORD_LEN,
        file_len,
        STATE_ACTIVE,
        len(fields),
        len(fields),
        table_off,
        strings_off,
        strings_len,
        values_off,
        values_len,
        pid,
        tid,
        proc_start,
        created_ns,
        *cmd_ref,
        *model_ref,
        0,
        0,
    )
    return Layout(image, values_off, tuple(offsets))


def sanitize(s: str) -> str:
    """A command or model name made safe for a file name (§2.2): ASCII
    letters, digits, ``_`` and ``-`` kept, every other code point one ``_``."""
    out = "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "_" for c in s)
    return out or "_"


def fnv1a32(data: bytes) -> int:
    """32-bit FNV-1a (archive source identities, §2.8)."""
    h = 0x811C9DC5
    for b in data:
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h


def fnv1a64(data: bytes) -> int:
    """64-bit FNV-1a (archive names, §2.8)."""
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & U64
    return h


def archive_stem(command: str, model: str) -> str:
    """The archive's file name without ``.mmstats`` (§2.8)."""
    c, m = sanitize(command), sanitize(model)
    if c == command and m == model:
        return f"{c}.{m}.archive"
    key = command.encode() + b"\x00" + model.encode()
    return f"{c}.{m}.archive-{fnv1a64(key):016x}"


def lock_file_name(token: int) -> str:
    """The name of a writer process's lock file (§2.4)."""
    return f".lock.{token:016x}.mmstats-lock"
