"""Faults of the place hapi writes to: read-only, full, swapped under it, shared, ``.``.

Every command that writes refuses a read-only or full ``--out`` with one stderr line and exit
status 2 before its long work, a write that fails midway (the disk fills up) changes nothing
that was there and leaves no temp file, an ``OUT/DEVICE`` that turns into a file or a link is
refused, what a killed hapi left beside its output is taken over, concurrent writers of one
``--out`` each swap in a whole directory, and ``--out .`` is refused before training.

The read-only and full file systems are small tmpfs mounts (root and mount permission
needed; the tests that need one are skipped with the reason otherwise).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_out_safety import one_line_exit_2, search

from hapi_dse.atomic import _HOST, WriteError, atomic_path, write_text
from hapi_dse.errors import UsageError
from hapi_dse.outdirs import atomic_dir, check_out_dir, check_writable
from hapi_dse.ownership import MANIFEST, owned_kind
from hapi_dse.testing import SyntheticSetup, quick_train_args
from hapi_dse.testing.files import tree_snapshot as snapshot

HAPI = [sys.executable, "-m", "hapi_dse"]


# -- small file systems ------------------------------------------------------------------------
def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False)


@contextlib.contextmanager
def tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    """A fresh tmpfs of ``size`` mounted at ``where`` (skips the test where that is refused)."""
    if os.name != "posix" or os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root and mount(8)")
    where.mkdir(parents=True, exist_ok=True)
    res = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where))
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {res.stderr.strip() or res.returncode}")
    try:
        yield where
    finally:
        if _run("umount", str(where)).returncode != 0:
            _run("umount", "-l", str(where))


def read_only(where: Path) -> None:
    res = _run("mount", "-o", "remount,ro", str(where))
    if res.returncode != 0:
        pytest.skip(f"cannot remount the tmpfs read-only: {res.stderr.strip()}")


def fill(where: Path, leave: int = 0) -> None:
    """Fill the file system of ``where`` up to ``leave`` free bytes (0: full)."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    with contextlib.suppress(OSError), open(where / "filler", "wb") as f:
        f.write(b"\0" * (free - leave if leave else free + 65536))
    st = os.statvfs(where)
    assert st.f_bavail * st.f_frsize == leave


def no_scratch(root: Path) -> list[str]:
    """hapi's temp files and probes under ``root`` (there must be none)."""
    return [str(p) for p in root.rglob(".*") if ".hapi-" in p.name or p.name.endswith(".tmp")]


def assert_no_traceback(text: str) -> None:
    assert "Traceback" not in text, text


def one_error_line_exit_2(res, *needles: str) -> None:
    """Exit status 2 and one error line (after a command's own progress log, if any)."""
    assert res.exit_code == 2, (res.stdout, res.stderr)
    assert_no_traceback(res.stderr)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("hapi: error: ")]
    assert len(errors) == 1 and res.stderr.strip().splitlines()[-1] == errors[0], res.stderr
    for n in needles:
        assert n in errors[0], errors[0]


# -- the mechanism -------------------------------------------------------------------------
def test_check_writable_refuses_a_read_only_or_full_place(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs") as fs:
        (fs / "kept").write_text("mine")
        fill(fs)
        with pytest.raises(WriteError, match=r"--out .*no space left on device.*free some"):
            check_writable(fs / "new" / "run")
        (fs / "filler").unlink()
        read_only(fs)
        with pytest.raises(WriteError, match=r"cannot write in .*fs \(read-only file system\)"):
            check_writable(fs / "new" / "run")
        with pytest.raises(WriteError, match="read-only"):
            check_out_dir(fs / "run", "run")
        assert sorted(p.name for p in fs.iterdir()) == ["kept"]
    f = tmp_path / "file"
    f.write_text("mine")
    with pytest.raises(UsageError, match="is not a directory"):
        check_writable(f / "sub" / "run")
    check_writable(tmp_path / "a" / "b" / "c")  # missing parents are fine
    assert not (tmp_path / "a").exists()


def test_a_full_disk_midway_changes_nothing_and_leaves_no_temp_file(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "fs", size="1m") as fs:
        write_text(fs / "table.csv", "old\n")
        with atomic_dir(fs / "out", kind="search") as d:
            (d / "search.json").write_text("{}")
        before = snapshot(fs)
        fill(fs, leave=16 * 1024)
        before_fill = {k: v for k, v in snapshot(fs).items() if k != "filler"}
        assert before_fill == before
        big = "x" * 200_000
        with pytest.raises(WriteError, match=r"table.csv \(no space left on device\)"):
            write_text(fs / "table.csv", big)
        with pytest.raises(WriteError, match=r"cannot write in|no space left"):
            write_text(fs / "new" / "deep" / "table.csv", big)
        with (
            pytest.raises(WriteError, match=r"--out .*out: cannot write it \(no space left"),
            atomic_dir(fs / "out", kind="search", overwrite=True) as d,
        ):
            (d / "search.json").write_text(big)
        # a C++ writer that reports the full disk as a RuntimeError (torch.save does)
        with (
            pytest.raises(WriteError, match="no space left"),
            atomic_dir(fs / "out", kind="search", overwrite=True) as d,
        ):
            with contextlib.suppress(OSError), open(d / "trials.csv", "w") as f:
                f.write(big)
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")
        after = {k: v for k, v in snapshot(fs).items() if k != "filler"}
        assert after == before  # the old table, the old result, no new directory
        assert no_scratch(fs) == []
    # a plain bug is not a full disk: it keeps its traceback
    with pytest.raises(RuntimeError, match="a bug"), atomic_dir(tmp_path / "o") as d:
        raise RuntimeError("a bug")


def test_atomic_path_maps_a_path_through_a_file(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("mine")
    with pytest.raises(WriteError, match="not a directory"):
        write_text(tmp_path / "f" / "x.json", "{}")
    (tmp_path / "d.json").mkdir()
    with pytest.raises(WriteError, match="is a directory"), atomic_path(tmp_path / "d.json") as t:
        t.write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.json", "f"]


# -- every command, read-only and full ----------------------------------------------------------
@pytest.fixture(scope="module")
def result_dir(synth: SyntheticSetup, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hapi_dse.search import SearchConfig, run_search

    out = tmp_path_factory.mktemp("faults-result")
    cfg = SearchConfig(
        model=str(synth.run),
        profiles=str(synth.profiles),
        devices=("devA",),
        trials=20,
        out=out,
    )
    run_search(cfg)
    return out / "devA"


def _commands(
    name: str,
    fs: Path,
    synth: SyntheticSetup,
    tiny_run: Path,
    exported: Path,
    result: Path,
    write_design,
) -> list[object]:
    design = write_design(tiny_run, fs.parent / "d.json", [(1, "linear", 0.6)])
    return {
        "train": quick_train_args(fs / "run"),
        "search": synth.search_args(fs / "res", trials=20),
        "export-onnx": ["export", design, "--model", tiny_run, "--out", fs / "m.onnx"],
        "export-staged": [
            *("export", design, "--model", tiny_run, "--format", "staged"),
            *("--out", fs / "staged"),
        ],
        "eval": ["eval", exported, "--model", tiny_run, "--limit", "8", "--out", fs / "e.json"],
        "profile": [
            *("profile", "--device", "pixel6", "--modelled", "--model", tiny_run),
            *("--profiles", fs / "profiles"),
        ],
        "profile-export-dir": [
            *("profile", "--device", "host", "--model", tiny_run, "--export-only"),
            *("--export-dir", fs / "segments"),
        ],
        "plot": ["plot", result, "--out", fs / "p.png", "--no-references"],
    }[name]


COMMANDS = [
    "train",
    "search",
    "export-onnx",
    "export-staged",
    "eval",
    "profile",
    "profile-export-dir",
    "plot",
]


@pytest.mark.parametrize("fault", ["read-only", "full"])
@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_refuses_a_read_only_or_full_out_before_its_work(
    run_cli,
    tmp_path: Path,
    synth,
    tiny_run: Path,
    shared_export,
    write_design,
    result_dir: Path,
    no_training,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    fault: str,
) -> None:
    exported = shared_export["out"]

    def boom(*a, **k):
        raise AssertionError("the long work started before --out was checked")

    for target in (
        "hapi_dse.search.runner.run_study",
        "hapi_dse.deploy.export.load_samples",
        "hapi_dse.deploy.evaluate_export",
        "hapi_dse.profiling.runner._export",
    ):
        monkeypatch.setattr(target, boom)
    with tmpfs(tmp_path / "fs") as fs:
        (fs / "kept.txt").write_text("mine")
        if fault == "read-only":
            read_only(fs)
        else:
            fill(fs)
        before = snapshot(fs)
        res = run_cli(*_commands(name, fs, synth, tiny_run, exported, result_dir, write_design))
        assert_no_traceback(res.stderr)
        reason = "read-only file system" if fault == "read-only" else "no space left on device"
        one_line_exit_2(res, reason)
        assert snapshot(fs) == before


def test_a_full_disk_after_training_leaves_nothing_behind(run_cli, tmp_path: Path) -> None:
    """Room for the probe but not for weights.pt: torch.save fails; one line, nothing kept."""
    with tmpfs(tmp_path / "fs", size="1m") as fs:
        fill(fs, leave=96 * 1024)
        before = snapshot(fs)
        res = run_cli(*quick_train_args(fs / "runs" / "quick"))
        one_error_line_exit_2(res, str(fs / "runs" / "quick"), "no space left on device")
        assert snapshot(fs) == before  # no run, no runs/, no temp directory


def test_a_full_disk_during_a_search_keeps_the_previous_result(
    run_cli, tmp_path: Path, synth
) -> None:
    with tmpfs(tmp_path / "fs", size="1m") as fs:
        assert search(run_cli, synth, fs).exit_code == 0
        fill(fs, leave=8 * 1024)  # the probe fits, 300 trials do not
        before = snapshot(fs)
        res = search(run_cli, synth, fs, "--overwrite", "--trials", "300")
        assert_no_traceback(res.stderr)
        one_line_exit_2(res, str(fs / "devA"), "no space left on device")
        assert snapshot(fs) == before
        assert all(p.stat().st_size > 0 for p in (fs / "devA").iterdir())  # no 0-byte file


# -- OUT/DEVICE swapped under hapi ------------------------------------------------------------
@pytest.mark.parametrize("what", ["file", "symlink", "foreign"])
def test_a_device_folder_that_changes_during_the_search_is_refused_at_the_swap(
    run_cli, synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    from hapi_dse.search import runner

    out = tmp_path / "out"
    real = tmp_path / "real"
    real.mkdir()
    run_study = runner.run_study

    def meanwhile(*a, **k):  # the user makes OUT/devA while the search runs
        out.mkdir(exist_ok=True)
        if what == "file":
            (out / "devA").write_text("mine")
        elif what == "symlink":
            (out / "devA").symlink_to(real)
        else:
            (out / "devA").mkdir()
            (out / "devA" / "notes.md").write_text("mine")
        return run_study(*a, **k)

    monkeypatch.setattr(runner, "run_study", meanwhile)
    res = search(run_cli, synth, out, "--overwrite")
    assert_no_traceback(res.stderr)
    one_line_exit_2(res, str(out / "devA"))
    assert sorted(p.name for p in out.iterdir()) == ["devA"]  # no scratch beside it
    assert list(real.iterdir()) == []  # nothing written through the link


@pytest.mark.parametrize("what", ["file", "broken link"])
def test_out_through_a_file_or_broken_link_is_refused_before_the_work(
    run_cli, synth, tmp_path: Path, no_training, monkeypatch: pytest.MonkeyPatch, what: str
) -> None:
    monkeypatch.setattr("hapi_dse.search.runner.run_study", lambda *a, **k: pytest.fail("ran"))
    runs = tmp_path / "runs"
    if what == "file":
        runs.write_text("mine")
    else:
        runs.symlink_to(tmp_path / "gone" / "runs")
    before = snapshot(tmp_path)
    res = run_cli(*quick_train_args(runs / "quick"))
    one_line_exit_2(res, f"{runs} is", "choose another --out")
    if what == "broken link":  # hapi search accepts an --out that does not exist
        one_line_exit_2(search(run_cli, synth, runs), f"{runs} is a broken symbolic link")
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "gone").exists()  # never made through the link


# -- what a killed hapi left ------------------------------------------------------------------
def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_stale_scratch_of_a_killed_search_is_taken_over(run_cli, synth, tmp_path: Path) -> None:
    assert search(run_cli, synth, tmp_path).exit_code == 0
    previous = snapshot(tmp_path / "devA")
    pid = _dead_pid()
    # killed between the two renames of the swap: the result is aside, a new one half-written
    os.rename(tmp_path / "devA", tmp_path / f".devA.hapi-{_HOST}-{pid}.abc123xy.old")
    half = tmp_path / f".devA.hapi-{_HOST}-{pid}.zz99aa00.tmp"
    half.mkdir()
    (half / "trials.csv").write_text("trial,acc\n0,")
    # a legacy name, and a live process's scratch: never touched
    (tmp_path / ".devA.old").mkdir()
    (tmp_path / ".devA.old" / "search.json").write_text("{}")
    live = tmp_path / f".devA.hapi-{_HOST}-{os.getpid()}.live0000.tmp"
    live.mkdir()
    res = search(run_cli, synth, tmp_path)  # no --overwrite: the previous result is back
    one_error_line_exit_2(res, "holds a previous search result")
    assert "put back the previous output" in res.stderr
    assert snapshot(tmp_path / "devA") == previous
    assert {p.name for p in tmp_path.iterdir()} == {".devA.old", live.name, "devA"}
    res = search(run_cli, synth, tmp_path, "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert {p.name for p in tmp_path.iterdir()} == {".devA.old", live.name, "devA"}


KILLED_IN_THE_SWAP = """
import os, sys
from pathlib import Path
from hapi_dse import outdirs

rename = os.rename
def rename_then_die(a, b):
    rename(a, b)
    if str(b).endswith(".old"):
        os._exit(9)  # killed between moving the old result aside and moving the new one in
outdirs.os.rename = rename_then_die
with outdirs.atomic_dir(Path(sys.argv[1]), kind="search", overwrite=True) as d:
    (d / "search.json").write_text("new")
"""


def test_a_search_killed_in_the_middle_of_the_swap_loses_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "devA"
    with atomic_dir(dest, kind="search") as d:
        (d / "search.json").write_text("old")
        (d / "trials.csv").write_text("t")
    before = snapshot(dest)
    res = subprocess.run([sys.executable, "-c", KILLED_IN_THE_SWAP, str(dest)], check=False)
    assert res.returncode == 9
    assert not dest.exists()  # the crash window: the result is aside
    with pytest.raises(UsageError, match="holds a previous search result"):
        check_out_dir(dest, "search")  # the next run puts it back first
    assert snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devA"]


# -- concurrent writers -----------------------------------------------------------------------
@pytest.mark.parametrize("overwrite", [False, True])
def test_ten_concurrent_searches_into_one_out(synth, tmp_path: Path, overwrite: bool) -> None:
    out = tmp_path / "out"
    cmd = [*HAPI, *synth.search_args(out, *(["--overwrite"] if overwrite else []), trials=20)]
    env = {**os.environ, "HAPI_NO_PROGRESS": "1"}
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        for _ in range(10)
    ]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]  # type: ignore[union-attr]
    for code, err in results:
        assert_no_traceback(err)
        assert code in (0, 2), err
        if code == 2:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("hapi: error: "), err
            assert "pass --overwrite" in lines[0], err
    winners = sum(code == 0 for code, _ in results)
    assert winners == (10 if overwrite else 1), results
    assert sorted(p.name for p in out.iterdir()) == ["devA"]
    names = sorted(p.name for p in (out / "devA").iterdir())
    assert {"trials.csv", "pareto.csv", "search.json"} <= set(names), names
    json.loads((out / "devA" / "search.json").read_text())


def test_concurrent_swaps_always_leave_one_whole_directory(tmp_path: Path) -> None:
    """Threads racing through atomic_dir(overwrite=True): every swap succeeds or gives way,
    the result is always one writer's complete directory, no scratch is left."""
    dest = tmp_path / "devA"
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(25):
                with atomic_dir(dest, kind="search", overwrite=True) as d:
                    for name in ("trials.csv", "pareto.csv", "search.json"):
                        (d / name).write_text(f"{i}-{j}")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    files = [p for p in dest.iterdir() if p.name != MANIFEST]
    contents = {p.read_text() for p in files}
    assert len(contents) == 1 and len(files) == 3
    assert owned_kind(dest) == "search"  # the manifest is the same writer's
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devA"]


def test_a_file_changed_in_place_during_the_work_is_refused_at_the_swap(tmp_path: Path) -> None:
    """atomic_dir looks at hapi's files by name and size before and just before the swap;
    their hashes are checked after the previous output is moved aside: a file of the same
    size changed meanwhile is refused there and the previous output is put back."""
    dest = tmp_path / "devA"
    with atomic_dir(dest, kind="search") as d:
        (d / "trials.csv").write_text("aaaa")
    changed = r"trials.csv \(changed since hapi wrote it\)"
    with (
        pytest.raises(UsageError, match=changed),
        atomic_dir(dest, kind="search", overwrite=True) as d,
    ):
        (dest / "trials.csv").write_text("bbbb")  # same size: only its hash tells
        (d / "trials.csv").write_text("new")
    assert (dest / "trials.csv").read_text() == "bbbb"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devA"]


SWAPPER = """
import sys
from pathlib import Path
from hapi_dse.outdirs import atomic_dir

dest, me = Path(sys.argv[1]), sys.argv[2]
for j in range(40):
    with atomic_dir(dest, kind="search", overwrite=True) as d:
        for name in ("trials.csv", "pareto.csv", "search.json"):
            (d / name).write_text(f"{me}-{j}")
"""


def test_concurrent_processes_swapping_one_directory(tmp_path: Path) -> None:
    dest = tmp_path / "devA"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SWAPPER, str(dest), str(i)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(6)
    ]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()  # type: ignore[union-attr]
    contents = {p.read_text() for p in dest.iterdir() if p.name != MANIFEST}
    assert len(contents) == 1 and contents.pop().endswith("-39")
    assert owned_kind(dest) == "search"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["devA"]


# -- --out . and .. -----------------------------------------------------------------------------
@pytest.mark.parametrize("out", [".", "..", "./", "sub/.."])
def test_train_refuses_the_current_directory_before_training(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_training, out: str
) -> None:
    here = tmp_path / "work" / "here"
    (here / "sub").mkdir(parents=True)
    monkeypatch.chdir(here)
    before = snapshot(tmp_path)
    res = run_cli(*quick_train_args(out))
    one_line_exit_2(res, f"--out {Path(out)}", "current", "name a new directory")
    assert snapshot(tmp_path) == before


def test_search_refuses_the_current_directory_as_out(
    run_cli, synth, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out .`` (and ``..`` from inside a result, where OUT/DEVICE would be the current
    directory) is refused, as for every command (#22 class 3)."""
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    one_line_exit_2(search(run_cli, synth, Path(".")), "is the current directory")
    assert snapshot(tmp_path) == before
    (tmp_path / "devA").mkdir()
    monkeypatch.chdir(tmp_path / "devA")
    before = snapshot(tmp_path)
    res = search(run_cli, synth, Path(".."), "--overwrite")
    one_line_exit_2(res, "above the current one")
    assert snapshot(tmp_path) == before
