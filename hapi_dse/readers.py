"""One guarded reader per file kind: JSON, TOML, YAML, CSV, ``.npz``, ONNX, torch weights.

Every file hapi reads comes through here, so a hostile or broken file fails the same way
whatever command reads it: one :class:`~hapi_dse.errors.HapiError` line naming the file
(exit status 2), never a traceback. The parsers' own failures are caught (syntax, bad
UTF-8, a nesting deep enough to exhaust Python's recursion limit, an integer over Python's
4300-digit conversion limit) and what they parse is checked before any caller walks it:

- nesting at most :data:`MAX_DEPTH` levels, counted without recursion, so recursive code
  after the reader (validators, ``json.dumps``) cannot exhaust the stack;
- at most :data:`MAX_NODES` values (a YAML document of aliases to aliases expands
  exponentially);
- integers that fit in 64 bits (:data:`MAX_INT`): larger ones overflow numpy and ``float``;
- with ``finite=True``, no NaN or infinity (``NaN``, ``Infinity``, ``1e999``). By default
  non-finite numbers are left to the schema checks that follow, which name the field;
- text files at most :data:`MAX_TEXT_BYTES`.

``.npz`` members are checked from their ``.npy`` headers before anything is allocated: no
object dtype, a byte count that matches the member's size in the archive (a header claiming
shape ``(10**11, 8, 8)`` in a small file is corrupt) and that fits in available memory.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import sys
import warnings
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hapi_dse.errors import ArtefactError, HapiError, first_line

#: deepest nesting of lists and objects a JSON/TOML/YAML file may have (hapi writes at most 5)
MAX_DEPTH = 64
#: most values (containers and scalars) one JSON/TOML/YAML file may hold
MAX_NODES = 1_000_000
#: largest integer magnitude read from a JSON/TOML/YAML file: a 64-bit signed integer
MAX_INT = 2**63 - 1
#: largest JSON/TOML/YAML/CSV file read into memory (hapi's own are far smaller)
MAX_TEXT_BYTES = 256 * 2**20

ErrorType = type[HapiError]


def _size_text(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} bytes"  # pragma: no cover


def read_text(path: str | Path, *, error: ErrorType = ArtefactError) -> str:
    """The UTF-8 text of ``path``; a missing, unreadable, oversized or non-UTF-8 file is one
    ``error`` line naming it."""
    p = Path(path)
    raw = _read_start(
        p, MAX_TEXT_BYTES + 1, error=error, expected="a text file", max_size=MAX_TEXT_BYTES
    )
    return decode_text(raw, p, error=error)


def _read_start(
    p: Path, n: int, *, error: ErrorType, expected: str, max_size: int | None = None
) -> bytes:
    """The first ``n`` bytes of ``p``; a missing or unreadable file, a directory, or a file
    larger than ``max_size`` (when given) is one ``error`` line naming it (``expected``: what
    it should be, "a text file")."""
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if max_size is not None and size > max_size:
                raise error(
                    f"{p}: {_size_text(size)}, larger than the {_size_text(max_size)} "
                    f"hapi reads from {expected}; not a file hapi wrote"
                )
            return f.read(n)
    except FileNotFoundError:
        raise error(f"{p}: cannot read it (no such file)") from None
    except IsADirectoryError:
        raise error(f"{p}: cannot read it (a directory, expected {expected})") from None
    except OSError as e:
        raise error(f"{p}: cannot read it ({e.strerror or first_line(e)})") from None


def decode_text(raw: bytes, where: str | Path, *, error: ErrorType = ArtefactError) -> str:
    """``raw`` as UTF-8; invalid bytes are one ``error`` line naming ``where``."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(
            f"{where}: not valid UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start})"
        ) from None


def check_tree(
    obj: Any,
    where: str | Path,
    *,
    kind: str = "JSON",
    finite: bool = False,
    error: ErrorType = ArtefactError,
) -> Any:
    """``obj`` (a parsed document) after checking, without recursion, its depth
    (:data:`MAX_DEPTH`), size (:data:`MAX_NODES`), integers (:data:`MAX_INT`) and, with
    ``finite``, that every float is finite. Returns ``obj``."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(obj, 1, ())]
    nodes = 0
    while stack:
        value, depth, at = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise error(f"{where}: more than {MAX_NODES} values; not a {kind} file hapi wrote")
        if isinstance(value, dict | list | tuple | set | frozenset):
            if depth > MAX_DEPTH:
                raise error(
                    f"{where}: {kind} nested deeper than {MAX_DEPTH} levels; not a file hapi wrote"
                )
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for k, v in items:
                if isinstance(v, dict | list | tuple | set | frozenset | int | float):
                    stack.append((v, depth + 1, (*at, k)))
            if isinstance(value, dict):
                for k in value:
                    if isinstance(k, int | float | tuple):  # YAML keys may be numbers
                        stack.append((k, depth + 1, at))
        elif isinstance(value, bool):
            continue
        elif isinstance(value, int):
            if abs(value) > MAX_INT:
                try:
                    digits = str(len(str(abs(value))))
                except ValueError:  # over the conversion limit (the parser's own is 4300)
                    digits = "over 4300"
                raise error(
                    f"{where}: {_key_path(at)}an integer of {digits} digits, more than "
                    "a 64-bit integer holds; not a file hapi wrote"
                )
        elif isinstance(value, float) and finite and not math.isfinite(value):
            raise error(f"{where}: {_key_path(at)}{value}, expected a finite number")
    return obj


def _key_path(at: tuple[Any, ...]) -> str:
    if not at:
        return ""
    text = "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in at)
    text = text.lstrip(".")
    return (text if len(text) <= 80 else "..." + text[-77:]) + ": "


# -- JSON --------------------------------------------------------------------------------------


def loads_json(
    text: str | bytes,
    where: str | Path,
    *,
    finite: bool = False,
    error: ErrorType = ArtefactError,
) -> Any:
    """Parse JSON ``text`` read from ``where``; any failure is one ``error`` line
    ``WHERE: not valid JSON (...)`` (or names the limit it breaks, see :func:`check_tree`)."""
    import json

    if isinstance(text, bytes):
        text = decode_text(text, where, error=error)
    data = _parse("JSON", json.loads, text, where, error, (json.JSONDecodeError, str), ValueError)
    return check_tree(data, where, kind="JSON", finite=finite, error=error)


def _parse(
    kind: str,
    parse: Callable[[str], Any],
    text: str,
    where: str | Path,
    error: ErrorType,
    syntax: tuple[type[Exception], Callable[[Exception], str]],
    other: type[Exception],
) -> Any:
    """``parse(text)``; every failure is one ``error`` line ``WHERE: not valid KIND (...)``:
    the parser's ``syntax`` errors in its own words (the callable writes them on one line),
    nesting beyond the interpreter's recursion limit, and ``other`` errors (an integer over
    Python's 4300-digit conversion limit)."""
    errors, words = syntax
    try:
        return parse(text)
    except RecursionError:
        raise error(
            f"{where}: not valid {kind} (nested too deeply to parse; hapi reads at most "
            f"{MAX_DEPTH} levels)"
        ) from None
    except errors as e:
        raise error(f"{where}: not valid {kind} ({words(e)})") from None
    except other as e:
        raise error(f"{where}: not valid {kind} ({_int_limit_text(e)})") from None


def read_json(path: str | Path, *, finite: bool = False, error: ErrorType = ArtefactError) -> Any:
    """The parsed JSON file ``path``, guarded as :func:`loads_json`."""
    return loads_json(read_text(path, error=error), path, finite=finite, error=error)


def _int_limit_text(e: BaseException) -> str:
    text = first_line(e)
    if "4300" in text or "int_max_str_digits" in text or "integer string" in text:
        return "an integer of more than 4300 digits"
    return text


# -- TOML --------------------------------------------------------------------------------------


def loads_toml(
    text: str, where: str | Path, *, finite: bool = False, error: ErrorType = ArtefactError
) -> dict[str, Any]:
    """Parse TOML ``text`` read from ``where``: ``WHERE: not valid TOML (...)`` on failure."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    syntax = (tomllib.TOMLDecodeError, str)
    data = _parse("TOML", tomllib.loads, text, where, error, syntax, ValueError)
    return check_tree(data, where, kind="TOML", finite=finite, error=error)


def read_toml(
    path: str | Path, *, finite: bool = False, error: ErrorType = ArtefactError
) -> dict[str, Any]:
    """The parsed TOML file ``path``, guarded as :func:`loads_toml`."""
    return loads_toml(read_text(path, error=error), path, finite=finite, error=error)


# -- YAML --------------------------------------------------------------------------------------


def loads_yaml(
    text: str, where: str | Path, *, finite: bool = False, error: ErrorType = ArtefactError
) -> Any:
    """Parse YAML ``text`` (safe loader: plain data only) read from ``where``:
    ``WHERE: not valid YAML (...)`` on failure."""
    try:
        import yaml
    except ModuleNotFoundError:
        raise error(
            f"{where}: reading YAML needs PyYAML: pip install pyyaml, or write the file as TOML"
        ) from None
    # any other error: ValueError (huge integer), TypeError (unhashable key), ...
    syntax = (yaml.YAMLError, _yaml_error)
    data = _parse("YAML", yaml.safe_load, text, where, error, syntax, Exception)
    return check_tree(data, where, kind="YAML", finite=finite, error=error)


def _yaml_error(e: Exception) -> str:
    """A YAML parser error in one line: what is wrong and where (its own text spans lines)."""
    problem = getattr(e, "problem", None)
    mark = getattr(e, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(line.strip() for line in str(e).splitlines() if line.strip())


# -- CSV ---------------------------------------------------------------------------------------


class CsvRows(list):  # type: ignore[type-arg]
    """Rows of a CSV file as dicts, with the header in :attr:`fieldnames`."""

    fieldnames: list[str]


def parse_csv(text: str, where: str | Path, *, error: ErrorType = ArtefactError) -> CsvRows:
    """The rows of CSV ``text`` (header line first) as dicts; a malformed file (a field over
    the csv module's size limit, a NUL byte) is ``WHERE: not a readable CSV table (...)``."""
    import csv

    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        rows = CsvRows(reader)
        rows.fieldnames = list(reader.fieldnames or ())
    except csv.Error as e:
        raise error(f"{where}: not a readable CSV table ({first_line(e)})") from None
    return rows


def read_csv(path: str | Path, *, error: ErrorType = ArtefactError) -> CsvRows:
    """The rows of the CSV file ``path``, guarded as :func:`parse_csv`."""
    return parse_csv(read_text(path, error=error), path, error=error)


# -- NPZ ---------------------------------------------------------------------------------------

_NPY_MAGIC = b"\x93NUMPY"


def check_memory(
    need: int, what: str, *, as_: str = "", tail: str = "", error: ErrorType = ArtefactError
) -> None:
    """Refuse ``need`` bytes when they are more than half the memory available: one ``error``
    line ``WHAT SIZE AS_, more than half the FREE of memory availableTAIL``."""
    free = available_memory()
    if need > free // 2:
        raise error(
            f"{what} {_size_text(need)}{as_}, more than half the {_size_text(free)} of memory "
            f"available{tail}"
        )


def available_memory() -> int:
    """Bytes of memory available now (``MemAvailable``; physical memory where unknown)."""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 2**40  # unknown: no limit beyond the archive's own sizes


def _npy_header(f: Any) -> tuple[tuple[int, ...], bool, Any]:
    from numpy.lib import format as npy

    version = npy.read_magic(f)
    if version == (1, 0):
        return npy.read_array_header_1_0(f)
    if version == (2, 0):
        return npy.read_array_header_2_0(f)
    return npy._read_array_header(f, version)  # type: ignore[attr-defined]  # (3, 0): UTF-8


def read_npz(
    path: str | Path,
    *,
    keys: Iterable[str] | None = None,
    error: ErrorType = ArtefactError,
    fix: str = "",
) -> dict[str, Any]:
    """The arrays of the ``.npz`` archive ``path`` (only ``keys`` when given; absent ones are
    left out, so the caller names what is missing), loaded without pickle after every
    member's ``.npy`` header was checked (see the module's docstring). ``fix`` ends each
    message (``"; rerun 'hapi train'"``)."""
    from numpy.lib import format as npy

    p = Path(path)
    want = None if keys is None else set(keys)
    tail = f"; {fix}" if fix else ""
    head = _read_start(p, len(_NPY_MAGIC), error=error, expected="an .npz file")
    if head == _NPY_MAGIC:
        raise error(f"{p}: a single .npy array, not an .npz archive of named arrays{tail}")
    try:
        with zipfile.ZipFile(p) as zf:
            members = [
                i
                for i in zf.infolist()
                if not i.is_dir() and (want is None or _npz_key(i.filename) in want)
            ]
            total = 0
            for info in members:
                with zf.open(info) as f:
                    shape, _fortran, dtype = _npy_header(f)
                    header = f.tell()
                key = _npz_key(info.filename)
                if dtype.hasobject:
                    raise error(
                        f"{p}: not a readable .npz file (array {key!r} holds Python objects, "
                        "which only pickle reads, and hapi never unpickles: save numeric or "
                        f"string arrays){tail}"
                    )
                nbytes = math.prod(int(d) for d in shape) * dtype.itemsize
                if header + nbytes != info.file_size:
                    raise error(
                        f"{p}: array {key!r} claims shape {tuple(shape)} of {dtype} "
                        f"({_size_text(nbytes)}) but the archive holds "
                        f"{_size_text(max(info.file_size - header, 0))} for it; the file is "
                        f"corrupt{tail}"
                    )
                total += nbytes
            check_memory(total, f"{p}: its arrays need", tail=tail, error=error)
            arrays = {}
            for info in members:
                with zf.open(info) as f:
                    arrays[_npz_key(info.filename)] = npy.read_array(f, allow_pickle=False)
    except HapiError:
        raise
    except zipfile.BadZipFile as e:
        why = "neither a zip archive nor an array" if "zip file" in str(e) else first_line(e)
        raise error(f"{p}: not a readable .npz file ({why}){tail}") from None
    except Exception as e:  # zlib.error, EOFError, a header numpy cannot parse (SyntaxError,
        # tokenize.TokenError), an encrypted member (RuntimeError): the bytes are the fault
        raise error(f"{p}: not a readable .npz file ({first_line(e)}){tail}") from None
    return arrays


def _npz_key(name: str) -> str:
    return name[:-4] if name.endswith(".npy") else name


# -- ONNX and torch ----------------------------------------------------------------------------


def read_onnx(
    path: str | Path, *, error: ErrorType = ArtefactError, load_external_data: bool = True
) -> Any:
    """The ``onnx.ModelProto`` in ``path``; anything onnx cannot parse is
    ``PATH: not an ONNX graph hapi can read (...)``."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as e:  # DecodeError, OSError, ValueError, onnx's own types
        msg = getattr(e, "strerror", None) or first_line(e)
        raise error(f"{path}: not an ONNX graph hapi can read ({msg})") from None


def torch_load_weights(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, with torch's warnings (the
    weights-only unpickler's advice) kept off stderr: the caller turns a refusal into one
    line. Raises what ``torch.load`` raises."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)
