"""Temporary directories that the next run sweeps when a killed hapi left them.

``kill -9`` (or a power cut) runs no cleanup: the network ``hapi export`` exports or the
segments ``hapi profile`` exports to a temp directory stayed there for good. A
directory made here is named ``PREFIX-HOST-PID-RANDOM`` (the host and process scheme of
:mod:`hapi_dse.atomic`'s scratch names), and every new one first removes the directories of
the same prefix that a process of this host, now gone, left. One of an older hapi
(``PREFIX-RANDOM``, no owner in its name) goes once untouched for :data:`LEGACY_AGE_S`.

>>> with temp_dir("hapi-doc-") as d:
...     d.name.startswith("hapi-doc-")
True
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from hapi_dse.atomic import _HOST, _alive

LEGACY_AGE_S = 24 * 3600  # an unowned temp dir of an older hapi untouched this long is stale


def make_temp_dir(prefix: str, where: str | Path | None = None) -> Path:
    """A new directory ``PREFIX-HOST-PID-RANDOM`` in ``where`` (the system's temp directory
    when ``None``), made after sweeping the ones killed processes left there."""
    base = Path(where) if where is not None else Path(tempfile.gettempdir())
    sweep_temp_dirs(prefix, base)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{_HOST}-{os.getpid()}-", dir=base))


@contextlib.contextmanager
def temp_dir(prefix: str, where: str | Path | None = None) -> Iterator[Path]:
    """:func:`make_temp_dir`, removed on leaving (whatever ends the block)."""
    d = make_temp_dir(prefix, where)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def sweep_temp_dirs(prefix: str, base: Path) -> list[Path]:
    """Remove the directories ``PREFIX-HOST-PID-*`` in ``base`` whose process is gone (only
    this host's: a pid means nothing on another), and an older hapi's ``PREFIX-RANDOM`` long
    untouched; best effort, never an error. Returns what was removed."""
    owned = re.compile(rf"{re.escape(prefix)}{re.escape(_HOST)}-(\d+)-[a-z0-9_]+")
    legacy = re.compile(rf"{re.escape(prefix)}[a-z0-9_]{{8}}")
    removed: list[Path] = []
    try:
        with os.scandir(base) as it:
            entries = [e for e in it if e.name.startswith(prefix)]
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        try:
            if not entry.is_dir(follow_symlinks=False):
                continue
            m = owned.fullmatch(entry.name)
            if m is not None:
                stale = not _alive(int(m[1]))
            else:
                stale = bool(legacy.fullmatch(entry.name)) and (
                    now - _newest_mtime(Path(entry.path)) > LEGACY_AGE_S
                )
        except OSError:
            continue
        if stale:
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _newest_mtime(d: Path) -> float:
    """The latest modification time of ``d`` and what it holds (a live one is being written)."""
    newest = d.stat().st_mtime
    for root, dirs, files in os.walk(d):
        for name in dirs + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(os.path.join(root, name)).st_mtime)
    return newest


__all__ = ["LEGACY_AGE_S", "make_temp_dir", "sweep_temp_dirs", "temp_dir"]
