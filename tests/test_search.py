"""``hapi search`` end to end on synthetic statistics: outputs, optimum, resume, jobs, errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hapi_dse.cost import CostModel, Design, parse_slo, predict
from hapi_dse.errors import UsageError
from hapi_dse.run import RunDir
from hapi_dse.search import load_space, parse_space
from hapi_dse.testing import SyntheticSetup, search_args

METRIC_COLUMNS = [
    "accuracy",
    "latency_ms",
    "p90_latency_ms",
    "p99_latency_ms",
    "max_latency_ms",
    "energy_mj",
    "size_mb",
    "goodput",
]
HAPI = [sys.executable, "-m", "hapi_dse"]


# a synthetic run (6 blocks, linear/conv heads), tables for devA and a 3x slower devB, and devC
# holding only a table of another model
pytestmark = pytest.mark.synth(
    n_val=600, n_test=800, num_blocks=6, devices={"devA": 1.0, "devB": 3.0}, foreign=["devC"]
)


def base_args(synth: SyntheticSetup, out: Path, *extra: str) -> list[str]:
    """``hapi search`` on ``synth`` into ``out``, the devices in ``extra``."""
    return synth.search_args(out, *extra, device=None)


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_search_writes_the_contract_outputs(synth, run_cli, tmp_path: Path) -> None:
    slo = f"latency={0.6 * synth.backbone('devB')['latency_ms']:.4f}ms"
    res = run_cli(
        *base_args(
            synth,
            tmp_path,
            "--device",
            "devA,devB",
            "--slo",
            slo,
            "--slo",
            "accuracy=50%",
            "--trials",
            "150",
            "--seed",
            "3",
        )
    )
    assert res.exit_code == 0, res.stderr
    assert "chosen for devA" in res.stdout and "chosen for devB" in res.stdout
    for device in ("devA", "devB"):
        d = tmp_path / device
        assert sorted(p.name for p in d.iterdir()) == [
            ".hapi_files.json",  # what hapi wrote there (hapi_dse.ownership)
            "design.json",
            "pareto.csv",
            "search.json",
            "trials.csv",
        ]
        trials = read_csv(d / "trials.csv")
        assert len(trials) == 150
        for col in [
            "trial",
            "state",
            "policy",
            "n_exits",
            "exits",
            *METRIC_COLUMNS,
            "constraint_latency_ms",
            "constraint_accuracy",
            "feasible",
            "pareto",
        ]:
            assert col in trials[0]
        feasible = [t for t in trials if t["feasible"] == "True"]
        assert feasible
        if device == "devB":  # the slow device cannot meet the latency SLO with every design
            assert len(feasible) < len(trials)
        for t in trials:  # feasible <=> every constraint <= 0
            cons = [float(t["constraint_latency_ms"]), float(t["constraint_accuracy"])]
            assert (t["feasible"] == "True") == all(c <= 0 for c in cons)
        pareto = read_csv(d / "pareto.csv")
        assert {p["trial"] for p in pareto} == {t["trial"] for t in trials if t["pareto"] == "True"}
        assert all(t["feasible"] == "True" for t in trials if t["pareto"] == "True")
        for p in pareto:
            assert "test_accuracy" in p and p["test_breaks_slo"] in ("True", "False")
            # no Pareto design is dominated by a feasible trial
            for t in feasible:
                assert not (
                    float(t["accuracy"]) >= float(p["accuracy"])
                    and float(t["latency_ms"]) <= float(p["latency_ms"])
                    and float(t["energy_mj"]) <= float(p["energy_mj"])
                    and (float(t["accuracy"]), float(t["latency_ms"]), float(t["energy_mj"]))
                    != (float(p["accuracy"]), float(p["latency_ms"]), float(p["energy_mj"]))
                )
        design = json.loads((d / "design.json").read_text())
        assert design["device"] == device and design["pick"] == "accuracy"
        assert design["predicted_val"]["accuracy"] == max(float(t["accuracy"]) for t in feasible)
        assert [e["position"] for e in design["exits"]] == sorted(
            e["position"] for e in design["exits"]
        )
        assert set(design["predicted_test"]) >= set(METRIC_COLUMNS)
        # the public predict() reproduces the prediction from design.json alone
        for split in ("val", "test"):
            stats = synth.stats(split)
            got = predict(design, stats, synth.costs(device, stats))
            assert got == pytest.approx(design[f"predicted_{split}"])
        info = json.loads((d / "search.json").read_text())
        assert info["trials"]["complete"] == 150 and info["sampler"]["seed"] == 3
        inputs = design["provenance"]["inputs"]
        assert {"exits_val", "exits_test", "table"} <= set(inputs)
        assert all(len(v["sha256"]) == 64 for v in inputs.values())
    a = json.loads((tmp_path / "devA" / "design.json").read_text())
    b = json.loads((tmp_path / "devB" / "design.json").read_text())
    assert b["predicted_val"]["latency_ms"] > a["predicted_val"]["latency_ms"]


def test_search_finds_the_known_optimum(synth, tiny_space, run_cli, tmp_path: Path) -> None:
    """On a 120-design space, the search's choice and front equal an exhaustive sweep's."""
    val = synth.stats("val")
    model = CostModel(val, synth.costs("devA", val))
    space = load_space(tiny_space).bind(val)
    sweep = [model.evaluate(d) for d in space.enumerate()]
    assert len(sweep) == space.size() == 120
    median = sorted(m["latency_ms"] for m in sweep)[len(sweep) // 2]
    slo = parse_slo(f"latency={median:.6f}ms")  # about half the space is feasible
    feasible = [m for m in sweep if slo.violation(m) <= 0]
    assert 0 < len(feasible) < len(sweep)
    best = max(m["accuracy"] for m in feasible)
    exact_front = {
        (m["accuracy"], m["latency_ms"])
        for m in feasible
        if not any(
            o["accuracy"] >= m["accuracy"]
            and o["latency_ms"] <= m["latency_ms"]
            and o is not m
            and (o["accuracy"], o["latency_ms"]) != (m["accuracy"], m["latency_ms"])
            for o in feasible
        )
    }

    res = run_cli(
        *base_args(
            synth,
            tmp_path / "out",
            "--device",
            "devA",
            "--space",
            str(tiny_space),
            "--slo",
            slo.text,
            "--objectives",
            "accuracy,latency",
            "--trials",
            "300",
            "--population",
            "20",
        )
    )
    assert res.exit_code == 0, res.stderr
    design = json.loads((tmp_path / "out" / "devA" / "design.json").read_text())
    assert design["predicted_val"]["accuracy"] == best
    found = {
        (float(p["accuracy"]), float(p["latency_ms"]))
        for p in read_csv(tmp_path / "out" / "devA" / "pareto.csv")
    }
    assert found == exact_front


def test_no_feasible_design_exits_1_with_the_closest(synth, run_cli, tmp_path: Path) -> None:
    res = run_cli(
        *base_args(synth, tmp_path, "--device", "devA", "--slo", "latency=1us", "--trials", "60")
    )
    assert res.exit_code == 1
    assert "no feasible design for devA" in res.stdout
    assert "Closest designs" in res.stdout and "latency_ms" in res.stdout
    assert res.stderr == ""
    d = tmp_path / "devA"
    assert not (d / "design.json").exists()
    assert json.loads((d / "search.json").read_text())["feasible"] is False
    assert read_csv(d / "pareto.csv") == []
    assert len(read_csv(d / "trials.csv")) == 60


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--device", "nosuch"], "unknown device 'nosuch'"),
        (["--device", "devA", "--space", "nosuch"], "unknown search space 'nosuch'"),
        (["--device", "devC"], "no profile table for model synthetic6-0"),
        (["--device", "devA", "--slo", "latency=fast"], "expected METRIC=NUMBER[UNIT]"),
        (["--device", "devA", "--objectives", "accuracy,speed"], "unknown objective 'speed'"),
        (["--device", "devA", "--pick", "best"], "--pick: unknown rule 'best'"),
        (["--device", "devA", "--storage", "nonsense"], "expected an Optuna storage URL"),
        (["--device", "devA", "--study", "x"], "give --storage URL too"),
        (["--device", "devA", "--trials", "0"], "--trials must be >= 1"),
        (["--device", "devA", "--space", "missing.toml"], "no such file"),
    ],
)
def test_bad_inputs_exit_2_with_one_line(
    synth, run_cli, tmp_path: Path, extra: list[str], message: str
) -> None:
    res = run_cli(*base_args(synth, tmp_path, *extra))
    assert res.exit_code == 2
    assert res.stderr.startswith("hapi: error: ")
    assert res.stderr.count("\n") == 1
    assert message in res.stderr
    assert not (tmp_path / "devA").exists()


def test_a_table_of_another_model_is_refused(synth, run_cli, tmp_path: Path) -> None:
    """A table file named for this model whose sidecar says another model."""
    profiles = tmp_path / "profiles"
    shutil.copytree(synth.profiles, profiles)
    mid = RunDir(synth.run).model_id
    for suffix in (".csv", ".json"):
        shutil.copy(
            profiles / "devC" / f"other-model{suffix}", profiles / "devC" / f"{mid}{suffix}"
        )
    res = run_cli(*search_args(synth.run, profiles, tmp_path / "out", device="devC"))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "table is for model 'other-model'" in res.stderr


def test_a_space_that_does_not_fit_the_model(synth, run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[exits]\npositions = [1, 9]\n")
    res = run_cli(*base_args(synth, tmp_path, "--device", "devA", "--space", str(bad)))
    assert res.exit_code == 2 and res.stderr.count("\n") == 1
    assert "exits.positions [9] are not exit positions" in res.stderr and "0..5" in res.stderr


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[exits]\ncount = [3, 1]\n", "exits.count must be [LOW, HIGH] with LOW <= HIGH"),
        ("[exits]\ncont = [1, 2]\n", "unknown key in [exits] 'cont'"),
        ("[exits]\npositions = [1, 1]\n", "distinct block indices"),
        ("[exits]\nheads = 3\n", 'exits.heads must be "all" or a list'),
        ("[thresholds]\nlevels = 0\n", "thresholds.levels must be an integer 1..10000"),
        ("[policies.max_softmax]\nthreshold = [0.5, 1.5]\n", "must lie within [0, 1]"),
        ("[policies.maxsoftmax]\n", "unknown policy in [policies] 'maxsoftmax'"),
        ("[policies.patience]\npatience = [0, 2]\n", "patience must be >= 1"),
        ("[sampler]\npopulation = 1\n", "sampler.population must be an integer >= 2"),
    ],
)
def test_space_validation_messages(tmp_path: Path, text: str, message: str) -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    with pytest.raises(UsageError, match="search space 'x'") as err:
        parse_space(tomllib.loads(text), name="x")
    assert message in str(err.value)


def test_shipped_spaces_load_and_fit_a_model(synth) -> None:
    val = synth.stats("val")
    default = load_space("default")
    assert set(default.policies) == {"max_softmax", "entropy", "patience"}
    assert default.bind(val).size() > 10**6
    small = load_space("small")
    with pytest.raises(UsageError, match="positions \\[8, 11\\] are not exit positions"):
        small.bind(val)  # the synthetic model has 6 blocks


def test_jobs_2_runs_exactly_the_requested_trials(synth, run_cli, tmp_path: Path) -> None:
    res = run_cli(*base_args(synth, tmp_path, "--device", "devA", "--trials", "90", "--jobs", "2"))
    assert res.exit_code == 0, res.stderr
    trials = read_csv(tmp_path / "devA" / "trials.csv")
    assert len(trials) == 90 and all(t["state"] == "COMPLETE" for t in trials)
    assert sorted(int(t["trial"]) for t in trials) == list(range(90))
    assert not list(tmp_path.glob(".hapi-journal-*"))  # the shared journal was cleaned up


@pytest.fixture
def storage_dir(ram_dir: Path) -> Path:
    """Study storages go to RAM where possible (see conftest.ram_dir)."""
    return ram_dir


def _complete_trials(storage: str, study: str) -> dict[int, dict]:
    import optuna

    from hapi_dse.search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        s = optuna.load_study(study_name=study, storage=open_storage(storage))
    except KeyError:
        return {}
    return {t.number: t.params for t in s.get_trials(deepcopy=False) if t.state.name == "COMPLETE"}


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_a_killed_search_resumes_without_losing_trials(
    synth, run_cli, tmp_path: Path, storage_dir: Path, kind: str
) -> None:
    storage = (
        f"journal:{storage_dir / 'study.log'}"
        if kind == "journal"
        else f"sqlite:///{storage_dir / 'study.db'}"
    )
    total, kill_at = (200, 25) if kind == "journal" else (30, 6)  # SQLite is ~10x slower
    args = base_args(
        synth,
        tmp_path / "out",
        "--device",
        "devA",
        "--trials",
        str(total),
        "--storage",
        storage,
        "--study",
        "resume-me",
    )
    proc = subprocess.Popen(
        [*HAPI, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ, HAPI_NO_PROGRESS="1"),
    )
    try:
        done: dict[int, dict] = {}
        deadline = time.monotonic() + 60
        while len(done) < kill_at and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
            done = _complete_trials(storage, "resume-me")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    before = _complete_trials(storage, "resume-me")
    assert kill_at <= len(before) < total, "the first run was not killed mid-search"
    res = run_cli(*args)
    assert res.exit_code == 0, res.stderr
    after = _complete_trials(storage, "resume-me")
    assert len(after) == total
    assert all(after[n] == p for n, p in before.items())  # nothing lost or changed
    info = json.loads((tmp_path / "out" / "devA" / "search.json").read_text())
    assert info["trials"]["complete"] == total
    assert info["trials"]["this_run"] == total - len(before)
    # rerunning the same command (no --overwrite) replaces its own result and adds nothing
    assert run_cli(*args).exit_code == 0
    assert len(_complete_trials(storage, "resume-me")) == total


def test_rerunning_the_same_study_replaces_only_its_own_result(
    synth, run_cli, tmp_path: Path, storage_dir: Path
) -> None:
    """README "Resuming": the same command resumes, into the same --out, without
    --overwrite; another study, or a result edited by hand, still needs it or is refused."""
    storage = f"journal:{storage_dir / 'j.log'}"
    out = tmp_path / "out"
    args = base_args(synth, out, "--device", "devA", "--trials", "20", "--storage", storage)
    assert run_cli(*args, "--study", "a").exit_code == 0
    res = run_cli(*base_args(synth, out, "--device", "devA", "--trials", "30", "--storage",
                             storage, "--study", "a"))  # fmt: skip
    assert res.exit_code == 0, res.stderr
    assert json.loads((out / "devA" / "search.json").read_text())["trials"]["complete"] == 30
    res = run_cli(*args, "--study", "b")
    assert res.exit_code == 2 and "pass --overwrite" in res.stderr
    (out / "devA" / "trials.csv").write_text("edited\n")
    res = run_cli(*args, "--study", "a")
    assert res.exit_code == 2 and "changed since hapi wrote it" in res.stderr


def test_a_study_made_with_other_slos_is_refused(
    synth, run_cli, tmp_path: Path, storage_dir: Path
) -> None:
    storage = f"journal:{storage_dir / 'j.log'}"
    args = base_args(
        synth, tmp_path, "--device", "devA", "--trials", "20", "--storage", storage, "--study", "s"
    )
    assert run_cli(*args).exit_code == 0
    res = run_cli(*args, "--slo", "latency=9ms", "--overwrite")
    assert res.exit_code == 2
    assert "--study 's' was created with slos = []" in res.stderr


def test_pareto_mask_against_pairwise_dominance() -> None:
    import numpy as np

    from hapi_dse.cost import pareto_mask

    rng = np.random.default_rng(0)
    for d in (2, 3):
        pts = rng.integers(0, 6, (200, d)).astype(float)  # many ties and duplicates
        want = [not any(np.all(q <= p) and np.any(q < p) for q in pts) for p in pts]
        assert pareto_mask(pts).tolist() == want
    assert pareto_mask(np.empty((0, 2))).tolist() == []


def test_storage_retries_the_schema_creation_race(monkeypatch, tmp_path) -> None:
    """Two workers opening a fresh database race to create its tables: the loser retries."""
    import optuna

    from hapi_dse.search import storage as storage_mod

    class IntegrityError(Exception):
        pass

    real = optuna.storages.RDBStorage
    calls = []

    def flaky(url, **kw):
        calls.append(url)
        if len(calls) == 1:
            raise IntegrityError('duplicate key value violates "pg_type_typname_nsp_index"')
        return real(url, **kw)

    monkeypatch.setattr(optuna.storages, "RDBStorage", flaky)
    monkeypatch.setattr(storage_mod.time, "sleep", lambda s: None)
    storage = storage_mod.open_storage(f"sqlite:///{tmp_path / 's.db'}")
    assert isinstance(storage, real) and len(calls) == 2


def test_storage_does_not_retry_other_errors(monkeypatch) -> None:
    import optuna

    from hapi_dse.errors import UsageError
    from hapi_dse.search import storage as storage_mod

    calls = []

    def down(url, **kw):
        calls.append(url)
        raise RuntimeError("connection refused")

    monkeypatch.setattr(optuna.storages, "RDBStorage", down)
    with pytest.raises(UsageError, match="cannot open \\(connection refused\\)"):
        storage_mod.open_storage("postgresql://u@127.0.0.1:1/db")
    assert len(calls) == 1


def _record(number: int, accuracy: float, latency: float):  # -> TrialRecord
    from hapi_dse.search.records import TrialRecord

    return TrialRecord(
        number, "COMPLETE", Design(()), {"accuracy": accuracy, "latency_ms": latency}
    )


def test_iso_accuracy_picks_the_fastest_within_d_pp_of_the_backbone() -> None:
    from hapi_dse.cost import parse_objectives
    from hapi_dse.search.picking import pick

    objectives = parse_objectives("accuracy,latency")
    front = [
        _record(0, 0.930, 0.30),
        _record(1, 0.926, 0.20),
        _record(2, 0.9251, 0.15),
        _record(3, 0.920, 0.10),
    ]
    backbone = {"accuracy": 0.930, "latency_ms": 0.40}
    assert pick(front, objectives, "iso_accuracy", backbone).number == 2  # D = 0.5 pp
    assert pick(front, objectives, "iso_accuracy:0.1", backbone).number == 0
    assert pick(front, objectives, "iso_accuracy:1", backbone).number == 3
    # none within D: the most accurate
    assert pick(front[1:], objectives, "iso_accuracy:0", backbone).number == 1


@pytest.mark.parametrize(
    "rule", ["iso_accuracy:x", "iso_accuracy:-1", "iso_accuracy:nan", "knee:2"]
)
def test_malformed_pick_values_are_refused(rule: str) -> None:
    from hapi_dse.errors import UsageError
    from hapi_dse.search.picking import check_pick

    with pytest.raises(UsageError, match=f"^pick {rule}: "):
        check_pick(rule)


def test_search_reports_the_predicted_speedup_over_the_backbone(
    synth, run_cli, tmp_path: Path
) -> None:
    res = run_cli(
        *base_args(
            synth, tmp_path, "--device", "devA", "--pick", "iso_accuracy:1", "--trials", "120"
        )
    )
    assert res.exit_code == 0, res.stderr
    design = json.loads((tmp_path / "devA" / "design.json").read_text())
    backbone = design["backbone_predicted"]["val"]
    assert backbone["latency_ms"] == pytest.approx(synth.backbone()["latency_ms"])
    chosen = design["predicted_val"]
    assert chosen["accuracy"] >= backbone["accuracy"] - 0.01 - 1e-9
    up = backbone["latency_ms"] / chosen["latency_ms"]
    assert design["predicted_speedup_over_backbone"] == pytest.approx(up)
    assert f"predicted speed-up over the plain backbone: {up:.2f}x" in res.stdout
    # the fastest Pareto design within 1 pp
    pareto = read_csv(tmp_path / "devA" / "pareto.csv")
    near = [p for p in pareto if float(p["accuracy"]) >= backbone["accuracy"] - 0.01 - 1e-9]
    assert chosen["latency_ms"] == pytest.approx(min(float(p["latency_ms"]) for p in near))
