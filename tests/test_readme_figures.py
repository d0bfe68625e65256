"""The README's generated figures (scripts/readme_figures.py) are the measured ones."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "readme_figures.py"


@pytest.fixture
def figures(load_script: Callable[[str], ModuleType]) -> ModuleType:
    return load_script("readme_figures")


def test_readme_figures_are_up_to_date() -> None:
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, cwd=ROOT
    )
    assert res.returncode == 0, res.stderr


def test_accuracy_table_is_read_from_train_json(figures: ModuleType, tmp_path: Path) -> None:
    per_exit = [
        {"position": p, "head": h, "test_acc": acc, "val_acc": acc}
        for p, accs in enumerate([(0.5, 0.7), (0.9, 0.8)])
        for h, acc in zip(("linear", "conv"), accs, strict=True)
    ]
    doc = {
        "per_exit": per_exit,
        "model_id": "m-1",
        "backbone_test_acc": 0.93,
        "backbone_val_acc": 0.92,
        "command": "hapi train x",
        "timings": {"exits_s": 600},
    }
    f = tmp_path / "train.json"
    f.write_text(json.dumps(doc))
    text = figures.accuracy_block(f)
    rows = [r for r in text.splitlines() if r.startswith("| 0 ") or r.startswith("| 1 ")]
    assert rows == ["| 0 | 50.0 | **70.0** | `conv` |", "| 1 | **90.0** | 80.0 | `linear` |"]
    assert "93.00 %" in text and "10 min" in text and "`hapi train x`" in text


def test_bench_table_marks_missing_records_and_formats_values(
    figures: ModuleType, tmp_path: Path
) -> None:
    (tmp_path / "search.json").write_text(json.dumps({"evals_per_s": 39786.4, "hv_ratio": 0.99981}))
    text = figures.bench_block(tmp_path)
    lines = {line.split("|")[2].strip(): line for line in text.splitlines() if line.count("|") > 4}
    assert "| 39,786 |" in lines["`evals_per_s`"]
    assert "| 0.9998 |" in lines["`hv_ratio`"]
    assert "| not run |" in lines["`latency_median_abs_err`"]
    assert "| not run |" in lines["`default_search_wall_s`"]


def test_render_refuses_a_readme_without_the_blocks(figures: ModuleType) -> None:
    with pytest.raises(SystemExit, match="figures:accuracy"):
        figures.render("# no blocks here\n")
