"""-q and -v work before or after the command's name (#12): with -q a command prints no
summary (only warnings and errors), writes the same files, and says in one stderr line why
it exits 1."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

SEARCH = ["--device", "pixel6", "--trials", "40", "--seed", "2"]


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    level = logging.getLogger().level
    yield
    logging.getLogger().setLevel(level)


def _files(d: Path) -> dict[str, bytes]:
    return {
        p.name: p.read_bytes() for p in sorted(d.rglob("*.csv"))
    }  # the tables: search.json/design.json hold the command line


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_search_prints_nothing_and_writes_the_same(run_cli, tmp_path: Path, where) -> None:
    loud = run_cli("search", *SEARCH, "--out", tmp_path / "loud")
    assert loud.exit_code == 0 and "chosen for pixel6" in loud.stdout
    argv = ["-q", "search", *SEARCH] if where == "before" else ["search", *SEARCH, "-q"]
    res = run_cli(*argv, "--out", tmp_path / "quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stdout == "" and res.stderr == ""
    assert _files(tmp_path / "quiet") == _files(tmp_path / "loud") != {}


def test_quiet_infeasible_search_says_why_in_one_line(run_cli, tmp_path: Path) -> None:
    res = run_cli("search", *SEARCH, "--slo", "latency=1us", "--out", tmp_path / "r", "-q")
    assert res.exit_code == 1 and res.stdout == ""
    assert res.stderr.strip() == "hapi: no feasible design for pixel6 (see search.json)"


def test_verbose_after_the_command_logs_more(run_cli, tmp_path: Path) -> None:
    run_cli("search", *SEARCH, "--out", tmp_path / "a", "-vv")
    assert logging.getLogger().getEffectiveLevel() == logging.DEBUG
    run_cli("search", *SEARCH, "--out", tmp_path / "b")
    assert logging.getLogger().getEffectiveLevel() == logging.INFO


@pytest.mark.parametrize("where", ["before", "after"])
def test_quiet_turns_progress_bars_off(run_cli, tmp_path: Path, bars, where) -> None:
    """-q reaches the search's bar as its argument (show=False), and only for that
    command: the next one, without -q, asks for its bar again."""
    argv = ["-q", "search", *SEARCH] if where == "before" else ["search", *SEARCH, "-q"]
    assert run_cli(*argv, "--out", tmp_path / "a").exit_code == 0
    assert bars == [False]
    bars.clear()
    assert run_cli("search", *SEARCH, "--out", tmp_path / "b").exit_code == 0
    assert bars == [True]


def test_every_command_takes_quiet_after_its_name(run_cli) -> None:
    for cmd in ("train", "profile", "devices", "search", "plot", "export", "eval"):
        res = run_cli(cmd, "--help")
        assert res.exit_code == 0 and "-q, --quiet" in res.stdout, cmd
