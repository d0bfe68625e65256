"""Provenance: what every output records about how it was made.

Every file a stage writes is described by a sidecar (or a ``provenance`` block) with the
schema version, hapi version, command line (passwords redacted), seed, library versions and
the sha256 of every input. Writing itself is :mod:`hapi_dse.atomic` (files) and
:mod:`hapi_dse.outdirs` (output directories).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import re
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, overload

from hapi_dse import __version__

SCHEMA_VERSION = 1

# ``scheme://user:password@host``: everything from the ``:`` after the user to the last
# ``@`` of the same quoted or unquoted URL is the password (it may hold ``/``, ``:``, an
# unescaped ``@`` and, inside quotes, raw spaces).
_URL_PASSWORD = (
    re.compile(r"(://[^\s:/@'\"]*):[^'\"]*@(?=[^'\"]*['\"])"),  # quoted: up to the quote
    re.compile(r"(://[^\s:/@'\"]*):[^\s'\"]*@"),  # unquoted: up to the last '@' of the word
)
# A query parameter whose name says it holds a secret (libpq's password, sslpassword,
# SQLAlchemy's, an API token or key): its value.
_SECRET_NAME = r"[^=&;\s#'\"]*(?:pass|pwd|secret|token|key)[^=&;\s#'\"]*"
_QUERY_SECRET = re.compile(rf"([?&;]{_SECRET_NAME}=)[^&;\s#'\"]*", re.IGNORECASE)
#: the shortest piece of a secret scrubbed on its own out of a library's message
MIN_PIECE = 3


@overload
def redact(text: str, secrets_of: str | None = None) -> str: ...
@overload
def redact(text: None, secrets_of: str | None = None) -> None: ...
def redact(text: str | None, secrets_of: str | None = None) -> str | None:
    """``text`` with every secret a URL carries replaced by ``***``.

    The one place secrets are removed: the recorded command line, recorded settings and every
    message that shows a storage URL go through it. ``postgresql://u:pw@h/db`` becomes
    ``postgresql://u:***@h/db``; ``?password=pw``, ``?sslpassword=pw``, ``&api_token=pw``
    become ``...=***``. ``secrets_of``: a URL whose secrets (:func:`url_secrets`) are also
    scrubbed wherever they appear in ``text``, for a library's message that quotes pieces of
    it out of context (a port error showing what follows a password's ``@``).
    """
    if text is None:
        return None
    for secret in url_secrets(secrets_of) if secrets_of else ():
        text = text.replace(secret, "***")
    for pattern in _URL_PASSWORD:
        text = pattern.sub(r"\1:***@", text)
    return _QUERY_SECRET.sub(r"\1***", text)


def url_secrets(url: str) -> list[str]:
    """The secrets ``url`` carries: its password, the values of its secret query parameters,
    and the pieces of each (split at ``@``, ``:`` and ``/``, at least :data:`MIN_PIECE`
    characters long), longest first."""
    found: list[str] = []
    m = re.search(r"[a-zA-Z][\w+.-]*://([^/?#]*)@", url)
    if m and ":" in m.group(1):
        found.append(m.group(1).split(":", 1)[1])
    found += [m.group(0).split("=", 1)[1] for m in _QUERY_SECRET.finditer(url) if "=" in m.group(0)]
    pieces = {p for s in found for p in re.split(r"[@:/]", s) if len(p) >= MIN_PIECE}
    return sorted({s for s in found if s} | pieces, key=len, reverse=True)


def command_line(argv: list[str] | None = None) -> str:
    """The command line (``sys.argv`` by default) as recorded: program name, then every
    argument with its passwords redacted (``--storage URL`` and ``--storage=URL`` alike)."""
    argv = sys.argv if argv is None else argv
    if not argv:
        return ""
    return " ".join([Path(argv[0]).name, *(redact(a, secrets_of=a) for a in argv[1:])])


def sha256_file(path: str | Path | IO[bytes], chunk: int = 1 << 20) -> str:
    """The sha256 of the file ``path``, or of what is left to read of an open binary file."""
    if not isinstance(path, (str, os.PathLike)):
        h = hashlib.sha256()
        while block := path.read(chunk):
            h.update(block)
        return h.hexdigest()
    with open(path, "rb") as f:
        return sha256_file(f, chunk)


def library_versions(*names: str) -> dict[str, str]:
    """Versions of the given distributions (only those installed), plus Python's."""
    from importlib import metadata

    out = {"python": platform.python_version(), "hapi": __version__}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


def utc_now() -> str:
    """Now, in UTC; ``$SOURCE_DATE_EPOCH`` (the reproducible-builds convention) when set, so
    that a generated file is the same bytes each time (``make docs``)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (
        datetime.fromtimestamp(int(epoch), timezone.utc)
        if epoch.isdigit() and len(epoch) <= 12
        else datetime.now(timezone.utc)
    )
    return when.isoformat(timespec="seconds")


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
