"""Shared fixtures and helpers of the tests.

- ``run_cli``: ``hapi ARGS`` in-process; ``load_script``: a ``scripts/NAME.py`` as a module.
- ``tiny_run``, ``train_digits``: a real trained run; ``write_design``, ``write_fake_table``,
  ``shared_export``, ``profile_host``: its designs, tables, export and a quick real profile.
- ``synth``: a synthetic run and its tables for fast search tests (sized per module with
  ``pytest.mark.synth``); ``tiny_space``: a search space of 120 designs.
- ``world``, ``case_dir``: valid inputs to every command, and a copy of them to break.
- ``no_training``, ``stop_when_loaded``: ``hapi train`` that must not train; ``bars``: what
  the progress bars were asked; ``ram_dir``: scratch in RAM.

The command lines themselves come from :mod:`hapi_dse.testing` (``search_args``,
``train_args``, ``quick_train_args``, ``SyntheticSetup.search_args``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from hapi_dse.testing import SyntheticSetup

os.environ.setdefault("HAPI_NO_PROGRESS", "1")
if "HAPI_CACHE_DIR" not in os.environ:  # exported networks: shared by this session's tests only
    from hapi_dse.tempdirs import make_temp_dir

    os.environ["HAPI_CACHE_DIR"] = str(make_temp_dir("hapi-test-cache-"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "synth(**kwargs): how a module's synth fixture is made (write_synthetic_setup's "
        "keywords: n_val, n_test, num_blocks, devices, foreign)",
    )


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]):
    """Run ``hapi ARGS`` in-process through the real entry point (error mapping included)."""
    from hapi_dse.cli import main

    def invoke(*args: str) -> CliResult:
        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return invoke


@pytest.fixture(scope="session")
def load_script() -> Callable[[str], ModuleType]:
    """``load_script(name)``: the repository's ``scripts/NAME.py``, imported afresh as a
    module (the scripts are not a package)."""
    import importlib.util

    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec and spec.loader
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load


def train_tiny(out: Path, **overrides: Any) -> Path:
    """Train a real run directory in seconds: resnet20 on a slice of sklearn's digits."""
    from hapi_dse.training import TrainConfig, train

    settings: dict[str, Any] = dict(
        dataset="digits", backbone="resnet20", epochs=1, exit_epochs=1, batch_size=64,
        limit=400, seed=0, threads=1,
    )  # fmt: skip
    train(TrainConfig(out=out, **{**settings, **overrides}))
    return out


@pytest.fixture(scope="session")
def train_digits() -> Any:
    """:func:`train_tiny`, for fixtures that need a run with other settings."""
    return train_tiny


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run directory with the default head types (``linear``, ``conv``, ``mlp``)."""
    return train_tiny(tmp_path_factory.mktemp("runs") / "tiny")


# -- export and eval: design files, a made-up profile table, one shared export ------------------


def _write_design(
    run: Path,
    path: Path,
    exits: list[tuple[int, str, float]],
    policy: str = "max_softmax",
    patience: int = 0,
) -> Path:
    """A ``design.json`` of ``run`` with ``exits`` as ``(position, head, threshold)``."""
    import json

    mid = json.loads((run / "model.json").read_text())["model_id"]
    doc = {
        "schema_version": 1,
        "model_id": mid,
        "device": "host",
        "policy": policy,
        "policy_params": {"patience": patience} if policy == "patience" else {},
        "exits": [{"position": p, "head": h, "threshold": t} for p, h, t in exits],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _write_fake_table(run: Path, profiles: Path, device: str) -> Path:
    """A made-up profile table of ``run`` for ``device`` (latency proportional to FLOPs)."""
    import csv
    import json

    from hapi_dse.profiling.table import write_table

    mid = json.loads((run / "model.json").read_text())["model_id"]
    with open(run / "flops.csv", newline="") as f:
        flops = list(csv.DictReader(f))
    rows = []
    for r in flops:
        lat = 0.004 + int(r["flops"]) * 1e-8
        rows.append(
            {
                "segment": r["segment"],
                "position": int(r["position"]),
                "head": r["head"] if r["segment"] != "block" else "",
                "batch": 1,
                "latency_ms": lat,
                "latency_p90_ms": lat * 1.1,
                "energy_mj": 0.0,
                "flops": int(r["flops"]),
                "params": int(r["params"]),
                "runs": 10,
                "source": "measured",
                "energy_source": "modelled",
            }
        )
    return write_table(
        rows, {"call_overhead_ms": 0.004}, device=device, model_id=mid, profiles=profiles
    )


@pytest.fixture(scope="session")
def write_design() -> Any:
    """``write_design(run, path, [(position, head, threshold), ...], policy=, patience=)``
    writes a ``design.json`` of ``run`` and returns ``path``."""
    return _write_design


@pytest.fixture(scope="session")
def write_fake_table() -> Any:
    """``write_fake_table(run, profiles, device)`` writes a made-up profile table of ``run``
    (latency proportional to FLOPs) and returns its path."""
    return _write_fake_table


def _profile_host(model: Path, profiles: Path) -> Path:
    """A real profile of ``model`` on this machine (device ``host``) into ``profiles``, as
    quick as one can be: 6 runs, 2 warm-ups, 2 rounds, the legacy exporter."""
    from hapi_dse.profiling import ProfileConfig, run_profile

    run_profile(
        ProfileConfig(
            model=str(model), device="host", profiles=str(profiles), runs=6, warmup=2, rounds=2,
            exporter="legacy",
        )
    )  # fmt: skip
    return profiles


@pytest.fixture(scope="session")
def profile_host() -> Any:
    """``profile_host(model, profiles)`` profiles ``model`` on this machine into ``profiles``
    (few runs: nothing is timed) and returns ``profiles``."""
    return _profile_host


@pytest.fixture(scope="session")
def shared_export(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A two-exit max-softmax design of the tiny run, exported once per test session
    (``hapi export`` defaults, 128 check samples): ``info`` (the sidecar), ``out`` (the
    ``.onnx``), ``design`` (its ``design.json`` in a search result) and ``run``. Read only."""
    from hapi_dse.deploy import ExportConfig, export_design

    root = tmp_path_factory.mktemp("shared-export")
    out = root / "model.onnx"
    design = _write_design(
        tiny_run, root / "result" / "host" / "design.json", [(1, "linear", 0.6), (4, "conv", 0.8)]
    )
    info = export_design(
        ExportConfig(source=root / "result", out=out, model=str(tiny_run), check_samples=128)
    )
    return {"info": info, "out": out, "design": design, "run": tiny_run}


@pytest.fixture
def ram_dir(tmp_path: Path) -> Iterator[Path]:
    """A scratch directory in RAM (``/dev/shm``) where there is one, else ``tmp_path``: study
    journals and SQLite fsync every record, which on a busy disk makes a trial take ~100 ms
    instead of ~2 ms."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    d = Path(tempfile.mkdtemp(prefix="hapi-test-", dir=shm))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What each progress bar was asked (its ``show``), in order; clear it between commands."""
    from hapi_dse import progress

    asked: list[bool] = []
    real = progress.enabled

    def spy(show: bool = True) -> bool:
        asked.append(show)
        return real(show)

    monkeypatch.setattr(progress, "enabled", spy)
    return asked


# -- synthetic runs: fast search tests without torch ---------------------------------------


@pytest.fixture(scope="module")
def synth(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> SyntheticSetup:
    """A :class:`~hapi_dse.testing.SyntheticSetup` for this module's tests: a synthetic run
    and its profile tables (``synth.run``, ``synth.profiles``), ``synth.search_args(out,
    ...)`` for ``hapi search`` on them. By default 200 val and 200 test samples, 4 blocks, a
    table for ``devA``; a module asks for another with ``pytestmark = pytest.mark.synth(
    n_val=600, num_blocks=6, devices={"devA": 1.0, "devB": 3.0})`` (the keywords of
    :func:`~hapi_dse.testing.write_synthetic_setup`). Read only: copy what a test damages."""
    from hapi_dse.testing import write_synthetic_setup

    mark = request.node.get_closest_marker("synth")
    root = tmp_path_factory.mktemp(f"synth-{request.module.__name__}")
    return write_synthetic_setup(root, **(mark.kwargs if mark else {}))


#: a search space of 120 designs (2 exit counts x 2 positions x 2 heads x 5 thresholds): small
#: enough to sweep exhaustively, or to give Optuna's GP sampler a few seconds of work
TINY_SPACE = (
    '[exits]\ncount = [1, 2]\npositions = [1, 3]\nheads = ["linear", "conv"]\n'
    "[thresholds]\nlevels = 5\n[policies.max_softmax]\nthreshold = [0.6, 1.0]\n"
)


@pytest.fixture(scope="session")
def tiny_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``tiny.toml`` holding :data:`TINY_SPACE` (needs 6 blocks or more: positions 1, 3)."""
    path = tmp_path_factory.mktemp("spaces") / "tiny.toml"
    path.write_text(TINY_SPACE)
    return path


# -- hapi train without the training ---------------------------------------------------------


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail loudly if training starts (it loads the data first): for commands that must stop
    before, on bad input or an ``--out`` they refuse."""

    def boom(*a: Any, **k: Any) -> None:
        raise AssertionError("training started: the command should have stopped before")

    monkeypatch.setattr("hapi_dse.training.trainer.load_splits", boom)


@pytest.fixture
def stop_when_loaded(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], None]:
    """``stop_when_loaded(code)``: from then on ``hapi train`` loads its dataset, then ends
    with exit status ``code`` instead of training."""

    def stop(code: int) -> None:
        from hapi_dse.training import trainer

        real = trainer.load_splits

        def load_then_stop(*a: Any, **k: Any) -> Any:
            real(*a, **k)
            raise SystemExit(code)

        monkeypatch.setattr(trainer, "load_splits", load_then_stop)

    return stop


# -- a world of valid inputs to every command, for tests that break one thing ----------------


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`hapi_dse.testing.world.write_world`, made once. Read only: use ``case_dir``."""
    from hapi_dse.testing.world import write_world

    return write_world(tmp_path_factory.mktemp("world"))


@pytest.fixture
def case_dir(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of the world; the working directory is the case's own (no ./profiles)."""
    import shutil

    w = tmp_path / "w"
    shutil.copytree(world, w)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HAPI_PROFILES", raising=False)
    return w
