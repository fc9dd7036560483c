"""Reading stats files (format-spec.md §7): finding them safely (§2.1,
§7.6), validating every length and offset, copying consistent snapshots,
counting folded writers once (§2.8), and the JSON contract (§7.7).

Every file is treated as hostile: a malformed file is a :class:`ReadError`
naming it, never an exception of another type. Python cannot recover from
SIGBUS, so a file is checked with ``fstat`` before and after each snapshot
(§7.5); a file truncated *during* a snapshot still kills the process.
Values are read as single aligned 8-byte loads of a memoryview, which is
what CPython does in practice on x86-64 and AArch64 but does not promise
(§6.1): treat this reader as best-effort and the Rust one as the reference.

``read(path)`` and ``discover(paths)`` return the values of the JSON
contract; ``python -m mmstats.slurpstats --json`` prints them exactly as
the Rust ``slurpstats --json`` does.
"""

from __future__ import annotations

import errno
import fcntl
import json
import mmap
import os
import stat as st
import struct
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _format as F

TEXT_RETRIES = 1000
#: A reading slower than this is taken again (a quarter of the shortest prune delay, §2.8).
MAX_READ_SPAN = 15.0


class ReadLimits:
    """What one file may cost (§7.4, "Reader limits"); the Rust defaults."""

    def __init__(
        self,
        max_file_len: int = F.MAX_FILE_LEN,
        max_text_capacity: int = 1 << 16,
        max_fields: int = 100_000,
        max_decoded: int = 1 << 26,
    ) -> None:
        self.max_file_len = max_file_len
        self.max_text_capacity = max_text_capacity
        self.max_fields = max_fields
        self.max_decoded = max_decoded


class ReadError(Exception):
    """A file that could not be read. ``kind`` is one of ``io``,
    ``malformed``, ``version``, ``truncated``, ``limit``, ``not_owned``."""

    def __init__(self, path: str, kind: str, message: str, errno_: Optional[int] = None) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.kind = kind
        self.errno = errno_


def _malformed(path: str, reason: str) -> ReadError:
    return ReadError(path, "malformed", f"not a valid stats file: {reason}")


def _truncated(path: str) -> ReadError:
    return ReadError(
        path, "truncated", "file is shorter than its header says: truncated, or it shrank while being read"
    )


class Histogram:
    """A histogram or timer as read: layout, sum and the non-empty buckets."""

    __slots__ = ("p", "m", "sum", "used")

    def __init__(self, p: int, m: int, sum_: int, used: List[Tuple[int, int]]) -> None:
        self.p, self.m, self.sum, self.used = p, m, sum_, used

    def count(self) -> int:
        return min(sum(c for _, c in self.used), F.U64)

    def quantile(self, q: float) -> Optional[int]:
        """The ``q`` quantile as §5.4 defines it, None when empty."""
        n = self.count()
        if n == 0:
            return None
        if q != q:
            q = 0.0
        q = min(max(q, 0.0), 1.0)
        r = q * float(n)
        rank = F.U64 if r >= 18446744073709551616.0 else int(-(-r // 1))
        rank = min(max(rank, 1), n)
        seen = 0
        for i, c in self.used:
            seen = min(seen + c, F.U64)
            if seen >= rank:
                lo, hi = F.bucket_bounds(i, self.p)
                return lo + (hi - lo) // 2
        return None

    def to_json(self) -> Dict[str, Any]:
        n = self.count()
        qs = ("p50", 0.5), ("p75", 0.75), ("p90", 0.9), ("p95", 0.95), ("p99", 0.99), ("p999", 0.999)
        out: Dict[str, Any] = {
            "count": n,
            "sum": self.sum if n else 0,
            "mean": (float(self.sum) / float(n)) if n else None,
            "min": F.bucket_bounds(self.used[0][0], self.p)[0] if n else None,
            "max": F.bucket_bounds(self.used[-1][0], self.p)[1] if n else None,
        }
        for name, q in qs:
            out[name] = self.quantile(q)
        out["buckets"] = [[*F.bucket_bounds(i, self.p), c] for i, c in self.used]
        return out


class FieldValue:
    """One field of a snapshot."""

    __slots__ = ("label", "kind", "unit", "unit_text", "help", "static_labels", "value")

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


class Snapshot:
    """Everything read from one file at one moment."""

    def __init__(self) -> None:
        self.path = ""
        self.version = (0, 0)
        self.pid = self.tid = 0
        self.proc_start = 0
        self.created_ns = 0
        self.command = self.model = ""
        self.alive = False
        self.state = 0
        self.fallbacks = 0
        self.lock_token = 0
        self.owner = 0
        self.archive: Optional[Dict[str, Any]] = None
        self.archive_ids: set = set()
        self.fields: List[FieldValue] = []
        self.skipped = 0
        self.duplicates: List[str] = []

    def source_id(self) -> Tuple[int, int, int, int, int]:
        """The identity a fold records for this file (§2.8)."""
        name = os.fsencode(os.path.basename(self.path))
        return (self.lock_token, self.created_ns, self.proc_start, self.pid, F.fnv1a32(name))


# ---------------------------------------------------------------- reader --


def _lossy(path: str) -> str:
    return os.fsencode(path).decode("utf-8", "replace")


class Reader:
    """An open, read-only, mapped stats file (§7.1)."""

    def __init__(self, path: str, limits: Optional[ReadLimits] = None, owner: Optional[int] = None) -> None:
        self.path = path
        self.limits = limits or ReadLimits()
        self.nlink: Optional[int] = None
        try:
            before = os.lstat(path)
        except OSError as e:
            raise ReadError(path, "io", e.strerror or str(e), e.errno) from None
        if st.S_ISLNK(before.st_mode):
            raise ReadError(path, "io", "is a symbolic link, which readers do not follow (give its target instead)")
        if not st.S_ISREG(before.st_mode):
            raise _malformed(path, "not a regular file")
        if owner is not None and before.st_uid != owner:
            raise self._not_owned(before.st_uid, owner)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            raise ReadError(path, "io", e.strerror or str(e), e.errno) from None
        self.fd = fd
        try:
            s = os.fstat(fd)
            if not st.S_ISREG(s.st_mode):
                raise _malformed(path, "not a regular file")
            if owner is not None and s.st_uid != owner:
                raise self._not_owned(s.st_uid, owner)
            if s.st_size < F.HEADER_LEN:
                raise _malformed(path, f"file is shorter than the {F.HEADER_LEN}-byte header")
            if s.st_size > F.MAX_FILE_LEN:
                raise _malformed(path, f"file is over the limit of {F.MAX_FILE_LEN} bytes")
            if s.st_size > self.limits.max_file_len:
                raise self._limit("max_file_len", self.limits.max_file_len)
            self.size = s.st_size
            self.owner = s.st_uid
            self.mm = mmap.mmap(fd, s.st_size & ~7, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            self.words = memoryview(self.mm).cast("Q")
        except BaseException:
            os.close(fd)
            raise

    def _not_owned(self, uid: int, dir_owner: int) -> ReadError:
        return ReadError(
            self.path,
            "not_owned",
            f"owned by uid {uid}, not by its directory's owner (uid {dir_owner}); not read in a default scan",
        )

    def _limit(self, name: str, value: int) -> ReadError:
        return ReadError(self.path, "limit", f"over this reader's limit {name} = {value}; raise the limit to read it")

    def close(self) -> None:
        try:
            self.words.release()
            self.mm.close()
        except (BufferError, ValueError):
            pass
        try:
            os.close(self.fd)
        except OSError:
            pass

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def unlinked(self) -> bool:
        """Whether the file was removed from its directory since it was opened."""
        if self.nlink is None:
            try:
                return os.fstat(self.fd).st_nlink == 0
            except OSError:
                return True
        return self.nlink == 0

    def _check_size(self, file_len: int) -> None:
        try:
            s = os.fstat(self.fd)
        except OSError:
            raise _truncated(self.path) from None
        self.nlink = s.st_nlink
        if s.st_size < file_len:
            raise _truncated(self.path)

    def snapshot(self) -> Snapshot:
        """Reads the header, fields and values (§7.2). The file's size is
        checked before (so that a file cut short since it was opened is
        reported, not faulted on) and after (§7.5)."""
        try:
            if os.fstat(self.fd).st_size < F.HEADER_LEN:
                raise _truncated(self.path)
        except OSError:
            raise _truncated(self.path) from None
        hdr = tuple(self.words[0:16])
        file_len = hdr[3]
        sized = file_len <= self.size
        if sized:
            self._check_size(file_len)
        budget = _Budget()
        try:
            snap = self._read(hdr, budget)
        except ReadError as e:
            if sized:
                self._check_size(file_len)
            if e.kind == "malformed" and budget.reader_limit and budget.exceeded:
                raise self._limit("max_decoded", self.limits.max_decoded) from None
            raise
        self._check_size(file_len)
        return snap

    def _read(self, hw: Tuple[int, ...], budget: _Budget) -> Snapshot:
        path = self.path
        hb = b"".join(w.to_bytes(8, "little") for w in hw)
        h = F.HEADER.unpack(hb)
        (magic, major, minor, bom, header_len, record_len, file_len, _state, _count, capacity, table_off,
         strings_off, strings_len, values_off, values_len, pid, tid, proc_start, created_ns,
         cmd_off, cmd_len, model_off, model_len, lock_token, fallbacks) = h  # fmt: skip
        if magic != F.MAGIC:
            raise _malformed(path, "bad magic: not an mmstats file")
        if bom != F.BYTE_ORDER_MARK:
            raise _malformed(path, "bad byte-order mark (written on a big-endian machine, or not an mmstats file)")
        if major != F.VERSION_MAJOR:
            raise ReadError(
                path,
                "version",
                f"format version {major}.{minor} is not supported by this reader (it reads 1.x); "
                "use a reader for that version",
            )
        if file_len > self.size or (file_len & ~7) > len(self.mm):
            raise _truncated(path)
        if header_len < F.HEADER_LEN or header_len > file_len:
            raise _malformed(path, f"header length {header_len} out of range")
        if record_len < F.RECORD_LEN or record_len % 8:
            raise _malformed(path, f"record length {record_len} is not a multiple of 8 of at least {F.RECORD_LEN}")

        def region(off: int, length: int, what: str) -> Tuple[int, int]:
            end = off + length
            if off % 8 or end % 8 or off < header_len or end > file_len:
                raise _malformed(
                    path,
                    f"{what} at {off}..{end} is unaligned or outside the file (header {header_len}, length {file_len})",
                )
            return off, end

        region(table_off, capacity * record_len, "field table")
        strings = region(strings_off, strings_len, "string table")
        values = region(values_off, values_len, "value area")
        count = self.words[F.H_FIELD_COUNT // 8]
        if count > capacity:
            raise _malformed(path, f"field count {count} is over the table's capacity {capacity}")
        if count > self.limits.max_fields:
            raise self._limit("max_fields", self.limits.max_fields)
        state = self.words[F.H_STATE // 8]
        budget.reader_limit = self.limits.max_decoded < file_len
        budget.left = min(file_len, self.limits.max_decoded)
        snap = Snapshot()
        snap.path = path
        snap.version = (major, minor)
        snap.pid, snap.tid, snap.proc_start, snap.created_ns = pid, tid, proc_start, created_ns
        snap.owner = self.owner
        snap.state = state
        snap.fallbacks = fallbacks if minor >= 1 else 0
        snap.lock_token = lock_token if minor >= 1 else 0

        def string(off: int, length: int) -> str:
            if length == 0:
                return ""
            if off < strings[0] or off + length > strings[1]:
                raise ValueError(
                    f"string at {off}..{off + length} is outside the string table {strings[0]}..{strings[1]}"
                )
            budget.spend(length)
            try:
                return self.mm[off : off + length].decode("utf-8")
            except UnicodeDecodeError as e:
                raise ValueError(f"invalid UTF-8 at {off}: {e.reason}") from None

        try:
            snap.command = string(cmd_off, cmd_len)
        except ValueError as e:
            raise _malformed(path, f"command: {e}") from None
        try:
            snap.model = string(model_off, model_len)
        except ValueError as e:
            raise _malformed(path, f"model: {e}") from None
        snap.alive = _probe(self.fd, path, minor, lock_token) is True
        if state == F.STATE_ARCHIVE:
            try:
                self._archive(header_len, budget, snap)
            except ValueError as e:
                raise _malformed(path, f"archive: {e}") from None
        labels = set()
        for i in range(count):
            at = table_off + i * record_len
            rec = F.RECORD.unpack(self.mm[at : at + F.RECORD_LEN])
            (l_off, l_len, h_off, h_len, u_off, u_len, s_off, s_len, kind, unit,
             _flags, v_off, v_len, p0, p1) = rec  # fmt: skip
            try:
                label = string(l_off, l_len)
            except ValueError as e:
                raise _malformed(path, f"field {i}: label: {e}") from None
            if kind not in F.KIND_NAMES:
                snap.skipped += 1
                continue
            where = f"field {i} ({label})"
            try:
                unit_text = string(u_off, u_len)
                help_ = string(h_off, h_len)
                static = string(s_off, s_len)
            except ValueError as e:
                raise _malformed(path, f"{where}: {e}") from None
            need = F.value_len(kind, p0, p1)
            if need is None:
                if kind in (F.TEXT, F.CONSTANT):
                    why = f"text capacity {p0} is over the format's limit of {F.MAX_TEXT_CAPACITY}"
                else:
                    why = f"invalid histogram layout p = {p0}, m = {p1}"
                raise _malformed(path, f"{where}: {why}")
            end = v_off + v_len
            if v_off % 8 or end % 8 or v_len < need or v_off < values[0] or end > values[1]:
                raise _malformed(
                    path,
                    f"{where}: {F.KIND_NAMES[kind]} value at {v_off}..{end} (needs {need} bytes) is unaligned, "
                    f"too short, or outside the value area {values[0]}..{values[1]}",
                )
            try:
                budget.spend(v_len)
            except ValueError as e:
                raise _malformed(path, f"{where}: {e}") from None
            if label in labels:
                snap.duplicates.append(label)
                continue
            labels.add(label)
            snap.fields.append(
                FieldValue(
                    label=label,
                    kind=kind,
                    unit=unit if unit in F.UNIT_TEXTS else 0,
                    unit_text=unit_text,
                    help=help_,
                    static_labels=_parse_static_labels(static),
                    value=self._value(kind, v_off, p0, p1),
                )
            )
        return snap

    def _archive(self, header_len: int, budget: _Budget, snap: Snapshot) -> None:
        if header_len < F.A_IDS:
            raise ValueError(f"header length {header_len} is shorter than an archive's {F.A_IDS}")
        w = self.words
        n = w[F.A_ID_COUNT // 8]
        room = (header_len - F.A_IDS) // F.ID_LEN
        if n > room:
            raise ValueError(f"{n} source identities do not fit in the header (room for {room})")
        budget.spend(n * F.ID_LEN)
        raw = self.mm[F.A_IDS : F.A_IDS + n * F.ID_LEN]
        ids = set()
        for k in range(n):
            lt, cr, ps, pid, nh, _absent = F.SOURCE_ID.unpack_from(raw, k * F.ID_LEN)
            ids.add((lt, cr, ps, pid, nh))
        snap.archive = {
            "writers": w[F.A_WRITERS // 8],
            "since_unix_ns": w[F.A_SINCE_NS // 8],
            "folded_unix_ns": w[F.A_FOLDED_NS // 8],
            "folds": w[F.A_FOLDS // 8],
            "ids": n,
        }
        snap.archive_ids = ids

    def _value(self, kind: int, off: int, p0: int, p1: int) -> Any:
        w = self.words
        k = off // 8
        if kind == F.COUNTER:
            return w[k]
        if kind == F.GAUGE:
            v = w[k]
            return v - (1 << 64) if v >> 63 else v
        if kind == F.GAUGE_F64:
            return _D.unpack(w[k].to_bytes(8, "little"))[0]
        if kind in (F.TEXT, F.CONSTANT):
            if p0 > self.limits.max_text_capacity:
                return _Unavailable(
                    f"capacity {p0} is over this reader's limit max_text_capacity = {self.limits.max_text_capacity}"
                )
            return _text_read(w, k, p0)
        n = F.buckets(p0, p1)
        # The sum first (§7.3), then the buckets: one 8-byte load each.
        total = w[k]
        counts = w[k + 1 : k + 1 + n].tolist()
        used = [(i, c) for i, c in enumerate(counts) if c]
        return Histogram(p0, p1, total, used)


class _Unavailable:
    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_D = struct.Struct("<d")


def _text_read(w: memoryview, k: int, capacity: int) -> Any:
    """The text read of §7.3: the buffer of the last complete write, kept
    only if the sequence word says no write into it began meanwhile."""
    c8 = F.align8(capacity) // 8
    for attempt in range(TEXT_RETRIES):
        s1 = w[k]
        wr = s1 // 2
        b = k + F.text_buffer_word(capacity, wr % 2)
        length = w[b]
        n = min(length, capacity)
        data = w[b + 1 : b + 1 + min(c8, (n + 7) // 8)].tolist()
        s2 = w[k]
        if not (s1 <= s2 < min((s1 | 1) + 2, F.U64)):
            if attempt % 64 == 63:
                time.sleep(0)
            continue
        if length > capacity:
            return _Unavailable(f"length {length} is over the capacity {capacity}")
        raw = b"".join(x.to_bytes(8, "little") for x in data)[:n]
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return _Unavailable(f"invalid UTF-8: {e.reason}")
    return _Unavailable(f"still being rewritten after {TEXT_RETRIES} attempts")


class _Budget:
    """What a snapshot may still decode (L1)."""

    def __init__(self) -> None:
        self.left = 0
        self.reader_limit = False
        self.exceeded = False

    def spend(self, n: int) -> None:
        if n > self.left:
            self.exceeded = True
            if self.reader_limit:
                raise ValueError("strings and values reach this reader's limit max_decoded")
            raise ValueError("strings and values add up to more than the file holds (records share bytes?)")
        self.left -= n


def _parse_static_labels(s: str) -> List[Tuple[str, str]]:
    out = []
    seen = set()
    for line in s.split("\n"):
        if not line:
            continue
        k, _, v = line.partition("=")
        if k in seen:
            continue
        seen.add(k)
        out.append((k, v))
    return out


def _is_locked(fd: int) -> Optional[bool]:
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return True
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    except OSError:
        pass
    return False


def _probe(fd: int, path: str, minor: int, token: int) -> Optional[bool]:
    """Whether the writer is alive (§2.4): None if the probe failed."""
    if minor >= 1 and token != 0:
        lock = os.path.join(os.path.dirname(path), F.lock_file_name(token))
        try:
            lfd = os.open(lock, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError:
            return None
        try:
            if not st.S_ISREG(os.fstat(lfd).st_mode):
                return None
            return _is_locked(lfd)
        finally:
            os.close(lfd)
    return _is_locked(fd)


def read_snapshot(path: str, limits: Optional[ReadLimits] = None) -> Snapshot:
    """Opens and snapshots one file; raises :class:`ReadError`."""
    with Reader(path, limits) as r:
        return r.snapshot()


# ------------------------------------------------------------- discovery --


class Found:
    """A stats file found by :func:`scan`."""

    __slots__ = ("path", "foreign", "owner")

    def __init__(self, path: str, foreign: bool = False, owner: Optional[int] = None) -> None:
        self.path, self.foreign, self.owner = path, foreign, owner

    def open(self, limits: Optional[ReadLimits] = None) -> Reader:
        return Reader(self.path, limits, self.owner)


class Problem:
    """A problem met while finding files."""

    __slots__ = ("path", "reason", "foreign")

    def __init__(self, path: str, reason: str, foreign: bool) -> None:
        self.path, self.reason, self.foreign = path, reason, foreign

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def is_stats_name(name: str) -> bool:
    return not name.startswith(".") and name.endswith(".mmstats")


def default_dirs() -> List[str]:
    """``$MMSTATS_DIR`` if set, else every ``/dev/shm/mmstats-*`` entry,
    sorted byte-wise (§2.1)."""
    d = os.environ.get("MMSTATS_DIR")
    if d:
        return [d]
    root = os.environ.get("MMSTATS_SCAN_ROOT") or "/dev/shm"
    try:
        names = [n for n in os.listdir(root) if n.startswith("mmstats-")]
    except OSError:
        names = []
    return sorted((os.path.join(root, n) for n in names), key=os.fsencode)


def _type_name(mode: int) -> str:
    for test, name in (
        (st.S_ISLNK, "a symbolic link"),
        (st.S_ISDIR, "a directory"),
        (st.S_ISFIFO, "a FIFO"),
        (st.S_ISCHR, "a character device"),
        (st.S_ISBLK, "a block device"),
        (st.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def _join(d: str, name: str) -> str:
    return d + name if d.endswith("/") else f"{d}/{name}"


class _Scan:
    def __init__(self) -> None:
        self.files: List[Found] = []
        self.problems: List[Problem] = []

    def problem(self, path: str, reason: str, foreign: bool) -> None:
        self.problems.append(Problem(path, reason, foreign))

    def default_dir(self, d: str, euid: int) -> None:
        try:
            s = os.lstat(d)
        except OSError as e:
            return self.problem(d, e.strerror or str(e), False)
        foreign = s.st_uid != euid
        if st.S_ISLNK(s.st_mode):
            return self.problem(d, "is a symbolic link; a default scan does not follow it", foreign)
        if not st.S_ISDIR(s.st_mode):
            return self.problem(d, "not a directory", foreign)
        if s.st_mode & 0o022:
            return self.problem(
                d, f"writable by group or others (mode {s.st_mode & 0o7777:o}); a default scan skips it", foreign
            )
        self.list_dir(d, foreign, s.st_uid)

    def arg(self, a: str) -> None:
        try:
            s = os.lstat(a)
        except OSError as e:
            if any(c in a for c in "*?["):
                return self.pattern(a)
            return self.problem(a, e.strerror or str(e), False)
        if st.S_ISDIR(s.st_mode):
            return self.explicit_dir(a)
        if st.S_ISREG(s.st_mode):
            self.files.append(Found(a))
            return None
        if st.S_ISLNK(s.st_mode):
            try:
                if st.S_ISDIR(os.stat(a).st_mode):
                    return self.explicit_dir(a)
            except OSError:
                pass
            return self.problem(a, "is a symbolic link, which readers do not follow (give its target instead)", False)
        return self.problem(a, f"{_type_name(s.st_mode)}, not a stats file or directory", False)

    def explicit_dir(self, d: str) -> None:
        if self.list_dir(d, False, None) == 0:
            self.problem(d, "no stats files in this directory", False)

    def list_dir(self, d: str, foreign: bool, owner: Optional[int]) -> int:
        try:
            names = os.listdir(d)
        except OSError as e:
            self.problem(d, e.strerror or str(e), foreign)
            return 0
        return sum(self.entry(_join(d, n), foreign, owner) for n in names if is_stats_name(n))

    def entry(self, path: str, foreign: bool, owner: Optional[int]) -> bool:
        try:
            s = os.lstat(path)
        except OSError as e:
            self.problem(path, e.strerror or str(e), foreign)
            return False
        if not st.S_ISREG(s.st_mode):
            self.problem(path, f"{_type_name(s.st_mode)} under a stats name; skipped", foreign)
            return False
        if owner is not None and s.st_uid != owner:
            self.problem(
                path,
                f"owned by uid {s.st_uid}, not by its directory's owner (uid {owner}); skipped",
                foreign,
            )
            return False
        self.files.append(Found(path, foreign, owner))
        return True

    def pattern(self, a: str) -> None:
        try:
            parts = _parse_pattern(a)
        except ValueError as e:
            return self.problem(a, f"bad pattern: {e}", False)
        matches: List[str] = []
        visited: set = set()
        _walk("/" if a.startswith("/") else "", parts, 0, matches, visited, self)
        found = 0
        for m in sorted(matches, key=os.fsencode):
            try:
                s = os.lstat(m)
            except OSError:
                continue
            if st.S_ISDIR(s.st_mode):
                found += self.list_dir(m, False, None)
            elif is_stats_name(os.path.basename(m)):
                found += self.entry(m, False, None)
        if found == 0:
            self.problem(a, "no stats files match this pattern", False)
        return None


def _class_end(p: str, i: int) -> Optional[int]:
    j = i + 1
    if j < len(p) and p[j] == "!":
        j += 1
    if j < len(p) and p[j] == "]":
        j += 1
    while j < len(p):
        if p[j] == "]":
            return j
        j += 1
    return None


def _check_classes(p: str) -> None:
    i = 0
    while i < len(p):
        if p[i] == "[":
            e = _class_end(p, i)
            if e is None:
                raise ValueError("unclosed `[`")
            i = e
        i += 1


def _class_matches(p: str, start: int, end: int, c: str) -> bool:
    i = start + 1
    neg = p[i] == "!"
    if neg:
        i += 1
    hit = False
    first = True
    while i < end:
        if p[i] == "]" and not first:
            break
        first = False
        if i + 2 < end and p[i + 1] == "-":
            hit |= p[i] <= c <= p[i + 2]
            i += 3
        else:
            hit |= p[i] == c
            i += 1
    return hit != neg


def wild_match(p: str, name: str) -> bool:
    """``*``, ``?``, ``[...]`` and ``[!...]`` within one path component."""
    pi = ni = 0
    star: Optional[Tuple[int, int]] = None
    while ni < len(name):
        step: Optional[int] = None
        if pi < len(p):
            c = p[pi]
            if c == "*":
                star = (pi, ni)
                pi += 1
                continue
            if c == "?":
                step = pi + 1
            elif c == "[":
                e = _class_end(p, pi)
                assert e is not None
                if _class_matches(p, pi, e, name[ni]):
                    step = e + 1
            elif c == name[ni]:
                step = pi + 1
        if step is not None:
            pi = step
            ni += 1
        elif star is not None:
            pi = star[0] + 1
            ni = star[1] + 1
            star = (star[0], star[1] + 1)
        else:
            return False
    return all(c == "*" for c in p[pi:])


def _parse_pattern(s: str) -> List[Tuple[str, str]]:
    parts = []
    for c in s.split("/"):
        if not c:
            continue
        if c == "**":
            parts.append(("rec", c))
        elif "**" in c:
            raise ValueError(f"`**` must be a whole path component, not part of {c!r}")
        elif any(x in c for x in "*?["):
            try:
                _check_classes(c)
            except ValueError as e:
                raise ValueError(f"{e} in {c!r}") from None
            parts.append(("wild", c))
        else:
            parts.append(("lit", c))
    return parts


def _entries(base: str, scan: _Scan) -> List[Tuple[str, bool]]:
    d = base or "."
    try:
        it = list(os.scandir(d))
    except OSError as e:
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            scan.problem(d, e.strerror or str(e), False)
        return []
    out = []
    for e in it:
        try:
            is_dir = e.is_dir(follow_symlinks=False)
        except OSError:
            is_dir = False
        out.append((e.name, is_dir))
    out.sort(key=lambda x: os.fsencode(x[0]))
    return out


def _pjoin(base: str, name: str) -> str:
    return name if not base else _join(base, name)


def _walk(base: str, parts: List[Tuple[str, str]], i: int, matches: List[str], visited: set, scan: _Scan) -> None:
    if i == len(parts):
        matches.append(base)
        return
    kind, text = parts[i]
    last = i + 1 == len(parts)
    if kind == "lit":
        nxt = _pjoin(base, text)
        if last:
            matches.append(nxt)
        else:
            _walk(nxt, parts, i + 1, matches, visited, scan)
    elif kind == "wild":
        for name, is_dir in _entries(base, scan):
            if not wild_match(text, name):
                continue
            if last:
                matches.append(_pjoin(base, name))
            elif is_dir:
                _walk(_pjoin(base, name), parts, i + 1, matches, visited, scan)
    else:
        try:
            s = os.stat(base or ".")
        except OSError:
            return
        key = (s.st_dev, s.st_ino, i)
        if key in visited:
            return
        visited.add(key)
        _walk(base, parts, i + 1, matches, visited, scan)
        for name, is_dir in _entries(base, scan):
            if is_dir:
                _walk(_pjoin(base, name), parts, i, matches, visited, scan)


def scan(paths: Optional[Sequence[str]] = None) -> Tuple[List[Found], List[Problem]]:
    """Finds stats files (§2.1, §7.6): each path a file, a directory or a
    glob pattern; none: the default scan. Returns the files sorted by path
    byte-wise, each once, and the problems met."""
    s = _Scan()
    if not paths:
        euid = os.geteuid()
        for d in default_dirs():
            s.default_dir(d, euid)
    for p in paths or ():
        s.arg(os.fspath(p))
    s.files.sort(key=lambda f: os.fsencode(f.path))
    out: List[Found] = []
    for f in s.files:
        if not out or os.fsencode(out[-1].path) != os.fsencode(f.path):
            out.append(f)
    return out, s.problems


# --------------------------------------------------- folded writers (§2.8) --


def _parent(p: str) -> str:
    d = os.path.dirname(p)
    return d if d else "."


def _path_key(p: str) -> Tuple[bool, Tuple[bytes, ...]]:
    # The order of Rust's PathBuf (by components), which slurpstats prints in.
    b = os.fsencode(p)
    comps = [c for i, c in enumerate(b.split(b"/")) if c and not (c == b"." and i > 0)]
    return (not b.startswith(b"/"), tuple(comps))


def read_all(
    files: Sequence[Found], limits: Optional[ReadLimits] = None
) -> List[Tuple[Found, Union[Snapshot, ReadError]]]:
    """Reads writer files, then archives, and leaves out every writer file an
    archive already counts (§2.8, "Reading"), as the Rust ``read_all``."""
    for _ in range(2):
        start = time.monotonic()
        out = _read_all_once(files, limits)
        if time.monotonic() - start <= MAX_READ_SPAN:
            return out
    return _read_all_once(files, limits)


def _read_all_once(files: Sequence[Found], limits: Optional[ReadLimits]) -> List[Tuple[Found, Any]]:
    out: Dict[str, Tuple[Found, Any]] = {}
    archives: Dict[str, Found] = {}
    for found in files:
        try:
            with found.open(limits) as r:
                snap = r.snapshot()
                gone = r.unlinked()
        except ReadError as e:
            if e.kind == "io" and e.errno == errno.ENOENT:
                d = _parent(found.path)
                try:
                    names = os.listdir(d)
                except OSError:
                    names = []
                for n in names:
                    if ".archive" in n and is_stats_name(n):
                        p = os.path.join(d, n)
                        archives.setdefault(p, Found(p, found.foreign, found.owner))
                continue
            out[found.path] = (found, e)
            continue
        if snap.archive is not None:
            archives[found.path] = found
        elif gone:
            p = os.path.join(_parent(found.path), F.archive_stem(snap.command, snap.model) + ".mmstats")
            archives.setdefault(p, Found(p, found.foreign, found.owner))
        else:
            out[found.path] = (found, snap)
    groups = {(_parent(s.path), s.command, s.model) for _, s in out.values() if isinstance(s, Snapshot)}
    for d, command, model in groups:
        p = os.path.join(d, F.archive_stem(command, model) + ".mmstats")
        match = next((f for f in files if _parent(f.path) == d), None)
        if match is not None:
            archives.setdefault(p, Found(p, match.foreign, match.owner))
    listed = {f.path for f in files}
    for p, found in archives.items():
        try:
            with found.open(limits) as r:
                snap = r.snapshot()
        except ReadError as e:
            if p in listed:
                out[p] = (found, e)
            continue
        if snap.archive is not None or p in listed:
            out[p] = (found, snap)
    held: Dict[Tuple[str, int, str, str], List[set]] = {}
    for _, s in out.values():
        if isinstance(s, Snapshot) and s.archive is not None:
            held.setdefault((_parent(s.path), s.owner, s.command, s.model), []).append(s.archive_ids)
    result = []
    for p in sorted(out, key=_path_key):
        found, s = out[p]
        if isinstance(s, Snapshot) and s.archive is None and held:
            ids = held.get((_parent(s.path), s.owner, s.command, s.model))
            if ids and any(s.source_id() in x for x in ids):
                continue
        result.append((found, s))
    return result


# ------------------------------------------------------------------ JSON --

STATE_NAMES = {F.STATE_ACTIVE: "active", F.STATE_EXITED: "exited", F.STATE_ARCHIVE: "archive"}


def _value_json(v: Any) -> Any:
    if isinstance(v, _Unavailable):
        return None
    if isinstance(v, Histogram):
        return v.to_json()
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    return v


def file_json(snap: Snapshot) -> Dict[str, Any]:
    """The JSON object of one file (§7.7), members in slurpstats' order."""
    stats: Dict[str, Any] = {}
    fields: Dict[str, Any] = {}
    for f in sorted(snap.fields, key=lambda f: f.label.encode()):
        stats[f.label] = _value_json(f.value)
        labels: Dict[str, str] = {}
        for k, v in sorted(f.static_labels, key=lambda kv: kv[0].encode()):
            labels.setdefault(k, v)
        fields[f.label] = {
            "kind": F.KIND_NAMES[f.kind],
            "unit": f.unit_text or F.UNIT_TEXTS.get(f.unit, ""),
            "help": f.help,
            "static_labels": labels,
        }
    out: Dict[str, Any] = {
        "file": _lossy(snap.path),
        "pid": snap.pid,
        "tid": snap.tid,
        "command": snap.command,
        "model": snap.model,
        "alive": snap.alive,
        "state": STATE_NAMES.get(snap.state, "unknown"),
    }
    if snap.archive is not None:
        out["archive"] = dict(snap.archive)
    out["created_unix_ns"] = snap.created_ns
    out["version"] = f"{snap.version[0]}.{snap.version[1]}"
    out["skipped_fields"] = snap.skipped
    out["fallbacks"] = snap.fallbacks
    out["stats"] = stats
    out["fields"] = fields
    return out


def read(path: str, limits: Optional[ReadLimits] = None) -> Dict[str, Any]:
    """Reads one stats file and returns its JSON object (§7.7): ``file``,
    ``pid``, ``tid``, ``command``, ``model``, ``alive``, ``state``,
    ``created_unix_ns``, ``version``, ``fallbacks``, ``skipped_fields``,
    ``stats`` (label to value) and ``fields`` (label to description).
    Raises :class:`ReadError`."""
    return file_json(read_snapshot(os.fspath(path), limits))


def discover(paths: Optional[Iterable[str]] = None, limits: Optional[ReadLimits] = None) -> List[Dict[str, Any]]:
    """Finds and reads stats files as ``slurpstats --json`` does and returns
    its array: one JSON object per file, sorted by path, with the files an
    archive already counts left out. Files that cannot be read are left out
    too (``scan`` and ``read_all`` tell why)."""
    found, _problems = scan(list(paths) if paths is not None else None)
    return [file_json(s) for _, s in read_all(found, limits) if isinstance(s, Snapshot)]


def format_f64(x: float) -> str:
    """``x`` as Rust's ``serde_json`` prints it: the shortest digits that
    round-trip, plain from 1e-5 to below 1e16 (``123.0``, ``0.00001``),
    else in scientific notation (``1e+16``, ``1.5e-7``)."""
    r = repr(x)
    sign = ""
    if r.startswith("-"):
        sign, r = "-", r[1:]
    mant, _, exp = r.partition("e")
    e = int(exp) if exp else 0
    ip, _, fp = mant.partition(".")
    digits = ip + fp
    point = len(ip) + e
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    stripped = stripped.rstrip("0")
    if not stripped:
        return sign + "0.0"
    n = len(stripped)
    kk = point
    k = kk - n
    if 0 <= k and kk <= 16:
        s = stripped + "0" * k + ".0"
    elif 0 < kk <= 16:
        s = stripped[:kk] + "." + stripped[kk:]
    elif -5 < kk <= 0:
        s = "0." + "0" * (-kk) + stripped
    else:
        e = kk - 1
        exp = f"e+{e}" if e >= 0 else f"e{e}"
        s = stripped + exp if n == 1 else f"{stripped[0]}.{stripped[1:]}{exp}"
    return sign + s


def dumps(v: Any) -> str:
    """Compact JSON exactly as ``serde_json::to_writer`` writes it."""
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_f64(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + dumps(x) for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(dumps(x) for x in v) + "]"
    raise TypeError(f"cannot print {type(v).__name__} as JSON")
