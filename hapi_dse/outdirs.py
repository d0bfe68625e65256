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
from collections.abc import Callable, Iterable, Iterator
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
    _scratch_prefix,
    _take_over,
    _umask,
)
from hapi_dse.errors import ArtefactError, HapiError, UsageError
from hapi_dse.ownership import (
    MANIFEST,
    examine,
    own_file,
    owned_kind,
    part_of_output,
    record,
)

# -- output directories -----------------------------------------------------------------------
# The kinds of folder hapi writes as a whole, each named in words ("what"; a run also lists
# the files 'hapi train' writes, as run.RUN_FILES). A folder is hapi's own output of a kind
# when its manifest (hapi_dse.ownership) records that kind and lists every file in it,
# unchanged: only such a folder is ever replaced, and only with ``--overwrite``.
OUTPUT_KINDS: dict[str, dict[str, Any]] = {
    "run": {
        "what": "training run",
        "names": (
            "model.json",
            "weights.pt",
            "exits_val.npz",
            "exits_test.npz",
            "train.json",
            "flops.csv",
        ),
    },
    "search": {"what": "search result"},
    "staged-export": {
        "what": "staged export",
        # single files other commands write into it, recorded in its manifest when they do
        # ('hapi eval DIR' writes its report here by default)
        "adopts": ("eval.json",),
    },
    "segments": {"what": "segment export"},
}

_NEVER = "hapi never deletes what it did not write"


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
    real = _real(Path(dest))
    anc = real.parent
    while not anc.is_dir():
        if os.path.lexists(anc):
            raise UsageError(f"{label} {shown}: {anc} is not a directory; choose another {label}")
        anc = anc.parent
    try:
        name_max = os.pathconf(anc, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    for part in real.relative_to(anc).parts:  # what will be created: the names the work needs
        if len(os.fsencode(part)) > name_max:
            raise UsageError(
                f"{label} {shown}: the name {part[:40]}... is longer than the file system "
                f"allows ({name_max} bytes); choose a shorter {label}"
            )
    try:
        # a scratch file named as the real one will be (the same length), where it will be
        fd, probe = tempfile.mkstemp(suffix=".tmp", prefix=_scratch_prefix(real), dir=anc)
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


# -- single-file outputs ----------------------------------------------------------------------
_NOT_REGULAR = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFLNK: "a symbolic link",
}


def _input_files(inputs: Iterable[str | Path | None]) -> list[Path]:
    """The files of ``inputs``: files as they are, directories walked (a run, a result)."""
    found: list[Path] = []
    for i in inputs:
        if i is None:
            continue
        p = Path(i)
        if p.is_dir():
            found += [q for q in p.rglob("*") if q.is_file()]
        elif p.exists():
            found.append(p)
    return found


def check_out_file(
    dest: str | Path,
    *,
    inputs: Iterable[str | Path | None] = (),
    overwrite: bool = False,
    label: str = "--out",
) -> None:
    """Refuse a single output file ``dest`` that hapi must not replace or cannot write.

    Always refused: one of the command's own ``inputs`` (files, or directories whose files
    count), anything but a regular file (a directory, FIFO, device, socket, link), a file of
    one of hapi's output folders (a run, a result, a staged export: replaced only as a whole),
    and ``.`` or a directory above the current one. An existing regular file that hapi did
    not write (:func:`~hapi_dse.ownership.own_file`) is replaced only with ``overwrite``.
    Then :func:`check_writable`. Called before the work starts.
    """
    shown = Path(dest)
    real = _real(shown)
    _refuse_cwd(shown, real, label)
    try:
        mode = os.lstat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG:  # that one check_writable names below
            raise UsageError(f"{label} {shown}: cannot read it ({_reason(e)})") from None
        mode = None
    if mode is not None:
        if not stat.S_ISREG(mode):
            what = _NOT_REGULAR.get(stat.S_IFMT(mode), "not a regular file")
            raise UsageError(
                f"{label} {shown}: is {what}; hapi writes its output only as a new or its own "
                f"regular file: choose another {label}"
            )
        for i in _input_files(inputs):
            with contextlib.suppress(OSError):
                if os.path.samefile(real, i):
                    raise UsageError(
                        f"{label} {shown}: is an input of this command ({i}); choose another "
                        f"{label}"
                    )
        part = part_of_output(real)
        if part is not None:
            folder, kind = part
            spec = OUTPUT_KINDS.get(kind, {})
            if real.name not in spec.get("adopts", ()):
                what = spec.get("what", "hapi output")
                raise UsageError(
                    f"{label} {shown}: is a file of the {what} in {folder}, which hapi "
                    f"replaces only as a whole; {_NEVER}: choose another {label}"
                )
        if not overwrite and not own_file(real):
            raise UsageError(
                f"{label} {shown}: exists and hapi did not write it; pass --overwrite to replace it"
            )
    check_writable(shown, label)


def _judge(
    real: Path,
    kind: str | None,
    overwrite: bool,
    shown: Path,
    label: str,
    flag: str,
    hashes: bool = True,
) -> None:
    """Refuse the existing directory ``real`` where hapi may not replace it (``hashes``: see
    :func:`~hapi_dse.ownership.examine`)."""
    try:
        found = examine(real, hashes=hashes)
    except (FileNotFoundError, NotADirectoryError):  # swapped away meanwhile: nothing there
        return
    except OSError as e:
        raise UsageError(f"{label} {shown}: cannot read it ({_reason(e)})") from None
    if found.kind is None and found.foreign is None:  # empty
        return
    if kind is None:
        if overwrite:
            return
        raise UsageError(f"{label} {shown}: is not empty; pass {flag} to replace it")
    what = OUTPUT_KINDS[kind]["what"]
    if found.foreign is None and found.kind == kind:
        if overwrite:
            return
        raise UsageError(f"{label} {shown} holds a previous {what}; pass {flag} to replace it")
    if found.foreign is None and found.kind in OUTPUT_KINDS:
        raise UsageError(
            f"{label} {shown} holds a {OUTPUT_KINDS[found.kind]['what']}, not a {what}; "
            f"{_NEVER}: choose another {label}"
        )
    raise UsageError(
        f"{label} {shown} holds {found.foreign}: it is not a {what} hapi can prove it wrote "
        f"(every file listed unchanged in {MANIFEST}); {_NEVER}: choose another {label}, "
        "or move it away"
    )


def _is_dir(real: Path, shown: Path, label: str) -> bool:
    """Whether ``real`` is a directory (False: nothing there); anything else is refused.

    One ``lstat``, so that a directory a concurrent hapi swaps away meanwhile is seen as
    missing, never as a file.
    """
    try:
        mode = os.lstat(real).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        raise UsageError(f"{label} {shown}: cannot read it ({_reason(e)})") from None
    if stat.S_ISLNK(mode):
        raise UsageError(f"{label} {shown}: is a symbolic link; {_NEVER}: choose another {label}")
    if not stat.S_ISDIR(mode):
        raise UsageError(
            f"{label} {shown}: is a file, not a directory; {_NEVER}: choose another {label}"
        )
    return True


def check_out_dir(
    dest: str | Path,
    kind: str | None,
    overwrite: bool = False,
    *,
    label: str = "--out",
    overwrite_flag: str = "--overwrite",
    probe: bool = True,
    hashes: bool = True,
) -> None:
    """Refuse an output directory ``dest`` that hapi may not replace or cannot write.

    Fine: no ``dest``, or an empty directory. hapi's own output of the same ``kind``: fine
    with ``overwrite``, else refused. Anything else (a file, a symbolic link, a directory with
    other entries, hapi's output of another kind) is always refused (a :class:`UsageError`),
    and so is the current directory or one above it (the directory is swapped as a whole).
    With ``probe`` (before long work starts), it also takes over what a killed hapi left
    beside ``dest`` (:func:`_take_over`) and refuses a place it cannot write
    (:func:`check_writable`). Called before long work starts and again by :func:`atomic_dir`
    just before the swap (without ``probe``). ``label`` names ``dest`` in messages and
    ``overwrite_flag`` the setting that allows the replacement (``--force`` for a profile).
    Without ``hashes``, hapi's files there are compared by size only: for the checks of
    :func:`atomic_dir`, which hashes them once, after moving them aside, before replacing
    them (its callers have checked ``dest`` in full before their work).
    """
    shown = Path(dest)
    real = _real(shown)
    _refuse_cwd(shown, real, label)
    if probe:
        _take_over(real, lambda old: kind is None or owned_kind(old) == kind)
    if _is_dir(real, shown, label):
        _judge(real, kind, overwrite, shown, label, overwrite_flag, hashes)
    if probe:
        check_writable(shown, label)


@contextlib.contextmanager
def atomic_dir(
    dest: str | Path,
    *,
    kind: str | None = None,
    overwrite: bool = False,
    label: str = "--out",
    overwrite_flag: str = "--overwrite",
) -> Iterator[Path]:
    """Build a directory in a temp sibling and swap it in only when the block succeeds.

    An interrupted run (Ctrl-C, crash) leaves ``dest`` as it was: no half-written run dir (a
    run killed in the middle of the swap is taken over by the next one). An existing ``dest``
    is replaced only where :func:`check_out_dir` allows it (hapi's own output of this
    ``kind``, with ``overwrite``); it is checked before the temp directory is made (nothing is
    written when refused) and again just before the swap, by the names and sizes of hapi's
    files there; their hashes are checked once, after the previous output is moved aside and
    before the new one replaces it (it is put back when refused). A full or read-only file system is
    one :class:`WriteError` naming ``dest``. Concurrent writers of one ``dest`` each swap in a
    whole directory: with ``overwrite`` the last one wins, without it the later ones are
    refused with one line.
    """
    shown = Path(dest)
    check_out_dir(shown, kind, overwrite, label=label, overwrite_flag=overwrite_flag, hashes=False)
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
        if kind is not None:
            with _os_errors(failed):
                record(tmp, kind)
        _swap(tmp, real, shown, kind, overwrite, existed, (label, overwrite_flag), failed)
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
    names: tuple[str, str],
    failed: Callable[[str], str],
) -> None:
    """Put the finished ``tmp`` at ``real``, moving a previous output aside first (``names``:
    the ``label`` and ``overwrite_flag`` of :func:`check_out_dir`).

    Each rename either takes effect whole or fails; one that fails because another hapi
    process changed ``real`` in between starts over from the check, so the result is always
    one writer's whole directory (the last one's, with ``overwrite``).
    """
    label, flag = names
    for _ in range(_SWAP_TRIES):
        try:
            check_out_dir(
                shown, kind, overwrite, label=label, overwrite_flag=flag, probe=False, hashes=False
            )
        except UsageError:
            if not existed and not overwrite and kind is not None and _kind_at(real) == kind:
                what = OUTPUT_KINDS[kind]["what"]
                raise UsageError(
                    f"{label} {shown}: another hapi process wrote a {what} there while this one "
                    f"ran; pass {flag} to replace it"
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
            _judge(old, kind, overwrite, shown, label, flag)
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
    return owned_kind(real) if real.is_dir() and not real.is_symlink() else None


def _put_back(old: Path, real: Path, shown: Path, label: str) -> None:
    """Move a previous output back after a failed swap (it stays in ``old`` if it cannot)."""
    try:
        os.rename(old, real)
    except OSError:
        raise ArtefactError(
            f"{label} {shown}: the swap failed and the previous output could not be put back; "
            f"it is in {old}: move it back by hand"
        ) from None
