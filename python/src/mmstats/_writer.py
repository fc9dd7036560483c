"""The writer's cold paths: where a file goes (format-spec.md §2.1), its
name (§2.2), creation and publication (§2.3), the process's lock files
(§2.4), reuse of ended threads' files (§2.7), the exit store (§6.6), fork
(§6.7) and the fallback to private memory.

Everything here runs under one lock, taken only when a model instance is
opened or closed, at fork and at exit. The hot path (a field handle's
store into its memoryview) never sees it.

A stats file is a ``_File``: its mapping (or private memory), the header
and strings it was made with, and the field handles bound to it. Handles
hold memoryviews of single values; when the file is made again (in a forked
child) or detached (when its thread ends), each handle is re-bound to the
new buffer, so no handle ever stores into a file that is not its own.
"""

from __future__ import annotations

import atexit
import mmap
import os
import platform
import random
import sys
import threading
import time
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

from . import _format as F

_lock = threading.RLock()

#: Default file name template (§2.2).
DEFAULT_TEMPLATE = "{cmd}.{model}.{pid}.{tid}.mmstats"


class Fallbacks(NamedTuple):
    """How many stats instances of this process fell back to private memory
    (each is one thread's model that no reader can see), and why the last
    one did."""

    count: int
    last_error: Optional[str]


class _Proc:
    """What this process keeps about all its files. Reset in a forked child."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        # dir -> (token, fd, lock file path)
        self.locks: Dict[str, Tuple[int, int, str]] = {}
        # id(_File) -> _File, every file of this process that a model uses
        self.live: Dict[int, _File] = {}
        # pool key -> closed files waiting for a new thread of the same model
        self.pool: Dict[Any, List[_File]] = {}
        self.fallbacks = 0
        self.last_error: Optional[str] = None
        self.proc_start: Optional[int] = None
        self.mp_finalizer = False


_proc = _Proc()
_exit_registered = False


class _File:
    """One stats file (or its stand-in in private memory) and its handles."""

    __slots__ = (
        "dir",
        "path",
        "template",
        "command",
        "model",
        "meta",
        "length",
        "kinds",
        "buf",
        "words",
        "handles",
        "ident",
        "tid",
        "owner",
        "private",
        "key",
        "error",
    )

    def __init__(self) -> None:
        self.handles: List[Any] = []
        self.error: Optional[str] = None
        self.key: Any = None
        self.path: Optional[str] = None

    def bind(self, buf: Any) -> None:
        """Makes ``buf`` (an mmap or a bytearray) this file's memory and
        re-binds every handle to it."""
        self.buf = buf
        self.words = memoryview(buf).cast("Q")
        for h in self.handles:
            h._bind(buf)


def _supported() -> Optional[str]:
    """Why this interpreter may not write stats files (§6.8), or None."""
    if sys.byteorder != "little":
        return "stats files are little-endian; this host is not"
    if platform.python_implementation() != "CPython":
        return "only CPython stores a memoryview item as one 8-byte word (format-spec.md §6.8)"
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return (
            "interpreted writers need x86-64, whose stores are seen in program order "
            "(format-spec.md §6.8); on this CPU Python cannot issue a release fence"
        )
    return None


# ----------------------------------------------------------- directories --


def _shm_root() -> str:
    # For tests only: a stand-in for /dev/shm (the Rust readers' default
    # scan takes the same variable), so tests never touch the real one.
    return os.environ.get("MMSTATS_SCAN_ROOT") or "/dev/shm"


def _check_dir(path: str, create: bool = True) -> None:
    """Creates ``path`` (mode 0755) if missing and checks that only we can
    write to it (§2.1); raises OSError saying why not."""
    if create:
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except FileExistsError:
            pass
    euid = os.geteuid()
    st = os.lstat(path)
    if (st.st_mode & 0o170000) == 0o120000 and st.st_uid not in (euid, 0):
        raise OSError(f"stats directory {path} is a symbolic link owned by uid {st.st_uid}, not by us (uid {euid})")
    st = os.stat(path)
    if (st.st_mode & 0o170000) != 0o040000:
        raise OSError(f"stats directory {path} is not a directory")
    if st.st_mode & 0o022:
        raise OSError(
            f"stats directory {path} is writable by group or other users "
            f"(mode {st.st_mode & 0o7777:o}); run chmod go-w on it or choose another directory"
        )
    if st.st_uid != euid:
        raise OSError(
            f"stats directory {path} belongs to uid {st.st_uid}, not to us (uid {euid}); choose another directory"
        )


def _private_shm_dir(root: str, euid: int) -> str:
    """The writer's own directory under ``root`` when ``root/mmstats-EUID``
    is squatted: the first ``mmstats-EUID-*`` that is a real directory of
    ours that only we can write, else a new ``mmstats-EUID-XXXXXXXX``."""
    prefix = f"mmstats-{euid}-"
    try:
        names = sorted((n for n in os.listdir(root) if n.startswith(prefix)), key=os.fsencode)
    except OSError:
        names = []
    for n in names:
        p = os.path.join(root, n)
        try:
            st = os.lstat(p)
        except OSError:
            continue
        if (st.st_mode & 0o170000) == 0o040000 and st.st_uid == euid and not st.st_mode & 0o022:
            return p
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    rng = random.SystemRandom()
    last: Optional[OSError] = None
    for _ in range(16):
        p = os.path.join(root, prefix + "".join(rng.choice(alphabet) for _ in range(8)))
        try:
            os.mkdir(p, 0o700)
            return p
        except FileExistsError as e:
            last = e
    raise OSError(f"no private stats directory could be made in {root}: {last}")


def stats_dir(path: Optional[str] = None) -> str:
    """The checked directory for a new file: ``path`` if given, else
    ``$MMSTATS_DIR``, else ``/dev/shm/mmstats-EUID``, or, if that one fails
    the checks (another user made it first), a private
    ``/dev/shm/mmstats-EUID-XXXXXXXX``. Raises OSError saying why none can be used."""
    explicit = path or os.environ.get("MMSTATS_DIR") or None
    if explicit:
        _check_dir(explicit)
        return explicit
    euid = os.geteuid()
    root = _shm_root()
    default = os.path.join(root, f"mmstats-{euid}")
    try:
        _check_dir(default)
        return default
    except OSError as e:
        why = str(e)
    try:
        fallback = _private_shm_dir(root, euid)
        _check_dir(fallback, create=False)
        return fallback
    except OSError as e:
        raise OSError(f"{why}; the fallback failed too: {e}; set MMSTATS_DIR to a directory you own") from None


# ------------------------------------------------------------ file names --


def fit_template(template: str) -> str:
    """Makes an mmstats 0.8 file name template a valid one (§2.2):
    ``{CMD}``, ``{PID}`` and ``{TID}`` become ``{cmd}``, ``{pid}`` and
    ``{tid}``, ``.{pid}.{tid}`` is added if either is missing (two live
    writers must never share a name) and ``.mmstats`` if the name does not
    end in it (readers list only such names)."""
    t = template
    for old, new in (("{CMD}", "{cmd}"), ("{PID}", "{pid}"), ("{TID}", "{tid}"), ("{MODEL}", "{model}")):
        t = t.replace(old, new)
    stem = t[: -len(".mmstats")] if t.endswith(".mmstats") else t
    if "{pid}" not in stem or "{tid}" not in stem:
        stem += ".{pid}.{tid}"
    return stem + ".mmstats"


def render(template: str, command: str, model: str, pid: int, tid: int) -> str:
    """Fills in a file name template (§2.2); raises ValueError for one that
    breaks its rules."""
    if "/" in template or "\0" in template:
        raise ValueError(f"file name template {template!r}: must not contain '/' or NUL")
    if not template.endswith(".mmstats") or template.startswith("."):
        raise ValueError(f"file name template {template!r}: must end in \".mmstats\" and not start with '.'")
    if "{pid}" not in template or "{tid}" not in template:
        raise ValueError(f"file name template {template!r}: must contain {{pid}} and {{tid}}")
    out = []
    rest = template
    while True:
        i = rest.find("{")
        if i < 0:
            out.append(rest)
            break
        out.append(rest[:i])
        j = rest.find("}", i)
        if j < 0:
            raise ValueError(f"file name template {template!r}: unclosed '{{'")
        key = rest[i + 1 : j]
        if key == "cmd":
            out.append(F.sanitize(command))
        elif key == "model":
            out.append(F.sanitize(model))
        elif key == "pid":
            out.append(str(pid))
        elif key == "tid":
            out.append(str(tid))
        else:
            raise ValueError(f"file name template {template!r}: unknown placeholder {{{key}}}")
        rest = rest[j + 1 :]
    return "".join(out)


def command_name() -> str:
    """The command stored in the header (§3.1): the base name of the
    script (``sys.argv[0]``), else ``/proc/self/comm``, else ``unknown``."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and argv0 not in ("-c", "-m", "-"):
        base = os.path.basename(argv0.rstrip("/"))
        if base:
            return base
    try:
        with open("/proc/self/comm", encoding="utf-8", errors="replace") as f:
            comm = f.read().strip()
        if comm:
            return comm
    except OSError:
        pass
    return "unknown"


def _proc_start() -> int:
    """Field 22 of /proc/self/stat, the process start in clock ticks (§2.6); 0 if unknown."""
    if _proc.proc_start is None:
        try:
            with open("/proc/self/stat", "rb") as f:
                stat = f.read()
            _proc.proc_start = int(stat[stat.rindex(b")") + 1 :].split()[19])
        except (OSError, ValueError, IndexError):
            _proc.proc_start = 0
    return _proc.proc_start


# ------------------------------------------------------------ publishing --


def _lock_token(d: str) -> int:
    """The token of this process's lock file in ``d`` (§2.4), made and locked
    on first use."""
    import fcntl

    got = _proc.locks.get(d)
    if got is not None:
        return got[0]
    _register_exit()
    for attempt in range(17):
        token = int.from_bytes(os.urandom(8), "little") | 1
        path = os.path.join(d, F.lock_file_name(token))
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            if attempt < 16:
                continue
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            try:
                os.unlink(path)
            except OSError:
                pass
            raise
        _proc.locks[d] = (token, fd, path)
        return token
    raise OSError("no lock file could be made")  # pragma: no cover


def _publish(d: str, name: str, image: bytearray) -> Tuple[mmap.mmap, str]:
    """Writes ``image`` under a temporary name, maps it and links it into
    place as ``name`` or the first free ``STEM.N.mmstats`` (§2.3)."""
    stem = name[: -len(".mmstats")]
    tmp = os.path.join(d, f".{stem}.tmp")
    try:
        os.unlink(tmp)
    except OSError:
        pass
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            token = _lock_token(d)
            image[F.H_LOCK_TOKEN : F.H_LOCK_TOKEN + 8] = token.to_bytes(8, "little")
            image[F.H_FALLBACKS : F.H_FALLBACKS + 8] = _proc.fallbacks.to_bytes(8, "little")
            view = memoryview(image)
            done = 0
            while done < len(image):
                done += os.write(fd, view[done:])
            os.fchmod(fd, 0o644)
            mm = mmap.mmap(fd, len(image))
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        for n in range(1, 1000):
            path = os.path.join(d, name if n == 1 else f"{stem}.{n}.mmstats")
            try:
                os.link(tmp, path)
                return mm, path
            except FileExistsError:
                continue
        raise OSError(f"{os.path.join(d, name)}: 999 files with this name and its .N variants exist")
    finally:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _meta_key(meta: bytes) -> bytes:
    """The file's metadata with the per-thread header words zeroed: two
    files with equal keys have the same layout (§2.7)."""
    b = bytearray(meta)
    b[F.H_PID : F.H_COMMAND] = bytes(F.H_COMMAND - F.H_PID)
    b[F.H_LOCK_TOKEN : F.HEADER_LEN] = bytes(F.HEADER_LEN - F.H_LOCK_TOKEN)
    return bytes(b)


def open_file(
    path: Optional[str],
    template: str,
    command: str,
    model: str,
    fields: Sequence[F.FieldDef],
    constants: Tuple[Any, ...],
    handles: List[Any],
) -> _File:
    """Makes the calling thread's file for a model and binds ``handles`` to
    it. Never fails for a file-system reason: the file then lives in
    private memory and the reason is counted (see :func:`fallbacks`).
    Raises ValueError for an invalid model definition."""
    pid = os.getpid()
    tid = threading.get_native_id()
    with _lock:
        _reset_if_forked()
        lay = F.lay_out(command, model, fields, pid, tid, _proc_start(), time.time_ns())
        f = _File()
        f.command, f.model = command, model
        f.meta = bytes(lay.image[: lay.values_off])
        f.length = len(lay.image)
        f.kinds = [
            (fd.kind, off, F.value_len(fd.kind, fd.param0, fd.param1)) for fd, off in zip(fields, lay.value_offsets)
        ]
        f.handles = handles
        f.ident = threading.get_ident()
        f.tid = tid
        f.owner = pid
        f.private = True
        try:
            why = _supported()
            if why is not None:
                raise OSError(why)
            d = stats_dir(path)
            name = render(template, command, model, pid, tid)
            f.dir = d
            f.template = template
            f.key = (d, template, _meta_key(f.meta), constants)
            parked = _proc.pool.get(f.key)
            if parked:
                old = parked.pop()
                _reuse(old, tid)
                f.path = old.path
                buf: Any = old.buf
            else:
                buf, f.path = _publish(d, name, lay.image)
            f.private = False
        except (OSError, ValueError) as e:
            f.error = str(e)
            buf = lay.image
            _note_fallback(f.error)
        for h, off, (_kind, _off, n) in zip(handles, lay.value_offsets, f.kinds):
            h._off, h._len = off, n
        f.bind(buf)
        for h in handles:
            h._attach()
        _proc.live[id(f)] = f
        _hook_multiprocessing()
        return f


def _reuse(old: _File, tid: int) -> None:
    """Takes over a parked file for a new thread (§2.7): pid/tid as one
    word, gauges zeroed, fallbacks raised, then state active (each a later
    store, so x86-64's in-order stores publish them in this order)."""
    w = old.words
    w[F.H_PID // 8] = os.getpid() | (tid << 32)
    for kind, off, _n in old.kinds:
        if kind in (F.GAUGE, F.GAUGE_F64):
            w[off // 8] = 0
    if w[F.H_FALLBACKS // 8] < _proc.fallbacks:
        w[F.H_FALLBACKS // 8] = _proc.fallbacks
    w[F.H_STATE // 8] = F.STATE_ACTIVE


def close_file(f: _File, park: bool = True) -> None:
    """Closes a model instance's file (its thread ended, or ``close()``):
    marks it exited (§6.6), moves its handles to a private copy (so a
    handle kept elsewhere never stores into a file another thread takes
    over) and parks the file for reuse."""
    with _lock:
        if f.owner != os.getpid() or _proc.live.get(id(f)) is not f:
            return
        del _proc.live[id(f)]
        if f.private:
            f.words[F.H_STATE // 8] = F.STATE_EXITED
            return
        old_buf, old_words = f.buf, f.words
        # The exit store comes after every value store of this thread.
        old_words[F.H_STATE // 8] = F.STATE_EXITED
        copy = bytearray(old_buf[:])
        f.bind(copy)
        f.private = True
        if park and f.key is not None:
            parked = _File()
            parked.kinds, parked.path, parked.key = f.kinds, f.path, f.key
            parked.buf, parked.words = old_buf, old_words
            parked.owner = f.owner
            parked.private = False
            _proc.pool.setdefault(f.key, []).append(parked)


def _note_fallback(reason: str) -> None:
    """Counts a fallback to private memory and publishes the new count in
    every file of the process (§3.1 ``fallbacks``)."""
    _proc.fallbacks += 1
    _proc.last_error = reason
    n = _proc.fallbacks
    parked = [p for lst in _proc.pool.values() for p in lst]
    for f in list(_proc.live.values()) + parked:
        if not f.private and f.words[F.H_FALLBACKS // 8] < n:
            f.words[F.H_FALLBACKS // 8] = n


def fallbacks() -> Fallbacks:
    """How many stats instances of this process fell back to private memory
    (their stats are missing for readers), and the reason of the last one."""
    with _lock:
        _reset_if_forked()
        return Fallbacks(_proc.fallbacks, _proc.last_error)


# ------------------------------------------------------------------ exit --


def _register_exit() -> None:
    global _exit_registered
    if not _exit_registered:
        _exit_registered = True
        atexit.register(_at_exit)


def _at_exit() -> None:
    """At a normal exit: marks every live file of this process exited, then
    removes the process's lock files (§2.4, §6.6). Never blocks the exit on
    a thread that holds the lock."""
    if not _lock.acquire(timeout=1.0):
        return
    try:
        if _proc.pid != os.getpid():
            return
        for f in list(_proc.live.values()):
            if f.owner == _proc.pid and not f.private:
                f.words[F.H_STATE // 8] = F.STATE_EXITED
        for _token, fd, path in _proc.locks.values():
            try:
                os.unlink(path)
            except OSError:
                pass
            try:
                os.close(fd)
            except OSError:
                pass
        _proc.locks.clear()
    finally:
        _lock.release()


def _hook_multiprocessing() -> None:
    """A multiprocessing child ends with ``os._exit`` after running its own
    finalizers, not ``atexit``: run the exit store there too. (Celery's
    billiard, a fork of multiprocessing with the same hooks, likewise.)"""
    if _proc.mp_finalizer:
        return
    for name in ("multiprocessing.util", "billiard.util"):
        mp = sys.modules.get(name)
        if mp is None:
            continue
        _proc.mp_finalizer = True
        try:
            mp.Finalize(None, _at_exit, exitpriority=0)
            mp.register_after_fork(_mp_sentinel, _mp_after_fork)
        except Exception:  # noqa: BLE001 (best effort: the files read as "did not close")
            pass


class _Sentinel:
    pass


_mp_sentinel = _Sentinel()


def _mp_after_fork(_obj: object) -> None:
    # In a multiprocessing child, after it cleared its finalizers.
    _proc.mp_finalizer = False
    _hook_multiprocessing()


# ------------------------------------------------------------------ fork --


def _reset_if_forked() -> None:
    """A child made without the fork handlers (not through os.fork) starts
    afresh: none of its parent's files, locks or parked files are its own."""
    global _proc
    if _proc.pid != os.getpid():
        old = _proc
        _proc = _Proc()
        for f in old.live.values():
            _orphan(f)


def _orphan(f: _File) -> None:
    """Moves a file that is not this process's to private memory."""
    f.owner = None
    f.bind(bytearray(f.buf[:]))
    f.private = True


def _before_fork() -> None:
    _lock.acquire()
    if _proc.live:
        _hook_multiprocessing()


def _after_fork_parent() -> None:
    _lock.release()


def _after_fork_child() -> None:
    """In the child, before os.fork() returns: gives the forking thread's
    files successors of the child's own (§6.7), counters, histograms and
    timers at zero, gauges and text as inherited. Files of the parent's other
    threads, which do not exist here, go to private memory."""
    global _proc
    try:
        old = _proc
        _proc = _Proc()
        _proc.mp_finalizer = old.mp_finalizer
        for _token, fd, _path in old.locks.values():
            # The child's copy only: the parent's lock stays held.
            try:
                os.close(fd)
            except OSError:
                pass
        me = threading.get_ident()
        for f in old.live.values():
            try:
                if f.ident == me:
                    _rehome(f)
                else:
                    _orphan(f)
            except Exception as e:  # noqa: BLE001 (never store into the parent's file)
                f.owner = None
                f.private = True
                f.bind(bytearray(f.length))
                _note_fallback(f"making the forked child's own file failed: {e!r}")
    finally:
        _lock.release()


def _rehome(f: _File) -> None:
    """Makes the child's own file for ``f``: same layout and strings, the
    child's identity, values copied with cumulative ones zeroed, and re-binds
    its handles to it. If it cannot be made (or ``f`` was private memory
    already), private memory, counted as a fallback."""
    pid = os.getpid()
    tid = threading.get_native_id()
    image = bytearray(f.buf[:])
    for kind, off, n in f.kinds:
        if kind in (F.COUNTER, F.HISTOGRAM, F.TIMER):
            image[off : off + n] = bytes(n)
    hdr = memoryview(image).cast("Q")
    hdr[F.H_STATE // 8] = F.STATE_ACTIVE
    hdr[F.H_PID // 8] = pid | (tid << 32)
    hdr[F.H_PROC_START // 8] = _proc_start()
    hdr[F.H_CREATED_NS // 8] = time.time_ns()
    hdr.release()
    f.owner = pid
    f.tid = tid
    buf: Any = image
    try:
        if f.key is None:
            raise OSError(f.error or "no stats directory")
        _check_dir(f.dir, create=False)
        name = render(f.template, f.command, f.model, pid, tid)
        buf, f.path = _publish(f.dir, name, image)
        f.private = False
    except (OSError, ValueError) as e:
        f.error = str(e)
        f.private = True
        f.path = None
        _note_fallback(f.error)
    f.bind(buf)
    for h in f.handles:
        h._zero()
    _proc.live[id(f)] = f


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_parent, after_in_child=_after_fork_child)
