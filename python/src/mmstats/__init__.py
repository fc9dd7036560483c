"""mmstats: "/proc for your application", in pure Python.

A stats model is a class of fields. Each thread that uses an instance gets
its own memory-mapped file holding the fields in the language-neutral
layout of format-spec.md (version 1.2), and updates it with plain word
stores: no lock, no system call, no message per update. The Rust readers
(``slurpstats``, ``pollstats``, ``mmash``) and this package's own reader
find the files and read them without disturbing the writers::

    import mmstats

    class WebStats(mmstats.MmStats):
        ok = mmstats.CounterField(label="status.2xx")
        inflight = mmstats.IntField(label="in_flight")
        request = mmstats.TimerField(label="request")

    stats = WebStats(label_prefix="web.")
    stats.ok.inc()
    stats.inflight = 3
    with stats.request:
        handle()

The API is mmstats 0.8's. Files live in ``$MMSTATS_DIR``, else
``/dev/shm/mmstats-EUID``. A forked child (gunicorn, Celery, multiprocessing)
gets files of its own; at exit every file is marked exited; a file that
cannot be made falls back to private memory, counted by :func:`fallbacks`.

Reading: :func:`read` (one file) and :func:`discover` (every file found)
return the objects of the JSON contract; ``python -m mmstats.slurpstats``
prints them as the Rust ``slurpstats`` does.
"""

from ._writer import Fallbacks, fallbacks
from .fields import (
    DEFAULT_STRING_SIZE,
    AverageField,
    BoolField,
    ByteField,
    CounterField,
    DoubleField,
    Field,
    FloatField,
    HistogramField,
    IntField,
    MovingAverageField,
    ShortField,
    StaticDoubleField,
    StaticFloatField,
    StaticInt64Field,
    StaticTextField,
    StaticUInt64Field,
    StaticUIntField,
    StringField,
    TimerField,
    UInt64Field,
    UIntField,
    UShortField,
)
from .models import BaseMmStats, MmStats
from .reader import ReadError, ReadLimits, discover, read

__version__ = "0.9.0"
version = __version__

__all__ = [
    "AverageField",
    "BaseMmStats",
    "BoolField",
    "ByteField",
    "CounterField",
    "DEFAULT_STRING_SIZE",
    "DoubleField",
    "Fallbacks",
    "Field",
    "FloatField",
    "HistogramField",
    "IntField",
    "MmStats",
    "MovingAverageField",
    "ReadError",
    "ReadLimits",
    "ShortField",
    "StaticDoubleField",
    "StaticFloatField",
    "StaticInt64Field",
    "StaticTextField",
    "StaticUInt64Field",
    "StaticUIntField",
    "StringField",
    "TimerField",
    "UInt64Field",
    "UIntField",
    "UShortField",
    "discover",
    "fallbacks",
    "read",
]
