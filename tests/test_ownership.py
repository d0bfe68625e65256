"""Ownership hapi can prove (#22 classes 1, 2 and 10).

A folder output is replaced only when its manifest lists every file in it, unchanged; a
single output file is never one of the command's inputs, a special file or a file of a
folder output, and is replaced without ``--overwrite`` only when hapi wrote it. The checks
run before the work, with the names the work will use.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from hapi_dse.ownership import MANIFEST, owned_kind
from hapi_dse.testing import write_synthetic_setup
from hapi_dse.testing.files import tree_snapshot as snapshot


def refused(res, *needles: str) -> str:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def no_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if an export, a measurement or training starts."""

    def boom(*a, **k):
        raise AssertionError("the work started before --out was checked")

    monkeypatch.setattr("hapi_dse.deploy.export.CheckedDesign.prepare", boom)
    monkeypatch.setattr("hapi_dse.deploy.evaluate.evaluate_export", boom)
    monkeypatch.setattr("hapi_dse.training.trainer.load_splits", boom)


# -- class 1: a folder counts as hapi's by its manifest, not by its file names ------------------
def test_staged_export_keeps_a_sites_manifest_json(
    run_cli, tiny_run: Path, tmp_path: Path, write_design, no_work
) -> None:
    design = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.6)])
    site = tmp_path / "site"
    site.mkdir()
    (site / "manifest.json").write_text('{"name": "app"}')
    before = snapshot(tmp_path)
    res = run_cli(
        "export", design, "--model", tiny_run, "--format", "staged", "--out", site, "--overwrite"
    )
    refused(res, "manifest.json", MANIFEST)
    assert snapshot(tmp_path) == before


def test_train_keeps_a_foreign_model_json_and_weights(run_cli, tmp_path: Path, no_work) -> None:
    out = tmp_path / "x"
    out.mkdir()
    (out / "model.json").write_text('{"model_id": "theirs"}')
    (out / "weights.pt").write_bytes(b"their weights")
    before = snapshot(tmp_path)
    res = run_cli(
        "train", "--dataset", "digits", "--backbone", "resnet20", "--out", out, "--overwrite"
    )
    refused(res, "model.json", "never deletes")
    assert snapshot(tmp_path) == before


def test_search_keeps_a_foreign_search_json_and_what_is_beside_it(run_cli, tmp_path: Path) -> None:
    synth = write_synthetic_setup(tmp_path, n_val=100, n_test=100)
    out = tmp_path / "out"
    (out / "devA").mkdir(parents=True)
    (out / "devA" / "search.json").write_text("{}")
    (out / "devA" / "paper.tex").write_text("years of work")
    before = snapshot(out)
    res = run_cli(*synth.search_args(out, "--overwrite", trials=10))
    refused(res, "never deletes")
    assert snapshot(out) == before
    # hapi's own result is proven by its manifest, and replaced
    shutil.rmtree(out / "devA")
    args = synth.search_args(out, trials=10)
    assert run_cli(*args).exit_code == 0
    assert owned_kind(out / "devA") == "search"
    manifest = json.loads((out / "devA" / MANIFEST).read_text())
    assert {"trials.csv", "search.json"} <= set(manifest["files"])
    assert run_cli(*args, "--overwrite").exit_code == 0


def test_a_run_and_a_staged_export_carry_their_manifest(
    run_cli, tiny_run: Path, tmp_path: Path, write_design
) -> None:
    assert owned_kind(tiny_run) == "run"
    design = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.6)])
    out = tmp_path / "staged"
    args = ["export", design, "--model", tiny_run, "--format", "staged", "--out", out]
    assert run_cli(*args, "--check-samples", "16").exit_code == 0
    assert owned_kind(out) == "staged-export"  # export.json, written after the swap, too
    assert run_cli("eval", out, "--limit", "8", "--passes", "1", "--warmup", "0").exit_code == 0
    assert owned_kind(out) == "staged-export"  # and the eval.json 'hapi eval DIR' wrote
    res = run_cli(*args, "--check-samples", "16", "--overwrite")
    assert res.exit_code == 0, res.stderr


# -- class 2: one rule for single-file outputs --------------------------------------------------
def test_eval_refuses_to_write_over_its_own_model(
    run_cli, shared_export: dict, tmp_path: Path, no_work
) -> None:
    model = tmp_path / "m.onnx"
    shutil.copy(shared_export["out"], model)
    shutil.copy(shared_export["out"].with_suffix(".export.json"), tmp_path / "m.export.json")
    before = snapshot(tmp_path)
    for extra in ((), ("--overwrite",)):
        refused(run_cli("eval", model, "--out", model, *extra), "input of this command")
    assert snapshot(tmp_path) == before


def test_eval_refuses_a_file_of_a_run(
    run_cli, shared_export: dict, tiny_run: Path, tmp_path: Path, no_work
) -> None:
    """A run with a manifest: its files are replaced only as a whole. An older run without
    one: its files are inputs when it is the run the command reads."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = snapshot(tmp_path)
    res = run_cli("eval", shared_export["out"], "--out", run / "model.json", "--overwrite")
    refused(res, "is a file of the training run")
    assert snapshot(tmp_path) == before
    (run / MANIFEST).unlink()
    before = snapshot(tmp_path)
    res = run_cli(
        "eval", shared_export["out"], "--model", run, "--out", run / "model.json", "--overwrite"
    )
    refused(res, "input of this command")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("special", ["fifo", "dir", "symlink"])
def test_special_files_are_never_replaced(
    run_cli, shared_export: dict, tmp_path: Path, special: str, no_work
) -> None:
    target = tmp_path / "report.json"
    if special == "fifo":
        os.mkfifo(target)
    elif special == "dir":
        target.mkdir()
    else:
        (tmp_path / "real.json").write_text("mine")
        target.symlink_to(tmp_path / "real.json")
    before = snapshot(tmp_path)
    res = run_cli("eval", shared_export["out"], "--out", target, "--overwrite")
    refused(res, str(target))
    assert snapshot(tmp_path) == before
    if special == "fifo":
        assert not target.is_file() and target.exists()


def test_foreign_single_files_need_overwrite(
    run_cli, shared_export: dict, tmp_path: Path, write_design, tiny_run: Path
) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_bytes(b"my own notes")
    design = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.6)])
    before = snapshot(tmp_path)
    res = run_cli("export", design, "--model", tiny_run, "--out", notes, "--check-samples", "16")
    refused(res, "hapi did not write it", "--overwrite")
    assert snapshot(tmp_path) == before
    res = run_cli(
        "export", design, "--model", tiny_run, "--out", notes, "--check-samples", "16",
        "--overwrite",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    # now hapi's own: replaced without --overwrite, as is its eval report
    res = run_cli("export", design, "--model", tiny_run, "--out", notes, "--check-samples", "16")
    assert res.exit_code == 0, res.stderr
    report = tmp_path / "r.json"
    report.write_text('{"mine": true}')
    ev = ("eval", notes, "--limit", "8", "--passes", "1", "--warmup", "0", "--out", report)
    refused(run_cli(*ev), "hapi did not write it")
    assert run_cli(*ev, "--overwrite").exit_code == 0
    assert run_cli(*ev).exit_code == 0  # its own report now


def test_plot_keeps_a_foreign_image_and_replaces_its_own(run_cli, tmp_path: Path) -> None:
    synth = write_synthetic_setup(tmp_path, n_val=100, n_test=100)
    out = tmp_path / "res"
    res = run_cli(*synth.search_args(out, trials=10))
    assert res.exit_code == 0, res.stderr
    fig = tmp_path / "fig.png"
    fig.write_bytes(b"\x89PNG my holiday")
    before = snapshot(tmp_path)
    plot = ("plot", out / "devA", "--out", fig, "--no-references")
    refused(run_cli(*plot), "hapi did not write it")
    assert snapshot(tmp_path) == before
    assert run_cli(*plot, "--overwrite").exit_code == 0
    side = json.loads((tmp_path / "fig.plot.json").read_text())
    assert side["image_sha256"] == hashlib.sha256(fig.read_bytes()).hexdigest()
    assert run_cli(*plot).exit_code == 0  # its own image now
    fig.write_bytes(b"\x89PNG edited by hand")  # no longer the image the sidecar records
    refused(run_cli(*plot), "hapi did not write it")


# -- class 10: the pre-check uses the names the work will use -----------------------------------
def test_a_long_output_name_is_written_not_refused_after_the_work(
    run_cli, shared_export: dict, tmp_path: Path
) -> None:
    """A 235-character name: the scratch file beside it would exceed 255 bytes with the name
    whole; it is shortened (with a hash), so the write succeeds."""
    report = tmp_path / ("m" * 235 + ".json")
    res = run_cli(
        "eval", shared_export["out"], "--limit", "8", "--passes", "1", "--warmup", "0",
        "--out", report,
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert json.loads(report.read_text())["provenance"]
    assert [p.name for p in tmp_path.iterdir()] == [report.name]


def test_a_name_too_long_for_the_file_system_is_refused_before_the_work(
    run_cli, shared_export: dict, tmp_path: Path, no_work
) -> None:
    report = tmp_path / ("m" * 300 + ".json")
    res = run_cli("eval", shared_export["out"], "--out", report)
    refused(res, "longer than the file system allows")


def test_profile_export_dir_is_a_folder_output_too(run_cli, tiny_run: Path, tmp_path: Path) -> None:
    """``--export-dir`` was written file by file over whatever was there; it is a folder
    output now: a foreign segments.json beside the user's files is never replaced."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "segments.json").write_text('{"mine": true}')
    (site / "a.onnx").write_bytes(b"my model")
    before = snapshot(tmp_path)
    for extra in ((), ("--force",)):
        res = run_cli("profile", "--model", tiny_run, "--export-only", "--export-dir", site, *extra)
        refused(res, "--export-dir", "a.onnx")
    assert snapshot(tmp_path) == before


def test_the_bundled_example_is_hapis_own_run() -> None:
    """'make example' retrains the bundled example in place with --overwrite: its manifest
    must list every file as it is committed."""
    from hapi_dse.run import bundled_example

    assert owned_kind(bundled_example()) == "run"


def test_profile_export_dir_is_replaced_only_with_its_own_flag(
    run_cli, tiny_run: Path, tmp_path: Path
) -> None:
    """A segment export is hapi's own folder output: exporting again is refused naming the
    flag that allows it (profile's --force, not --overwrite), and with it replaced; each
    success names the folder the segments are in, not the scratch directory they were
    built in."""
    site = tmp_path / "seg"
    argv = ("profile", "--model", tiny_run, "--export-only", "--export-dir", site)
    first = run_cli(*argv)
    assert first.exit_code == 0, first.stderr
    assert f"exported to {site};" in first.stdout
    again = run_cli(*argv)
    refused(again, "holds a previous segment export; pass --force to replace it")
    forced = run_cli(*argv, "--force")
    assert forced.exit_code == 0, forced.stderr
    assert f"exported to {site};" in forced.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg"]


@pytest.mark.parametrize("length", [8, 230])
def test_an_output_name_that_is_not_utf8_is_written(tmp_path: Path, length: int) -> None:
    """A name given as bytes that are not UTF-8 (Linux passes them to Python as surrogate
    escapes): its scratch name is built from the file system's bytes, short or shortened
    (the shortening encoded it as UTF-8 and raised UnicodeEncodeError, a traceback)."""
    import os

    from hapi_dse.atomic import write_json

    name = os.fsdecode(b"r\xff" + b"e" * (length - 7) + b".json")
    write_json(tmp_path / name, {"ok": True})
    assert json.loads((tmp_path / name).read_text()) == {"ok": True}
    assert os.listdir(os.fsencode(tmp_path)) == [os.fsencode(name)]


def test_only_the_runtimes_bytecode_may_be_added_to_a_staged_export(tmp_path: Path) -> None:
    from hapi_dse.ownership import examine, record

    out = tmp_path / "staged"
    out.mkdir()
    (out / "staged_runtime.py").write_text("x = 1\n")
    record(out, "staged-export")
    (out / "__pycache__").mkdir()
    (out / "__pycache__" / "staged_runtime.cpython-311.pyc").write_bytes(b"\0")
    assert examine(out).foreign is None
    shutil.rmtree(out / "__pycache__")
    (out / "__pycache__").write_bytes(b"\0")  # a file of that name is not Python's bytecode
    found = examine(out)
    assert found.kind == "staged-export"
    assert found.foreign == "__pycache__ (hapi did not write it)"
