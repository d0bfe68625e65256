"""Provenance: what every output records about how it was made.

Every file a stage writes is described by a sidecar (or a ``provenance`` block) with the
schema version, hapi version, command line (passwords redacted), seed, library versions and
the sha256 of every input. Writing itself is :mod:`hapi_dse.atomic` (files) and
:mod:`hapi_dse.outdirs` (output directories).
"""

from __future__ import annotations

import contextlib
import hashlib
import platform
import re
import sys
from collections.abc import Mapping
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
