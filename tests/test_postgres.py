"""Scale-out: two ``hapi search`` processes join one study in PostgreSQL.

Needs a server: CI (``.ci/run``) starts a throwaway one on loopback and exports
``HAPI_TEST_POSTGRES_URL=postgresql://postgres@127.0.0.1:PORT/postgres``; without it the
test is skipped.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from hapi_dse.testing import write_synthetic_run, write_synthetic_table

URL = os.environ.get("HAPI_TEST_POSTGRES_URL")
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not URL, reason="HAPI_TEST_POSTGRES_URL is not set (no PostgreSQL)"),
]


def test_two_workers_share_one_study(tmp_path: Path) -> None:
    import optuna

    from hapi_dse.search.storage import open_storage

    run = write_synthetic_run(tmp_path / "run", n_val=400, n_test=400, num_blocks=6)
    profiles = tmp_path / "profiles"
    write_synthetic_table(run, "devA", profiles)
    study, total = f"hapi-test-{uuid.uuid4().hex[:12]}", 16
    env = dict(os.environ, HAPI_NO_PROGRESS="1")
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hapi_dse",
                "search",
                "--model",
                str(run),
                "--profiles",
                str(profiles),
                "--device",
                "devA",
                "--slo",
                "accuracy=50%",
                "--trials",
                str(total),
                "--storage",
                str(URL),
                "--study",
                study,
                "--seed",
                str(i),
                "--out",
                str(tmp_path / f"worker{i}"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    storage = open_storage(URL)
    try:
        for p, (_, err) in zip(procs, outs, strict=True):
            assert p.returncode == 0, err
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        # each worker stops once the study is full, but may finish the one trial it started
        # before it saw the other's last trial land (runner docstring): at most one per worker
        assert total <= len(complete) <= total + len(procs)
        own = [
            json.loads((tmp_path / f"worker{i}" / "devA" / "search.json").read_text())["trials"][
                "this_run"
            ]
            for i in range(2)
        ]
        assert all(n > 0 for n in own), own  # both workers contributed
        assert sum(own) == len(complete)
        # whoever finished last wrote results covering the whole study
        rows = max(
            (
                list(
                    csv.DictReader(
                        (tmp_path / f"worker{i}" / "devA" / "trials.csv").read_text().splitlines()
                    )
                )
                for i in range(2)
            ),
            key=len,
        )
        assert len(rows) >= len(complete)
    finally:
        optuna.delete_study(study_name=study, storage=storage)
