"""A study hapi writes reads well in optuna-dashboard: objective names, each trial's design
in words, what the parameters encode. Read through the dashboard's own HTTP API (its WSGI
app, no socket), as its web page reads it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import optuna_dashboard
import pytest

from hapi_dse.cli import main
from hapi_dse.testing import SyntheticSetup

pytestmark = pytest.mark.synth(n_val=300, n_test=300, num_blocks=6)


def api(app: Any, path: str, query: str = "") -> Any:
    env: dict[str, Any] = {}
    setup_testing_defaults(env)
    env.update(PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(env, lambda s, h, e=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:300])
    return json.loads(body)


def test_a_hapi_study_opens_in_optuna_dashboard_with_readable_names(
    synth: SyntheticSetup, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    args = synth.search_args(tmp_path / "out", "--storage", url, "--study", "team", trials=40)
    args += ["--slo", "latency=10ms", "-q"]
    assert main(args) in (None, 0)  # a feasible design was found: the search succeeded

    app = optuna_dashboard.wsgi(url)
    (summary,) = api(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "team"
    detail = api(app, f"/api/studies/{summary['study_id']}", "after=0")
    assert detail["objective_names"] == ["accuracy", "latency_ms", "energy_mj"]
    assert len(detail["trials"]) == 40
    params = {p["name"] for p in detail["union_search_space"]}
    assert {"exit0", "q0"} <= params
    attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
    legend = json.loads(attrs["hapi_parameters"])
    assert "exit slot" in legend["exit{i}"] and "threshold level" in legend["q{i}"]
    designs = [{a["key"]: a["value"] for a in t["user_attrs"]}["design"] for t in detail["trials"]]
    # each trial's design in words: the policy, then position:head@threshold per exit
    policies = ("backbone", "max_softmax", "entropy", "patience")
    assert all(d.split()[0] in policies for d in designs)
    assert any("@" in d for d in designs)
