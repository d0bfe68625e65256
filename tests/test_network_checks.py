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


def test_a_cached_network_that_fails_its_use_is_exported_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """with_network, the one retry of segments, one-graph and staged exports."""
    from hapi_dse.errors import ArtefactError
    from hapi_dse.onnx_tools import network as nw

    asked: list[bool] = []

    def fake(net: Any, in_shape: Any, *, fresh: bool, **kw: Any) -> Any:
        asked.append(fresh)
        return nw.NetworkGraph(model=None, opset=18, cached=not fresh)

    monkeypatch.setattr(nw, "network_model", fake)
    used: list[bool] = []

    def use(network: Any) -> str:
        used.append(network.cached)
        if network.cached:
            raise ArtefactError("a cut failed its check")
        return "ok"

    steps: list[str] = []
    network, got = nw.with_network(None, (1,), use, on_export=lambda: steps.append("network"))
    assert got == "ok" and not network.cached
    assert asked == [False, True] and used == [True, False] and steps == ["network"] * 2

    def fails(network: Any) -> str:
        raise ArtefactError("fails on a fresh export too")

    asked.clear()
    with pytest.raises(ArtefactError, match="fresh export too"):
        nw.with_network(None, (1,), fails)
    assert asked == [False, True]  # exported once fresh, then the error is the caller's
    asked.clear()
    assert nw.with_network(None, (1,), lambda n: n.cached)[1] is True and asked == [False]


def test_write_checked_refuses_a_graph_its_extra_check_refuses(tmp_path: Path) -> None:
    """The one-graph export's check of its default inputs runs inside write_checked: a
    refusal writes nothing."""
    import torch
    from onnx import TensorProto, helper

    from hapi_dse.onnx_tools import ExportMismatchError
    from hapi_dse.onnx_tools.network import write_checked

    vi = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", vi[:1], vi[1:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    inputs = [(torch.ones(1, 3),)]
    seen: list[bool] = []

    def also(tmp: Path) -> bool:
        seen.append(tmp.is_file() and tmp != tmp_path / "ok.onnx")
        return len(seen) == 1

    assert write_checked(model, tmp_path / "ok.onnx", torch.nn.Identity(), inputs, also=also)
    with pytest.raises(ExportMismatchError):
        write_checked(model, tmp_path / "no.onnx", torch.nn.Identity(), inputs, also=also)
    assert seen == [True, True] and not (tmp_path / "no.onnx").exists()
    assert (tmp_path / "ok.onnx").is_file()
