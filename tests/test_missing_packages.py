"""On the base install (a board: no torch, no optuna), a command that needs an optional
package says in one line which extra installs it, exit status 2, instead of a traceback
(#12); the board's commands still run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hapi_dse.cli import missing_package

RUN = """
import importlib.abc, sys
ABSENT = set(sys.argv[1].split(","))
class Absent(importlib.abc.MetaPathFinder):  # 'import torch' fails as where it is not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
from hapi_dse.cli import main
main(sys.argv[2:])
"""
#: what the base install lacks
OPTIONAL = "torch,optuna,onnxscript,sklearn,matplotlib,yaml"


def _hapi(blocked: str, *args: object) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-c", RUN, blocked, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, package, extra",
    [
        (["train", "--dataset", "digits", "--out", "OUT"], "torch", "train"),
        (
            ["profile", "--device", "board", "--export-only", "--export-dir", "OUT"],
            "torch",
            "train",
        ),
        (["search", "--device", "pixel6", "--trials", "5", "--out", "OUT"], "optuna", "search"),
    ],
)
def test_a_missing_package_names_its_extra(
    tmp_path: Path, args: list[str], package: str, extra: str
) -> None:
    res = _hapi(OPTIONAL, *[tmp_path / "out" if a == "OUT" else a for a in args])
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == (
        f"hapi: error: 'hapi {args[0]}' needs {package}, which is not installed here: "
        f"pip install 'hapi-dse[{extra}]'"
    )
    assert not (tmp_path / "out").exists()


def test_the_line_names_the_distribution_and_what_installs_it() -> None:
    assert missing_package("search", "yaml") == (
        "'hapi search' needs PyYAML, which is not installed here: pip install 'hapi-dse[search]'"
    )
    assert missing_package("train", "sklearn.datasets").startswith(
        "'hapi train' needs scikit-learn"
    )
    # a dependency of the base install itself (hapi installed with --no-deps)
    assert missing_package("eval", "pandas") == (
        "'hapi eval' needs pandas, which is not installed here: pip install 'hapi-dse' "
        "(hapi's own dependencies)"
    )
    assert missing_package("", "zzpkg.sub").endswith(
        "needs zzpkg, which is not installed here: pip install zzpkg"
    )


def test_devices_runs_without_torch_and_optuna() -> None:
    res = _hapi(OPTIONAL + ",pandas", "devices", "--check")
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].split()[:2] == ["DEVICE", "SOURCE"]
    assert "pixel6" in res.stdout
    assert "table(s)" in res.stdout.splitlines()[-1]


def test_eval_of_an_export_runs_without_the_extras(shared_export, write_fake_table, tmp_path):
    """A board's 'hapi eval' of an export: onnxruntime, numpy and pandas; scikit-learn only
    because the tiny run's dataset is sklearn's digits."""
    profiles = tmp_path / "profiles"
    write_fake_table(shared_export["run"], profiles, "host")
    report = tmp_path / "eval.json"
    res = _hapi(
        OPTIONAL.replace(",sklearn", ""),
        *("eval", shared_export["out"], "--profiles", profiles, "--limit", 20),
        *("--passes", 1, "--warmup", 0, "--out", report),
    )
    assert res.returncode == 0, res.stderr
    assert report.is_file() and f"report: {report}" in res.stdout
