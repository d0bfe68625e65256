"""A journal ``--storage`` that cannot be used is refused in one line before any search, and
nothing on disk changes (issue #22, class 7)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hapi_dse.testing import SyntheticSetup


def search_args(synth: SyntheticSetup, out: Path, storage: str) -> list[str]:
    return synth.search_args(out, "--storage", storage, trials=5)


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("storage", "why"),
    [
        ("journal:d.log", "'d.log' is a directory; name a file in it"),
        ("journal:", "names no journal file; expected journal:FILE"),
        ("journal:FILE/j.log", "'FILE' is a file, not a directory"),
        ("journal:FILE/sub/j.log", "'FILE' is a file, not a directory"),
        ("journal:d.log/", "names no journal file"),
    ],
)
def test_an_unusable_journal_path_is_refused_before_the_search(
    synth, run_cli, tmp_path: Path, monkeypatch, storage: str, why: str
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.log").mkdir()
    (tmp_path / "FILE").write_text("not a directory\n")
    before = listing(tmp_path)
    res = run_cli(*search_args(synth, tmp_path / "out", storage))
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hapi: error: --storage {storage!r}: ")
    assert why in lines[0]
    assert "Traceback" not in res.stderr
    assert listing(tmp_path) == before  # no search ran, no directory was made


def test_a_journal_that_is_not_a_regular_file_is_refused(synth, run_cli, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.log"
    os.mkfifo(fifo)
    res = run_cli(*search_args(synth, tmp_path / "out", f"journal:{fifo}"))
    assert res.exit_code == 2
    assert "is not a regular file" in res.stderr and len(res.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_a_journal_that_cannot_be_opened_is_one_line(
    synth, run_cli, tmp_path: Path, monkeypatch
) -> None:
    """A fault the checks cannot see (a race, a file system's refusal) while the journal is
    opened: one line, no traceback."""
    import errno

    from hapi_dse.search import storage

    def refuse(self, path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr(storage.JournalFile, "__init__", refuse)
    res = run_cli(*search_args(synth, tmp_path / "out", f"journal:{tmp_path / 'j.log'}"))
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [
        f"hapi: error: --storage 'journal:{tmp_path / 'j.log'}': cannot open the journal "
        "(Read-only file system)"
    ]


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or shutil.which("unshare") is None,
    reason="mounts a read-only file system in a user namespace",
)
def test_a_journal_on_a_read_only_file_system_is_refused(synth, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    (ro / "sub").mkdir(parents=True)
    (ro / "sub" / "old.log").write_text("")
    script = f'mount --bind -o ro {ro} {ro} && mount -o remount,bind,ro {ro} && exec "$@"'
    cmd = ["unshare", "--mount", "--map-root-user", "sh", "-c", script, "sh"]
    if subprocess.run([*cmd, "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow a mount in a user namespace")
    for storage, shown in [
        (f"journal:{ro}/new.log", f"cannot write '{ro}' (read-only file system)"),
        (f"journal:{ro}/sub/old.log", f"cannot write '{ro}/sub' (read-only file system)"),
        (f"journal:{ro}/a/b/new.log", f"cannot write '{ro}' (read-only file system)"),
    ]:
        res = subprocess.run(
            [*cmd, sys.executable, "-m", "hapi_dse", *search_args(synth, ro / "out", storage)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert res.returncode == 2, res.stderr
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and shown in lines[0], lines
    assert sorted(p.name for p in ro.rglob("*")) == ["old.log", "sub"]
