"""Configs speak Python, the CLI speaks flags: a bad setting is named by its field from the
library (``trials must be >= 1``) and by its flag from the command line (``--trials ...``),
from one error (:class:`hapi_dse.errors.SettingError`) translated by the CLI."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from hapi_dse.errors import SettingError, UsageError
from hapi_dse.search.config import SearchConfig, check_config


def _refusal(**settings: object) -> str:
    cfg = dataclasses.replace(SearchConfig(devices=("pixel6",)), **settings)
    with pytest.raises(SettingError) as info:
        check_config(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    "settings, text",
    [
        ({"trials": 0}, "trials must be >= 1, but got 0"),
        ({"jobs": 0}, "jobs must be >= 1, but got 0"),
        ({"timeout": -1.0}, "timeout must be > 0 seconds, but got -1"),
        ({"devices": ()}, "devices: expected one or more device names, e.g. pixel6"),
        ({"study": "s"}, "study names a study in storage; give storage URL too"),
    ],
)
def test_the_library_names_the_field(settings: dict[str, object], text: str) -> None:
    got = _refusal(**settings)
    assert got == text
    assert "--" not in got


def test_the_translation_names_each_setting_once_and_keeps_the_rest() -> None:
    e = SettingError("study", "names a study in {storage}; give {storage} URL too", ("storage",))
    flagged = e.as_flag({"study": "--study", "storage": "--storage"})
    assert str(flagged) == "--study names a study in --storage; give --storage URL too"
    assert isinstance(flagged, UsageError) and flagged.field == "study"
    # a field without a flag keeps its name (a library-only setting)
    assert str(e.as_flag({})) == str(e)


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--trials", "0"], "--trials must be >= 1, but got 0"),
        (["--jobs", "0"], "--jobs must be >= 1, but got 0"),
        (["--timeout", "-1"], "--timeout must be > 0 seconds, but got -1"),
        (["--study", "s"], "--study names a study in --storage; give --storage URL too"),
    ],
)
def test_the_command_line_names_the_flag(run_cli, tmp_path: Path, argv, line) -> None:
    res = run_cli("search", "--device", "pixel6", "--out", tmp_path / "out", *argv)
    assert res.exit_code == 2
    assert res.stderr.strip() == f"hapi: error: {line}"
    assert not (tmp_path / "out").exists()


def test_every_flag_of_every_command_maps_to_its_parameter() -> None:
    """flags() gives each option's long flag under its parameter's name (and a repeatable
    one under the plural too), so a SettingError about any option finds its flag."""
    import click

    from hapi_dse.cli import COMMANDS, cli, flags

    ctx = click.Context(cli)
    for name in COMMANDS:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None
        got = flags(cmd)
        for p in cmd.params:
            if isinstance(p, click.Option) and any(o.startswith("--") for o in p.opts):
                assert got[p.name] in p.opts and re.fullmatch(r"--[a-z0-9-]+", got[p.name])
                if p.multiple:
                    assert got[f"{p.name}s"] == got[p.name]
