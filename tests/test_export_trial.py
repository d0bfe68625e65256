"""Export any trial: designs round-trip exactly through trials.csv, and `hapi export --trial`."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.cost import Design
from hapi_dse.cost.design import Exit
from hapi_dse.cost.policies import POLICY_REGISTRY as POLICIES
from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.run import RunDir
from hapi_dse.testing import SyntheticSetup, search_args, write_synthetic_table

pytestmark = pytest.mark.synth(n_val=300, n_test=300, num_blocks=6)

# 7 levels: thresholds such as 0.5816666667 that 4 significant digits would round
THRESHOLDS = """
[thresholds]
levels = 7
[policies.max_softmax]
threshold = [0.5, 0.99]
[policies.entropy]
threshold = [0.0, 0.5]
"""
SPACE = "[exits]\ncount = [0, 3]" + THRESHOLDS + "[policies.patience]\npatience = [2, 3]\n"
# one exit per design: the export test stays quick
ONE_EXIT_SPACE = "[exits]\ncount = [1, 1]" + THRESHOLDS
TRIALS = 40


# -- (a) compact() <-> from_compact() ----------------------------------------------------------
def _random_floats(rng: np.random.Generator, n: int) -> list[float]:
    """Uniform values, tiny and huge magnitudes, and arbitrary finite bit patterns."""
    out = [float(v) for v in rng.random(n)]
    out += [float(v) for v in rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n)]
    for bits in rng.integers(0, 2**64, n, dtype=np.uint64).tolist():
        v = struct.unpack("<d", struct.pack("<Q", bits))[0]
        if np.isfinite(v):
            out.append(v)
    return [*out, 0.0, -0.0, 5e-324, 1.0, 0.1 + 0.2, 1 / 3]


@pytest.mark.parametrize("policy", [p for p in POLICIES if p != "patience"])
def test_compact_round_trips_thresholds_exactly(policy: str) -> None:
    rng = np.random.default_rng(0)
    values = _random_floats(rng, 300)
    heads = ["linear", "conv", "mlp"]
    for start in range(0, len(values), 4):
        chunk = values[start : start + 4]
        positions = sorted(rng.choice(20, len(chunk), replace=False).tolist())
        d = Design(
            tuple(
                Exit(int(p), heads[i % 3], t)
                for i, (p, t) in enumerate(zip(positions, chunk, strict=True))
            ),
            policy,
        )
        back = Design.from_compact(d.compact(), policy)
        assert back == d and back.key == d.key
        got = [e.threshold for e in back.exits]
        assert [struct.pack("<d", t) for t in got] == [struct.pack("<d", t) for t in chunk]
    # numpy floats are written as plain numbers too
    d = Design((Exit(1, "conv", np.float64(0.5816666667)),))
    assert d.compact() == "1:conv@0.5816666667"


def test_compact_round_trips_patience_and_empty_designs() -> None:
    d = Design((Exit(1, "linear", 0.0), Exit(4, "conv", 0.0)), "patience", 3)
    assert d.compact() == "1:linear;4:conv"
    assert Design.from_compact(d.compact(), "patience", 3) == d
    for policy in POLICIES:
        p = 2 if policy == "patience" else 0
        empty = Design((), policy, p)
        assert empty.compact() == ""
        assert Design.from_compact("", policy, p) == empty


def test_compact_digits_is_for_display_only() -> None:
    d = Design((Exit(2, "conv", 0.5816666667), Exit(7, "linear", 0.85)))
    assert d.compact() == "2:conv@0.5816666667;7:linear@0.85"
    assert d.compact(digits=4) == "2:conv@0.5817;7:linear@0.85"


@pytest.mark.parametrize(
    "text, policy, message",
    [
        ("2:conv", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@", "entropy", "is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@high", "max_softmax", "'2:conv@high' is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@nan", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@1e999", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("x:conv@0.5", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2conv@0.5", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2:@0.5", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@0.5;", "max_softmax", "'' is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@0.5,7:linear@0.8", "max_softmax", "is not POSITION:HEAD@THRESHOLD"),
        ("2:conv@0.5", "patience", "is not POSITION:HEAD (patience policy)"),
        ("7:conv@0.5;2:linear@0.8", "max_softmax", "must strictly increase"),
        ("2:conv", "patience", "patience must be >= 1"),
        ("2:conv@0.5", "softmax", "unknown exit policy 'softmax'"),
    ],
)
def test_malformed_compact_text_is_a_usage_error(text: str, policy: str, message: str) -> None:
    with pytest.raises(UsageError) as e:
        Design.from_compact(text, policy)
    assert message in str(e.value) and "\n" not in str(e.value)


# -- (b) a real search, any trial rebuilt from trials.csv -------------------------------------
@pytest.fixture(scope="module")
def shm_dir() -> Iterator[Path]:
    """Study storage in RAM where possible (a journal fsyncs every record)."""
    shm = Path("/dev/shm")
    base = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    d = Path(tempfile.mkdtemp(prefix="hapi-test-trial-", dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _search(
    run_cli, run: Path, profiles: Path, out: Path, storage: Path, *extra: str, text: str = SPACE
):
    """``hapi search`` on a journal; returns {trial: the Design its Optuna params decode to}."""
    import optuna

    from hapi_dse.search import load_space
    from hapi_dse.search.storage import open_storage

    space = out.parent / "space.toml"
    space.write_text(text)
    url = f"journal:{storage}"
    opts = ("--space", space, "--storage", url, "--study", "t", *extra)
    res = run_cli(*search_args(run, profiles, out, *opts, trials=TRIALS, seed=1))
    assert res.exit_code in (0, 1), res.stderr
    rd = RunDir(run)
    bound = load_space(space).bind(rd.stats("val"), rd.model_id)
    study = optuna.load_study(study_name="t", storage=open_storage(url))
    return {
        t.number: bound.decode(t.params)
        for t in study.get_trials(deepcopy=False)
        if t.state.name == "COMPLETE"
    }


def _imprecise(d: Design) -> bool:
    """Whether 4 significant digits would change one of the design's thresholds."""
    return d.policy != "patience" and any(
        float(f"{e.threshold:.4g}") != e.threshold for e in d.exits
    )


@pytest.fixture(scope="module")
def synth_search(run_cli_module, synth: SyntheticSetup, shm_dir: Path):
    out = synth.root / "out"
    designs = _search(run_cli_module, synth.run, synth.profiles, out, shm_dir / "synth.log")
    return {"run": synth.run, "out": out, "designs": designs}


@pytest.fixture(scope="module")
def run_cli_module():
    """``hapi ARGS`` in-process, for module-scoped fixtures (stdout and stderr not captured)."""
    import contextlib
    import io

    from hapi_dse.cli import main

    def invoke(*args: object):
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = int(e.code or 0)
        return _Result(code, out.getvalue(), err.getvalue())

    return invoke


class _Result:
    def __init__(self, exit_code: int, stdout: str, stderr: str) -> None:
        self.exit_code, self.stdout, self.stderr = exit_code, stdout, stderr


def test_every_trial_is_rebuilt_exactly_from_trials_csv(synth_search: dict) -> None:
    from hapi_dse.deploy.inputs import load_design

    out, designs = synth_search["out"], synth_search["designs"]
    chosen = json.loads((out / "devA" / "design.json").read_text())["trial"]
    assert len(designs) == TRIALS
    assert {d.policy for d in designs.values()} == set(POLICIES)
    others = [n for n, d in designs.items() if n != chosen and _imprecise(d)]
    assert others, "no trial whose thresholds 4 digits would round"
    for n, want in designs.items():
        got = load_design(out, trial=n)
        assert got.design == want and got.design.key == want.key
        assert got.doc["trial"] == n and got.doc["device"] == "devA"
        assert got.doc["model_id"] == RunDir(synth_search["run"]).model_id
        assert Design.from_dict(got.doc) == want
        assert got.path == out / "devA" / "trials.csv"
    # pareto.csv holds the same exact text
    with open(out / "devA" / "pareto.csv", newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["trial"])
            pol, pat = row["policy"], int(row["patience"] or 0)
            assert Design.from_compact(row["exits"], pol, pat) == designs[n]
    # the chosen trial is the design.json design
    assert load_design(out, trial=chosen).design == load_design(out).design


def test_trial_of_a_search_without_a_feasible_design(
    synth_search: dict, run_cli, tmp_path: Path, shm_dir: Path
) -> None:
    from hapi_dse.deploy.inputs import load_design

    run = synth_search["run"]
    profiles = run.parent / "profiles"
    designs = _search(
        run_cli, run, profiles, tmp_path / "out", shm_dir / "none.log", "--slo", "latency=1us"
    )
    assert not (tmp_path / "out" / "devA" / "design.json").exists()
    n = max(designs)
    assert load_design(tmp_path / "out", trial=n).design == designs[n]
    assert load_design(tmp_path / "out" / "devA", trial=n).design == designs[n]


def test_missing_or_unfinished_trials_name_the_valid_ones(
    synth_search: dict, tmp_path: Path
) -> None:
    from hapi_dse.deploy.inputs import load_design

    with pytest.raises(UsageError, match=r"^trial 999: no such trial .* are 0-39$"):
        load_design(synth_search["out"], trial=999)
    # a copy whose trial 3 failed
    src = synth_search["out"] / "devA"
    dst = tmp_path / "devA"
    shutil.copytree(src, dst)
    with open(src / "trials.csv", newline="") as f:
        reader = csv.DictReader(f)
        rows, header = list(reader), reader.fieldnames
    assert header is not None
    rows[3] = {k: ("" if k != "trial" else "3") for k in header} | {"state": "FAIL"}
    with open(dst / "trials.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=header)
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(UsageError, match=r"trial 3 .* is FAIL.* are 0-2, 4-39$"):
        load_design(tmp_path, trial=3)
    assert load_design(tmp_path, trial=4).design == synth_search["designs"][4]
    (dst / "search.json").unlink()
    with pytest.raises(ArtefactError, match="search.json"):
        load_design(tmp_path, trial=4)


# -- (c), (d) hapi export --trial on the tiny trained run ------------------------------------
@pytest.fixture(scope="module")
def tiny_search(
    tiny_run: Path, run_cli_module, tmp_path_factory: pytest.TempPathFactory, shm_dir: Path
) -> dict:
    root = tmp_path_factory.mktemp("trial-tiny")
    write_synthetic_table(tiny_run, "devA", root / "profiles")
    designs = _search(
        run_cli_module,
        tiny_run,
        root / "profiles",
        root / "out",
        shm_dir / "tiny.log",
        text=ONE_EXIT_SPACE,
    )
    return {"out": root / "out", "designs": designs}


def test_export_trial_writes_the_trial_design_exactly(
    run_cli, tiny_run: Path, tiny_search: dict, tmp_path: Path
) -> None:
    import onnx

    out, designs = tiny_search["out"], tiny_search["designs"]
    chosen = json.loads((out / "devA" / "design.json").read_text())["trial"]
    candidates = [n for n, d in designs.items() if n != chosen and _imprecise(d)]
    assert candidates, "no trial whose threshold 4 digits would round"
    n = candidates[0]
    want = designs[n]
    onnx_path = tmp_path / "trial.onnx"
    res = run_cli(
        "export",
        out,
        "--trial",
        n,
        "--model",
        tiny_run,
        "--out",
        onnx_path,
        "--check-samples",
        "128",
    )
    assert res.exit_code == 0, res.stderr
    meta = {p.key: p.value for p in onnx.load(str(onnx_path)).metadata_props}
    got = json.loads(meta["hapi.design"])
    assert Design.from_dict(got) == want
    assert [e["threshold"] for e in got["exits"]] == [e.threshold for e in want.exits]
    assert got == {**want.to_dict(), "model_id": RunDir(tiny_run).model_id}
    side = json.loads(onnx_path.with_suffix(".export.json").read_text())
    assert side["device"] == "devA"
    assert side["design_path"] == str(out / "devA" / "trials.csv")
    assert side["provenance"]["settings"]["trial"] == n


@pytest.mark.parametrize(
    "trial, message",
    [("999", "no such trial"), ("-1", "invalid value for '--trial'")],
)
def test_bad_trial_is_one_line_exit_2(
    run_cli, tiny_run: Path, tiny_search: dict, tmp_path: Path, trial: str, message: str
) -> None:
    res = run_cli(
        "export",
        tiny_search["out"],
        "--trial",
        trial,
        "--model",
        tiny_run,
        "--out",
        tmp_path / "m.onnx",
    )
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0].lower(), res.stderr
    if trial == "999":
        assert "COMPLETE trials are 0-39" in lines[0]
    assert not (tmp_path / "m.onnx").exists()
