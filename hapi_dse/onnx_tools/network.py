"""The whole overprovisioned network exported once, and any part of it cut out of that graph.

The dynamo exporter costs ~0.3-0.5 s per graph here, whatever its size, and a profile used to
export 93 segments one by one, and ``hapi export`` the design's blocks and heads again. Now
:func:`network_model` exports every block, every head at every position and the final
classifier in ONE graph whose outputs are all of them (``block_003``, ``head_003_conv``,
``final``), and :func:`cut` extracts any segment by tensor names (``onnx.utils.Extractor``):
a block is the nodes between the previous block's output and its own, a head those between
its block's output and its logits. The cut graphs hold the same operators as a graph
exported alone (BatchNorm folded into the convolutions alike); every caller still checks
each graph it writes against PyTorch.

The exported network is cached by content hash (:func:`cache_key`: the weights, the
architecture, the input shape, the opset, the exporter and the library versions), in
``$HAPI_CACHE_DIR`` (default ``$XDG_CACHE_HOME/hapi``, else ``~/.cache/hapi``;
``HAPI_CACHE_DIR=off`` disables it), so a second profile or export of the same network
exports nothing. A cache entry is only a speed-up: one that cannot be read, or whose cuts
disagree with PyTorch, is exported again.

An export needs only the design's heads (``heads=``): without the whole network in the cache
it exports every block, those heads and the final classifier, cached under a key that names
those heads, so that it never serves another design; the whole network, when cached, serves
every design. That part is built by the TorchScript exporter and rewritten to the dynamo
exporter's operators (:mod:`~hapi_dse.onnx_tools.rewrite`: ~1 s where dynamo took ~4.7 s),
with dynamo as the fallback for an operator the rewrite does not know; the graph records
which (``exporter``, also in the export's sidecar).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from hapi_dse.onnx_tools.torch_export import DEFAULT_OPSET

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: bump when the exported network's layout (its outputs and their names) changes
NETWORK_LAYOUT_VERSION = 1
CACHE_ENV = "HAPI_CACHE_DIR"


def block_name(position: int) -> str:
    return f"block_{position:03d}"


def head_name(position: int, head: str) -> str:
    return "final" if head == "final" else f"head_{position:03d}_{head}"


Column = tuple[int, str]


def _head_columns(net: Any, heads: Sequence[Column] | None) -> list[Column]:
    """The heads a network graph computes, in the network's column order (all of them when
    ``heads`` is None); a head the network lacks is a ``ValueError``."""
    cols = [(int(p), str(h)) for p, h in net.columns[:-1]]
    if heads is None:
        return cols
    want = {(int(p), str(h)) for p, h in heads}
    missing = want - set(cols)
    if missing:
        raise ValueError(f"the network has no head {sorted(missing)}")
    return [c for c in cols if c in want]


def _network_module(net: Any, heads: Sequence[Column] | None = None) -> torch.nn.Module:
    """A module whose outputs are every block's features, the logits of ``heads`` (every
    head when None) and the final classifier's, in :func:`output_names` order."""
    from torch import nn

    cols = _head_columns(net, heads)

    class _Network(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, x: Any) -> tuple[Any, ...]:
            feats = []
            for block in self.net.backbone.blocks:
                x = block(x)
                feats.append(x)
            logits = [self.net.head(p, h)(feats[p]) for p, h in cols]
            return (*feats, *logits, self.net.backbone.classifier(x))

    return _Network().eval()


def output_names(net: Any, heads: Sequence[Column] | None = None) -> list[str]:
    blocks = [block_name(i) for i in range(net.backbone.num_blocks)]
    return [*blocks, *[head_name(p, h) for p, h in _head_columns(net, heads)], "final"]


def cache_dir() -> Path | None:
    """Where exported networks are cached; ``None`` when caching is off: ``$HAPI_CACHE_DIR``,
    else ``$XDG_CACHE_HOME/hapi`` (an absolute path, as the XDG spec asks), else
    ``~/.cache/hapi``."""
    raw = os.environ.get(CACHE_ENV)
    if raw is not None and raw.strip().lower() in ("", "0", "off", "no", "none"):
        return None
    if raw:
        return Path(raw)
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "hapi"


def cache_key(
    net: Any,
    in_shape: Sequence[int],
    opset: int,
    dynamo: bool,
    heads: Sequence[Column] | None = None,
) -> str:
    """sha256 of everything the exported network depends on: with ``heads``, of the graph of
    those heads only (the whole network's key is unchanged by the option)."""
    return _cache_keys(net, in_shape, opset, dynamo, [heads])[0]


def _cache_keys(
    net: Any,
    in_shape: Sequence[int],
    opset: int,
    dynamo: bool,
    variants: Sequence[Sequence[Column] | None],
) -> list[str]:
    """:func:`cache_key` of each of ``variants`` (head lists), the weights read once."""
    import numpy as np
    import onnx
    import torch

    from hapi_dse import __version__

    settings: dict[str, Any] = {
        "layout": NETWORK_LAYOUT_VERSION,
        "hapi": __version__,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": _version("onnxscript"),
        "opset": opset,
        "exporter": "dynamo" if dynamo else "legacy",
        "input_shape": [int(d) for d in in_shape],
        "columns": [list(c) for c in net.columns],
        "modules": repr(net),  # the architecture, as torch prints it
    }
    hashers = []
    for heads in variants:
        h = hashlib.sha256()
        extra: dict[str, Any] = {} if heads is None else {"outputs": output_names(net, heads)}
        if heads is not None and dynamo:
            from hapi_dse.onnx_tools.rewrite import BUILDER

            extra["builder"] = BUILDER
        h.update(json.dumps({**settings, **extra}, sort_keys=True).encode())
        hashers.append(h)
    for name, t in net.state_dict().items():
        arr = np.ascontiguousarray(t.detach().cpu().numpy())
        for h in hashers:
            h.update(f"{name}:{arr.dtype}:{arr.shape}".encode())
            h.update(arr.tobytes())
    return [h.hexdigest() for h in hashers]


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return ""


def network_model(
    net: Any,
    in_shape: Sequence[int],
    *,
    heads: Sequence[Column] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    fresh: bool = False,
) -> NetworkGraph:
    """The network as one ONNX model: from the cache unless ``fresh``, else exported (and
    checked against PyTorch on one input) and cached.

    With ``heads`` (``(position, head)`` pairs), only those heads are needed: the whole
    network serves when it is cached (or read already by this process), else a graph of
    every block, those heads and the final classifier, cached under its own key."""
    if heads is not None and _head_columns(net, heads) == _head_columns(net, None):
        heads = None  # every head: the whole network
    variants: list[Sequence[Column] | None] = [None] if heads is None else [None, heads]
    keys = _cache_keys(net, in_shape, opset, dynamo, variants)
    if not fresh:
        for key in keys:
            if key in _MEMO:  # this process exported or read it already
                return _MEMO[key]
    graph = _network_model(
        net, in_shape, list(zip(keys, variants, strict=True)), cache_dir(),
        opset=opset, dynamo=dynamo, fresh=fresh,
    )  # fmt: skip
    _MEMO.clear()  # one network at a time: its graph is a few MB
    _MEMO[graph.key] = graph
    return graph


_MEMO: dict[str, NetworkGraph] = {}

T = TypeVar("T")


def with_network(
    net: Any,
    in_shape: Sequence[int],
    use: Callable[[NetworkGraph], T],
    *,
    heads: Sequence[Column] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    on_export: Callable[[], None] | None = None,
) -> tuple[NetworkGraph, T]:
    """``use(network)`` on :func:`network_model`'s graph, and that graph; when ``use`` fails
    (a :class:`~hapi_dse.errors.HapiError`: a graph cut or assembled from it failed its
    check) on a cached graph, the network is exported fresh and ``use`` called again.

    The cache entry was compared with PyTorch when read, but on one input and on the
    network's outputs only: the callers check what they build from it on their own inputs
    (and the assembled design graphs on their exit paths), a check a cache entry must not
    fail where a fresh export would pass. ``on_export`` is called before each
    :func:`network_model` (a progress step)."""
    from hapi_dse.errors import HapiError

    fresh = False
    while True:
        if on_export is not None:
            on_export()
        network = network_model(net, in_shape, heads=heads, opset=opset, dynamo=dynamo,
                                fresh=fresh)  # fmt: skip
        try:
            return network, use(network)
        except HapiError as e:
            if not network.cached:
                raise
            log.warning("the cached network graph failed a check (%s): exporting it again", e)
            fresh = True


def _network_model(
    net: Any,
    in_shape: Sequence[int],
    variants: list[tuple[str, Sequence[Column] | None]],
    root: Path | None,
    *,
    opset: int,
    dynamo: bool,
    fresh: bool,
) -> NetworkGraph:
    """The first of ``variants`` (cache key, heads) found in the cache, else the last one
    exported."""
    import torch

    from hapi_dse.onnx_tools.torch_export import CHECK_ATOL, compare_with_torch, export_onnx
    from hapi_dse.readers import read_onnx
    from hapi_dse.tempdirs import temp_dir

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(tuple(int(d) for d in in_shape), generator=gen)
    for key, heads in variants if not fresh else ():
        entry = _entry(root, key) if root is not None else None
        if entry is None or not entry.is_file():
            continue
        try:  # an entry is used only when it is this network's and agrees with PyTorch
            model = read_onnx(entry)
            ours = any(p.key == "hapi.cache_key" and p.value == key for p in model.metadata_props)
            module = _network_module(net, heads)
            names = output_names(net, heads)
            diffs = compare_with_torch(module, entry, ["x"], names, [(x,)])
            if ours and all(d <= CHECK_ATOL for d in diffs.values()):
                log.debug("network graph from the cache: %s", entry)
                props = {p.key: p.value for p in model.metadata_props}
                exporter = props.get("hapi.exporter", "dynamo" if dynamo else "legacy")
                return NetworkGraph(
                    model, _opset_of(model, opset), cached=True, key=key, exporter=exporter
                )
            log.debug("cache entry %s is not this network's: exported again", entry)
        except Exception as e:  # any failure of a cache entry: export it again
            log.debug("cache entry %s unusable (%s): exported again", entry, e)
    key, heads = variants[-1]
    module, names = _network_module(net, heads), output_names(net, heads)
    exporter = "dynamo" if dynamo else "legacy"
    with temp_dir("hapi-network-") as tmp:
        model = None
        if heads is not None and dynamo:  # a design's part: the fast path when it applies
            from hapi_dse.onnx_tools.rewrite import BUILDER, torchscript_network

            model = torchscript_network(module, x, tmp / "torchscript.onnx", names, opset)
            if model is not None:
                diffs = compare_with_torch(module, _saved(model, tmp / "part.onnx"), ["x"],
                                           names, [(x,)])  # fmt: skip
                if all(d <= CHECK_ATOL for d in diffs.values()):
                    exporter = BUILDER
                else:
                    model = None
        if model is None:
            export_onnx(
                module, (x,), tmp / "network.onnx", input_names=["x"], output_names=names,
                opset=opset, dynamo=dynamo,
            )  # fmt: skip
            model = read_onnx(tmp / "network.onnx")
    for k, v in (("hapi.cache_key", key), ("hapi.exporter", exporter)):
        prop = model.metadata_props.add()
        prop.key, prop.value = k, v
    if root is not None:
        _store(_entry(root, key), model)
    return NetworkGraph(model, _opset_of(model, opset), cached=False, key=key, exporter=exporter)


def _saved(model: Any, path: Path) -> Path:
    import onnx

    onnx.save(model, str(path))
    return path


def _entry(root: Path, key: str) -> Path:
    return root / "onnx" / f"network-{key[:32]}.onnx"


@dataclass
class NetworkGraph:
    """The exported network (or the part of it asked for), the opset the exporter wrote, and
    whether it came from the cache (a caller whose check fails on a cached graph asks for a
    fresh one)."""

    model: Any
    opset: int
    cached: bool
    key: str = ""  # its cache key
    exporter: str = "dynamo"  # what built it (:data:`~hapi_dse.onnx_tools.rewrite.BUILDER`)

    def cut(self, source: str, target: str) -> Any:
        return cut(self.model, source, target)


def _opset_of(model: Any, default: int) -> int:
    versions = (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return next(versions, default)


def _store(entry: Path, model: Any) -> None:
    """Write a cache entry; a cache that cannot be written only costs the next export."""
    import onnx

    from hapi_dse.atomic import atomic_path
    from hapi_dse.errors import HapiError

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(entry) as tmp:
            onnx.save(model, str(tmp))
    except (OSError, HapiError) as e:
        log.debug("could not cache the network graph at %s: %s", entry, e)


def _producers(graph: Any) -> dict[str, Any]:
    return {o: n for n in graph.node for o in n.output}


def _resolve(graph: Any, name: str) -> str:
    """The tensor a graph output stands for: through the exporter's Identity nodes."""
    prod = _producers(graph)
    while name in prod and prod[name].op_type == "Identity":
        name = prod[name].input[0]
    return name


def cut(
    model: Any, source: str, target: str, *, input_name: str = "x", output_name: str = "y"
) -> Any:
    """The graph computing output ``target`` from tensor ``source`` (``"x"``: the network's
    input), with its input and output renamed ``input_name`` and ``output_name``."""
    import onnx

    graph = model.graph
    src = source if source == graph.input[0].name else _resolve(graph, source)
    dst = _resolve(graph, target)
    outputs = {o.name: o for o in graph.output}
    ex = _extractor(model)
    # the Extractor looks value infos up by name: the graph outputs hold them
    for name, alias in ((src, source), (dst, target)):
        if name not in ex.value_infos and alias in outputs:
            info = onnx.ValueInfoProto()
            info.CopyFrom(outputs[alias])
            info.name = name
            ex.value_infos[name] = info
    sub = ex.extract_model([src], [dst])
    _rename(sub.graph, src, input_name)
    _rename(sub.graph, dst, output_name)
    sub.graph.name = output_name if output_name != "y" else target
    del sub.metadata_props[:]
    sub.producer_name = model.producer_name
    sub.producer_version = model.producer_version
    return sub


_EXTRACTORS: dict[int, tuple[Any, Any]] = {}


def _extractor(model: Any) -> Any:
    """One Extractor per model (its shape inference is the slow part), reused for every cut."""
    from onnx.utils import Extractor

    hit = _EXTRACTORS.get(id(model))
    if hit is None or hit[0] is not model:
        _EXTRACTORS.clear()
        hit = (model, Extractor(model))
        _EXTRACTORS[id(model)] = hit
    return hit[1]


def _rename(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for node in graph.node:
        for k, n in enumerate(node.input):
            if n == old:
                node.input[k] = new
        for k, n in enumerate(node.output):
            if n == old:
                node.output[k] = new
    for v in (*graph.input, *graph.output, *graph.value_info):
        if v.name == old:
            v.name = new


def write_checked(
    graph: Any,
    path: Path,
    module: Any,
    inputs_list: Sequence[tuple[Any, ...]],
    *,
    input_names: Sequence[str] = ("x",),
    output_names: Sequence[str] = ("y",),
    atol: float | None = None,
    also: Callable[[Path], bool] | None = None,
    what: str = "the graph",
) -> dict[str, float]:
    """Write ``graph`` atomically to ``path`` after the checks of an export: ``onnx.checker``
    (full check), then onnxruntime against ``module`` on every input; returns each output's
    max abs difference (:class:`ExportMismatchError` above ``atol``, or when ``also``, given
    the file written but not yet in place, returns False). ``what`` names the graph in
    ``onnx.checker``'s refusal."""
    import onnx

    from hapi_dse.atomic import atomic_path
    from hapi_dse.errors import ArtefactError
    from hapi_dse.onnx_tools.torch_export import (
        CHECK_ATOL,
        ExportMismatchError,
        compare_with_torch,
    )

    tol = CHECK_ATOL if atol is None else atol
    try:
        onnx.checker.check_model(graph, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ArtefactError(f"{path}: onnx.checker rejected {what}: {e}") from None
    with atomic_path(path) as tmp:
        onnx.save(graph, str(tmp))
        diffs = compare_with_torch(module, tmp, input_names, output_names, inputs_list)
        ok = also is None or also(tmp)
        if any(not d <= tol for d in diffs.values()) or not ok:
            raise ExportMismatchError(path, diffs, tol)
    return diffs
