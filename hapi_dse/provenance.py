"""Provenance and safe file writing shared by every stage.

Every file a stage writes is written atomically (temp file in the same directory, then
``os.replace``) and described by a sidecar with the schema version, hapi version, command
line, seed, library versions and the sha256 of every input.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, overload

from hapi_dse import __version__

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


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; move it into place only if the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_umask())
    try:
        yield tmp_path
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def check_out_dir(dest: str | Path, kind: str | None, overwrite: bool = False) -> None:
    """Refuse an output directory ``dest`` that hapi may not replace (a :class:`UsageError`).

    Fine: no ``dest``, or an empty directory. hapi's own output of the same ``kind``: fine
    with ``overwrite``, else refused. Anything else (a file, a symbolic link, a directory with
    other entries, hapi's output of another kind) is always refused. ``kind=None`` (no known
    layout) allows a non-empty directory only with ``overwrite``. Called before long work
    starts and again by :func:`atomic_dir` just before the swap.
    """
    from hapi_dse.errors import UsageError

    dest = Path(dest)
    if dest.is_symlink():
        raise UsageError(f"--out {dest}: is a symbolic link; {_NEVER}: choose another --out")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UsageError(
            f"--out {dest}: is a file, not a directory; {_NEVER}: choose another --out"
        )
    try:
        names = sorted(p.name for p in dest.iterdir())
    except OSError as e:
        raise UsageError(f"--out {dest}: cannot list it ({e.strerror or e})") from None
    if not names:
        return
    if kind is None:
        if overwrite:
            return
        raise UsageError(f"--out {dest}: is not empty; pass --overwrite to replace it")
    what = OUTPUT_KINDS[kind]["what"]
    found = _output_kind(names)
    if found == kind:
        if overwrite:
            return
        raise UsageError(f"--out {dest} holds a previous {what}; pass --overwrite to replace it")
    if found is not None:
        raise UsageError(
            f"--out {dest} holds a {OUTPUT_KINDS[found]['what']}, not a {what}; {_NEVER}: "
            "choose another --out"
        )
    foreign = _foreign_entries(names, kind) or names
    shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    raise UsageError(
        f"--out {dest} holds entries that are not a {what} of hapi ({shown}); {_NEVER}: "
        "choose another --out, or move them away"
    )


@contextlib.contextmanager
def atomic_dir(
    dest: str | Path, *, kind: str | None = None, overwrite: bool = False
) -> Iterator[Path]:
    """Build a directory in a temp sibling and swap it in only when the block succeeds.

    An interrupted run (Ctrl-C, crash) leaves ``dest`` as it was: no half-written run dir.
    An existing ``dest`` is replaced only where :func:`check_out_dir` allows it (hapi's own
    output of this ``kind``, with ``overwrite``); it is checked before the temp directory is
    made (nothing is written when refused) and again just before the swap.
    """
    dest = Path(dest)
    check_out_dir(dest, kind, overwrite)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        check_out_dir(dest, kind, overwrite)  # the user may have added a file meanwhile
        if dest.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
            try:
                os.replace(dest, old)  # onto the new empty directory: never someone else's
            except BaseException:
                old.rmdir()
                raise
            try:
                os.replace(tmp, dest)
            except BaseException:
                os.replace(old, dest)  # put the previous output back
                raise
            shutil.rmtree(old)
        else:
            os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
