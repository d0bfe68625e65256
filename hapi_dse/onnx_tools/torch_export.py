"""The one place in hapi that calls ``torch.onnx.export`` (profiling's segment graphs and
``hapi export``'s deployment graphs alike).

Every export is explicit (exporter, opset, input and output names), quiet (the exporter's
progress lines, warnings and log records are captured, and replayed at DEBUG level), and
checks itself: ``onnx.checker`` (full check), then onnxruntime against PyTorch on the example
inputs and any extra ``check_inputs``. A difference above ``atol`` (default
:data:`CHECK_ATOL`) raises :class:`ExportMismatchError` listing each output's max abs
difference.

The module is left in eval mode: the legacy exporter can restore ``training=True`` on every
submodule after exporting (PITFALLS), which would silently put BatchNorm in training mode.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.errors import ArtefactError, HapiError, first_line, interrupt_in
from hapi_dse.readers import read_onnx

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: the ONNX opset hapi exports with (and is tested with)
DEFAULT_OPSET = 18
#: the torch.onnx exporters hapi can use (``hapi profile --exporter``): ``dynamo``
#: (torch.export, the default) or ``legacy`` (TorchScript tracing)
EXPORTERS = ("dynamo", "legacy")
DEFAULT_EXPORTER = "dynamo"
#: the largest max abs difference between an exported graph's outputs and PyTorch's that an
#: export's check accepts (recorded in the export and profile sidecars)
CHECK_ATOL = 1e-4
_NOISY_LOGGERS = (
    "torch.onnx",
    "torch.export",
    "torch._export",
    "torch.fx",
    "torch._dynamo",
    "onnxscript",
    "onnx_ir",
)


class ExportMismatchError(HapiError):
    """The exported graph disagrees with PyTorch beyond the tolerance."""

    def __init__(self, path: Path, max_abs_diff: dict[str, float], atol: float) -> None:
        self.path = path
        self.max_abs_diff = dict(max_abs_diff)
        self.atol = atol
        diffs = ", ".join(f"{k}={v:.3g}" for k, v in max_abs_diff.items())
        super().__init__(
            f"{path}: ONNX outputs differ from PyTorch by more than {atol:g} "
            f"(max abs difference per output: {diffs})"
        )


@dataclass
class ExportReport:
    """What one export produced and how well it matched PyTorch."""

    path: Path
    opset: int
    exporter: str  # "dynamo" or "legacy"
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    checked: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "opset": self.opset,
            "exporter": self.exporter,
            "max_abs_diff": dict(self.max_abs_diff),
            "checked": self.checked,
        }


@contextlib.contextmanager
def quiet_exporter() -> Iterator[io.StringIO]:
    """Capture stdout/stderr prints, warnings and torch/onnxscript log records below ERROR."""
    buf = io.StringIO()
    saved = {}
    for name in _NOISY_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(logging.ERROR)
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(buf),
            contextlib.redirect_stderr(buf),
        ):
            warnings.simplefilter("ignore")
            yield buf
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)
        chatter = buf.getvalue().strip()
        if chatter:
            log.debug("exporter output:\n%s", chatter)


_REGISTRY_CACHE: dict[Any, Any] = {}


@contextlib.contextmanager
def _reuse_torchlib_registry() -> Iterator[None]:
    """Build the dynamo exporter's op registry once per process instead of once per export.

    Building it parses the source of ~500 onnxscript functions (about 60 % of a small
    graph's export time here). Each export gets a copy, so one export cannot change another's.
    Relies on a private torch API; anything unexpected falls back to the normal path.
    """
    try:
        from torch.onnx._internal.exporter import _registration

        cls = _registration.ONNXRegistry
        original = cls.__dict__["from_torchlib"]
        build = original.__func__
    except (ImportError, AttributeError, KeyError):
        yield
        return

    def cached(klass: Any, *args: Any, **kwargs: Any) -> Any:
        import copy

        key = (klass, args, tuple(sorted(kwargs.items())))
        if key not in _REGISTRY_CACHE:
            _REGISTRY_CACHE[key] = build(klass, *args, **kwargs)
        reg = copy.copy(_REGISTRY_CACHE[key])
        if isinstance(getattr(reg, "functions", None), dict):
            reg.functions = {k: list(v) for k, v in reg.functions.items()}
        return reg

    cls.from_torchlib = classmethod(cached)  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        cls.from_torchlib = original  # type: ignore[method-assign]


def _to_numpy_feed(names: Sequence[str], inputs: Sequence[torch.Tensor]) -> dict[str, Any]:
    return {n: t.detach().cpu().numpy() for n, t in zip(names, inputs, strict=True)}


def _flatten_outputs(out: Any) -> list[torch.Tensor]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        flat: list[torch.Tensor] = []
        for o in out:
            flat.extend(_flatten_outputs(o))
        return flat
    if isinstance(out, dict):
        return _flatten_outputs(list(out.values()))
    raise TypeError(f"cannot compare output of type {type(out).__name__}")


def compare_with_torch(
    module: torch.nn.Module,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    inputs_list: Sequence[tuple[torch.Tensor, ...]],
) -> dict[str, float]:
    """Max abs difference per output between onnxruntime and PyTorch over several inputs."""
    import numpy as np
    import torch

    from hapi_dse.onnx_tools.session import open_session

    sess = open_session(path)
    # Inputs with a default are listed as overridable initializers, not by get_inputs().
    graph_inputs = [i.name for i in sess.get_inputs()]
    graph_inputs += [i.name for i in sess.get_overridable_initializers()]
    diffs = dict.fromkeys(output_names, 0.0)
    for inputs in inputs_list:
        with torch.no_grad():
            ref = _flatten_outputs(module(*inputs))
        # The dynamo exporter drops inputs the graph does not use; feed only what it takes.
        feed = {k: v for k, v in _to_numpy_feed(input_names, inputs).items() if k in graph_inputs}
        got = sess.run(list(output_names), feed)
        if len(ref) != len(got):
            raise ArtefactError(
                f"{path}: the graph has {len(got)} outputs but PyTorch returned {len(ref)}"
            )
        for name, r, g in zip(output_names, ref, got, strict=True):
            r_np = r.detach().cpu().numpy()
            if r_np.shape != np.shape(g):
                diffs[name] = float("inf")
                continue
            d = float(np.max(np.abs(r_np.astype(np.float64) - np.asarray(g, np.float64))))
            diffs[name] = max(diffs[name], d if np.isfinite(d) else float("inf"))
    return diffs


def export_onnx(
    module: torch.nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    path: str | Path,
    *,
    input_names: list[str],
    output_names: list[str],
    opset: int = DEFAULT_OPSET,
    dynamo: bool = True,
    check_inputs: list[tuple[torch.Tensor, ...]] | None = None,
    atol: float = CHECK_ATOL,
    compare: bool = True,
) -> ExportReport:
    """Export ``module`` to ``path``, check the graph, and compare it with PyTorch.

    Shapes are static (those of ``example_inputs``). The file is written atomically: a
    failed export or check leaves nothing at ``path``. Raises :class:`ExportMismatchError`
    when an output differs from PyTorch by more than ``atol`` on any of the inputs.
    ``compare=False`` skips that comparison (``onnx.checker`` still runs; the report says
    ``checked=False``): for a caller that rewrites the graph and compares what it uses.
    """
    import onnx
    import torch

    from hapi_dse.atomic import atomic_path

    path = Path(path)
    module.eval()
    exporter = "dynamo" if dynamo else "legacy"
    with atomic_path(path) as tmp:
        try:
            with quiet_exporter(), torch.no_grad(), _reuse_torchlib_registry():
                torch.onnx.export(
                    module,
                    tuple(example_inputs),
                    str(tmp),
                    input_names=list(input_names),
                    output_names=list(output_names),
                    opset_version=opset,
                    dynamo=dynamo,
                    external_data=False,
                )
        except Exception as e:  # the exporters raise many types; report the first line
            interrupt = interrupt_in(e)  # torch.export wraps a Ctrl-C or SIGTERM it caught
            if interrupt is not None:
                raise interrupt from None
            first = first_line(e)
            raise ArtefactError(f"{path}: torch.onnx.export ({exporter}) failed: {first}") from e
        finally:
            module.eval()  # the legacy exporter may restore training=True on submodules
        model = read_onnx(tmp)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ArtefactError(f"{path}: onnx.checker rejected the graph: {e}") from None
        actual_opset = next(
            (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), opset
        )
        if not compare:
            return ExportReport(path=path, opset=actual_opset, exporter=exporter)
        diffs = compare_with_torch(
            module,
            tmp,
            input_names,
            output_names,
            [tuple(example_inputs), *(check_inputs or [])],
        )
        if any(not d <= atol for d in diffs.values()):
            raise ExportMismatchError(path, diffs, atol)
    return ExportReport(
        path=path, opset=actual_opset, exporter=exporter, max_abs_diff=diffs, checked=True
    )
