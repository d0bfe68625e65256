"""Every command takes the same ``--seed`` range, 0..2**32-1, and refuses anything else in
one line with exit status 2, before any work (issue #22, class 6: a traceback in search,
eval and train; export, plot and devices accepted -1)."""

from __future__ import annotations

import pytest

from hapi_dse.cli import COMMANDS


@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("value", ["-1", str(2**32), "1e3"])
def test_every_command_refuses_a_seed_out_of_range(run_cli, tmp_path, command, value):
    res = run_cli(command, "--seed", value)
    assert res.exit_code == 2, res.stderr
    assert res.stderr.count("\n") == 1 and "--seed" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_range_ends_are_accepted(run_cli):
    for value in ("0", str(2**32 - 1)):
        res = run_cli("devices", "--seed", value)
        assert res.exit_code == 0, res.stderr
