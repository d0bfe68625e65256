"""The scratch journal of ``--jobs`` without ``--storage``: a temporary directory that goes
with its search, whatever ends it.

:func:`make_scratch` creates it holding a shared ``flock`` that forked workers inherit, so
the lock is held until the parent and every worker are gone; :func:`sweep_scratch` (run by
every new scratch) removes the directories nobody holds, which a search killed by SIGKILL
leaves. :func:`scratch_base` says where they go: RAM where there is some.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

SCRATCH_PREFIX = ".hapi-journal-"
SCRATCH_OWNER = "owner.lock"
SCRATCH_ORPHAN_AGE_S = 600  # an unlocked scratch directory untouched this long is stale


def scratch_base(out: Path | None) -> Path:
    """Where the temporary journal of ``--jobs`` goes: RAM (``/dev/shm``) when there is one,
    as the journal appends and fsyncs ~15 records per trial, else beside the results
    (``out``, else the working directory)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    base = out if out is not None else Path(".")
    base.mkdir(parents=True, exist_ok=True)
    return base


def make_scratch(base: Path) -> tuple[Path, int]:
    """A new directory for the journal of ``--jobs`` and a descriptor holding a shared
    ``flock`` on its ``owner.lock``. Forked workers inherit the descriptor, so the lock is
    held until the parent and every worker are gone: a directory whose lock can be taken is
    nobody's, whatever killed its search, and the next search removes it."""
    import fcntl

    sweep_scratch(base)
    d = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-", dir=base))
    fd = -1
    try:
        tmp = d / f".{SCRATCH_OWNER}.tmp"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.rename(tmp, d / SCRATCH_OWNER)  # appears locked: a sweeper never sees it free
    except BaseException:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d, fd


def sweep_scratch(base: Path) -> None:
    """Remove the scratch journals in ``base`` that no live process uses."""
    try:
        with os.scandir(base) as it:
            dirs = [
                Path(e.path)
                for e in it
                if e.name.startswith(SCRATCH_PREFIX) and e.is_dir(follow_symlinks=False)
            ]
    except OSError:
        return
    for d in dirs:
        remove_if_unowned(d)


def remove_if_unowned(d: Path) -> None:
    """Remove the scratch directory ``d`` if no process holds its lock (one without a lock
    only once it is long untouched: it may be being made)."""
    import fcntl

    try:
        fd = os.open(d / SCRATCH_OWNER, os.O_RDONLY)
    except FileNotFoundError:  # an older hapi's, or one being made: only if long untouched
        try:
            newest = max([d.stat().st_mtime] + [p.stat().st_mtime for p in d.iterdir()])
        except OSError:
            return
        if time.time() - newest > SCRATCH_ORPHAN_AGE_S:
            shutil.rmtree(d, ignore_errors=True)
        return
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        pass  # in use
    else:
        shutil.rmtree(d, ignore_errors=True)
    finally:
        os.close(fd)


def leave_scratch(d: Path, owner: int) -> None:
    """An orphaned worker's exit: drop its hold, remove the directory if it was the last."""
    with contextlib.suppress(OSError):
        os.close(owner)
    remove_if_unowned(d)


def drop_scratch(d: Path, owner: int) -> None:
    """The search's exit, its workers reaped: drop its hold and remove the directory."""
    with contextlib.suppress(OSError):
        os.close(owner)
    shutil.rmtree(d, ignore_errors=True)


__all__ = ["drop_scratch", "leave_scratch", "make_scratch", "scratch_base", "sweep_scratch"]
