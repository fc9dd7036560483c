"""Stats models: a class of fields whose instances are thread-local, as in
mmstats 0.8. Each thread that touches an instance gets its own file, made
on its first touch; the file is marked exited when the thread ends (and
taken over by the next new thread of the same model, format-spec.md §2.7)
or the process exits."""

from __future__ import annotations

import os
import sys
import threading
import weakref
from typing import List, Optional, Tuple

from . import _writer
from .fields import Field, StaticTextField, model_fields


class _Binding:
    """Lives in a thread's instance dict; when the thread ends, Python drops
    it and its finalizer closes that thread's file."""

    __slots__ = ("__weakref__",)


def _fields_of(cls: type) -> List[Tuple[str, Field]]:
    cached = cls.__dict__.get("_mmstats_fields")
    if cached is None:
        cached = model_fields(cls)
        type.__setattr__(cls, "_mmstats_fields", cached)
    return cached


def _expand_path(path: str, command: str) -> str:
    tid = str(threading.get_native_id())
    pid = str(os.getpid())
    for old, new in (
        ("{CMD}", command),
        ("{cmd}", command),
        ("{PID}", pid),
        ("{pid}", pid),
        ("{TID}", tid),
        ("{tid}", tid),
    ):
        path = path.replace(old, new)
    return path


class BaseMmStats(threading.local):
    """A stats model with no default fields. Subclass it, declare fields
    and instantiate::

        class WebStats(mmstats.BaseMmStats):
            ok = mmstats.CounterField(label="status.2xx")

        stats = WebStats(label_prefix="web.")
        stats.ok.inc()

    Arguments (all optional):

    - ``path``: the directory of the files (default ``$MMSTATS_DIR``, else
      ``/dev/shm/mmstats-EUID``); ``{CMD}``, ``{PID}`` and ``{TID}`` are
      replaced.
    - ``filename``: the file name template, with ``{CMD}`` (or ``{cmd}``),
      ``{PID}``, ``{TID}`` and ``{model}``; default
      ``{cmd}.{model}.{pid}.{tid}.mmstats``. ``.{pid}.{tid}`` and
      ``.mmstats`` are added if missing.
    - ``label_prefix``: put before every field's label.
    - ``command``: the command name stored in the file (default: the
      script's base name).
    - ``model``: the model name (default: the class name).

    The instance is thread-local: every thread that uses it has its own
    fields and file. A file that cannot be made falls back to private
    memory: the application runs the same, readers do not see it, and
    :func:`mmstats.fallbacks` counts it (``fallback`` says why).
    """

    def __init__(
        self,
        path: Optional[str] = None,
        filename: Optional[str] = None,
        label_prefix: Optional[str] = None,
        command: Optional[str] = None,
        model: Optional[str] = None,
    ) -> None:
        cls = type(self)
        fields = _fields_of(cls)
        prefix = label_prefix or ""
        defs, handles, inits, keys = [], [], [], []
        for attr, field in fields:
            d, h, init, key = field._open(prefix + (field.label or attr))
            defs.append(d)
            handles.append(h)
            inits.append(init)
            keys.append(key)
        cmd = command or _writer.command_name()
        template = _writer.DEFAULT_TEMPLATE if filename is None else _writer.fit_template(filename)
        where = None if path is None else _expand_path(str(path), cmd)
        f = _writer.open_file(where, template, cmd, model or cls.__name__, defs, tuple(keys), handles)
        mine = self.__dict__
        for (attr, _field), h, init in zip(fields, handles, inits):
            init(h)
            mine[attr] = h
        binding = _Binding()
        weakref.finalize(binding, _writer.close_file, f).atexit = False
        mine["_mmstats_file"] = f
        mine["_mmstats_binding"] = binding
        mine["_mmstats_prefix"] = prefix

    @property
    def filename(self) -> Optional[str]:
        """This thread's stats file, or None if it lives in private memory."""
        f = self._mmstats_file
        return None if f.private else f.path

    @property
    def size(self) -> int:
        """Length of this thread's file in bytes."""
        return self._mmstats_file.length

    @property
    def label_prefix(self) -> str:
        """The prefix put before every label."""
        return self._mmstats_prefix

    @property
    def fallback(self) -> Optional[str]:
        """Why this thread's instance lives in private memory (readers cannot
        see it), or None if it has a file."""
        f = self._mmstats_file
        return f.error if f.private else None

    def close(self) -> None:
        """Marks this thread's file exited; later updates of this thread's
        fields go to private memory. (A thread's file is closed anyway when
        the thread ends, and every file when the process exits.)"""
        _writer.close_file(self._mmstats_file)

    def remove(self) -> None:
        """Closes this thread's file, as :meth:`close`. Unlike mmstats 0.8 it
        does not delete the file: its counts stay readable, and `mmash retire`
        folds them into an archive once the process is gone."""
        self.close()

    def flush(self, async_: bool = False) -> None:
        """Nothing to do on tmpfs; kept for mmstats 0.8's API."""


class MmStats(BaseMmStats):
    """A stats model with mmstats 0.8's default field ``org.python.version``
    (a constant). The other default fields of 0.8 are facts every file has
    already: ``sys.pid``, ``sys.tid`` and ``sys.created`` are in its header,
    ``sys.uid`` and ``sys.gid`` are its owner."""

    python_version = StaticTextField(label="org.python.version", value=lambda: sys.version.replace("\n", ""))


__all__ = ["BaseMmStats", "MmStats"]
