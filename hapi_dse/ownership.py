"""What hapi can prove it wrote: the manifest of an output folder, and its own single files.

Every folder hapi writes as a whole (a training run, a search result, a staged export, a
segment export) holds ``.hapi_files.json``: the folder's kind and every file hapi put there,
with its size and sha256. ``--overwrite`` replaces a folder only when :func:`examine` finds
every file in it listed there and unchanged; the first file that is not is named in the
refusal. A single
output file (an eval report, a single-graph export, a plot) is recognised as hapi's own by
what hapi writes into it (:func:`own_file`): provenance in JSON, ``hapi.`` metadata in ONNX,
a ``.plot.json`` beside an image that records the image's hash.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from hapi_dse.errors import HapiError
from hapi_dse.provenance import sha256_file
from hapi_dse.readers import loads_json, read_json, read_onnx

#: the manifest in every output folder
MANIFEST = ".hapi_files.json"
SCHEMA_VERSION = 1
#: files a folder of this kind may gain after hapi wrote it, that hapi itself regenerates:
#: Python's bytecode of a staged export's runtime, made wherever it is imported
DERIVED: dict[str, tuple[str, ...]] = {
    "staged-export": ("__pycache__/staged_runtime.*.pyc",),
}
#: a manifest is a small file: anything larger is not one hapi wrote
_MAX_MANIFEST_BYTES = 4 << 20


class _Folder:
    """A folder read through one open descriptor: what it reads stays one folder's even when
    a concurrent hapi swaps another folder in at the same path meanwhile."""

    _FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.fds: dict[str, int] = {}

    def __enter__(self) -> _Folder:
        self.fds[""] = os.open(self.folder, self._FLAGS)
        return self

    def __exit__(self, *exc: object) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def entries(self) -> list[tuple[str, int]]:
        """Every entry under the folder but the manifest, as (relative POSIX name, lstat
        mode), sorted; directories are walked (not listed themselves), links are not
        followed."""
        found: list[tuple[str, int]] = []
        stack = [""]
        while stack:
            d = stack.pop()
            for name in os.listdir(self.fds[d]):
                rel = f"{d}/{name}" if d else name
                mode = os.stat(name, dir_fd=self.fds[d], follow_symlinks=False).st_mode
                if stat.S_ISDIR(mode):
                    self.fds[rel] = os.open(name, self._FLAGS, dir_fd=self.fds[d])
                    stack.append(rel)
                elif rel != MANIFEST:
                    found.append((rel, mode))
        return sorted(found)

    def _open(self, rel: str) -> int:
        d, _, name = rel.rpartition("/")
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
        return os.open(name, flags, dir_fd=self.fds[d])

    def size(self, rel: str) -> int:
        d, _, name = rel.rpartition("/")
        return os.stat(name, dir_fd=self.fds[d], follow_symlinks=False).st_size

    def size_and_hash(self, rel: str) -> tuple[int, str]:
        """The size and sha256 of the file ``rel``, of the same bytes read once."""
        with os.fdopen(self._open(rel), "rb") as f:
            digest = sha256_file(f)
            return f.tell(), digest

    def read_small(self, rel: str, limit: int) -> bytes | None:
        try:
            fd = self._open(rel)
        except OSError:
            return None
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                return None
            data = f.read(limit + 1)
        return None if len(data) > limit else data


def describe(folder: str | Path, kind: str) -> dict[str, Any]:
    """The manifest of ``folder`` as it is now: its ``kind`` and every regular file in it
    with its size and sha256 (a link or special file in it is a bug of the writer)."""
    folder = Path(folder)
    files: dict[str, dict[str, Any]] = {}
    with _Folder(folder) as f:
        for rel, mode in f.entries():
            if not stat.S_ISREG(mode):
                raise ValueError(
                    f"{folder / rel}: hapi writes only regular files into an output folder"
                )
            size, digest = f.size_and_hash(rel)
            files[rel] = {"size": size, "sha256": digest}
    return {"schema_version": SCHEMA_VERSION, "kind": kind, "files": files}


def record(folder: str | Path, kind: str) -> None:
    """Write the manifest of ``folder`` (a folder hapi has just written, not yet swapped in)."""
    from hapi_dse.atomic import write_json

    write_json(Path(folder) / MANIFEST, describe(folder, kind))


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of ``folder`` when it has a well-formed one, else None."""
    try:
        with _Folder(Path(folder)) as f:
            return _parse_manifest(f.read_small(MANIFEST, _MAX_MANIFEST_BYTES))
    except OSError:
        return None


def _parse_manifest(data: bytes | None) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        doc = loads_json(data, MANIFEST, finite=True)
    except HapiError:  # not a manifest hapi wrote
        return None
    ok = (
        isinstance(doc, dict)
        and isinstance(doc.get("kind"), str)
        and isinstance(doc.get("files"), dict)
        and all(
            isinstance(v, dict)
            and isinstance(v.get("size"), int)
            and isinstance(v.get("sha256"), str)
            for v in doc["files"].values()
        )
    )
    return doc if ok else None


@dataclass(frozen=True)
class Examined:
    """What :func:`examine` found in a folder: the kind its manifest records (None without a
    well-formed manifest) and the first entry that is not proven hapi's, in words (None when
    every entry is)."""

    kind: str | None
    foreign: str | None


def examine(folder: str | Path, *, hashes: bool = True) -> Examined:
    """Whether every entry of ``folder`` is one hapi wrote there and left unchanged (read
    through one descriptor: a folder swapped in meanwhile is not mixed with this one).
    Without ``hashes``, a file counts as unchanged by its size alone (a quick look, for a
    check that a full one follows).

    A folder that a concurrent hapi moved away or deleted while it was read raises
    ``FileNotFoundError``: what was read is no longer what is there.
    """
    folder = Path(folder)
    with _Folder(folder) as f:
        found = _examine(f, hashes)
        if found.foreign is not None:
            st = os.fstat(f.fds[""])
            try:
                now = os.lstat(folder)
            except FileNotFoundError:
                now = None
            if now is None or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise FileNotFoundError(2, "replaced while it was read", str(folder))
        return found


def _examine(f: _Folder, hashes: bool = True) -> Examined:
    entries = f.entries()
    raw = f.read_small(MANIFEST, _MAX_MANIFEST_BYTES)
    doc = _parse_manifest(raw)
    if doc is None:
        if not entries and raw is None:
            try:
                os.stat(MANIFEST, dir_fd=f.fds[""], follow_symlinks=False)
            except FileNotFoundError:
                return Examined(None, None)  # empty
        first = entries[0][0] if entries else MANIFEST
        why = "not a manifest hapi wrote" if first == MANIFEST else f"no {MANIFEST} lists it"
        return Examined(None, f"{first} ({why})")
    kind: str = doc["kind"]
    listed: dict[str, dict[str, Any]] = doc["files"]
    derived = DERIVED.get(kind, ())
    for rel, mode in entries:
        entry = listed.get(rel)
        if entry is None:
            if stat.S_ISREG(mode) and any(fnmatch.fnmatchcase(rel, p) for p in derived):
                continue
            return Examined(kind, f"{rel} (hapi did not write it)")
        if not stat.S_ISREG(mode):
            return Examined(kind, f"{rel} (not a regular file)")
        if (
            f.size_and_hash(rel) != (entry["size"], entry["sha256"])
            if hashes
            else f.size(rel) != entry["size"]
        ):
            return Examined(kind, f"{rel} (changed since hapi wrote it)")
    return Examined(kind, None)


def owned_kind(folder: str | Path) -> str | None:
    """The kind of hapi output ``folder`` provably is (every file listed and unchanged)."""
    try:
        found = examine(folder)
    except OSError:
        return None
    return found.kind if found.foreign is None else None


def adopt(path: str | Path) -> None:
    """Record ``path``, a file hapi has just written into a folder of its own output (an
    eval report in a staged export), in that folder's manifest; nothing when the folder has
    none. Other files there that hapi did not write stay unproven."""
    path = Path(path)
    folder = path.parent
    doc = read_manifest(folder)
    if doc is None:
        return
    from hapi_dse.atomic import write_json

    doc["files"][path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    write_json(folder / MANIFEST, doc)


def part_of_output(path: str | Path) -> tuple[Path, str] | None:
    """The hapi output folder ``path`` is listed in (its parent's manifest) and the kind
    that manifest records, if any."""
    path = Path(os.path.abspath(path))
    for folder in path.parents:
        doc = read_manifest(folder)
        if doc is not None:
            rel = PurePosixPath(*path.relative_to(folder).parts).as_posix()
            return (folder, doc["kind"]) if rel in doc["files"] else None
    return None


# -- single files -------------------------------------------------------------------------------
def _own_doc(path: Path) -> dict[str, Any] | None:
    """The JSON document at ``path`` when it carries hapi's provenance, else None."""
    try:
        doc = read_json(path)
    except HapiError:
        return None
    prov = doc.get("provenance") if isinstance(doc, dict) else None
    return doc if isinstance(prov, dict) and "hapi_version" in prov else None


def _own_json(path: Path) -> bool:
    return _own_doc(path) is not None


def _own_onnx(path: Path) -> bool:
    try:
        model = read_onnx(path, load_external_data=False)
    except HapiError:  # not an ONNX file at all
        return False
    return any(p.key.startswith("hapi.") for p in model.metadata_props)


def _own_image(path: Path) -> bool:
    doc = _own_doc(path.with_suffix(".plot.json"))
    if doc is None:
        return False
    recorded = doc.get("image_sha256")
    try:
        return isinstance(recorded, str) and recorded == sha256_file(path)
    except OSError:
        return False


def own_file(path: str | Path) -> bool:
    """Whether the regular file ``path`` is one hapi wrote, by what hapi writes into it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _own_json(path)
    if suffix == ".onnx":
        return _own_onnx(path)
    if suffix in (".png", ".svg", ".pdf"):
        return _own_image(path)
    return False
