"""Names read from files never become paths outside the directory they belong in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.profiling.manifest import MANIFEST, load_manifest
from hapi_dse.profiling.names import table_path, valid_device_name, valid_name
from hapi_dse.profiling.table import write_table

BAD_NAMES = ["../../evil", "..", ".", "", "a/b", "/abs", ".hidden", "a\\b", "x y", "é"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_valid_name_refuses_what_is_not_a_plain_name(name: str) -> None:
    assert not valid_name(name) and not valid_device_name(name)


@pytest.mark.parametrize("name", ["pixel6", "resnet32-dcb13cf1", "jetson_nano.fp16", "a.b-c_d"])
def test_valid_name_accepts_plain_names(name: str) -> None:
    assert valid_name(name) and valid_device_name(name)


def test_specs_directory_is_no_device() -> None:
    from hapi_dse.paths import SPECS_SUBDIR

    assert valid_name(SPECS_SUBDIR) and not valid_device_name(SPECS_SUBDIR)


@pytest.mark.parametrize("name", ["../../evil", "..", "a/b", ".x"])
def test_table_path_refuses_bad_device_and_model_id(tmp_path: Path, name: str) -> None:
    with pytest.raises(ArtefactError, match="model_id .*plain name") as e:
        table_path(tmp_path, "dev", name)
    assert len(str(e.value).splitlines()) == 1 and repr(name) in str(e.value)
    with pytest.raises(ArtefactError, match="device .*plain name"):
        table_path(tmp_path, name, "m")
    assert table_path(tmp_path, "dev", "m") == tmp_path / "dev" / "m.csv"


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_write_table_refuses_a_bad_model_id_and_writes_nothing(tmp_path: Path) -> None:
    from hapi_dse.profiling.fake import FakeProfiler

    rows = FakeProfiler().profile(load_manifest(_segments_dir(tmp_path / "seg", "m"))).rows
    profiles = tmp_path / "a" / "b" / "profiles"
    before = _files(tmp_path)
    with pytest.raises(ArtefactError, match="model_id '../../evil'"):
        write_table(rows, {}, device="dev", model_id="../../evil", profiles=profiles)
    with pytest.raises(UsageError, match=r"^device '\.\./dev': use "):
        write_table(rows, {}, device="../dev", model_id="m", profiles=profiles)
    assert _files(tmp_path) == before
    write_table(rows, {}, device="dev", model_id="m", profiles=profiles)  # a plain one works
    assert (profiles / "dev" / "m.csv").is_file()


def _segments_dir(root: Path, model_id: str) -> Path:
    """A segments directory (empty stand-ins for the ONNX files) whose manifest says
    ``model_id``."""
    root.mkdir(parents=True)
    segs = []
    for kind, pos, head, f in [
        ("block", 0, "", "block_0.onnx"),
        ("head", 0, "linear", "head_0_linear.onnx"),
        ("final", 0, "final", "final.onnx"),
    ]:
        (root / f).write_bytes(b"")
        segs.append(
            {
                "kind": kind,
                "position": pos,
                "head": head,
                "file": f,
                "input_name": "x",
                "input_shape": [1, 8, 4, 4],
                "output_name": "y",
            }
        )
    (root / MANIFEST).write_text(json.dumps({"model_id": model_id, "batch": 1, "segments": segs}))
    return root


def test_load_manifest_refuses_a_model_id_that_is_a_path(tmp_path: Path) -> None:
    good = _segments_dir(tmp_path / "good", "tinynet-0123abcd")
    assert load_manifest(good).model_id == "tinynet-0123abcd"
    bad = _segments_dir(tmp_path / "bad", "../../evil")
    with pytest.raises(ArtefactError, match="model_id '../../evil' is not a plain name"):
        load_manifest(bad)


def test_load_manifest_still_refuses_file_names_that_are_paths(tmp_path: Path) -> None:
    d = _segments_dir(tmp_path / "seg", "m")
    man = json.loads((d / MANIFEST).read_text())
    man["segments"][0]["file"] = "../block_0.onnx"
    (d / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(ArtefactError, match="plain names"):
        load_manifest(d)


def test_profile_with_an_evil_manifest_writes_nothing_outside_profiles(
    tmp_path: Path, run_cli
) -> None:
    seg = _segments_dir(tmp_path / "seg", "../../evil")
    profiles = tmp_path / "a" / "b" / "profiles"
    before = _files(tmp_path)
    res = run_cli(
        "profile", "--onnx-dir", seg, "--device", "pixel6", "--modelled", "--profiles", profiles
    )
    assert res.exit_code == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "model_id" in res.stderr
    assert _files(tmp_path) == before
    assert not list(tmp_path.rglob("evil*"))


def _staged_dir(root: Path, stage_file: str) -> Path:
    root.mkdir(parents=True)
    (root / "manifest.json").write_text(
        json.dumps(
            {
                "policy": "max_softmax",
                "stages": [{"file": stage_file, "input_shape": [1, 1, 8, 8]}],
                "thresholds": [],
                "temperatures": [],
            }
        )
    )
    return root


@pytest.mark.parametrize("name", ["../x.onnx", "/tmp/x.onnx", "sub/x.onnx", "..", "", None])
def test_staged_runtime_refuses_a_stage_file_outside_the_export(
    tmp_path: Path, name: str | None
) -> None:
    pytest.importorskip("onnxruntime")
    from hapi_dse.deploy.staged_runtime import StagedModel

    (tmp_path / "x.onnx").write_bytes(b"")  # what ../x.onnx would reach
    d = _staged_dir(tmp_path / "export", name)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="is not a plain file name inside") as e:
        StagedModel(d)
    assert len(str(e.value).splitlines()) == 1
