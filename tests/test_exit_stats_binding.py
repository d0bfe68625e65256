"""The exit statistics are bound to their training: model.json records the sha256 of
``exits_val.npz`` and ``exits_test.npz``, and a run holding another training's statistics is
refused in one line (issue #22, class 13). Runs without the record stay accepted."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from hapi_dse.run import STATS_KEY, RunDir
from hapi_dse.testing import search_args

EXAMPLE = Path(__file__).resolve().parent.parent / "hapi_dse" / "examples" / "fashion-mnist"


def sha256(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def other_run(train_digits, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another training of the same architecture: its statistics have the same columns."""
    return train_digits(tmp_path_factory.mktemp("other") / "run", seed=1)


@pytest.fixture
def copy_of(tiny_run: Path, tmp_path: Path, write_fake_table):
    def make() -> tuple[Path, Path]:
        run = tmp_path / "run"
        shutil.copytree(tiny_run, run)
        profiles = tmp_path / "profiles"
        write_fake_table(run, profiles, "host")
        return run, profiles

    return make


def search(run_cli, run: Path, profiles: Path, out: Path):  # type: ignore[no-untyped-def]
    return run_cli(*search_args(run, profiles, out, device="host", trials=10))


def test_training_records_the_sha256_of_its_statistics(tiny_run: Path) -> None:
    model = json.loads((tiny_run / "model.json").read_text())
    assert model[STATS_KEY] == {
        "val": sha256(tiny_run / "exits_val.npz"),
        "test": sha256(tiny_run / "exits_test.npz"),
    }


@pytest.mark.parametrize("split", ["val", "test"])
def test_another_trainings_statistics_are_refused(
    run_cli, copy_of, other_run: Path, tmp_path: Path, split: str
) -> None:
    run, profiles = copy_of()
    assert RunDir(run).stats(split).n > 0  # its own load
    shutil.copyfile(other_run / f"exits_{split}.npz", run / f"exits_{split}.npz")
    res = search(run_cli, run, profiles, tmp_path / "out")
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    mid = RunDir(run).model_id
    assert lines[0].startswith(f"hapi: error: {run / f'exits_{split}.npz'}: sha256 ")
    assert f"is not the {STATS_KEY}.{split} " in lines[0]
    assert (
        f"that model.json records for {mid} (the exit statistics of another training?)"
        in (lines[0])
    )
    assert not (tmp_path / "out").exists()


def test_a_run_without_the_record_is_accepted(run_cli, copy_of, tmp_path: Path) -> None:
    run, profiles = copy_of()
    model = json.loads((run / "model.json").read_text())
    model.pop(STATS_KEY, None)
    (run / "model.json").write_text(json.dumps(model))
    res = search(run_cli, run, profiles, tmp_path / "out")
    assert res.exit_code in (0, 1), res.stderr  # 1: no feasible design, a normal outcome
    assert (tmp_path / "out" / "host" / "trials.csv").is_file()


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        ("0" * 64, f"{STATS_KEY} is '{'0' * 64}', expected an object"),
        ({"val": "abc", "test": None}, f"{STATS_KEY}.val is 'abc', expected the sha256"),
        ({"val": 5}, f"{STATS_KEY}.val is '5', expected the sha256"),
    ],
)
def test_a_malformed_record_is_refused(
    run_cli, copy_of, tmp_path: Path, record: object, shown: str
) -> None:
    run, profiles = copy_of()
    model = json.loads((run / "model.json").read_text())
    model[STATS_KEY] = record
    (run / "model.json").write_text(json.dumps(model))
    res = search(run_cli, run, profiles, tmp_path / "out")
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and shown in lines[0], lines


@pytest.mark.skipif(not (EXAMPLE / "model.json").is_file(), reason="bundled example not built")
def test_the_bundled_example_records_its_statistics() -> None:
    run = RunDir(EXAMPLE)
    assert run.model[STATS_KEY] == {s: sha256(EXAMPLE / f"exits_{s}.npz") for s in ("val", "test")}
    run.stats("val"), run.stats("test")  # accepted
