"""The guarded readers (hapi_dse.readers) and the faults they exist for (issue #22).

Class 5: parser failures (a 100k-deep list, an integer over Python's 4300-digit limit, deep
or huge-integer TOML, deep YAML) in every file kind hapi reads are one line, exit 2.
Class 9: datasets that would exhaust memory (an ``.npz`` header claiming a huge shape, a
huge label without ``classes``, ``--image-size 30000``) or crash (zero-size image sides) are
refused before anything is allocated. Class 15: torch's weights-only warning stays off stderr
when a pickle ``weights.pt`` or ``--init`` file is refused.
"""

from __future__ import annotations

import io
import json
import pickle
import time
import warnings
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
    assert_refused,
    devices_argv,
    eval_argv,
    export_argv,
    plot_argv,
    profile_argv,
    run_hapi,
    search_argv,
    sidecar,
)

from hapi_dse.errors import ArtefactError, DataError, UsageError
from hapi_dse.readers import (
    MAX_DEPTH,
    check_tree,
    loads_json,
    loads_toml,
    loads_yaml,
    parse_csv,
    read_json,
    read_npz,
)
from hapi_dse.testing import train_args
from hapi_dse.testing.files import tree_snapshot as snapshot
from hapi_dse.testing.world import onnx_identity

DEEP = "[" * 100_000 + "]" * 100_000  # a list nested 100,000 deep, in JSON, TOML and YAML
HUGE_INT = "9" * 5000  # over Python's 4300-digit int/str conversion limit
LONG_INT = "9" * 3000  # under it, but no 64-bit integer


@pytest.fixture
def w(case_dir: Path) -> Path:
    """conftest's case_dir: a fresh copy of hapi_dse.testing.world, the working directory beside
    it."""
    return case_dir


# -- the readers themselves ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (DEEP, "nested too deeply"),
        ("[" * 500 + "]" * 500, f"deeper than {MAX_DEPTH}"),
        ('{"a": ' + HUGE_INT + "}", "more than 4300 digits"),
        ('{"a": [1, ' + LONG_INT + "]}", r"a\[1\]: an integer of 3000 digits"),
        ('{"a": 1', "not valid JSON"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
    ],
    ids=["deep-100k", "deep-500", "int-5000", "int-3000", "syntax", "utf8"],
)
def test_json_faults_are_one_artefact_error(text: str | bytes, needle: str) -> None:
    with pytest.raises(ArtefactError, match=needle) as e:
        loads_json(text, "f.json")
    assert str(e.value).startswith("f.json: ") and "\n" not in str(e.value)


def test_non_finite_numbers_only_where_refused() -> None:
    doc = loads_json('{"a": NaN, "b": [Infinity, 1e999]}', "f.json")
    assert doc["a"] != doc["a"] and doc["b"] == [float("inf")] * 2  # the schema checks say
    with pytest.raises(ArtefactError, match="f.json: a: nan, expected a finite number"):
        loads_json('{"a": NaN}', "f.json", finite=True)
    with pytest.raises(ArtefactError, match=r"b\[1\]: inf"):
        loads_json('{"b": [1, 1e999]}', "f.json", finite=True)
    with pytest.raises(ArtefactError) as e:  # a key with a lone surrogate: printable
        loads_json('{"\\ud800": NaN}', "f.json", finite=True)
    assert str(e.value) == "f.json: \\ud800: nan, expected a finite number"
    str(e.value).encode("utf-8")


def test_limits_are_generous_for_hapis_own_files() -> None:
    nested: Any = 1
    for _ in range(MAX_DEPTH):
        nested = [nested]
    assert check_tree({"x": 2**63 - 1, "y": -(2**63) + 1}, "f") is not None
    assert loads_json(json.dumps(nested), "f.json") == nested
    with pytest.raises(ArtefactError, match="deeper than"):
        loads_json(json.dumps([nested]), "f.json")


def test_toml_and_yaml_faults(tmp_path: Path) -> None:
    for text, needle in [
        ("a = " + DEEP, "nested too deeply"),
        ("a = " + "[" * 200 + "]" * 200, "deeper than"),
        ("a = " + HUGE_INT, "more than 4300 digits"),
        ("a = " + LONG_INT, "64-bit"),
    ]:
        with pytest.raises(UsageError, match=needle):
            loads_toml(text, "s.toml", error=UsageError)
    for text, needle in [
        ("a: " + DEEP, "nested too deeply"),
        ("a: " + HUGE_INT, "more than 4300 digits"),
        ("a: [1, 2\n", "not valid YAML"),
    ]:
        with pytest.raises(ArtefactError, match=needle):
            loads_yaml(text, "s.yaml")
    # a YAML 'billion laughs' (aliases of aliases) is stopped by the value count, quickly
    lines = ["a0: &a0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    t0 = time.perf_counter()
    with pytest.raises(ArtefactError, match="more than"):
        loads_yaml("\n".join(lines) + "\n", "laughs.yaml")
    assert time.perf_counter() - t0 < 10


def test_csv_faults() -> None:
    rows = parse_csv("a,b\n1,2\n", "t.csv")
    assert rows == [{"a": "1", "b": "2"}] and rows.fieldnames == ["a", "b"]
    with pytest.raises(ArtefactError, match="t.csv: not a readable CSV"):
        parse_csv("a,b\n" + "x" * 200_000 + ",1\n", "t.csv")  # over csv's field size limit


def _npy(shape: tuple[int, ...], payload: bytes, descr: str = "<f4") -> bytes:
    b = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        b, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return b.getvalue() + payload


def _lying_npz(path: Path, **members: bytes) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, raw in members.items():
            z.writestr(f"{name}.npy", raw)
    return path


def test_npz_headers_are_checked_before_allocating(tmp_path: Path) -> None:
    path = _lying_npz(tmp_path / "lie.npz", x=_npy((10**11, 8, 8), bytes(256)))
    t0 = time.perf_counter()
    with pytest.raises(DataError, match=r"claims shape \(100000000000, 8, 8\)"):
        read_npz(path, error=DataError)
    assert time.perf_counter() - t0 < 1
    # a consistent header (size in the archive matches) beyond memory is refused too
    np.savez(tmp_path / "ok.npz", a=np.arange(6).reshape(2, 3), s=np.array(["x", "y"]))
    arrays = read_npz(tmp_path / "ok.npz")
    assert arrays["a"].shape == (2, 3) and arrays["s"].tolist() == ["x", "y"]
    assert set(read_npz(tmp_path / "ok.npz", keys=["a", "zz"])) == {"a"}


@pytest.mark.parametrize("broken", [b"'sh(pe", b"\"shape'", b"\xff\xfe\x00pe"])
def test_npz_header_numpy_cannot_parse(tmp_path: Path, broken: bytes) -> None:
    """A header dict cut mid-string made numpy's parser raise SyntaxError or
    tokenize.TokenError (found by the fuzz tests), which escaped as a traceback."""
    raw = _npy((3,), bytes(12)).replace(b"'shape'", broken[:7].ljust(7, b" "))
    path = _lying_npz(tmp_path / "h.npz", labels=raw)
    with pytest.raises(ArtefactError, match="h.npz: not a readable .npz file"):
        read_npz(path)


# -- class 5: every reader behind a command, one line, exit 2, nothing changed -----------------


def _write(p: Path, text: str | bytes) -> None:
    p.write_bytes(text.encode() if isinstance(text, str) else text)


def _refused(capsys: pytest.CaptureFixture[str], w: Path, argv: list[Any], needle: str) -> None:
    before = snapshot(w.parent)
    code, out, err = run_hapi(capsys, argv)
    assert_refused(code, out, err, needle)
    assert snapshot(w.parent) == before


@pytest.mark.parametrize("payload", ["deep", "huge-int"])
@pytest.mark.parametrize(
    "target",
    ["design.json", "model.json", "sidecar", "search.json", "segments.json", "manifest.json"],
)
def test_deep_or_huge_json_is_one_line(
    w: Path, capsys: pytest.CaptureFixture[str], target: str, payload: str
) -> None:
    text = DEEP if payload == "deep" else '{"model_id": ' + HUGE_INT + "}"
    needle = "nested too deeply" if payload == "deep" else "4300 digits"
    file, argv = {
        "design.json": (w / "design.json", export_argv(w)),
        "model.json": (w / "run" / "model.json", search_argv(w)),
        "sidecar": (sidecar(w), devices_argv(w)),
        "search.json": (w / "result" / DEVICE / "search.json", plot_argv(w)),
        "segments.json": (w / "segs" / "segments.json", profile_argv(w)),
        "manifest.json": (w / "staged" / "manifest.json", eval_argv(w)),
    }[target]
    _write(file, text)
    _refused(capsys, w, argv, needle)


@pytest.mark.parametrize("payload", ["deep", "huge-int", "long-int"])
def test_onnx_design_metadata_is_guarded(
    w: Path, capsys: pytest.CaptureFixture[str], payload: str
) -> None:
    meta = {"deep": DEEP, "huge-int": HUGE_INT, "long-int": LONG_INT}[payload]
    onnx_identity(w / "model.onnx", [1, 1, 8, 8], {"hapi.design": meta})
    needle = {"deep": "nested too deeply", "huge-int": "4300 digits", "long-int": "64-bit"}
    _refused(capsys, w, eval_argv(w, "model.onnx"), needle[payload])


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("space.toml", "[exits]\ncount = " + DEEP + "\n", "nested too deeply"),
        ("space.toml", "[exits]\ncount = " + "[" * 100 + "]" * 100 + "\n", "deeper than"),
        ("space.toml", "[sampler]\npopulation = " + HUGE_INT + "\n", "4300 digits"),
        ("space.toml", "[sampler]\npopulation = " + LONG_INT + "\n", "64-bit"),
        ("space.yaml", "exits:\n  count: " + DEEP + "\n", "nested too deeply"),
        ("space.yaml", "exits:\n  count: " + "[" * 100 + "]" * 100 + "\n", "deeper than"),
        ("space.yaml", "sampler:\n  population: " + HUGE_INT + "\n", "4300 digits"),
    ],
    ids=[
        *("toml-deep-100k", "toml-deep-100", "toml-int-5000", "toml-int-3000"),
        *("yaml-deep-100k", "yaml-deep-100", "yaml-int-5000"),
    ],
)
def test_space_file_is_guarded(
    w: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, needle: str
) -> None:
    _write(w / name, text)
    _refused(capsys, w, search_argv(w, "--space", w / name), needle)


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        ("threads = " + HUGE_INT + "\n", "4300 digits"),
        ("threads = " + LONG_INT + "\n", "64-bit"),
        ("x = " + DEEP + "\n", "nested too deeply"),
    ],
    ids=["int-5000", "int-3000", "deep"],
)
def test_device_spec_toml_is_guarded(
    w: Path, capsys: pytest.CaptureFixture[str], extra: str, needle: str
) -> None:
    spec = w / "profiles" / "specs" / f"{DEVICE}.toml"
    spec.parent.mkdir(parents=True, exist_ok=True)
    _write(spec, SPEC + extra)
    _refused(capsys, w, devices_argv(w), needle)


def test_lone_surrogate_in_design_json(w: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Found by the fuzz tests: a head named "\\ud800" reached the error message, and
    printing it raised UnicodeEncodeError (a traceback)."""
    p = w / "design.json"
    _write(p, p.read_text().replace('"linear"', '"\\ud800"'))
    _refused(capsys, w, export_argv(w), "exit 1:\\ud800 does not exist")


@pytest.mark.parametrize("sep", ["\\n", "\\u000b", "\\u001c", "\\u0085", "\\u2028"])
def test_line_breaks_in_a_name_stay_one_line(
    w: Path, capsys: pytest.CaptureFixture[str], sep: str
) -> None:
    """Found by the fuzz tests: a head named "\\u000b" (a line break to str.splitlines)
    split the error into two lines."""
    p = w / "design.json"
    _write(p, p.read_text().replace('"linear"', f'"x{sep}y"'))
    _refused(capsys, w, export_argv(w), "does not exist")


def test_long_integer_in_model_json(w: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = w / "run" / "model.json"
    _write(p, p.read_text().replace('"num_classes": 10', '"num_classes": ' + LONG_INT))
    _refused(capsys, w, search_argv(w), "64-bit")


def test_journal_record_too_deep_is_not_a_record(tmp_path: Path) -> None:
    from hapi_dse.search.storage import _whole_record

    assert _whole_record(b'{"op_code": 1}\n')
    assert not _whole_record(DEEP.encode())
    assert not _whole_record(b"\xff\n")


def test_read_json_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "x.json"
    with pytest.raises(ArtefactError, match=r"x.json: cannot read it \(no such file\)"):
        read_json(p)
    p.mkdir()
    with pytest.raises(ArtefactError, match="x.json: cannot read it .a directory"):
        read_json(p)


# -- class 9: datasets refused before memory is allocated ----------------------------------------


@pytest.fixture
def loaded(stop_when_loaded: Callable[[int], None]) -> None:
    """Training never starts: a dataset that loads ends the command with exit status 3."""
    stop_when_loaded(3)


def _train(tmp_path: Path, dataset: Path | str, *extra: str) -> list[Any]:
    return train_args(tmp_path / "run", *extra, dataset=dataset)


def _dataset(tmp_path: Path, **arrays: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    base = {
        "x": rng.integers(0, 256, (60, 8, 8), dtype=np.uint8),
        "y": (np.arange(60) % 3).astype(np.int64),
    }
    path = tmp_path / "d.npz"
    np.savez(path, **{**base, **arrays})
    return path


def _refused_quickly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[Any], needle: str
) -> None:
    before = snapshot(tmp_path)
    t0 = time.perf_counter()
    code, out, err = run_hapi(capsys, argv)
    assert time.perf_counter() - t0 < 5
    assert_refused(code, out, err, needle)
    assert snapshot(tmp_path) == before


def test_dataset_npz_header_claims_huge_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    y = np.zeros(60, np.int64)
    path = _lying_npz(
        tmp_path / "d.npz",
        x=_npy((10**11, 8, 8), bytes(1000), "|u1"),
        y=_npy((60,), y.tobytes(), "<i8"),
    )
    _refused_quickly(capsys, tmp_path, _train(tmp_path, path), "claims shape (100000000000, 8, 8)")


def test_dataset_zero_size_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    path = _dataset(tmp_path, x=np.zeros((60, 0, 8), np.uint8))
    _refused_quickly(capsys, tmp_path, _train(tmp_path, path), "each side must be 1..4096")


@pytest.mark.parametrize("label", [10**6, 2**31])
def test_dataset_absurd_label_without_classes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None, label: int
) -> None:
    y = (np.arange(60) % 3).astype(np.int64)
    y[7] = label
    path = _dataset(tmp_path, y=y)
    _refused_quickly(capsys, tmp_path, _train(tmp_path, path), f"label {label} in the train")


def test_dataset_classes_capped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    path = _dataset(tmp_path, classes=np.array([f"c{i}" for i in range(10_001)]))
    _refused_quickly(capsys, tmp_path, _train(tmp_path, path), "at most 10000 classes")


def _image_folder(root: Path, size: tuple[int, int]) -> Path:
    """``root``: classes ``a`` and ``b`` of three grey images of ``size`` (width, height)."""
    from PIL import Image

    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.new("L", size, 40 * i).save(root / c / f"{i}.png")
    return root


def test_image_size_has_a_stated_maximum(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    _image_folder(tmp_path / "imgs", (8, 8))
    argv = _train(tmp_path, tmp_path / "imgs", "--image-size", "30000")
    _refused_quickly(capsys, tmp_path, argv, "at most 4096 pixels a side")
    code, _, err = run_hapi(capsys, _train(tmp_path, tmp_path / "imgs", "--image-size", "16"))
    assert code == 3, err  # a size within the limit loads


def test_image_folder_of_huge_images_needs_image_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    _image_folder(tmp_path / "imgs", (4100, 2))
    argv = _train(tmp_path, tmp_path / "imgs")
    _refused_quickly(capsys, tmp_path, argv, "more than 4096 a side; pass --image-size")


def test_a_valid_npz_dataset_still_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], loaded: None
) -> None:
    code, _, err = run_hapi(capsys, _train(tmp_path, _dataset(tmp_path)))
    assert code == 3, err


# -- class 15: torch's weights-only warning stays off stderr -------------------------------------


def _pickle_file(path: Path) -> Path:
    # protocol 4: torch's weights-only unpickler warns about it before refusing the file
    path.write_bytes(pickle.dumps({"backbone.w": [1.0, 2.0]}, protocol=4))
    return path


@contextmanager
def no_warning_escapes() -> Iterator[None]:
    """Every warning raised inside, recorded (pytest would otherwise catch what the CLI
    prints on stderr): none may escape, as none may reach a user's terminal."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [str(c.message)[:100] for c in caught]


def test_pickle_weights_pt_is_one_line(w: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pickle_file(w / "trun" / "weights.pt")
    argv = ["profile", "--model", w / "trun", "--device", "devB"]
    argv += ["--profiles", w / "newprofiles", "--runs", "50"]
    with no_warning_escapes():
        _refused(capsys, w, argv, "cannot load weights")


def test_pickle_init_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    init = _pickle_file(tmp_path / "init.pt")
    argv = train_args(tmp_path / "run", "--init", init, limit=200)
    before = snapshot(tmp_path)
    with no_warning_escapes():
        code, out, err = run_hapi(capsys, argv)
    assert_refused(code, out, err, "--init")
    assert snapshot(tmp_path) == before
