"""Output directories: refused before long work when they cannot or must not be written,
and replaced as a whole (:func:`atomic_dir`) only when they hold hapi's own output of the
same kind (README "What hapi never does").
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hapi_dse.atomic import (
    _TAKEN,
    WriteError,
    _disk_fault,
    _fix,
    _missing_dirs,
    _os_errors,
    _reason,
    _remove_dirs,
    _scratch,
    _take_over,
    _umask,
)
from hapi_dse.errors import ArtefactError, HapiError, UsageError

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


def check_not_cwd(dest: str | Path, label: str = "--out") -> None:
    """Refuse ``dest`` when it is the current directory or one above it (``.``, ``..``,
    ``/``): for a command that writes folders inside ``dest`` (a search writes
    ``OUT/DEVICE/``), whose own checks see only those folders."""
    _refuse_cwd(Path(dest), _real(Path(dest)), label)


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
        _take_over(real, lambda names: kind is None or _output_kind(names) == kind)
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
