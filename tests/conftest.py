"""Shared fixtures: seeds, a tiny trained run directory, in-process CLI invocation."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HAPI_NO_PROGRESS", "1")
if "HAPI_CACHE_DIR" not in os.environ:  # exported networks: shared by this session's tests only
    from hapi_dse.tempdirs import make_temp_dir

    os.environ["HAPI_CACHE_DIR"] = str(make_temp_dir("hapi-test-cache-"))


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
