"""Optuna storages for ``--storage``: URLs, database drivers, and journal files that survive
killed writers and full disks.

A journal file (``journal:FILE``) is Optuna's format and lock file, with three repairs:
its lock (:class:`JournalLock`) is taken over when a killed process left it, its appends
(:class:`JournalFile`) are all or nothing, and a torn last record left by an older writer is
cut off on open (:func:`repair_torn_tail`); a journal corrupt elsewhere is refused in one line.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import time
import uuid
from pathlib import Path
from typing import Any, cast

from hapi_dse.errors import ArtefactError, SettingError, first_line
from hapi_dse.provenance import redact

log = logging.getLogger(__name__)

JOURNAL_LOCK_GRACE_S = 5  # a journal lock unchanged this long is a killed holder's: take it


def shown(url: str) -> str:
    """``url`` as a message shows it: quoted, every secret it carries redacted."""
    return repr(redact(url, secrets_of=url))


def journal_path(url: str) -> Path | None:
    """``journal:PATH`` / ``journal:///abs/path`` / a path ending in .log, .journal, .jsonl."""
    if url.startswith("journal:"):
        rest = url[len("journal:") :]
        return Path(rest[2:] if rest.startswith("///") else rest)
    if "://" not in url and Path(url).suffix in (".log", ".journal", ".jsonl"):
        return Path(url)
    return None


def check_journal(url: str | None) -> None:
    """Refuse a journal ``--storage`` that cannot be used, changing nothing on disk, so that
    it fails in one line before any search: no file named, a directory or another non-file
    at its path, a file where a directory of its path should be, or a place this process
    cannot write (a read-only file system; the lock file goes beside the journal)."""
    path = journal_path(url) if url is not None else None
    if url is None or path is None:
        return

    def refuse(why: str) -> SettingError:
        return SettingError("storage", f"{shown(url)}: {why}")

    rest = url[len("journal:") :] if url.startswith("journal:") else url
    if rest in ("", "///") or rest.endswith("/"):
        raise refuse("names no journal file; expected journal:FILE, e.g. journal:study.log")
    if os.path.lexists(path):
        if path.is_dir():
            raise refuse(
                f"{str(path)!r} is a directory; name a file in it, e.g. "
                f"journal:{path / 'study.log'}"
            )
        if not path.is_file():
            raise refuse(f"{str(path)!r} is not a regular file; name a journal file")
    parent = path.parent
    while not os.path.lexists(parent):
        parent = parent.parent
    if not parent.is_dir():
        raise refuse(
            f"{str(parent)!r} is a file, not a directory; name a journal file in a directory"
        )
    targets = [parent] + ([path] if path.exists() else [])
    for target in targets:
        if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
            why = "read-only file system" if _read_only(target) else "permission denied"
            raise refuse(
                f"cannot write {str(target)!r} ({why}); give a journal file in a writable directory"
            )


def _read_only(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _with_driver(url: str) -> str:
    """``postgresql://`` means psycopg 3 to SQLAlchemy 2.1; use psycopg2 when only it is
    installed (the ``postgres`` extra installs psycopg2-binary)."""
    import importlib.util

    m = re.match(r"^(postgresql|postgres)://", url)
    if (
        m
        and importlib.util.find_spec("psycopg") is None
        and importlib.util.find_spec("psycopg2") is not None
    ):
        return "postgresql+psycopg2://" + url[m.end() :]
    return url


SCHEMA_RACE_RETRIES = 5


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``--storage`` (``None``: in memory)."""
    if url is None:
        return None
    import optuna

    path = journal_path(url)
    if path is not None:
        check_journal(url)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFile(path)
        except OSError as e:  # a race with the checks, or a fault they cannot see
            why = e.strerror or type(e).__name__
            raise ArtefactError(
                f"--storage {shown(url)}: cannot open the journal ({why})"
            ) from None
        repair_torn_tail(backend)
        try:
            # Optuna skips a bad last line, then appends after it: refuse it first
            if not _whole_record(_last_line(path)):
                raise ValueError("the last line is not a journal record")
            return optuna.storages.JournalStorage(cast(Any, backend))
        except Exception as e:  # Optuna's replay: a record that is not whole JSON
            where = e.where if isinstance(e, JournalInconsistent) else _first_bad_record(path, e)
            raise ArtefactError(
                f"--storage {shown(url)}: the journal is corrupt ({where}); hapi cannot "
                "resume it: move it away to start a new study"
            ) from None
    if not re.match(r"^[a-z][a-z0-9+]*://", url):
        raise SettingError(
            "storage",
            f"{shown(url)}: expected an Optuna storage URL: sqlite:///FILE.db, "
            "postgresql://USER@HOST:PORT/DB, or journal:FILE for a journal file",
        )
    for attempt in range(SCHEMA_RACE_RETRIES + 1):
        try:
            return optuna.storages.RDBStorage(
                _with_driver(url), engine_kwargs={"pool_pre_ping": True}
            )
        except ModuleNotFoundError as e:
            raise SettingError(
                "storage",
                f"{shown(url)}: the database driver {e.name!r} is not installed; "
                "for PostgreSQL: pip install 'hapi-dse[postgres]'",
            ) from None
        except Exception as e:  # sqlalchemy errors: bad URL, server down, no permission
            if attempt < SCHEMA_RACE_RETRIES and _schema_race(e):
                time.sleep(0.2 * (attempt + 1))
                continue
            first = first_line(e)
            raise SettingError(
                "storage", f"{shown(url)}: cannot open ({redact(first, secrets_of=url)})"
            ) from None
    raise AssertionError("unreachable")


def _schema_race(e: Exception) -> bool:
    """Workers that open a fresh database together race to create Optuna's tables; the
    losers see a duplicate-key or already-exists error and only need to open it again."""
    text = str(e)
    return (
        type(e).__name__ == "IntegrityError"
        or "already exists" in text
        or ("duplicate key" in text)
    )


# -- journal files ----------------------------------------------------------------------------
class JournalLock:
    """The lock of a journal file: Optuna's symlink lock (``FILE.lock``, usable over NFS) made
    safe against a holder that was killed.

    Optuna's ``JournalFileSymlinkLock`` points the symlink at the path as given and judges a
    lock stale by the ``stat`` of its target. For a relative path with a directory part
    (``journal:st/k.log``) the target resolves against ``st/`` and never exists, so a lock
    left by a killed process was never taken over and every later process spun forever. This
    lock points at the absolute path, judges the symlink itself (``lstat``: a new holder is a
    new inode), backs off instead of spinning, and never removes a lock it does not hold.
    """

    def __init__(self, path: Path, grace_s: float = JOURNAL_LOCK_GRACE_S) -> None:
        self.target = os.path.abspath(path)
        self.path = self.target + ".lock"
        self.grace_s = grace_s

    def acquire(self) -> bool:
        delay = 0.0005
        seen: tuple[int, int] | None = None
        since = time.monotonic()
        while True:
            try:
                os.symlink(self.target, self.path)
                return True
            except FileExistsError:
                pass
            try:
                st = os.lstat(self.path)
            except FileNotFoundError:
                continue  # released meanwhile
            now = time.monotonic()
            if (st.st_ino, st.st_mtime_ns) != seen:
                seen, since = (st.st_ino, st.st_mtime_ns), now
            elif now - since > self.grace_s:
                self._take_over(seen)
                seen = None
                continue
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def release(self) -> None:
        aside = f"{self.path}.{uuid.uuid4().hex}.rename"
        try:
            os.rename(self.path, aside)  # atomic: never removes a lock taken over meanwhile
        except OSError:
            return  # taken over: this process was presumed dead
        with contextlib.suppress(OSError):
            os.unlink(aside)

    def _take_over(self, stale: tuple[int, int]) -> None:
        aside = f"{self.path}.{uuid.uuid4().hex}.rename"
        try:
            os.rename(self.path, aside)
        except OSError:
            return  # another waiter took it over first
        st = os.lstat(aside)
        if (st.st_ino, st.st_mtime_ns) != stale:  # a new holder came in between: put it back
            with contextlib.suppress(OSError):
                os.link(aside, self.path, follow_symlinks=False)
        else:
            log.warning(
                f"journal {self.target}: took over the lock {self.path} that a killed process "
                f"left (unchanged for {self.grace_s:g} s)"
            )
        with contextlib.suppress(OSError):
            os.unlink(aside)


class JournalFile:
    """Optuna's journal file backend (same format, same lock file) whose appends are all or
    nothing: a write cut short (a full disk, an interrupt) is cut back off before the lock is
    released, so no record is ever appended after a torn one. Reading is Optuna's."""

    def __init__(self, path: Path) -> None:
        from optuna.storages.journal import JournalFileBackend

        self.path = path
        self.lock = JournalLock(path)
        # creates the file; its lock object is used by append_logs only, which is ours
        self._reader = JournalFileBackend(str(path), lock_obj=cast(Any, self.lock))
        self._replay = _Replay(path)

    def read_logs(self, log_number_from: int) -> Any:
        """Optuna's records from ``log_number_from`` on, each checked against those before
        it (:class:`_Replay`) the first time it is read."""
        start = min(log_number_from, self._replay.read)
        for number, record in enumerate(self._reader.read_logs(start), start=start):
            if number == self._replay.read:
                self._replay.check(record)
            if number >= log_number_from:
                yield record

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        data = ("\n".join(json.dumps(x, separators=(",", ":")) for x in logs) + "\n").encode()
        self.lock.acquire()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                start = os.fstat(fd).st_size  # no other writer while the lock is held
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view) :]
                    os.fsync(fd)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.ftruncate(fd, start)  # needs no space
                    raise
            finally:
                os.close(fd)
        finally:
            self.lock.release()


class JournalInconsistent(ArtefactError):
    """A journal record that names a study or trial no earlier record created."""

    def __init__(self, path: Path, where: str) -> None:
        self.where = where
        super().__init__(
            f"journal {path}: the journal is corrupt ({where}); hapi cannot resume it: move "
            "it away to start a new study"
        )


_STUDY_OPS = (1, 2, 3, 4)  # Optuna's DELETE_STUDY, SET_STUDY_*_ATTR, CREATE_TRIAL
_TRIAL_OPS = (5, 6, 7, 8, 9)  # SET_TRIAL_PARAM, _STATE_VALUES, _INTERMEDIATE_VALUE, _*_ATTR


class _Replay:
    """What a journal's records so far created, replayed as Optuna does, to refuse a record
    that names a study or a trial no earlier record created: Optuna skips it silently (it
    takes it for another worker's race), so an edited or spliced journal resumed with trials
    quietly missing or mixed. Ids are given in record order (a study per new name, a trial
    per ``CREATE_TRIAL`` of a live study), so a record naming a later id is never a race."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read = 0  # records checked
        self.studies = 0  # ids given so far
        self.live: dict[int, str] = {}  # study id -> name
        self.trials = 0

    def check(self, record: Any) -> None:
        line = self.read + 1
        op = record.get("op_code") if isinstance(record, dict) else None

        def refuse(what: str) -> JournalInconsistent:
            return JournalInconsistent(self.path, f"line {line} {what}")

        def known(key: str, created: int, kind: str) -> int:
            value = record.get(key)
            if isinstance(value, bool) or not isinstance(value, int):
                raise refuse(f"has {key} {value!r}, expected an integer")
            if not 0 <= value < created:
                raise refuse(f"names {kind} {value}, which no earlier record created")
            return value

        if isinstance(op, bool) or op not in (0, *_STUDY_OPS, *_TRIAL_OPS, 10):
            raise refuse(f"has op_code {op!r}, which is not an Optuna journal operation")
        if op == 0:
            name = record.get("study_name")
            if name not in self.live.values():
                self.live[self.studies] = name
                self.studies += 1
        elif op in _STUDY_OPS:
            study = known("study_id", self.studies, "study")
            if op == 1:
                self.live.pop(study, None)
            elif op == 4 and study in self.live:
                self.trials += 1
        elif op in _TRIAL_OPS:
            known("trial_id", self.trials, "trial")
        self.read += 1


def _torn_bytes(path: Path) -> int:
    """The size of the record at the end of ``path`` that lacks its newline (0: none)."""
    with open(path, "rb") as f:
        end = pos = f.seek(0, os.SEEK_END)
        if end == 0:
            return 0
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return 0
        while pos > 0:
            start = max(pos - 65536, 0)
            f.seek(start)
            i = f.read(pos - start).rfind(b"\n")
            if i >= 0:
                return end - (start + i + 1)
            pos = start
        return end


def repair_torn_tail(journal: JournalFile) -> None:
    """Cut off a last record that a killed process or a full disk left half-written (Optuna
    would append the next record after it, corrupting the journal for good)."""
    path = journal.path
    if not _torn_bytes(path):
        return
    journal.lock.acquire()  # a writer may be halfway through: look again under the lock
    try:
        n = _torn_bytes(path)
        if not n:
            return
        with open(path, "rb") as f:
            if not f.read(16).startswith(b'{"op_code":'):
                return  # not an Optuna journal: Optuna's replay refuses it
        size = path.stat().st_size
        os.truncate(path, size - n)
        log.warning(
            f"journal {path}: removed a torn last record ({n} bytes) that an interrupted "
            "write left (a full disk or a killed process); the records before it are kept"
        )
    finally:
        journal.lock.release()


def _last_line(path: Path) -> bytes:
    """The last line of a file that ends with a newline (``b""`` when it is empty)."""
    with open(path, "rb") as f:
        end = pos = f.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            start = max(pos - 65536, 0)
            f.seek(start)
            tail = f.read(pos - start) + tail
            pos = start
            i = tail.rfind(b"\n", 0, len(tail) - 1)
            if i >= 0:
                return tail[i + 1 :]
        return tail if end else b""


def _whole_record(line: bytes) -> bool:
    from hapi_dse.errors import HapiError
    from hapi_dse.readers import loads_json

    if not line:
        return True
    try:
        record = loads_json(line, "journal record")  # a line too deep is not a record
    except HapiError:
        return False
    return isinstance(record, dict) and "op_code" in record


def _first_bad_record(path: Path, error: Exception) -> str:
    """Where a journal stops being whole JSON records, for the error message."""
    try:
        with open(path, "rb") as f:
            for number, line in enumerate(f, start=1):
                if not _whole_record(line):
                    return f"line {number} is not a journal record"
    except OSError as e:
        return e.strerror or type(e).__name__
    return first_line(error)


def store_file(url: str | None) -> Path | None:
    """The local file of a journal or SQLite ``--storage`` (``None`` for servers)."""
    if url is None:
        return None
    path = journal_path(url)
    if path is None and url.startswith("sqlite:///"):
        rest = url[len("sqlite:///") :].split("?", 1)[0]
        path = Path(rest) if rest and rest != ":memory:" else None
    return path


_NO_ROOM = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@contextlib.contextmanager
def disk_full(storage: str | None, url: str | None) -> Any:
    """A full disk (or a file size limit) while a trial is written: one line; the journal
    keeps every record written before (see :class:`JournalFile`). Optuna may have turned the
    ``OSError`` into another error (an ``AssertionError`` when ``tell`` fails): look through
    the chain."""
    try:
        yield
    except Exception as e:
        cause: BaseException | None = e
        while cause is not None and not (isinstance(cause, OSError) and cause.errno in _NO_ROOM):
            cause = cause.__cause__ or cause.__context__
        if not isinstance(cause, OSError):
            raise
        why = cause.strerror or os.strerror(cause.errno or 0)
        if storage is None:
            where = Path(url[len("journal:") :]).parent if url else "scratch"
            raise ArtefactError(
                f"cannot write the shared journal of --jobs in {where} ({why}); free some "
                "space there, or give --storage journal:FILE on a disk with room"
            ) from None
        raise ArtefactError(
            f"--storage {shown(storage)}: cannot write ({why}); every trial written "
            "before is kept: free some space and rerun to resume"
        ) from None


def drop_if_empty(path: Path) -> None:
    """Remove a store this run created but never wrote to (no 0-byte stores left behind)."""
    with contextlib.suppress(OSError):
        if path.is_file() and not path.is_symlink() and path.stat().st_size == 0:
            path.unlink()
