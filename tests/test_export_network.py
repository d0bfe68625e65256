"""Segments and design graphs cut from the network exported once equal the graphs exported
one by one (today's path, the dynamo exporter on each module), and the network cache is only
a speed-up: reused when it is this network's, exported again when it is not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.test_export_policies import DESIGNS


@pytest.fixture(scope="module")
def net_and_network(tiny_run: Path) -> tuple[Any, Any, Any]:
    from hapi_dse.onnx_tools.network import network_model
    from hapi_dse.run import RunDir

    run = RunDir(tiny_run)
    net = run.load_model().eval()
    shape = (1, *[int(d) for d in run.model["arch"]["input_shape"]])
    return run, net, network_model(net, shape)


def _ops(model: Any) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _run(model_or_path: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    src = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
    sess = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in sess.run(None, feed)]


def test_cut_segments_equal_segments_exported_alone(
    net_and_network: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    import torch

    from hapi_dse.onnx_tools import export_onnx
    from hapi_dse.onnx_tools.network import block_name, head_name
    from hapi_dse.readers import read_onnx

    run, net, network = net_and_network
    last = net.backbone.num_blocks - 1
    mid = last // 2
    x = torch.randn(1, *[int(d) for d in run.model["arch"]["input_shape"]])
    with torch.no_grad():
        feats, _ = net.backbone.forward_intermediates(x)
    cases = [
        ("x", block_name(0), net.backbone.blocks[0], x),
        (block_name(mid - 1), block_name(mid), net.backbone.blocks[mid], feats[mid - 1]),
        (block_name(mid), head_name(mid, "conv"), net.head(mid, "conv"), feats[mid]),
        (block_name(mid), head_name(mid, "mlp"), net.head(mid, "mlp"), feats[mid]),
        (block_name(last), "final", net.backbone.classifier, feats[last]),
        ("x", block_name(last), torch.nn.Sequential(*net.backbone.blocks), x),
    ]
    for k, (source, target, module, inp) in enumerate(cases):
        alone = tmp_path / f"alone_{k}.onnx"
        export_onnx(module, (inp,), alone, input_names=["x"], output_names=["y"])
        cut = network.cut(source, target)
        assert _ops(cut) == _ops(read_onnx(alone)), target
        feed = {"x": inp.numpy()}
        np.testing.assert_allclose(_run(cut, feed)[0], _run(str(alone), feed)[0], atol=1e-6)
        with torch.no_grad():
            np.testing.assert_allclose(_run(cut, feed)[0], module(inp).numpy(), atol=1e-4)


@pytest.mark.parametrize("policy", sorted(DESIGNS))
def test_assembled_design_graph_equals_the_exported_one(
    net_and_network: tuple[Any, Any, Any], tmp_path: Path, policy: str
) -> None:
    """The one-graph export assembled from cuts gives the outputs of the torch.cond export
    (the previous path) on every exit path, and its structure: one If per exit that can fire."""
    import torch

    from hapi_dse.cost.design import Design
    from hapi_dse.cost.policies import get_policy
    from hapi_dse.graphs import compose
    from hapi_dse.graphs.graph import DesignGraph, input_names
    from hapi_dse.onnx_tools import export_onnx

    run, net, network = net_and_network
    doc = {"schema_version": 1, "model_id": run.model_id, **DESIGNS[policy]}
    design = Design.from_dict(doc)
    m = len(design.exits)
    names = input_names(design)
    module = DesignGraph(net, design).eval()
    temps = torch.full((m,), 1.3)
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, *net_shape(run))).astype(np.float32) for _ in range(6)]
    feeds: list[tuple[Any, ...]]
    forcing = get_policy(design.policy).forcing
    if forcing is not None:
        always, never = forcing
        forced = [torch.tensor([never] * i + [always] * (m - i)) for i in range(m + 1)]
        feeds = [(torch.from_numpy(images[0]), t, temps) for t in forced]
    else:
        feeds = [(torch.from_numpy(img),) for img in images]
    old = tmp_path / "torch_cond.onnx"
    export_onnx(module, feeds[0], old, input_names=names, output_names=["logits", "exit_index"])
    new = compose.design_model(network, net, design, layout_anchor=True, input_names=names)
    eager = DesignGraph(net, design, eager=True).eval()
    paths = set()
    for f in feeds:
        feed = {n: t.numpy() for n, t in zip(names, f, strict=True)}
        got, ref = _run(new, feed), _run(str(old), feed)
        np.testing.assert_allclose(got[0], ref[0], atol=1e-5)
        assert int(got[1][0]) == int(ref[1][0])
        with torch.no_grad():
            z, k = eager(*f)
        np.testing.assert_allclose(got[0], z.numpy(), atol=1e-4)
        assert int(k[0]) == int(got[1][0])
        paths.add(int(got[1][0]))
    if forcing is not None:
        assert paths == set(range(m + 1))  # every exit path was compared
    firing = m if forcing is not None else m - max(design.patience - 1, 0)
    assert sum(n.op_type == "If" for n in _all_nodes(new.graph)) == firing


def net_shape(run: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in run.model["arch"]["input_shape"])


def _all_nodes(graph: Any) -> list[Any]:
    out = []
    for node in graph.node:
        out.append(node)
        for a in node.attribute:
            if a.g.node:
                out += _all_nodes(a.g)
    return out


def test_network_cache_is_reused_and_a_bad_entry_is_exported_again(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hapi_dse.onnx_tools import network as nw
    from hapi_dse.run import RunDir

    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path / "cache"))
    run = RunDir(tiny_run)
    net = run.load_model().eval()
    shape = (1, *net_shape(run))
    monkeypatch.setattr(nw, "_MEMO", {})
    first = nw.network_model(net, shape)
    assert not first.cached
    entries = list((tmp_path / "cache" / "onnx").glob("network-*.onnx"))
    assert len(entries) == 1
    monkeypatch.setattr(nw, "_MEMO", {})
    second = nw.network_model(net, shape)
    assert second.cached
    assert second.model.SerializeToString() == first.model.SerializeToString()
    # another network (other weights) has another key
    import torch

    other = RunDir(tiny_run).load_model().eval()
    with torch.no_grad():
        next(other.parameters()).mul_(1.5)
    assert nw.cache_key(other, shape, 18, True) != nw.cache_key(net, shape, 18, True)
    # an entry that is not a graph, or holds another network's weights: exported again
    fresh_net = RunDir(tiny_run).load_model().eval()
    entries[0].write_bytes(b"not an onnx file")
    monkeypatch.setattr(nw, "_MEMO", {})
    again = nw.network_model(fresh_net, shape)
    assert not again.cached
    key = nw.cache_key(fresh_net, shape, 18, True)
    entry = tmp_path / "cache" / "onnx" / f"network-{key[:32]}.onnx"
    import onnx

    tampered = onnx.load(str(entry))
    w = next(t for t in tampered.graph.initializer if len(t.dims) == 4)
    arr = onnx.numpy_helper.to_array(w) * 2
    w.CopyFrom(onnx.numpy_helper.from_array(arr, w.name))
    onnx.save(tampered, str(entry))
    monkeypatch.setattr(nw, "_MEMO", {})
    assert not nw.network_model(fresh_net, shape).cached


def test_cache_can_be_turned_off(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hapi_dse.onnx_tools import network as nw

    monkeypatch.setenv(nw.CACHE_ENV, "off")
    assert nw.cache_dir() is None
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path))
    assert nw.cache_dir() == tmp_path


def test_exported_segments_load_back_with_their_noop(tiny_run: Path, tmp_path: Path) -> None:
    """segments.json as export_segments writes it (noop.onnx at position -1) loads: a
    profile of --onnx-dir works on what --export-dir wrote."""
    from hapi_dse.profiling.manifest import load_manifest
    from hapi_dse.profiling.segments import export_segments
    from hapi_dse.run import RunDir

    man = export_segments(RunDir(tiny_run), tmp_path / "seg", with_probes=False)
    back = load_manifest(tmp_path / "seg")
    assert [s.file for s in back.segments] == [s.file for s in man.segments]
    assert back.get("noop") is not None and back.get("noop").position == -1  # type: ignore[union-attr]
    assert all(max(d.values()) <= 1e-4 for d in back.export_check.values())


def test_a_designs_heads_only_give_the_same_graph_and_never_serve_another_design(
    net_and_network: tuple[Any, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the whole network cached, an export exports only its design's heads (and every
    block, and the final classifier; by the TorchScript exporter, rewritten): the design graph
    assembled from that part is the one assembled from the whole network, op for op, and its
    outputs agree to float rounding; the part is cached under a key of its own, which another
    design's heads never hit, and the whole network, once cached, serves every design."""
    from hapi_dse.cost.design import Design
    from hapi_dse.graphs import compose
    from hapi_dse.graphs.graph import input_names
    from hapi_dse.onnx_tools import network as nw
    from hapi_dse.onnx_tools.rewrite import BUILDER

    run, net, whole = net_and_network
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path / "cache"))
    shape = (1, *net_shape(run))
    designs = [
        Design.from_dict({"schema_version": 1, "model_id": run.model_id, **DESIGNS[p]})
        for p in ("max_softmax", "entropy")
    ]
    heads = [[(e.position, e.head) for e in d.exits] for d in designs]
    assert set(heads[0]) != set(heads[1])
    rng = np.random.default_rng(1)
    images = [rng.standard_normal((1, *net_shape(run))).astype(np.float32) for _ in range(8)]
    parts = []
    for design, hs in zip(designs, heads, strict=True):
        monkeypatch.setattr(nw, "_MEMO", {})
        part = nw.network_model(net, shape, heads=hs)
        assert not part.cached  # nothing in the cache serves it: not the other design's part
        assert part.exporter == BUILDER and whole.exporter == "dynamo"
        parts.append(part)
        outs = {o.name for o in part.model.graph.output}
        assert {nw.head_name(p, h) for p, h in hs} <= outs
        assert len(outs) == net.backbone.num_blocks + len(hs) + 1  # no other head
        names = input_names(design)
        got = compose.design_model(part, net, design, layout_anchor=True, input_names=names)
        ref = compose.design_model(whole, net, design, layout_anchor=True, input_names=names)
        assert [n.op_type for n in _all_nodes(got.graph)] == [
            n.op_type for n in _all_nodes(ref.graph)
        ]
        m = len(design.exits)
        for img in images:  # thresholds low and high: early and late exit paths
            for thr in (0.0, 0.5, 1.0):
                feed = {"input": img, "thresholds": np.full(m, thr, np.float32)}
                feed["temperatures"] = np.ones(m, np.float32)
                a, b = _run(got, feed), _run(ref, feed)
                np.testing.assert_allclose(a[0], b[0], rtol=0, atol=1e-5)
                assert int(a[1][0]) == int(b[1][0])
    keys = {p.key for p in parts}
    assert len(keys) == 2 and nw.cache_key(net, shape, 18, True) not in keys
    entries = sorted((tmp_path / "cache" / "onnx").glob("network-*.onnx"))
    assert len(entries) == 2
    # read back from the cache: the design's own part
    monkeypatch.setattr(nw, "_MEMO", {})
    again = nw.network_model(net, shape, heads=list(reversed(heads[0])))
    assert again.cached and again.key == parts[0].key and again.exporter == BUILDER
    # the whole network cached: it serves any design (no new part is exported)
    monkeypatch.setattr(nw, "_MEMO", {})
    full = nw.network_model(net, shape)
    monkeypatch.setattr(nw, "_MEMO", {})
    served = nw.network_model(net, shape, heads=[(3, "conv")])
    assert served.cached and served.key == full.key
    assert len(list((tmp_path / "cache" / "onnx").glob("network-*.onnx"))) == 3
    with pytest.raises(ValueError, match="no head"):
        nw.network_model(net, shape, heads=[(0, "no-such-head")])


def test_cache_follows_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from hapi_dse.onnx_tools import network as nw

    monkeypatch.delenv(nw.CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nw.cache_dir() == tmp_path / "xdg" / "hapi"
    monkeypatch.setenv("XDG_CACHE_HOME", "")  # set but empty: the fallback, as the spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert nw.cache_dir() == tmp_path / "home" / ".cache" / "hapi"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # relative: invalid, ignored
    assert nw.cache_dir() == tmp_path / "home" / ".cache" / "hapi"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert nw.cache_dir() == tmp_path / "home" / ".cache" / "hapi"
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path / "own"))  # HAPI_CACHE_DIR wins
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert nw.cache_dir() == tmp_path / "own"


def test_rewritten_torchscript_graph_has_the_dynamo_exporters_operators(
    net_and_network: tuple[Any, Any, Any], tmp_path: Path
) -> None:
    """Every segment cut from the network built by the TorchScript exporter and rewritten has
    the operators, attributes and small constants of the one cut from the dynamo export, and
    weights equal to float rounding; a graph with an operator the rewrite does not know is
    refused (the caller exports it with dynamo)."""
    import onnx
    import torch
    from onnx import numpy_helper

    from hapi_dse.onnx_tools import network as nw
    from hapi_dse.onnx_tools.rewrite import torchscript_network

    run, net, whole = net_and_network
    x = torch.randn(1, *net_shape(run))
    model = torchscript_network(
        nw._network_module(net), x, tmp_path / "ts.onnx", nw.output_names(net), 18
    )
    assert model is not None
    fast = nw.NetworkGraph(model, 18, cached=False)
    onnx.checker.check_model(model, full_check=True)

    def attrs(node: Any) -> list[tuple[str, Any]]:
        defaults = {"auto_pad": b"NOTSET", "storage_order": 0, "transA": 0}
        got = [(a.name, onnx.helper.get_attribute_value(a)) for a in node.attribute]
        return sorted((k, v) for k, v in got if defaults.get(k, object()) != v)

    last = net.backbone.num_blocks - 1
    segs = [("x" if i == 0 else nw.block_name(i - 1), nw.block_name(i)) for i in range(last + 1)]
    segs += [(nw.block_name(p), nw.head_name(p, h)) for p, h in net.columns[:-1]]
    segs.append((nw.block_name(last), "final"))
    kinds = set()
    for source, target in segs:
        a, b = fast.cut(source, target), whole.cut(source, target)
        assert [(n.op_type, attrs(n)) for n in a.graph.node] == [
            (n.op_type, attrs(n)) for n in b.graph.node
        ], target
        ia = {t.name: numpy_helper.to_array(t) for t in a.graph.initializer}
        ib = {t.name: numpy_helper.to_array(t) for t in b.graph.initializer}
        for na, nb in zip(a.graph.node, b.graph.node, strict=True):
            for va, vb in zip(
                [ia[i] for i in na.input if i in ia], [ib[i] for i in nb.input if i in ib],
                strict=True,
            ):  # fmt: skip
                assert va.shape == vb.shape and va.dtype == vb.dtype
                np.testing.assert_allclose(va, vb, rtol=1e-6, atol=1e-7)
            kinds.add(na.op_type)
        feed = {"x": np.random.default_rng(0).standard_normal(
            [d.dim_value for d in a.graph.input[0].type.tensor_type.shape.dim]
        ).astype(np.float32)}  # fmt: skip
        np.testing.assert_allclose(_run(a, feed)[0], _run(b, feed)[0], rtol=0, atol=1e-5)
    assert {"ReduceMean", "Reshape", "Conv", "Gemm"} <= kinds  # the rewritten ones are there

    class Odd(torch.nn.Module):  # Sigmoid on activations: not an operator the rewrite knows
        def forward(self, x: Any) -> Any:
            return torch.sigmoid(x) * 2

    assert torchscript_network(Odd(), x, tmp_path / "odd.onnx", ["y"], 18) is None
    relu6 = torch.nn.Sequential(torch.nn.Conv2d(x.shape[1], 4, 3), torch.nn.ReLU6())
    assert torchscript_network(relu6.eval(), x, tmp_path / "clip.onnx", ["y"], 18) is None


def test_export_falls_back_to_dynamo_without_the_torchscript_exporter(
    net_and_network: tuple[Any, Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A torch whose TorchScript exporter fails (or is gone) still exports: with dynamo."""
    from hapi_dse.errors import ArtefactError
    from hapi_dse.onnx_tools import network as nw
    from hapi_dse.onnx_tools import torch_export

    run, net, _ = net_and_network
    real = torch_export.export_onnx

    def no_legacy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dynamo") is False:
            raise ArtefactError("torch.onnx.export (legacy) failed: gone")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch_export, "export_onnx", no_legacy)
    monkeypatch.setenv(nw.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setattr(nw, "_MEMO", {})
    part = nw.network_model(net, (1, *net_shape(run)), heads=[(1, "linear")])
    assert part.exporter == "dynamo" and not part.cached
    assert nw.head_name(1, "linear") in {o.name for o in part.model.graph.output}
