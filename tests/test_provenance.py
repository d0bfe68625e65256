"""Atomic writes, provenance records and the progress bar's silence off a terminal."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from hapi_dse import __version__
from hapi_dse.atomic import write_json
from hapi_dse.outdirs import atomic_dir
from hapi_dse.progress import Progress
from hapi_dse.provenance import provenance, sha256_file


def test_write_json_replaces_atomically(tmp_path: Path) -> None:
    dest = tmp_path / "out.json"
    write_json(dest, {"a": 1})
    with pytest.raises(TypeError):
        write_json(dest, {"a": object()})  # fails while serialising
    assert json.loads(dest.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir_keeps_old_content_on_failure(tmp_path: Path) -> None:
    dest = tmp_path / "run"
    with atomic_dir(dest) as d:
        (d / "x").write_text("1")
    with pytest.raises(RuntimeError), atomic_dir(dest, overwrite=True) as d:
        (d / "x").write_text("2")
        raise RuntimeError("interrupted")
    assert (dest / "x").read_text() == "1"
    with atomic_dir(dest, overwrite=True) as d:
        (d / "y").write_text("3")
    assert sorted(p.name for p in dest.iterdir()) == ["y"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_provenance_records_inputs_and_versions(tmp_path: Path) -> None:
    f = tmp_path / "data.bin"
    f.write_bytes(b"hapi")
    rec = provenance(seed=7, inputs={"data": f}, settings={"k": 1})
    assert rec["seed"] == 7 and rec["hapi_version"] == __version__
    assert rec["inputs"]["data"]["sha256"] == sha256_file(f)
    assert {"python", "numpy"} <= set(rec["versions"])


def test_progress_silent_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.StringIO()
    monkeypatch.setattr("sys.stderr", buf)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("HAPI_NO_PROGRESS", raising=False)
    with Progress(10, "x") as bar:
        for _ in range(10):
            bar.update()
    assert buf.getvalue() == ""
    with Progress(4, "train", enabled_=True) as bar:
        for _ in range(4):
            bar.update()
    assert "train [" in buf.getvalue() and "eta" in buf.getvalue() and "4/4" in buf.getvalue()
