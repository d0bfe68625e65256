"""Absurd values are refused, not accepted silently (issue #22, class 14): a profile table's
figures are finite and at most an hour, JSON hapi writes is standard (no ``Infinity``), a
journal record naming a trial no record created is refused, an empty ``--energy-cmd`` is
refused, ``--trials`` has a stated maximum, ``$HAPI_PROFILES`` is checked as ``--profiles``."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.testing import SyntheticSetup

DEVICE = "devA"


@pytest.fixture
def work(synth: SyntheticSetup, tmp_path: Path) -> SyntheticSetup:
    """The synthetic run with a copy of its profiles to damage."""
    import shutil

    profiles = tmp_path / "profiles"
    shutil.copytree(synth.profiles, profiles)
    table = profiles / DEVICE / synth.tables[DEVICE].name
    return dataclasses.replace(synth, profiles=profiles, tables={DEVICE: table})


def search_argv(w: SyntheticSetup, out: Path, *extra: Any, trials: int | str = 20) -> list[str]:
    return w.search_args(out, *extra, device=DEVICE, trials=trials)


def set_key(path: Path, dotted: str, value: Any) -> None:
    doc = json.loads(path.read_text())
    *parents, last = dotted.split(".")
    node = doc
    for k in parents:
        node = node.setdefault(k, {})
    node[last] = value
    path.write_text(json.dumps(doc))


def strict_json(path: Path) -> Any:
    """``path`` parsed as standard JSON: NaN and Infinity are errors."""

    def refuse(name: str) -> None:
        raise ValueError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def one_line_refusal(res: Any, *needles: str) -> str:
    assert res.exit_code == 2, (res.exit_code, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


# -- profile tables --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("call_overhead_ms", 1e308, "call_overhead_ms must be a number of ms from 0 to 3.6e+06"),
        ("deployment.stage_entry_ms", 1e308, "deployment stage_entry_ms must be a number from 0"),
        ("deployment.cold_ms_per_mb", 1e308, "deployment cold_ms_per_mb must be a number from 0"),
        ("deployment.graph_entry_ms", 3.7e6, "deployment graph_entry_ms must be a number from 0"),
        ("deployment.decision_ms.entropy", 1e300, "deployment decision_ms.entropy must be"),
        ("deployment.block_offset_ms", -1e308, "deployment block_offset_ms must be a number from"),
        (
            "deployment.nested_factor",
            1e6,
            "deployment nested_factor must be a number from 0 to 100",
        ),
    ],
)
def test_absurd_sidecar_figures_are_refused(
    run_cli, work, tmp_path: Path, key: str, value: float, shown: str
) -> None:
    set_key(work.tables[DEVICE].with_suffix(".json"), key, value)
    res = run_cli(*search_argv(work, tmp_path / "out"))
    one_line_refusal(res, shown)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("column", "value", "shown"),
    [
        ("latency_ms", "1e308", "latency_ms is '1e308', must be <= 3.6e+06"),
        ("latency_p90_ms", "1e308", "latency_p90_ms is '1e308', must be <= 3.6e+06"),
        ("energy_mj", "1e300", "energy_mj is '1e300', must be <= 3.6e+09"),
        ("params", "1e300", "params is '1e300', must be <= 9.0072e+15"),
        ("latency_ms", "0", "latency_ms is '0', must be > 0"),
    ],
)
def test_absurd_table_rows_are_refused(
    run_cli, work, tmp_path: Path, column: str, value: str, shown: str
) -> None:
    with open(work.tables[DEVICE], newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1][column] = value
    if column == "latency_ms" and value == "0":
        rows[1]["latency_p90_ms"] = "0"
    with open(work.tables[DEVICE], "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = run_cli(*search_argv(work, tmp_path / "out"))
    one_line_refusal(res, "line 3: ", shown)


def test_the_largest_figures_allowed_give_standard_json(run_cli, work, tmp_path: Path) -> None:
    from hapi_dse.cost.deployment import MAX_MS

    side = work.tables[DEVICE].with_suffix(".json")
    set_key(side, "call_overhead_ms", MAX_MS)
    for key in ("stage_entry_ms", "cold_ms_per_mb", "evicted_ms_per_mb", "graph_entry_ms"):
        set_key(side, f"deployment.{key}", MAX_MS)
    res = run_cli(*search_argv(work, tmp_path / "out"))
    assert res.exit_code in (0, 1), res.stderr
    for name in ("search.json", "design.json"):
        doc = strict_json(tmp_path / "out" / DEVICE / name)
        if name == "design.json":
            assert all(math.isfinite(v) for v in doc["predicted_val"].values())


def test_hapi_writes_only_standard_json(tmp_path: Path) -> None:
    from hapi_dse.atomic import write_json

    for bad in (float("inf"), float("nan")):
        with pytest.raises(ValueError):
            write_json(tmp_path / "x.json", {"goodput": bad})
        assert list(tmp_path.iterdir()) == []
    write_json(tmp_path / "x.json", {"goodput": 1.5})
    assert strict_json(tmp_path / "x.json") == {"goodput": 1.5}


def test_a_diverged_training_writes_nothing(
    run_cli, train_digits, tmp_path: Path, monkeypatch
) -> None:
    from hapi_dse.training import trainer

    real = trainer._train_network

    def diverging(*args: Any, **kwargs: Any) -> Any:
        history, digest = real(*args, **kwargs)
        next(iter(history.values()))[-1]["train_loss"] = float("nan")
        return history, digest

    monkeypatch.setattr(trainer, "_train_network", diverging)
    with pytest.raises(Exception, match="the training diverged: train.json history.") as e:
        train_digits(tmp_path / "run")
    assert "is not a finite number; nothing was written" in str(e.value)
    assert not (tmp_path / "run").exists()


# -- journals --------------------------------------------------------------------------------
def _journal(run_cli, work, tmp_path: Path) -> tuple[Path, list[str]]:
    journal = tmp_path / "j.log"
    res = run_cli(*search_argv(work, tmp_path / "first", "--storage", f"journal:{journal}"))
    assert res.exit_code in (0, 1), res.stderr
    return journal, journal.read_text().splitlines(keepends=True)


@pytest.mark.parametrize(
    ("record", "shown"),
    [
        (
            {"op_code": 8, "worker_id": "w", "trial_id": 999, "user_attr": {"x": 1}},
            "names trial 999, which no earlier record created",
        ),
        (
            {"op_code": 2, "worker_id": "w", "study_id": 7, "user_attr": {"x": 1}},
            "names study 7, which no earlier record created",
        ),
        (
            {"op_code": 4, "worker_id": "w", "study_id": 3, "datetime_start": None},
            "names study 3, which no earlier record created",
        ),
        (
            {"op_code": 6, "worker_id": "w", "trial_id": "1", "state": 1, "values": [0.5]},
            "has trial_id '1', expected an integer",
        ),
        (
            {"op_code": 42, "worker_id": "w"},
            "has op_code 42, which is not an Optuna journal operation",
        ),
    ],
)
def test_a_journal_record_naming_what_no_record_created_is_refused(
    run_cli, work, tmp_path: Path, record: dict, shown: str
) -> None:
    journal, lines = _journal(run_cli, work, tmp_path)
    middle = len(lines) // 2
    lines.insert(middle, json.dumps(record, separators=(",", ":")) + "\n")
    journal.write_text("".join(lines))
    before = journal.read_bytes()
    res = run_cli(*search_argv(work, tmp_path / "out", "--storage", f"journal:{journal}"))
    line = one_line_refusal(res, f"the journal is corrupt (line {middle + 1} {shown})")
    assert "hapi cannot resume it: move it away to start a new study" in line
    assert journal.read_bytes() == before
    assert not (tmp_path / "out").exists()


def test_a_consistent_journal_resumes(run_cli, work, tmp_path: Path) -> None:
    journal, _ = _journal(run_cli, work, tmp_path)
    res = run_cli(
        *search_argv(work, tmp_path / "out", "--storage", f"journal:{journal}", trials=30)
    )
    assert res.exit_code in (0, 1), res.stderr
    assert strict_json(tmp_path / "out" / DEVICE / "search.json")["trials"]["complete"] == 30


# -- options ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cmd", "shown"),
    [
        ("", "--energy-cmd '' is empty: give a command that prints joules"),
        ("   ", "--energy-cmd '   ' is empty"),
        ("echo 'unclosed", '--energy-cmd "echo \'unclosed": not a command line'),
    ],
)
def test_an_empty_energy_cmd_is_refused(run_cli, tmp_path: Path, cmd: str, shown: str) -> None:
    (tmp_path / "segments").mkdir()
    res = run_cli(
        "profile",
        "--onnx-dir",
        tmp_path / "segments",
        "--profiles",
        tmp_path / "profiles",
        "--energy-cmd",
        cmd,
    )
    one_line_refusal(res, shown)
    assert not (tmp_path / "profiles").exists()


def test_detect_meter_takes_an_empty_command_for_a_command() -> None:
    from hapi_dse.errors import UsageError
    from hapi_dse.profiling.energy import detect_meter

    with pytest.raises(UsageError, match="is empty"):
        detect_meter("")


@pytest.mark.parametrize("trials", [str(10**23), "1000001"])
def test_trials_has_a_stated_maximum(run_cli, work, tmp_path: Path, trials: str) -> None:
    argv = search_argv(work, tmp_path / "out", trials=trials)
    one_line_refusal(run_cli(*argv), f"--trials must be <= 1000000 (the most a study may hold), "
                     f"but got {trials}")  # fmt: skip
    assert not (tmp_path / "out").exists()


def test_trials_as_a_float_is_refused_at_parse(run_cli, work, tmp_path: Path) -> None:
    argv = search_argv(work, tmp_path / "out", trials="1e23")
    one_line_refusal(run_cli(*argv), "'1e23' is not a valid integer")


def test_the_maximum_is_the_config_s(run_cli) -> None:
    from hapi_dse.search.config import MAX_TRIALS, SearchConfig

    SearchConfig(devices=("pixel6",), trials=MAX_TRIALS).check()  # allowed
    res = run_cli("search", "--help")
    assert f"at most {MAX_TRIALS:,}" in " ".join(res.stdout.split())


@pytest.mark.parametrize("command", ["search", "devices"])
def test_hapi_profiles_naming_a_file_is_refused(
    run_cli, work, tmp_path: Path, monkeypatch, command: str
) -> None:
    not_a_dir = tmp_path / "profiles.txt"
    not_a_dir.write_text("a file\n")
    monkeypatch.setenv("HAPI_PROFILES", str(not_a_dir))
    argv = search_argv(work, tmp_path / "out") if command == "search" else ["devices"]
    one_line_refusal(
        run_cli(*argv),
        f"$HAPI_PROFILES {str(not_a_dir)!r} is a file, not a profile directory",
    )
    res = run_cli("devices", "--profiles", not_a_dir)  # as --profiles FILE is
    assert res.exit_code == 2


def test_hapi_profiles_naming_a_directory_is_read(run_cli, work, monkeypatch) -> None:
    monkeypatch.setenv("HAPI_PROFILES", str(work.profiles))
    res = run_cli("devices")
    assert res.exit_code == 0, res.stderr
    assert DEVICE in res.stdout
