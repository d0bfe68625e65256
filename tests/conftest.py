"""Shared fixtures: seeds, a tiny trained run directory, in-process CLI invocation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HAPI_NO_PROGRESS", "1")


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
