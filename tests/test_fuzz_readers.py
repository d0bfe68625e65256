"""Fuzz every reader (issue #22): mutate each kind of file hapi reads, run the command that
reads it, and check the promise: exit status 0 (a harmless mutation) or 2, never a
traceback; when refused, exactly one ``hapi: error:`` line and nothing on disk changed.

Mutations: truncate, flip bytes, replace any value of a JSON/YAML/TOML document or any CSV
cell by another type, a deep nesting, a huge integer, NaN or infinity, drop keys, rewrite
``.npz`` arrays (dtype, shape, values, an object array, a header that lies about its shape).

``make test`` runs a few seeded examples of each (``quick``); ``make test-slow`` (``-m
slow``) runs many random ones.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_faults_inputs import (
    DEVICE,
    SPEC,
    devices_argv,
    eval_argv,
    export_argv,
    plot_argv,
    profile_argv,
    run_hapi,
    search_argv,
    sidecar,
    table_csv,
)

from hapi_dse.testing import train_args
from hapi_dse.testing.files import tree_snapshot as snapshot
from hapi_dse.testing.world import onnx_identity, write_world

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

#: examples per file kind: a few seeded ones in the default run, many random ones with -m slow
MODES = [
    pytest.param((6, True), id="quick"),
    pytest.param((150, False), id="slow", marks=pytest.mark.slow),
]


def fuzz(mode: tuple[int, bool]) -> settings:
    examples, seeded = mode
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=seeded,
        database=None,  # nothing written into the repository
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


# -- the world: valid inputs of every command, copied per example


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conftest's world (hapi_dse.testing.world), and a device spec, a YAML space and a
    dataset ``.npz`` to fuzz too."""
    root = tmp_path_factory.mktemp("fuzz-world")
    write_world(root)
    spec = root / "profiles" / "specs" / f"{DEVICE}.toml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    spec.write_text(SPEC + "threads = 1\n")
    (root / "space.yaml").write_text(
        "exits:\n  count: [0, 2]\npolicies:\n  max_softmax:\n    threshold: [0.5, 1.0]\n"
    )
    rng = np.random.default_rng(0)
    np.savez(
        root / "data.npz",
        x=rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
        y=(np.arange(60) % 3).astype(np.int64),
    )
    return root


@contextmanager
def copy_of(world: Path) -> Iterator[Path]:
    """A fresh copy of the world, the working directory inside it (no ./profiles)."""
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="hapi-fuzz-") as tmp:
        w = Path(tmp) / "w"
        shutil.copytree(world, w)
        os.chdir(tmp)
        try:
            yield w
        finally:
            os.chdir(here)


def check_promise(capsys: pytest.CaptureFixture[str], w: Path, argv: list[Any]) -> None:
    before = snapshot(w.parent)
    code, out, err = run_hapi(capsys, argv)
    assert "Traceback" not in out + err, err
    assert code in (0, 2), (code, err[-2000:])
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1, err[-2000:]
        assert lines[0].startswith("hapi: error: "), lines[0]
        assert snapshot(w.parent) == before


# -- mutations -----------------------------------------------------------------------------------

_MARK = "@@hapi-fuzz@@"


def _deep(n: int, kind: str) -> str:
    return "[" * n + "]" * n if kind == "list" else '{"a": ' * n + "1" + "}" * n


#: JSON text that replaces one value: other types, limits of numbers, deep nesting
JSON_TOKENS = st.one_of(
    st.sampled_from(
        [
            *("NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1e308", "-1e308", "5e-324"),
            *("null", "true", "false", '""', "[]", "{}", "0", "-1", "1.5", '"x"', "[1, 2]"),
            *(str(2**63), str(-(2**63) - 1), str(2**64), '{"a": null}', '"\\ud800"', '"\\u0000"'),
        ]
    ),
    st.integers(19, 5000).map(lambda n: "9" * n),
    st.tuples(st.sampled_from([65, 900, 100_000]), st.sampled_from(["list", "dict"])).map(
        lambda t: _deep(*t)
    ),
    st.text(max_size=12).map(json.dumps),
    st.integers(-(10**30), 10**30).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(lambda v: json.dumps(v)),
)

#: the same for YAML (JSON is YAML, plus YAML's own spellings of NaN and infinity)
YAML_TOKENS = st.one_of(JSON_TOKENS, st.sampled_from([".nan", ".inf", "-.inf", "~", "!!binary AA"]))

#: TOML values
TOML_TOKENS = st.one_of(
    st.sampled_from(
        [
            *("nan", "inf", "-inf", "+inf", "1e999", "-1", "0", "1.5", "true"),
            *('"x"', '""', "[1, 2]", "[]", "{a = 1}", "1979-05-27", str(2**63)),
        ]
    ),
    st.integers(19, 5000).map(lambda n: "9" * n),
    st.sampled_from([65, 900, 100_000]).map(lambda n: "[" * n + "]" * n),
)

#: CSV cells
CSV_TOKENS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e999", "-1", "", "x", "1e308", "True", "0x10"]),
    st.integers(19, 5000).map(lambda n: "9" * n),
    st.just("x" * 200_000),  # over the csv module's field size limit
    st.text(max_size=10),
)


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield at
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*at, i))


def _replace(doc: Any, at: tuple[Any, ...], value: Any) -> Any:
    if not at:
        return value
    doc = json.loads(json.dumps(doc))  # a copy
    node = doc
    for k in at[:-1]:
        node = node[k]
    node[at[-1]] = value
    return doc


def _drop(doc: Any, at: tuple[Any, ...]) -> Any:
    doc = json.loads(json.dumps(doc))
    node = doc
    for k in at[:-1]:
        node = node[k]
    del node[at[-1]]
    return doc


@st.composite
def byte_mutation(draw: st.DrawFn, raw: bytes) -> bytes:
    """``raw`` truncated or with a few bytes flipped."""
    if draw(st.booleans()):
        return raw[: draw(st.integers(0, max(len(raw) - 1, 0)))]
    out = bytearray(raw)
    for _ in range(draw(st.integers(1, 4))):
        out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
    return bytes(out)


@st.composite
def doc_mutation(draw: st.DrawFn, doc: Any, tokens: st.SearchStrategy[str] = JSON_TOKENS) -> bytes:
    """``doc`` as JSON text with one mutation: bytes, one value replaced, or a key dropped."""
    text = json.dumps(doc, indent=1)
    kind = draw(st.sampled_from(["bytes", "value", "value", "value", "drop"]))
    if kind == "bytes":
        return draw(byte_mutation(text.encode()))
    paths = list(_paths(doc))
    if kind == "drop":
        keyed = [p for p in paths if p]
        if keyed:
            return json.dumps(_drop(doc, draw(st.sampled_from(keyed)))).encode()
    at = draw(st.sampled_from(paths))
    token = draw(tokens)
    return json.dumps(_replace(doc, at, _MARK)).replace(json.dumps(_MARK), token).encode()


_TOML_VALUE = re.compile(r"^(\s*[\w.\"-]+\s*=\s*)(.+)$", re.M)


@st.composite
def toml_mutation(draw: st.DrawFn, text: str) -> bytes:
    """TOML ``text`` with bytes mutated, one value replaced, or a key added."""
    kind = draw(st.sampled_from(["bytes", "value", "value", "add"]))
    if kind == "bytes":
        return draw(byte_mutation(text.encode()))
    token = draw(TOML_TOKENS)
    matches = list(_TOML_VALUE.finditer(text))
    if kind == "add" or not matches:
        return (text + f"extra = {token}\n").encode()
    m = draw(st.sampled_from(matches))
    return (text[: m.start(2)] + token + text[m.end(2) :]).encode()


@st.composite
def csv_mutation(draw: st.DrawFn, text: str) -> bytes:
    """CSV ``text`` with bytes mutated, one cell replaced, or a column dropped."""
    kind = draw(st.sampled_from(["bytes", "cell", "cell", "column"]))
    if kind == "bytes":
        return draw(byte_mutation(text.encode()))
    lines = [line.split(",") for line in text.splitlines()]
    if kind == "column":
        j = draw(st.integers(0, len(lines[0]) - 1))
        return "".join(",".join(r[:j] + r[j + 1 :]) + "\n" for r in lines).encode()
    i = draw(st.integers(0, len(lines) - 1))
    j = draw(st.integers(0, len(lines[i]) - 1))
    lines[i][j] = draw(CSV_TOKENS).replace("\n", " ").replace(",", ";")
    return "".join(",".join(r) + "\n" for r in lines).encode()


def _npy(shape: tuple[int, ...], payload: bytes, descr: str) -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return b.getvalue() + payload


@st.composite
def npz_mutation(draw: st.DrawFn, path: Path) -> bytes:
    """The ``.npz`` at ``path`` with bytes mutated, one array rewritten, dropped or given a
    header that lies about its shape."""
    raw = path.read_bytes()
    kind = draw(st.sampled_from(["bytes", "array", "array", "array", "drop", "lie"]))
    if kind == "bytes":
        return draw(byte_mutation(raw))
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    name = draw(st.sampled_from(sorted(arrays)))
    a = arrays[name]
    if kind == "drop":
        del arrays[name]
    elif kind == "lie":
        shape = draw(st.sampled_from([(10**11, 8, 8), (2**40,), (0,), (3, 0, 5), (10**6, 10**6)]))
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for k, v in arrays.items():
                member = io.BytesIO()
                np.save(member, v)
                body = member.getvalue()
                if k == name:
                    body = _npy(shape, v.tobytes()[:4096], v.dtype.str)
                zf.writestr(f"{k}.npy", body)
        return buf.getvalue()
    else:
        how = draw(
            st.sampled_from(
                [
                    *("float", "int", "str", "object", "nan", "inf", "huge", "negative"),
                    *("empty", "flat", "extra-dim", "transpose", "scalar", "bool", "uint64-max"),
                ]
            )
        )
        try:
            arrays[name] = _rewrite(a, how)
        except (ValueError, TypeError):
            arrays[name] = np.zeros(0)
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # an object array is pickled: hapi must refuse it, not load it
    return buf.getvalue()


def _rewrite(a: np.ndarray, how: str) -> np.ndarray:
    if how == "float":
        return a.astype(np.float64) + 0.5 if a.dtype.kind in "iuf" else np.ones(a.shape)
    if how == "int":
        return a.astype(np.int64) if a.dtype.kind in "iufb" else np.arange(a.size)
    if how == "str":
        return a.astype(str)
    if how == "object":
        return np.array([{"a": 1}] * max(a.size, 1), dtype=object)
    if how in ("nan", "inf", "huge", "negative"):
        b = a.astype(np.float64) if a.dtype.kind in "iufb" else np.zeros(a.shape)
        if b.size:
            b.flat[0] = {"nan": np.nan, "inf": np.inf, "huge": 1e300, "negative": -5.0}[how]
        return b if how in ("nan", "inf") or a.dtype.kind == "f" else b.astype(np.int64)
    if how == "empty":
        return a[:0]
    if how == "flat":
        return a.reshape(-1)
    if how == "extra-dim":
        return a[..., None]
    if how == "transpose":
        return a.T.copy()
    if how == "scalar":
        return np.array(a.flat[0] if a.size else 0)
    if how == "bool":
        return a.astype(bool) if a.dtype.kind != "U" else np.ones(a.shape, bool)
    if how == "uint64-max":
        return np.full(a.shape, np.iinfo(np.uint64).max, np.uint64)
    raise AssertionError(how)


# -- one test per file kind ----------------------------------------------------------------------


def _fuzz_file(
    mode: tuple[int, bool],
    world: Path,
    capsys: pytest.CaptureFixture[str],
    rel: Callable[[Path], Path],
    strategy: Callable[[Path], st.SearchStrategy[bytes]],
    argv: Callable[[Path], list[Any]],
) -> None:
    """Fuzz the file ``rel(world)`` with ``strategy`` (given the world's valid file) and run
    ``argv`` on each mutated copy of the world."""

    @fuzz(mode)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        mutated = data.draw(strategy(rel(world)))
        with copy_of(world) as w:
            rel(w).write_bytes(mutated)
            check_promise(capsys, w, argv(w))

    check()


def _json_of(p: Path) -> Any:
    return json.loads(p.read_text())


def _json(tokens: st.SearchStrategy[str] = JSON_TOKENS) -> Callable[[Path], Any]:
    return lambda p: doc_mutation(_json_of(p), tokens)


FILES: dict[str, tuple[Callable[[Path], Path], Callable[[Path], Any], Callable]] = {
    # kind: (the file, its mutations, the command that reads it)
    "model.json": (lambda w: w / "run" / "model.json", _json(), search_argv),
    "design.json": (lambda w: w / "design.json", _json(), export_argv),
    "search.json": (lambda w: w / "result" / DEVICE / "search.json", _json(), plot_argv),
    "result-design.json": (lambda w: w / "result" / DEVICE / "design.json", _json(), plot_argv),
    "trials.csv": (
        lambda w: w / "result" / DEVICE / "trials.csv",
        lambda p: csv_mutation(p.read_text()),
        plot_argv,
    ),
    "profile-sidecar": (sidecar, _json(), devices_argv),
    "profile-table": (table_csv, lambda p: csv_mutation(p.read_text()), devices_argv),
    "segments.json": (lambda w: w / "segs" / "segments.json", _json(), profile_argv),
    "staged-manifest": (lambda w: w / "staged" / "manifest.json", _json(), eval_argv),
    "staged-export.json": (lambda w: w / "staged" / "export.json", _json(), eval_argv),
    "device-spec": (
        lambda w: w / "profiles" / "specs" / f"{DEVICE}.toml",
        lambda p: toml_mutation(p.read_text()),
        devices_argv,
    ),
    "space-toml": (
        lambda w: w / "space.toml",
        lambda p: toml_mutation(p.read_text()),
        lambda w: search_argv(w, "--space", w / "space.toml"),
    ),
    "space-yaml": (
        lambda w: w / "space.yaml",
        lambda p: doc_mutation(__import__("yaml").safe_load(p.read_text()), YAML_TOKENS),
        lambda w: search_argv(w, "--space", w / "space.yaml"),
    ),
    "exits-npz": (
        lambda w: w / "run" / "exits_val.npz",
        npz_mutation,
        search_argv,
    ),
    "onnx-bytes": (
        lambda w: w / "model.onnx",
        lambda p: byte_mutation(p.read_bytes()),
        lambda w: eval_argv(w, "model.onnx"),
    ),
    "estimate-onnx": (
        lambda w: w / "segs" / "block0.onnx",
        lambda p: byte_mutation(p.read_bytes()),
        lambda w: [
            "estimate",
            w / "segs/block0.onnx",
            "--device",
            DEVICE,
            "--profiles",
            w / "profiles",
        ],
    ),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", sorted(FILES))
def test_fuzz_reader(
    kind: str, mode: tuple[int, bool], world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rel, strategy, argv = FILES[kind]
    _fuzz_file(mode, world, capsys, rel, strategy, argv)


@pytest.mark.parametrize("mode", MODES)
def test_fuzz_onnx_design_metadata(
    mode: tuple[int, bool], world: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ``hapi.design`` metadata of a single-graph export, mutated as JSON text."""
    exits = [{"position": 1, "head": "linear", "threshold": 0.9}]
    design = {"policy": "max_softmax", "policy_params": {}, "exits": exits}

    @fuzz(mode)
    @given(meta=doc_mutation(design))
    def check(meta: bytes) -> None:
        with copy_of(world) as w:
            text = meta.decode("utf-8", "replace")
            onnx_identity(w / "model.onnx", [1, 1, 8, 8], {"hapi.design": text})
            check_promise(capsys, w, eval_argv(w, "model.onnx"))

    check()


@pytest.mark.parametrize("mode", MODES)
def test_fuzz_dataset_npz(
    mode: tuple[int, bool],
    world: Path,
    capsys: pytest.CaptureFixture[str],
    stop_when_loaded: Callable[[int], None],
) -> None:
    """A dataset ``.npz`` for ``hapi train`` (which stops with exit status 0 once the data
    loaded)."""
    stop_when_loaded(0)

    def argv(w: Path) -> list[Any]:
        return train_args(w / "newrun", dataset=w / "data.npz")

    _fuzz_file(mode, world, capsys, lambda w: w / "data.npz", npz_mutation, argv)
