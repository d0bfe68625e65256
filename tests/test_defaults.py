"""One default per setting: it lives in the config dataclass, and the command's click option
and the library's keyword read it there, so the three cannot drift apart."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import click
import pytest

from hapi_dse import api
from hapi_dse.cli import cli
from hapi_dse.deploy.evaluate import EvalConfig
from hapi_dse.deploy.export import ExportConfig
from hapi_dse.profiling.modes import ProfileConfig
from hapi_dse.search.config import SearchConfig
from hapi_dse.training.config import TrainConfig

#: command, its config, the API function taking the same settings
PAIRS = [
    ("train", TrainConfig, api.train),
    ("profile", ProfileConfig, api.profile),
    ("search", SearchConfig, api.search),
    ("export", ExportConfig, api.export),
    ("eval", EvalConfig, api.evaluate),
]
#: the click parameter that fills a differently named field
RENAMED = {"format": "fmt"}


def _field_defaults(config: type) -> dict[str, Any]:
    return {
        f.name: f.default
        for f in dataclasses.fields(config)
        if f.default is not dataclasses.MISSING and f.default is not None
    }


def _as_field(value: Any, field_default: Any) -> Any:
    """A click default in the field's form: a comma-separated option fills a tuple."""
    if isinstance(field_default, tuple) and isinstance(value, str):
        return tuple(v for v in value.split(",") if v)
    return value


@pytest.mark.parametrize("command, config, function", PAIRS, ids=[p[0] for p in PAIRS])
def test_click_options_default_to_the_config(command, config, function) -> None:
    cmd = cli.get_command(click.Context(cli), command)
    assert cmd is not None
    fields = _field_defaults(config)
    ctx = click.Context(cmd)
    checked = 0
    for p in cmd.params:
        name = RENAMED.get(p.name or "", p.name)
        default = p.get_default(ctx)
        if name in fields and default is not None and not p.multiple:
            assert _as_field(default, fields[name]) == fields[name], (command, p.name)
            checked += 1
    assert checked >= 2, f"hapi {command}: no option shares a field with {config.__name__}"


@pytest.mark.parametrize("command, config, function", PAIRS, ids=[p[0] for p in PAIRS])
def test_api_keywords_default_to_the_config(command, config, function) -> None:
    fields = _field_defaults(config)
    checked = 0
    for name, param in inspect.signature(function).parameters.items():
        field = RENAMED.get(name, name)
        if field in fields and param.default is not inspect.Parameter.empty:
            if param.default is None or isinstance(param.default, bool):
                continue  # None: "the config's"; flags (overwrite, force) default off alike
            assert param.default == fields[field], (function.__name__, name)
            checked += 1
    assert checked >= 1, f"{function.__name__}: no keyword shares a field with {config.__name__}"
