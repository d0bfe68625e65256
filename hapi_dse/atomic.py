"""Atomic file writes, and the file system's faults as one line.

Every file a stage writes is written atomically (a scratch file in the same directory, then
``os.replace``). The file system's faults (read-only, full, not a directory, no permission)
become one :class:`WriteError` line naming the output, never a traceback, and a failed write
leaves no scratch file and changes nothing that was there. Scratch names
(``.NAME.hapi-HOST-PID.RAND.{tmp,old}``) let a later run take over what a killed one left.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, HapiError

log = logging.getLogger(__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- the file system's faults -----------------------------------------------------------------
class WriteError(ArtefactError):
    """The file system refused a write (read-only, full, not a directory, no permission).

    ``reason`` is the fault in words (``"no space left on device"``); an enclosing
    :func:`atomic_dir` uses it to report the fault against the output the user named.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


_NO_SPACE = "no space left on device"
#: faults of the file system itself, whichever write hits them
_DISK_FAULTS = {
    errno.ENOSPC: _NO_SPACE,
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EFBIG: "file too large for the file system",
}
#: below this much free space, a failed write is taken for a full disk: torch.save and other
#: C++ writers report ENOSPC as a RuntimeError ("file write failed", "unexpected pos")
_NEARLY_FULL = 64 * 1024
#: rename errors that mean "the target exists now": a concurrent writer got there first
_TAKEN = {errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR}


def _reason(e: OSError) -> str:
    if e.errno in _DISK_FAULTS:
        return _DISK_FAULTS[e.errno]
    return (e.strerror or str(e)).lower()


def _fix(reason: str, label: str | None = None) -> str:
    other = f"choose another {label}" if label else "write somewhere else"
    if reason in (_NO_SPACE, _DISK_FAULTS[errno.EDQUOT]):
        return f"free some space or {other}"
    return other


def _nearly_full(path: Path) -> bool:
    try:
        st = os.statvfs(path)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL or (st.f_files > 0 and st.f_favail == 0)


def _disk_fault(e: BaseException, where: Path) -> str | None:
    """The reason when ``e``, raised while writing under ``where``, is the file system's."""
    if isinstance(e, OSError) and e.errno in _DISK_FAULTS:
        return _DISK_FAULTS[e.errno]
    if isinstance(e, (OSError, RuntimeError)) and _nearly_full(where):
        return _NO_SPACE
    return None


@contextlib.contextmanager
def _os_errors(message: Callable[[str], str]) -> Iterator[None]:
    """Map an ``OSError`` of hapi's own file operations to one :class:`WriteError` line."""
    try:
        yield
    except OSError as e:
        reason = _reason(e)
        raise WriteError(message(reason), reason) from None


# -- scratch names ----------------------------------------------------------------------------
# Temp files and directories are named ``.NAME.hapi-HOST-PID.RANDOM.tmp`` (``.old`` for a
# previous output moved aside during a swap) beside ``NAME``: unique per process, so that
# concurrent writers never share one, and recognisable, so that a later run takes over what a
# killed one left (see :func:`_take_over`).
_HOST = re.sub(r"[^A-Za-z0-9]", "", platform.node())[:16] or "host"


#: longest output name kept whole in a scratch name: the rest of it (host, pid, random part,
#: suffix) must fit in the file system's 255 bytes too
_SCRATCH_NAME_MAX = 180


def _scratch_stem(dest: Path) -> str:
    """``dest``'s name as its scratch names carry it: shortened (with a hash of the whole
    name) when it is so long that a scratch name would not fit where ``dest`` itself does."""
    name = dest.name
    raw = os.fsencode(name)  # the file system's bytes: a non-UTF-8 name has no str encoding
    if len(raw) <= _SCRATCH_NAME_MAX:
        return name
    import hashlib

    return os.fsdecode(raw[:120]) + "~" + hashlib.sha256(raw).hexdigest()[:12]


def _scratch_prefix(dest: Path) -> str:
    return f".{_scratch_stem(dest)}.hapi-{_HOST}-{os.getpid()}."


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # someone else's process
        return True
    return True


def _stale_scratch(dest: Path) -> list[tuple[Path, str]]:
    """The scratch of ``dest`` that processes of this host, now gone, left beside it."""
    stem = re.escape(_scratch_stem(dest))
    pattern = re.compile(rf"\.{stem}\.hapi-{_HOST}-(\d+)\.[a-z0-9_]+\.(tmp|old)")
    found = []
    try:
        with os.scandir(dest.parent) as it:
            for entry in it:
                m = pattern.fullmatch(entry.name)
                if m and not _alive(int(m[1])):
                    found.append((Path(entry.path), m[2]))
    except OSError:
        return []
    return found


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            p.unlink()


def _take_over(dest: Path, restore: Callable[[Path], bool] | None = None) -> None:
    """Finish what a killed hapi left beside ``dest`` (best effort, never an error).

    A previous output it had moved aside for a swap goes back to ``dest`` when ``dest`` is
    missing (the swap was cut between its two renames) and ``restore`` accepts it;
    its other temp files and directories are removed (a moved-aside output only once ``dest``
    is there again). Only hapi's scratch names from this host whose process is gone count.
    """
    try:
        stale = _stale_scratch(dest)
        olds = [p for p, what in stale if what == "old" and p.is_dir() and not p.is_symlink()]
        if restore is not None and olds and not os.path.lexists(dest):
            for old in sorted(olds, key=lambda p: p.stat().st_mtime, reverse=True):
                names = os.listdir(old)
                if names and restore(old):
                    os.rename(old, dest)
                    log.info(f"{dest}: put back the previous output an interrupted hapi left aside")
                    break
        keep_olds = not os.path.lexists(dest)  # never drop the only copy of a previous output
        for p, what in stale:
            if not (keep_olds and what == "old") and os.path.lexists(p):
                _remove(p)
    except OSError:  # another process takes over at the same time, or a read-only place
        pass


# -- atomic files -----------------------------------------------------------------------------
def _missing_dirs(path: Path) -> list[Path]:
    """The directories above ``path`` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if os.path.lexists(parent):
            break
        missing.append(parent)
    return missing


def _scratch(dest: Path, suffix: str, *, directory: bool) -> Path:
    """A new temp file or directory beside ``dest``, its parents made as needed."""
    for attempt in range(3):
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError as e:  # a file where a directory should be
            raise NotADirectoryError(
                errno.ENOTDIR, os.strerror(errno.ENOTDIR), e.filename
            ) from None
        try:
            if directory:
                return Path(
                    tempfile.mkdtemp(suffix=suffix, prefix=_scratch_prefix(dest), dir=dest.parent)
                )
            fd, name = tempfile.mkstemp(
                suffix=suffix, prefix=_scratch_prefix(dest), dir=dest.parent
            )
            os.close(fd)
            return Path(name)
        except FileNotFoundError:  # a concurrent hapi that failed removed the parent it made
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _remove_dirs(dirs: list[Path]) -> None:
    """Remove the directories hapi made for an output that was not written, if still empty."""
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it into place only if the block succeeds.

    A fault of the file system (read-only, full, not a directory) at any step, the block's
    own writes included, is one :class:`WriteError`; ``dest`` is left as it was and the temp
    file is removed.
    """
    dest = Path(dest)

    def failed(reason: str) -> str:
        return f"cannot write {dest} ({reason}); it was left as it was: {_fix(reason)}"

    made = _missing_dirs(dest)
    tmp: Path | None = None
    done = False
    try:
        with _os_errors(failed):
            _take_over(dest)
            tmp = _scratch(dest, ".tmp", directory=False)
            os.chmod(tmp, 0o666 & ~_umask())
        try:
            yield tmp
        except HapiError:
            raise
        except Exception as e:
            reason = _disk_fault(e, tmp.parent)
            if reason is None:
                raise
            raise WriteError(failed(reason), reason) from None
        with _os_errors(failed):
            os.replace(tmp, dest)
        done = True
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if not done:
            _remove_dirs(made)


def write_text(dest: str | Path, text: str) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)


def write_json(dest: str | Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default, allow_nan=False)  # standard JSON
    write_text(dest, text + "\n")


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
