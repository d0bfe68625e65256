"""What a hapi killed by SIGKILL leaves in temp directories is swept by the next run: the
network ``hapi export`` exports, the segments of ``hapi profile`` (issue #22, class 12)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hapi_dse.atomic import _HOST
from hapi_dse.tempdirs import LEGACY_AGE_S, make_temp_dir, sweep_temp_dirs, temp_dir

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pids, SIGKILL")


def dead_pid() -> int:
    """The pid of a process that has ended (and was reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftover(base: Path, prefix: str, pid: int, host: str = _HOST) -> Path:
    d = base / f"{prefix}{host}-{pid}-abc123_x"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "raw.onnx").write_bytes(b"half an export")
    return d


def test_only_the_dirs_of_gone_processes_of_this_host_are_swept(tmp_path: Path) -> None:
    prefix = ".hapi-export-"
    gone = leftover(tmp_path, prefix, dead_pid())
    mine = leftover(tmp_path, prefix, os.getpid())
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = leftover(tmp_path, prefix, sleeper.pid)
        elsewhere = leftover(tmp_path, prefix, dead_pid(), host="otherhost")
        other_kind = leftover(tmp_path, "hapi-segments-", dead_pid())
        foreign = tmp_path / f"{prefix}notes"  # not a name hapi makes
        foreign.mkdir()
        a_file = tmp_path / f"{prefix}{_HOST}-{dead_pid()}-abcdefgh"
        a_file.write_text("a file, not hapi's directory")
        assert sweep_temp_dirs(prefix, tmp_path) == [gone]
        assert not gone.exists()
        for kept in (mine, alive, elsewhere, other_kind, foreign, a_file):
            assert kept.exists(), kept
    finally:
        sleeper.kill()
        sleeper.wait()
    assert sweep_temp_dirs(prefix, tmp_path) == [alive]  # its process is gone now


def test_an_older_hapis_temp_dir_goes_once_long_untouched(tmp_path: Path) -> None:
    old = tmp_path / "hapi-segments-k2j4_9x0"  # tempfile's names, as an older hapi made them
    fresh = tmp_path / "hapi-segments-a1b2c3d4"
    for d in (old, fresh):
        (d / "x").mkdir(parents=True)
        (d / "x" / "block_0.onnx").write_bytes(b"")
    then = time.time() - LEGACY_AGE_S - 60
    for p in (old / "x" / "block_0.onnx", old / "x", old):
        os.utime(p, (then, then))
    assert sweep_temp_dirs("hapi-segments-", tmp_path) == [old]
    assert fresh.is_dir()


def test_a_new_temp_dir_sweeps_first_and_goes_on_leaving(tmp_path: Path) -> None:
    gone = leftover(tmp_path, "hapi-calib-", dead_pid())
    with temp_dir("hapi-calib-", tmp_path) as d:
        assert not gone.exists()
        assert d.name.startswith(f"hapi-calib-{_HOST}-{os.getpid()}-") and d.is_dir()
        (d / "f").write_text("x")
    assert not d.exists()
    kept = make_temp_dir("hapi-calib-", tmp_path)  # the caller's to remove
    assert kept.is_dir()


def test_profile_segments_left_in_the_temp_dir_are_swept(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    from hapi_dse.profiling.modes import ProfileConfig
    from hapi_dse.profiling.runner import _export_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = leftover(tmp_path, "hapi-segments-", dead_pid())
    with _export_dir(ProfileConfig(device="pixel6")) as d:
        assert d.parent == tmp_path and d.name.startswith(f"hapi-segments-{_HOST}-")
        assert not gone.exists()
    assert list(tmp_path.iterdir()) == []


def test_an_export_killed_by_sigkill_leaves_scratch_the_next_export_sweeps(
    tiny_run: Path, write_design, tmp_path: Path, run_cli, monkeypatch
) -> None:
    """``hapi export`` exports the network into a temp directory (``hapi-network-...``);
    one killed there leaves it, and the next export (the cache holds nothing of the killed
    one) removes it."""
    import tempfile

    design = write_design(tiny_run, tmp_path / "res" / "host" / "design.json", [(1, "linear", 0.6)])
    out = tmp_path / "out" / "m.onnx"
    out.parent.mkdir()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "TMPDIR": str(temp), "HAPI_CACHE_DIR": str(tmp_path / "cache")}
    args = ["export", str(design.parent), "--model", str(tiny_run), "--out", str(out)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "hapi_dse", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not list(temp.glob("hapi-network-*")) and proc.returncode is None:
            assert time.monotonic() < deadline, "the export never made its temp directory"
            time.sleep(0.01)
            proc.poll()
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it may end just now
                os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    left = list(temp.glob("hapi-network-*"))
    if proc.returncode != -signal.SIGKILL or not left:
        pytest.skip("the export ended before it could be killed in its temp phase")
    assert left[0].name.startswith(f"hapi-network-{_HOST}-{proc.pid}-")
    from hapi_dse.onnx_tools import network

    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    monkeypatch.setenv("HAPI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(network, "_MEMO", {})  # not a network this process exported before
    res = run_cli(*args)
    assert res.exit_code == 0, res.stderr
    assert out.is_file()
    assert list(temp.iterdir()) == []
