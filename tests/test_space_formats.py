"""A search space written as YAML is the same space as in TOML, and searches the same."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from hapi_dse.search.space import load_space, shipped_spaces


@pytest.mark.parametrize("name", ["default", "small"])
@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_yaml_space_equals_its_toml(name: str, suffix: str, tmp_path: Path) -> None:
    toml_path = shipped_spaces()[name]
    data = tomllib.loads(toml_path.read_text())
    yaml_path = tmp_path / f"{name}{suffix}"
    yaml_path.write_text(yaml.safe_dump(data, sort_keys=False))
    a, b = load_space(toml_path), load_space(yaml_path)
    fields = [f.name for f in dataclasses.fields(a) if f.name != "path"]
    assert {f: getattr(a, f) for f in fields} == {f: getattr(b, f) for f in fields}
    assert b.path == yaml_path
    assert a.policies == b.policies and a.policies
    assert [a.grid(p) for p in a.policies] == [b.grid(p) for p in b.policies]


def test_yaml_space_searches_like_toml(tmp_path: Path) -> None:
    import hapi_dse.api as hapi

    toml_path = shipped_spaces()["small"]
    yaml_path = tmp_path / "small.yaml"
    yaml_path.write_text(yaml.safe_dump(tomllib.loads(toml_path.read_text())))
    run = hapi.load_run()
    val = run.stats("val")
    costs = hapi.load_costs("pixel6", run, val)
    found = [
        [
            (r.design.compact(), r.metrics)
            for r in hapi.search(val, costs, space, trials=40, seed=4).records
            if r.design is not None
        ]
        for space in (toml_path, yaml_path)
    ]
    assert len(found[0]) == 40 and found[0] == found[1]
