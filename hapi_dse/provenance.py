"""Provenance and safe file writing shared by every stage.

Every file a stage writes is written atomically (temp file in the same directory, then
``os.replace``) and described by a sidecar with the schema version, hapi version, command
line, seed, library versions and the sha256 of every input.

The file system's faults (read-only, full, not a directory, no permission) become one
:class:`WriteError` line naming the output, never a traceback; an output directory is checked
for them before long work starts (:func:`check_out_dir`, :func:`check_writable`), and a
failed write leaves no temp file and changes nothing that was there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import platform
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

from hapi_dse import __version__
from hapi_dse.errors import ArtefactError, HapiError, UsageError

SCHEMA_VERSION = 1

# ``scheme://user:password@host``: everything from the ``:`` after the user to the last
# ``@`` of the same word is the password (it may hold ``/``, ``:`` or an unescaped ``@``).
_URL_PASSWORD = re.compile(r"(://[^\s:/@]*):\S*@")
# libpq and SQLAlchemy also take the password as a query parameter.
_QUERY_PASSWORD = re.compile(r"([?&](?:password|passwd|pwd)=)[^&\s]*", re.IGNORECASE)


@overload
def redact(text: str) -> str: ...
@overload
def redact(text: None) -> None: ...
def redact(text: str | None) -> str | None:
    """``text`` with the password of every URL in it replaced by ``***``.

    The one place secrets are removed: the recorded command line, recorded settings and every
    message that shows a storage URL go through it.
    ``postgresql://u:pw@h/db`` becomes ``postgresql://u:***@h/db``; ``?password=pw`` becomes
    ``?password=***``.
    """
    if text is None:
        return None
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _QUERY_PASSWORD.sub(r"\1***", text)


def command_line(argv: list[str] | None = None) -> str:
    """The command line (``sys.argv`` by default) as recorded: program name, then every
    argument with its passwords redacted (``--storage URL`` and ``--storage=URL`` alike)."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return ""
    return " ".join([Path(argv[0]).name, *(redact(a) for a in argv[1:])])


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the given distributions (only those installed), plus Python's."""
    from importlib import metadata

    out = {"python": platform.python_version(), "hapi": __version__}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def provenance(
    *,
    seed: int | None,
    inputs: Mapping[str, str | Path] | None = None,
    settings: Any = None,
    libraries: tuple[str, ...] = ("numpy",),
) -> dict[str, Any]:
    """The provenance block recorded in every sidecar."""
    return {
        "schema_version": SCHEMA_VERSION,
        "hapi_version": __version__,
        "command": command_line(),
        "created": utc_now(),
        "seed": seed,
        "versions": library_versions(*libraries),
        "inputs": {
            k: {"path": str(p), "sha256": sha256_file(p)} for k, p in (inputs or {}).items()
        },
        "settings": settings,
    }


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


def _scratch_prefix(dest: Path) -> str:
    return f".{dest.name}.hapi-{_HOST}-{os.getpid()}."


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
    pattern = re.compile(rf"\.{re.escape(dest.name)}\.hapi-{_HOST}-(\d+)\.[a-z0-9_]+\.(tmp|old)")
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


def _take_over(dest: Path, kind: str | None, *, restore: bool = True) -> None:
    """Finish what a killed hapi left beside ``dest`` (best effort, never an error).

    A previous output it had moved aside for a swap goes back to ``dest`` when ``dest`` is
    missing (the swap was cut between its two renames); its other temp files and directories
    are removed (a moved-aside output only once ``dest`` is there again). Only hapi's scratch
    names from this host whose process is gone count.
    """
    try:
        stale = _stale_scratch(dest)
        olds = [p for p, what in stale if what == "old" and p.is_dir() and not p.is_symlink()]
        if restore and olds and not os.path.lexists(dest):
            for old in sorted(olds, key=lambda p: p.stat().st_mtime, reverse=True):
                names = os.listdir(old)
                if names and (kind is None or _output_kind(names) == kind):
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
            _take_over(dest, None, restore=False)
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
    write_text(dest, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


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


# -- output directories -----------------------------------------------------------------------
# What each kind of output directory holds when hapi writes it (names, or fnmatch patterns).
# A directory whose entries are all among them, with its ``signature`` file, is hapi's own
# output of that kind: only such a directory is ever replaced, and only with ``--overwrite``.
# Recognised by name, not by a marker file, so that results of earlier versions (and the
# bundled example) are recognised too and the directory contracts stay as documented.
OUTPUT_KINDS: dict[str, dict[str, Any]] = {
    "run": {
        "what": "training run",
        "signature": "model.json",
        "names": (
            "model.json",
            "weights.pt",
            "exits_val.npz",
            "exits_test.npz",
            "train.json",
            "flops.csv",
        ),
    },
    "search": {
        "what": "search result",
        "signature": "search.json",
        "names": ("trials.csv", "pareto.csv", "design.json", "search.json", "verify"),
    },
    "staged-export": {
        "what": "staged export",
        "signature": "manifest.json",
        # __pycache__: importing the shipped staged_runtime.py (the check, 'hapi eval') may
        # leave its bytecode there
        "names": (
            "manifest.json",
            "export.json",
            "eval.json",  # 'hapi eval DIR' writes its report here by default
            "staged_runtime.py",
            "stage_*.onnx",
            "__pycache__",
        ),
    },
}

_NEVER = "hapi never deletes what it did not write"


def _foreign_entries(names: list[str], kind: str) -> list[str]:
    import fnmatch

    known = OUTPUT_KINDS[kind]["names"]
    return [n for n in names if not any(fnmatch.fnmatchcase(n, k) for k in known)]


def _output_kind(names: list[str]) -> str | None:
    """The kind of hapi output a directory with these entries is, or None."""
    for kind, spec in OUTPUT_KINDS.items():
        if spec["signature"] in names and not _foreign_entries(names, kind):
            return kind
    return None


def _real(dest: Path) -> Path:
    """``dest`` with its parent as the kernel sees it (``..`` and links resolved); the last
    component is kept as it is, so that a link there is seen as a link."""
    if dest.name in ("", ".", ".."):
        return Path(os.path.realpath(dest))
    return Path(os.path.realpath(dest.parent)) / dest.name


def _refuse_cwd(shown: Path, real: Path, label: str) -> None:
    """An output directory is swapped as a whole: never the current directory or one above."""
    try:
        cwd = Path(os.path.realpath(os.getcwd()))
    except OSError:
        return
    if real == cwd or real in cwd.parents:
        what = "the current directory" if real == cwd else "a directory above the current one"
        raise UsageError(
            f"{label} {shown}: is {what}; hapi replaces {label} as a whole: name a new "
            f"directory, e.g. {label} {shown / 'out'}"
        )


def check_writable(dest: str | Path, label: str = "--out", *, shown: Any = None) -> None:
    """Refuse, before long work starts, an output ``dest`` (file or directory) that cannot be
    written: its directory (or the nearest one that exists) is on a read-only or full file
    system, is not writable, or is a file. One :class:`WriteError` or :class:`UsageError`
    naming ``label shown`` (``shown`` defaults to ``dest``).

    Probes by writing and removing a small temp file where ``dest`` will be created (or
    swapped in): the only test that tells quotas, read-only mounts and full disks alike.
    """
    shown = dest if shown is None else shown
    for parent in Path(dest).parents:  # as given: a broken link there is refused, not followed
        if parent.is_dir():
            break
        if os.path.lexists(parent):
            what = "a broken symbolic link" if parent.is_symlink() else "not a directory"
            raise UsageError(f"{label} {shown}: {parent} is {what}; choose another {label}")
    anc = _real(Path(dest)).parent
    while not anc.is_dir():
        if os.path.lexists(anc):
            raise UsageError(f"{label} {shown}: {anc} is not a directory; choose another {label}")
        anc = anc.parent
    try:
        fd, probe = tempfile.mkstemp(prefix=".hapi-probe-", dir=anc)
        try:
            block = b"\0" * 4096
            while block:
                block = block[os.write(fd, block) :]
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        reason = _reason(e)
        raise WriteError(
            f"{label} {shown}: cannot write in {anc} ({reason}); {_fix(reason, label)}", reason
        ) from None


def _judge(names: list[str], kind: str | None, overwrite: bool, shown: Path, label: str) -> None:
    """Refuse a directory with these entries where hapi may not replace it."""
    if not names:
        return
    if kind is None:
        if overwrite:
            return
        raise UsageError(f"{label} {shown}: is not empty; pass --overwrite to replace it")
    what = OUTPUT_KINDS[kind]["what"]
    found = _output_kind(names)
    if found == kind:
        if overwrite:
            return
        raise UsageError(f"{label} {shown} holds a previous {what}; pass --overwrite to replace it")
    if found is not None:
        raise UsageError(
            f"{label} {shown} holds a {OUTPUT_KINDS[found]['what']}, not a {what}; {_NEVER}: "
            f"choose another {label}"
        )
    foreign = _foreign_entries(names, kind) or names
    shown_names = ", ".join(foreign[:5])
    if len(foreign) > 5:
        shown_names += f" and {len(foreign) - 5} more"
    raise UsageError(
        f"{label} {shown} holds entries that are not a {what} of hapi ({shown_names}); {_NEVER}: "
        f"choose another {label}, or move them away"
    )


def _entries(real: Path, shown: Path, label: str) -> list[str] | None:
    """The entries of the directory ``real``; None when there is nothing there.

    One ``lstat``, so that a directory a concurrent hapi swaps away meanwhile is seen as
    missing, never as a file.
    """
    try:
        mode = os.lstat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise UsageError(f"{label} {shown}: cannot read it ({_reason(e)})") from None
    if stat.S_ISLNK(mode):
        raise UsageError(f"{label} {shown}: is a symbolic link; {_NEVER}: choose another {label}")
    if not stat.S_ISDIR(mode):
        raise UsageError(
            f"{label} {shown}: is a file, not a directory; {_NEVER}: choose another {label}"
        )
    try:
        return sorted(os.listdir(real))
    except (FileNotFoundError, NotADirectoryError):  # swapped away meanwhile
        return None
    except OSError as e:
        raise UsageError(f"{label} {shown}: cannot list it ({_reason(e)})") from None


def check_out_dir(
    dest: str | Path,
    kind: str | None,
    overwrite: bool = False,
    *,
    label: str = "--out",
    probe: bool = True,
) -> None:
    """Refuse an output directory ``dest`` that hapi may not replace or cannot write.

    Fine: no ``dest``, or an empty directory. hapi's own output of the same ``kind``: fine
    with ``overwrite``, else refused. Anything else (a file, a symbolic link, a directory with
    other entries, hapi's output of another kind) is always refused (a :class:`UsageError`),
    and so is the current directory or one above it (the directory is swapped as a whole).
    With ``probe`` (before long work starts), it also takes over what a killed hapi left
    beside ``dest`` (:func:`_take_over`) and refuses a place it cannot write
    (:func:`check_writable`). Called before long work starts and again by :func:`atomic_dir`
    just before the swap (without ``probe``).
    """
    shown = Path(dest)
    real = _real(shown)
    _refuse_cwd(shown, real, label)
    if probe:
        _take_over(real, kind)
    names = _entries(real, shown, label)
    if names is not None:
        _judge(names, kind, overwrite, shown, label)
    if probe:
        check_writable(shown, label)


@contextlib.contextmanager
def atomic_dir(
    dest: str | Path, *, kind: str | None = None, overwrite: bool = False, label: str = "--out"
) -> Iterator[Path]:
    """Build a directory in a temp sibling and swap it in only when the block succeeds.

    An interrupted run (Ctrl-C, crash) leaves ``dest`` as it was: no half-written run dir (a
    run killed in the middle of the swap is taken over by the next one). An existing ``dest``
    is replaced only where :func:`check_out_dir` allows it (hapi's own output of this
    ``kind``, with ``overwrite``); it is checked before the temp directory is made (nothing is
    written when refused) and again just before the swap. A full or read-only file system is
    one :class:`WriteError` naming ``dest``. Concurrent writers of one ``dest`` each swap in a
    whole directory: with ``overwrite`` the last one wins, without it the later ones are
    refused with one line.
    """
    shown = Path(dest)
    check_out_dir(shown, kind, overwrite, label=label)
    real = _real(shown)
    existed = os.path.lexists(real)

    def failed(reason: str) -> str:
        return (
            f"{label} {shown}: cannot write it ({reason}); nothing was changed there: "
            f"{_fix(reason, label)}"
        )

    made = _missing_dirs(real)
    tmp: Path | None = None
    done = False
    try:
        with _os_errors(failed):
            tmp = _scratch(real, ".tmp", directory=True)
            os.chmod(tmp, 0o777 & ~_umask())
        try:
            yield tmp
        except WriteError as e:  # from a file written inside: name the directory instead
            raise WriteError(failed(e.reason), e.reason) from None
        except HapiError:
            raise
        except Exception as e:
            reason = _disk_fault(e, tmp)
            if reason is None:
                raise
            raise WriteError(failed(reason), reason) from None
        _swap(tmp, real, shown, kind, overwrite, existed, label, failed)
        done = True
    finally:
        if tmp is not None and os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        if not done:
            _remove_dirs(made)


#: how often a swap starts again when concurrent writers of the same output get in between
_SWAP_TRIES = 100


def _swap(
    tmp: Path,
    real: Path,
    shown: Path,
    kind: str | None,
    overwrite: bool,
    existed: bool,
    label: str,
    failed: Callable[[str], str],
) -> None:
    """Put the finished ``tmp`` at ``real``, moving a previous output aside first.

    Each rename either takes effect whole or fails; one that fails because another hapi
    process changed ``real`` in between starts over from the check, so the result is always
    one writer's whole directory (the last one's, with ``overwrite``).
    """
    for _ in range(_SWAP_TRIES):
        try:
            check_out_dir(shown, kind, overwrite, label=label, probe=False)
        except UsageError:
            if not existed and not overwrite and kind is not None and _kind_at(real) == kind:
                what = OUTPUT_KINDS[kind]["what"]
                raise UsageError(
                    f"{label} {shown}: another hapi process wrote a {what} there while this one "
                    "ran; pass --overwrite to replace it"
                ) from None
            raise
        if not os.path.lexists(real):
            try:
                os.rename(tmp, real)
                return
            except OSError as e:
                if e.errno in _TAKEN:
                    continue
                raise WriteError(failed(_reason(e)), _reason(e)) from None
        with _os_errors(failed):
            old = _scratch(real, ".old", directory=True)
        try:
            os.rename(real, old)  # onto our own new empty directory: never someone else's
        except OSError as e:
            with contextlib.suppress(OSError):
                old.rmdir()
            if e.errno == errno.ENOENT:  # another hapi process moved it meanwhile
                continue
            raise WriteError(failed(_reason(e)), _reason(e)) from None
        try:  # what was moved aside must be what was checked
            _judge(sorted(os.listdir(old)), kind, overwrite, shown, label)
            os.rename(tmp, real)
        except OSError as e:
            if e.errno in _TAKEN:  # another hapi process put its output there meanwhile
                shutil.rmtree(old, ignore_errors=True)  # the previous output: replaced anyway
                continue
            _put_back(old, real, shown, label)
            raise WriteError(failed(_reason(e)), _reason(e)) from None
        except BaseException:
            _put_back(old, real, shown, label)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    raise ArtefactError(
        f"{label} {shown}: other hapi processes kept replacing it while this one tried; "
        "nothing was written: run again when they are done"
    )


def _kind_at(real: Path) -> str | None:
    try:
        return _output_kind(os.listdir(real)) if real.is_dir() and not real.is_symlink() else None
    except OSError:
        return None


def _put_back(old: Path, real: Path, shown: Path, label: str) -> None:
    """Move a previous output back after a failed swap (it stays in ``old`` if it cannot)."""
    try:
        os.rename(old, real)
    except OSError:
        raise ArtefactError(
            f"{label} {shown}: the swap failed and the previous output could not be put back; "
            f"it is in {old}: move it back by hand"
        ) from None
