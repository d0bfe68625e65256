"""README's "Your own pretrained network": its shell commands run as written (in a scratch
directory), write only under runs/, keep the pretrained backbone bit-identical, train the
exits and end in a search result."""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent


def readme_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Your own pretrained network", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", section, re.S)
    return [shlex.split(line) for line in block.replace("\\\n", " ").splitlines() if line]


def _option(cmd: list[str], name: str) -> str:
    return cmd[cmd.index(name) + 1]


def _run_readme(run_cli, tmp_path: Path, profile: Callable[[list[str]], None]) -> None:
    """Run the README's commands in ``tmp_path``; ``profile`` runs the profile command."""
    from hapi_dse.examples import pretrained

    commands = readme_commands()
    assert [c[:2] for c in commands] == [
        ["python", "-m"], ["hapi", "train"], ["hapi", "profile"], ["hapi", "search"],
    ]  # fmt: skip
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the pretraining is plain torch; 2 threads on 2 busy cores crawl
    try:
        for cmd in commands:
            if cmd[0] == "python":
                assert cmd[2] == "hapi_dse.examples.pretrained", cmd
                assert pretrained.main(cmd[3:]) == 0
            elif cmd[1] == "profile":
                profile(cmd)
            else:
                r = run_cli(*cmd[1:])
                assert r.exit_code == 0, (cmd, r.stderr)
    finally:
        torch.set_num_threads(threads)
    assert [p.name for p in tmp_path.iterdir()] == ["runs"]  # nothing written elsewhere


def _check_outputs(tmp_path: Path) -> None:
    from hapi_dse.models.early_exit import build

    run = tmp_path / "runs" / "mine"
    model = json.loads((run / "model.json").read_text())
    net = build(model["arch"])
    net.load_state_dict(torch.load(run / "weights.pt", weights_only=True))
    mine = torch.load(tmp_path / "runs" / "pretrained.pt", weights_only=True)
    source = net.backbone.source
    assert source is not None and source.state_dict().keys() == mine.keys()
    for k, v in mine.items():  # the user's network, bit for bit, inside the run
        assert torch.equal(source.state_dict()[k], v), k

    train = json.loads((run / "train.json").read_text())
    assert train["history"]["backbone"] == [] and len(train["history"]["exits"]) == 5
    last = max(r["position"] for r in train["per_exit"])
    heads = [r for r in train["per_exit"] if r["position"] == last and r["head"] != "final"]
    assert max(r["val_acc"] for r in heads) > 0.8  # trained: chance is 0.1

    result = run / "search" / "pixel6"
    design = json.loads((result / "design.json").read_text())
    assert design["model_id"] == model["model_id"]
    assert (result / "pareto.csv").is_file()


def test_readme_pretrained_commands_run(
    run_cli, write_fake_table, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every command as written but the profile, which exports about 30 ONNX graphs
    (minutes on 2 busy cores: the slow test below runs it): a made-up table of the run for
    its device, where it would write it, stands in for it."""
    monkeypatch.chdir(tmp_path)

    def fake_profile(cmd: list[str]) -> None:
        run = Path(_option(cmd, "--model"))
        write_fake_table(run, Path(_option(cmd, "--profiles")), _option(cmd, "--device"))

    _run_readme(run_cli, tmp_path, fake_profile)
    _check_outputs(tmp_path)


@pytest.mark.slow
def test_readme_pretrained_commands_run_all(
    run_cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of them, the modelled profile included (about 1-3 minutes on 2 cores)."""
    monkeypatch.chdir(tmp_path)

    def profile(cmd: list[str]) -> None:
        r = run_cli(*cmd[1:])
        assert r.exit_code == 0, (cmd, r.stderr)

    _run_readme(run_cli, tmp_path, profile)
    _check_outputs(tmp_path)
