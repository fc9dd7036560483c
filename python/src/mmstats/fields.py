"""The field classes of mmstats 0.8, each mapped onto a kind of format 1.2.

A field is a descriptor declared on a model class. Each thread's instance
of the model has one *handle* per field, bound to one value of that
thread's file; the handle's update is a store of one aligned 8-byte word
through a memoryview (format-spec.md §6.8), with no lock and no system
call.

=====================================  ===========  =============================
field                                  kind         value
=====================================  ===========  =============================
CounterField                           counter      u64, ``inc()`` / ``incr()``
UInt64Field UIntField IntField         gauge        i64, wrapped to the C type
ShortField UShortField ByteField       gauge        i64, wrapped to the C type
BoolField                              gauge        0 or 1
FloatField DoubleField                 gauge_f64    f64 (FloatField rounded to f32)
StringField                            text         UTF-8, ``size`` bytes
StaticTextField                        constant     UTF-8, written at open
Static{UInt,Int64,UInt64}Field         gauge        written at open
Static{Float,Double}Field              gauge_f64    written at open
AverageField MovingAverageField        gauge_f64    the (moving) mean
TimerField                             timer        durations in ns
HistogramField (new)                   histogram    any u64
=====================================  ===========  =============================
"""

from __future__ import annotations

import math
import struct
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

from . import _format as F

M64 = F.U64
_D = struct.Struct("<d")
_Q = struct.Struct("<Q")
_FLT = struct.Struct("<f")

#: Default capacity of a StringField, in bytes (mmstats 0.8's).
DEFAULT_STRING_SIZE = 255
#: Largest capacity a StaticTextField takes, in bytes: what readers show by default.
MAX_STATIC_TEXT = 1 << 16


def _view(buf: Any, off: int, n: int) -> memoryview:
    return memoryview(buf)[off : off + n].cast("Q")


def _bits(x: float) -> int:
    return _Q.unpack(_D.pack(x))[0]


def _float(w: int) -> float:
    return _D.unpack(_Q.pack(w))[0]


def _to_f32(x: float) -> float:
    try:
        return _FLT.unpack(_FLT.pack(x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _cut(value: Union[str, bytes], capacity: int) -> Tuple[str, bytes]:
    """``value`` as UTF-8, cut to ``capacity`` bytes on a character boundary."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    elif not isinstance(value, str):
        value = str(value)
    b = value.encode("utf-8", "replace")
    if len(b) > capacity:
        b = b[:capacity].decode("utf-8", "ignore").encode("utf-8")
        value = b.decode("utf-8")
    return value, b


# --------------------------------------------------------------- handles --


class _Handle:
    """One field of one thread's file. ``_w`` views its value's words."""

    __slots__ = ("_w", "_off", "_len", "_kind")

    def _bind(self, buf: Any) -> None:
        self._w = _view(buf, self._off, self._len)

    def _attach(self) -> None:
        """Called once the handle is bound to its first file."""

    def _zero(self) -> None:
        """The file was made again with this value at zero (a forked child)."""


class Counter(_Handle):
    """A counter's handle: ``inc()``, ``incr()`` and ``value``."""

    __slots__ = ("_v",)

    def _attach(self) -> None:
        self._v = self._w[0]

    def _zero(self) -> None:
        if self._kind == F.COUNTER:
            self._v = 0

    def inc(self, n: int = 1) -> None:
        """Adds ``n`` (default 1), wrapping at 2^64: one store of the new
        value (this thread is the file's only writer, so the handle knows it)."""
        try:
            # Targets are assigned left to right: the word first, then the
            # handle's copy, so a failed store leaves both unchanged.
            self._w[0] = self._v = self._v + n
        except (ValueError, TypeError):
            self._w[0] = self._v = int(self._v + n) & M64

    def incr(self, amount: int = 1) -> None:
        """Adds ``amount`` (default 1); the name mmstats 0.7.1 introduced."""
        self.inc(amount)

    @property
    def value(self) -> int:
        """The count."""
        return self._v

    @value.setter
    def value(self, v: int) -> None:
        # Readers take a counter that goes down for a reset.
        v = int(v) & M64
        self._w[0] = v
        self._v = v


class _Int(_Handle):
    """An integer gauge wrapped to a C type of ``bits`` bits."""

    __slots__ = ("_mask", "_sign")

    def set(self, v: Any) -> None:
        v = int(v) & self._mask
        if v & self._sign:
            v -= self._mask + 1
        self._w[0] = v & M64

    def get(self) -> int:
        v = self._w[0]
        if self._sign and v >> 63:
            v -= 1 << 64
        return v


class _Bool(_Handle):
    __slots__ = ()

    def set(self, v: Any) -> None:
        self._w[0] = 1 if v else 0

    def get(self) -> bool:
        return self._w[0] != 0


class _Float(_Handle):
    __slots__ = ("_f32",)

    def set(self, v: Any) -> None:
        x = float(v)
        if self._f32:
            x = _to_f32(x)
        self._w[0] = _bits(x)

    def get(self) -> float:
        return _float(self._w[0])


class _Text(_Handle):
    """A text value, written as format-spec.md §6.3 says: the odd sequence
    number, then the other buffer's length and words, then the even one."""

    __slots__ = ("_cap", "_last", "_once")

    def _attach(self) -> None:
        self._last = ""

    def set(self, value: Union[str, bytes]) -> None:
        s, b = _cut(value, self._cap)
        w = self._w
        seq = w[0]
        if self._once and seq != 0:
            # A constant is written once (§6.3); a reused file holds this
            # same value already (the reuse key includes it).
            self._last = s
            return
        buf = F.text_buffer_word(self._cap, (seq // 2 + 1) % 2)
        w[0] = (seq + 1) & M64
        w[buf] = len(b)
        n = len(b)
        if n:
            padded = b + bytes(-n % 8)
            for k, word in enumerate(struct.unpack(f"<{len(padded) // 8}Q", padded)):
                w[buf + 1 + k] = word
        w[0] = (seq + 2) & M64
        self._last = s

    def get(self) -> str:
        return self._last


class _Hist(_Handle):
    """A histogram or timer value: a bucket's count, then the sum (§6.4)."""

    __slots__ = ("_p", "_top")

    def record(self, v: int) -> None:
        """Records ``v`` (clamped to 0 .. 2^64 - 1)."""
        v = int(v)
        if v < 0:
            v = 0
        elif v > M64:
            v = M64
        p = self._p
        x = v if v <= self._top else self._top
        s = (x | 1).bit_length() - 1 - p
        if s < 0:
            s = 0
        i = 1 + (s << p) + (x >> s)
        w = self._w
        w[i] = (w[i] + 1) & M64
        w[0] = (w[0] + v) & M64


class Histogram(_Hist):
    """A histogram's handle: ``record(value)``."""

    __slots__ = ()


class _Average(_Float):
    """An average's handle: ``add(value)`` and ``value`` (the mean so far)."""

    __slots__ = ("_count", "_total")

    def _attach(self) -> None:
        self._count = 0
        self._total = 0.0

    def add(self, value: float) -> None:
        """Adds a value to the average."""
        self._count += 1
        self._total += value
        self.set(self._total / self._count)

    @property
    def value(self) -> float:
        """The mean of every value added, 0.0 before any."""
        return self.get()


class _MovingWindow:
    """The last ``size`` values added, kept in process memory."""

    __slots__ = ("size", "window", "idx", "full")

    def __init__(self, size: int) -> None:
        self.size = max(1, int(size))
        self.window = [0.0] * self.size
        self.idx = 0
        self.full = False

    def add(self, value: float) -> float:
        self.window[self.idx] = value
        n = self.size if self.full else self.idx + 1
        mean = math.fsum(self.window[:n] if not self.full else self.window) / n
        self.idx += 1
        if self.idx == self.size:
            self.idx = 0
            self.full = True
        return mean


class _MovingAverage(_Float):
    """A moving average's handle: ``add(value)`` and ``value``."""

    __slots__ = ("_win", "_size")

    def _attach(self) -> None:
        self._win = _MovingWindow(self._size)

    def add(self, value: float) -> None:
        """Adds a value; the stored mean is of the last ``size`` values."""
        self.set(self._win.add(value))

    @property
    def value(self) -> float:
        """The mean of the last ``size`` values, 0.0 before any."""
        return self.get()


class _TimerContext:
    """One timing: what ``with stats.timer as t`` gives."""

    __slots__ = ("_timer", "start", "end")

    def __init__(self, timer: Callable[[], float]) -> None:
        self._timer = timer
        self.start = timer()
        self.end: Optional[float] = None

    def get_time(self) -> float:
        return self._timer()

    @property
    def done(self) -> bool:
        """Whether the timing has stopped."""
        return self.end is not None

    @property
    def elapsed(self) -> float:
        """Seconds since the start, or of the whole timing once stopped."""
        if self.end is not None:
            return self.end - self.start
        return self._timer() - self.start

    def stop(self) -> None:
        self.end = self._timer()


class Timer(_Hist):
    """A timer's handle: a context manager, ``start()`` / ``stop()``,
    ``last`` (seconds of the last timing) and ``value`` (moving average of
    the last ``size`` timings, seconds). Each timing is recorded in the
    file in nanoseconds, so readers show its count, mean and quantiles."""

    __slots__ = ("_clock", "_ctx", "_win", "_size", "_mean")

    def _attach(self) -> None:
        self._ctx: Optional[_TimerContext] = None
        self._win = _MovingWindow(self._size)
        self._mean = 0.0

    def start(self) -> None:
        """Starts a timing."""
        self._ctx = _TimerContext(self._clock)

    def stop(self) -> None:
        """Stops the timing started last and records it."""
        ctx = self._ctx
        if ctx is None:
            return
        ctx.stop()
        self.add(ctx.elapsed)

    def add(self, seconds: float) -> None:
        """Records a duration given in seconds."""
        if seconds != seconds:  # NaN
            seconds = 0.0
        self.record(round(seconds * 1e9) if seconds > 0 else 0)
        self._mean = self._win.add(seconds)

    def record_ns(self, ns: int) -> None:
        """Records a duration given in nanoseconds."""
        self.record(ns)
        self._mean = self._win.add(ns / 1e9)

    def __enter__(self) -> _TimerContext:
        self.start()
        assert self._ctx is not None
        return self._ctx

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def last(self) -> float:
        """Seconds of the last timing (running: so far), 0.0 before any."""
        return 0.0 if self._ctx is None else self._ctx.elapsed

    @property
    def value(self) -> float:
        """Moving average of the last ``size`` timings, in seconds."""
        return self._mean


# ---------------------------------------------------------------- fields --


class Field:
    """Base of every field. ``label`` defaults to the attribute's name; a
    model's ``label_prefix`` goes before it. ``help`` is stored in the file
    and shown by mmash as the metric's help; ``labels`` are static labels
    (``{"key": "value"}``) stored with the field."""

    kind = F.GAUGE
    handle_class: type = _Handle

    def __init__(
        self,
        label: Optional[str] = None,
        help: str = "",
        labels: Optional[Dict[str, str]] = None,
        **_ignored: Any,
    ) -> None:
        self.label = label
        self.help = help
        self.static_labels = tuple((labels or {}).items())
        self.key: Optional[str] = None

    def __set_name__(self, owner: type, name: str) -> None:
        if self.key is None:
            self.key = name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(label={self.label!r})"

    def _def(self, label: str) -> F.FieldDef:
        return F.FieldDef(label, self.kind, self.help, "", self.static_labels)

    def _handle(self) -> _Handle:
        h = self.handle_class()
        h._kind = self.kind
        return h

    def _init(self, h: Any) -> None:
        """Sets the initial value of a new thread's handle."""

    def _open(self, label: str) -> Tuple[F.FieldDef, _Handle, Callable[[Any], None], Any]:
        """What a new thread's file needs for this field: its definition,
        an unbound handle, what sets its initial value once bound, and the
        part of the value that decides whether a parked file can be reused."""
        return self._def(label), self._handle(), self._init, None


class _HandleField(Field):
    """A field read as its handle: ``stats.requests.inc()``. Instances keep
    the handle in their per-thread dict, which Python looks in first."""

    def __get__(self, inst: Any, owner: Any = None) -> Any:
        if inst is None:
            return self
        return inst.__dict__[self.key]


class _ValueField(Field):
    """A field read and written as a value: ``stats.in_flight = 3``."""

    def __get__(self, inst: Any, owner: Any = None) -> Any:
        if inst is None:
            return self
        return inst.__dict__[self.key].get()

    def __set__(self, inst: Any, value: Any) -> None:
        inst.__dict__[self.key].set(value)


class CounterField(_HandleField):
    """A counter (kind ``counter``): a u64 that only goes up, with
    ``inc(n=1)``, ``incr(amount=1)`` and ``value``."""

    kind = F.COUNTER
    handle_class = Counter


class _IntField(_ValueField):
    bits = 64
    signed = True
    initial: Any = 0

    def _handle(self) -> _Handle:
        h = _Int()
        h._kind = self.kind
        h._mask = (1 << self.bits) - 1
        h._sign = (1 << (self.bits - 1)) if self.signed else 0
        return h

    def _init(self, h: Any) -> None:
        if self.initial:
            h.set(self.initial)


class UInt64Field(_IntField):
    """A 64-bit unsigned value (kind ``gauge``: readers show values of 2^63
    and more as negative i64)."""

    signed = False


class UIntField(_IntField):
    """A 32-bit unsigned value (kind ``gauge``), wrapped as a C uint32."""

    bits, signed = 32, False


class IntField(_IntField):
    """A 32-bit signed value (kind ``gauge``), wrapped as a C int32."""

    bits = 32


class ShortField(_IntField):
    """A 16-bit signed value (kind ``gauge``), wrapped as a C int16."""

    bits = 16


class UShortField(_IntField):
    """A 16-bit unsigned value (kind ``gauge``), wrapped as a C uint16."""

    bits, signed = 16, False


class ByteField(_IntField):
    """An 8-bit signed value (kind ``gauge``), wrapped as a C int8."""

    bits = 8


class BoolField(_ValueField):
    """A boolean (kind ``gauge``, 0 or 1), ``initial`` at open."""

    handle_class = _Bool

    def __init__(self, initial: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.initial = bool(initial)

    def _init(self, h: Any) -> None:
        if self.initial:
            h.set(True)


class FloatField(_ValueField):
    """A 32-bit float (kind ``gauge_f64``; the value is rounded to float32
    precision, as mmstats 0.8 stored it)."""

    kind = F.GAUGE_F64
    f32 = True

    def _handle(self) -> _Handle:
        h = _Float()
        h._kind = self.kind
        h._f32 = self.f32
        return h


class DoubleField(FloatField):
    """A 64-bit float (kind ``gauge_f64``)."""

    f32 = False


class StringField(_ValueField):
    """UTF-8 text of at most ``size`` bytes (kind ``text``); a longer value
    is cut on a character boundary."""

    kind = F.TEXT

    def __init__(self, size: int = DEFAULT_STRING_SIZE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def _def(self, label: str) -> F.FieldDef:
        return F.FieldDef(label, self.kind, self.help, "", self.static_labels, self.size)

    def _handle(self) -> _Handle:
        h = _Text()
        h._kind = self.kind
        h._cap = self.size
        h._once = False
        return h


class _StaticField(_ValueField):
    """A value fixed at open; ``value`` may be a callable, called then."""

    def __init__(self, label: Optional[str] = None, value: Any = None, **kwargs: Any) -> None:
        super().__init__(label=label, **kwargs)
        if value is None:
            raise ValueError("value must be set")
        self.value = value

    def _resolve(self) -> Any:
        return self.value() if callable(self.value) else self.value

    def __set__(self, inst: Any, value: Any) -> None:
        raise AttributeError(f"{self.key} is a static field: its value is set at open")


class _StaticNumber(_StaticField):
    def _init(self, h: Any) -> None:
        h.set(self._resolve())


class StaticUIntField(_StaticNumber, UIntField):
    """A 32-bit unsigned number fixed at open (kind ``gauge``)."""


class StaticInt64Field(_StaticNumber, _IntField):
    """A 64-bit signed number fixed at open (kind ``gauge``)."""


class StaticUInt64Field(_StaticNumber, UInt64Field):
    """A 64-bit unsigned number fixed at open (kind ``gauge``)."""


class StaticFloatField(_StaticNumber, FloatField):
    """A float32 fixed at open (kind ``gauge_f64``)."""


class StaticDoubleField(_StaticNumber, DoubleField):
    """A float64 fixed at open (kind ``gauge_f64``)."""


class StaticTextField(_StaticField):
    """UTF-8 text fixed at open (kind ``constant``, written once). Its
    capacity is the value's length, at most 64 KiB."""

    kind = F.CONSTANT

    def _open(self, label: str) -> Tuple[F.FieldDef, _Handle, Callable[[Any], None], Any]:
        s, b = _cut(self._resolve(), MAX_STATIC_TEXT)
        d = F.FieldDef(label, self.kind, self.help, "", self.static_labels, len(b))
        h = _Text()
        h._kind = self.kind
        h._once = True
        h._cap = len(b)
        return d, h, lambda h: h.set(s), s


class AverageField(_HandleField):
    """The mean of every value ``add()``-ed (kind ``gauge_f64``, holding the
    mean), as mmstats 0.8 computed it."""

    kind = F.GAUGE_F64
    handle_class = _Average

    def _handle(self) -> _Handle:
        h = _Average()
        h._kind = self.kind
        h._f32 = False
        return h


class MovingAverageField(_HandleField):
    """The mean of the last ``size`` values ``add()``-ed (kind ``gauge_f64``,
    holding that mean); the window lives in process memory."""

    kind = F.GAUGE_F64

    def __init__(self, size: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.size = int(size)

    def _handle(self) -> _Handle:
        h = _MovingAverage()
        h._kind = self.kind
        h._f32 = False
        h._size = self.size
        return h


class TimerField(_HandleField):
    """A timer (kind ``timer``, durations in nanoseconds): ``with
    stats.request:``, or ``start()`` / ``stop()``; ``last`` and ``value``
    in seconds. ``timer`` is the clock, a function returning seconds
    (default ``time.perf_counter``)."""

    kind = F.TIMER

    def __init__(self, timer: Callable[[], float] = time.perf_counter, size: int = 100, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.timer = timer
        self.size = int(size)

    def _def(self, label: str) -> F.FieldDef:
        p, m = F.TIMER_LAYOUT
        return F.FieldDef(label, self.kind, self.help, "ns", self.static_labels, p, m)

    def _handle(self) -> _Handle:
        h = Timer()
        h._kind = self.kind
        h._p, m = F.TIMER_LAYOUT
        h._top = (1 << m) - 1
        h._clock = self.timer
        h._size = self.size
        return h


class HistogramField(_HandleField):
    """A histogram of u64 values (kind ``histogram``; new in this version):
    ``record(value)``. ``unit`` is its unit text, e.g. ``"bytes"``."""

    kind = F.HISTOGRAM

    def __init__(self, unit: str = "", precision: int = 6, max_bits: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.unit = unit
        self.precision = int(precision)
        self.max_bits = int(max_bits)

    def _def(self, label: str) -> F.FieldDef:
        return F.FieldDef(label, self.kind, self.help, self.unit, self.static_labels, self.precision, self.max_bits)

    def _handle(self) -> _Handle:
        h = Histogram()
        h._kind = self.kind
        h._p = self.precision
        h._top = (1 << self.max_bits) - 1 if F.valid_layout(self.precision, self.max_bits) else M64
        return h


def model_fields(cls: type) -> List[Tuple[str, Field]]:
    """The fields of a model class, base classes' first, in definition
    order; a subclass attribute of the same name replaces (or removes) one."""
    found: Dict[str, Field] = {}
    for klass in reversed(cls.__mro__):
        for name, val in vars(klass).items():
            if isinstance(val, Field):
                found[name] = val
            elif name in found:
                del found[name]
    return list(found.items())


__all__: Iterable[str] = [
    "Field",
    "CounterField",
    "UInt64Field",
    "UIntField",
    "IntField",
    "ShortField",
    "UShortField",
    "ByteField",
    "BoolField",
    "FloatField",
    "DoubleField",
    "StringField",
    "StaticTextField",
    "StaticUIntField",
    "StaticInt64Field",
    "StaticUInt64Field",
    "StaticFloatField",
    "StaticDoubleField",
    "AverageField",
    "MovingAverageField",
    "TimerField",
    "HistogramField",
    "DEFAULT_STRING_SIZE",
]
