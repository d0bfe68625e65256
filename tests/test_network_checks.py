"""How the exported network is checked against PyTorch: the TorchScript part once (the
rewritten graph, the one used), the network left in eval mode; a cached network whose use
fails its check exported again, one that passes used as is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def net_shape(tiny_run: Path) -> tuple[Any, tuple[int, ...]]:
    from hapi_dse.run import RunDir

    run = RunDir(tiny_run)
    return run.load_model().eval(), (1, *[int(d) for d in run.model["arch"]["input_shape"]])


def test_torchscript_part_is_compared_once_and_left_in_eval_mode(
    net_shape: tuple[Any, tuple[int, ...]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from hapi_dse.onnx_tools import network as nw
    from hapi_dse.onnx_tools import torch_export as te
    from hapi_dse.onnx_tools.rewrite import BUILDER

    net, shape = net_shape
    monkeypatch.setenv(nw.CACHE_ENV, "off")
    monkeypatch.setattr(nw, "_MEMO", {})
    calls: list[list[str]] = []
    real = te.compare_with_torch

    def spy(module: Any, path: Any, ins: Any, outs: Any, inputs: Any) -> dict[str, float]:
        calls.append(list(outs))
        return real(module, path, ins, outs, inputs)

    monkeypatch.setattr(te, "compare_with_torch", spy)
    part = nw.network_model(net, shape, heads=[(1, "linear"), (4, "conv")])
    assert part.exporter == BUILDER and not part.cached
    assert calls == [nw.output_names(net, [(1, "linear"), (4, "conv")])]  # the rewritten graph
    assert not any(m.training for m in net.modules())  # BatchNorm in inference mode (PITFALLS)
