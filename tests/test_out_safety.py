"""``--out`` never deletes what hapi did not write (train, search, staged export).

A non-empty target that is not hapi's own output of the same kind is refused with one stderr
line and exit status 2, leaving the disk as it was; hapi's own output is replaced only with
``--overwrite``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from hapi_dse.errors import UsageError
from hapi_dse.outdirs import atomic_dir, check_out_dir
from hapi_dse.testing import SyntheticSetup, quick_train_args
from hapi_dse.testing.files import tree_snapshot as snapshot


def one_line_exit_2(res, *needles: str) -> None:
    assert res.exit_code == 2, (res.stdout, res.stderr)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


# -- the check itself ------------------------------------------------------------------------


def test_empty_or_missing_target_is_fine(tmp_path: Path) -> None:
    check_out_dir(tmp_path / "missing", "run")
    (tmp_path / "empty").mkdir()
    check_out_dir(tmp_path / "empty", "search")


KINDS = {
    "run": ["model.json", "weights.pt", "exits_val.npz", "exits_test.npz", "train.json"],
    "search": ["trials.csv", "pareto.csv", "search.json", "verify/report.json"],
    "staged-export": ["manifest.json", "stage_0.onnx", "stage_1.onnx", "export.json"],
}


def _fill(d: Path, names: list[str]) -> None:
    for n in names:
        (d / n).parent.mkdir(parents=True, exist_ok=True)
        (d / n).write_text("x")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_own_output_is_proven_by_its_manifest(tmp_path: Path, kind: str) -> None:
    """What atomic_dir wrote is replaced with --overwrite; the same files edited, or joined
    by a foreign one, or recorded as another kind, are refused, naming the first such file."""
    d = tmp_path / "d"
    with atomic_dir(d, kind=kind) as tmp:
        _fill(tmp, KINDS[kind])
    with pytest.raises(UsageError, match="pass --overwrite"):
        check_out_dir(d, kind)
    check_out_dir(d, kind, overwrite=True)
    other = "search" if kind != "search" else "run"
    with pytest.raises(UsageError, match="hapi never deletes what it did not write"):
        check_out_dir(d, other, overwrite=True)
    (d / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"notes.txt \(hapi did not write it\)"):
        check_out_dir(d, kind, overwrite=True)
    (d / "notes.txt").unlink()
    edited = KINDS[kind][-1]
    (d / edited).write_text("edited by hand")
    with pytest.raises(UsageError, match=rf"{edited} \(changed since hapi wrote it\)"):
        check_out_dir(d, kind, overwrite=True)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_hapi_file_names_alone_prove_nothing(tmp_path: Path, kind: str) -> None:
    """A folder that merely uses hapi's file names (a site's manifest.json, a foreign
    model.json and weights.pt) is never replaced, not even with --overwrite."""
    d = tmp_path / "d"
    d.mkdir()
    _fill(d, KINDS[kind])
    before = snapshot(d)
    for overwrite in (False, True):
        with pytest.raises(UsageError, match=r"no \.hapi_files\.json lists it"):
            check_out_dir(d, kind, overwrite=overwrite)
    (d / ".hapi_files.json").write_text('{"kind": "run", "files": []}')  # not hapi's
    with pytest.raises(UsageError, match="never deletes"):
        check_out_dir(d, kind, overwrite=True)
    (d / ".hapi_files.json").unlink()
    assert snapshot(d) == before


def test_file_and_symlink_targets_are_refused(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("mine")
    target = tmp_path / "real"
    target.mkdir()
    link = tmp_path / "link"
    link.symlink_to(target)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    for p in (f, link, dangling):
        with pytest.raises(UsageError, match="never deletes"):
            check_out_dir(p, "run", overwrite=True)


def test_atomic_dir_checks_again_before_the_swap(tmp_path: Path) -> None:
    dest = tmp_path / "out"
    with atomic_dir(dest, kind="search") as d:
        (d / "search.json").write_text("{}")
    before = snapshot(dest)
    with (
        pytest.raises(UsageError, match="mine.txt"),
        atomic_dir(dest, kind="search", overwrite=True) as d,
    ):
        (d / "search.json").write_text("new")
        (dest / "mine.txt").write_text("added while the command ran")
    assert (dest / "mine.txt").read_text() == "added while the command ran"
    assert (dest / "search.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no scratch left
    assert set(before) < set(snapshot(dest))


# -- hapi train ------------------------------------------------------------------------------


def test_train_refuses_a_foreign_directory_before_training(
    run_cli, tmp_path: Path, no_training
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    before = snapshot(out)
    t = time.perf_counter()
    res = run_cli(*quick_train_args(out, "--overwrite"))
    assert time.perf_counter() - t < 5
    one_line_exit_2(res, str(out), "thesis.tex", "never deletes")
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_train_refuses_a_file_or_symlink(run_cli, tmp_path: Path, no_training, what: str) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "data.txt").write_text("mine")
    out = tmp_path / "out"
    if what == "file":
        out.write_text("mine")
    else:
        out.symlink_to(real)
    before = snapshot(tmp_path)
    res = run_cli(*quick_train_args(out, "--overwrite"))
    assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert snapshot(tmp_path) == before


def test_train_replaces_a_previous_run_only_with_overwrite(
    run_cli, tmp_path: Path, tiny_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    shutil.copytree(tiny_run, out)
    before = snapshot(out)
    with monkeypatch.context() as m:
        m.setattr(
            "hapi_dse.training.trainer.load_splits",
            lambda *a, **k: pytest.fail("training started before --out was checked"),
        )
        res = run_cli(*quick_train_args(out))
    one_line_exit_2(res, str(out), "previous training run", "--overwrite")
    assert snapshot(out) == before
    res = run_cli(*quick_train_args(out, "--overwrite"))
    assert res.exit_code == 0, res.stderr
    after = snapshot(out)
    assert set(after) == set(before) and after != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


# -- hapi search -----------------------------------------------------------------------------


def search(run_cli, synth: SyntheticSetup, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(*synth.search_args(out, *extra, trials=20))


def test_search_keeps_a_users_file_in_the_device_folder(
    run_cli, synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "devA").mkdir()
    (tmp_path / "devA" / "model.onnx").write_bytes(b"an exported model")
    before = snapshot(tmp_path)
    monkeypatch.setattr("hapi_dse.search.runner.run_study", lambda *a, **k: pytest.fail("searched"))
    for extra in ((), ("--overwrite",)):
        res = search(run_cli, synth, tmp_path, *extra)
        one_line_exit_2(res, str(tmp_path / "devA"), "model.onnx", "never deletes")
        assert snapshot(tmp_path) == before


def test_search_replaces_its_previous_result_only_with_overwrite(
    run_cli, synth, tmp_path: Path
) -> None:
    assert search(run_cli, synth, tmp_path).exit_code == 0
    first = (tmp_path / "devA" / "search.json").stat().st_ino  # tell the runs apart
    before = snapshot(tmp_path)
    res = search(run_cli, synth, tmp_path)
    one_line_exit_2(res, str(tmp_path / "devA"), "previous search result", "--overwrite")
    assert snapshot(tmp_path) == before
    res = search(run_cli, synth, tmp_path, "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert (tmp_path / "devA" / "search.json").stat().st_ino != first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devA"]
    # a file the user adds to a previous result is never deleted, --overwrite or not
    (tmp_path / "devA" / "notes.md").write_text("mine")
    before = snapshot(tmp_path)
    one_line_exit_2(search(run_cli, synth, tmp_path, "--overwrite"), "notes.md")
    assert snapshot(tmp_path) == before
    # nor is a file of the result that the user edited
    (tmp_path / "devA" / "notes.md").unlink()
    (tmp_path / "devA" / "search.json").write_text("{}")
    before = snapshot(tmp_path)
    res = search(run_cli, synth, tmp_path, "--overwrite")
    one_line_exit_2(res, "search.json (changed since hapi wrote it)")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("what", ["file", "symlink"])
def test_search_refuses_a_file_or_symlink_device_folder(
    run_cli, synth, tmp_path: Path, what: str
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    real = tmp_path / "real"
    real.mkdir()
    (real / "trials.csv").write_text("mine")
    if what == "file":
        (out / "devA").write_text("mine")
    else:
        (out / "devA").symlink_to(real)
    before = snapshot(tmp_path)
    one_line_exit_2(search(run_cli, synth, out, "--overwrite"), "never deletes")
    assert snapshot(tmp_path) == before


# -- hapi export --format staged -------------------------------------------------------------


def staged(run_cli, tiny_run: Path, design: Path, out: Path, *extra: str):
    return run_cli(
        "export",
        design,
        "--model",
        tiny_run,
        "--format",
        "staged",
        "--out",
        out,
        "--check-samples",
        "32",
        *extra,
    )


def test_staged_export_keeps_a_users_files(
    run_cli, tiny_run: Path, tmp_path: Path, write_design
) -> None:
    design = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.6)])
    out = tmp_path / "deploy"
    out.mkdir()
    (out / "app.py").write_text("the user's app")
    before = snapshot(tmp_path)
    one_line_exit_2(
        staged(run_cli, tiny_run, design, out, "--overwrite"), str(out), "app.py", "never deletes"
    )
    assert snapshot(tmp_path) == before
    link = tmp_path / "link"
    link.symlink_to(out)
    one_line_exit_2(staged(run_cli, tiny_run, design, link, "--overwrite"), "symbolic link")
    assert snapshot(tmp_path)["deploy/app.py"] == before["deploy/app.py"]


def test_staged_export_replaces_its_previous_export_only_with_overwrite(
    run_cli, tiny_run: Path, tmp_path: Path, write_design
) -> None:
    from hapi_dse.deploy.load import load_runtime

    design = write_design(tiny_run, tmp_path / "d.json", [(1, "linear", 0.6)])
    out = tmp_path / "staged"
    res = staged(run_cli, tiny_run, design, out)
    assert res.exit_code == 0, res.stderr
    load_runtime(out)  # as 'hapi eval' does: may leave __pycache__ behind
    before = snapshot(tmp_path)
    res = staged(run_cli, tiny_run, design, out)
    one_line_exit_2(res, str(out), "previous staged export", "--overwrite")
    assert snapshot(tmp_path) == before
    res = staged(run_cli, tiny_run, design, out, "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert (out / "manifest.json").is_file() and (out / "export.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "staged"]
