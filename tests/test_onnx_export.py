"""The one ONNX export function: checks itself, stays quiet, leaves modules in eval mode."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from hapi_dse.errors import HapiError  # noqa: E402
from hapi_dse.onnx_tools import (  # noqa: E402
    CHECK_ATOL,
    DEFAULT_OPSET,
    ExportMismatchError,
    export_onnx,
)


class TwoInTwoOut(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.conv(x)
        return f + y, self.fc(f.mean(dim=(2, 3)))


def _trained_bn(m: nn.Module) -> nn.Module:
    # Non-trivial running statistics, so train-mode BatchNorm would give different outputs.
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(2, 3, 6, 6) * 3 + 1, torch.zeros(2, 4, 6, 6))
    return m.eval()


def _inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, 3, 6, 6, generator=g), torch.randn(1, 4, 6, 6, generator=g)


def test_dynamo_export_checks_every_output_and_is_quiet(tmp_path, capfd):
    m = _trained_bn(TwoInTwoOut())
    capfd.readouterr()
    rep = export_onnx(
        m,
        _inputs(0),
        tmp_path / "m.onnx",
        input_names=["x", "y"],
        output_names=["a", "b"],
        check_inputs=[_inputs(1)],
    )
    out, err = capfd.readouterr()
    assert out == "" and "torch.onnx" not in err
    assert rep.checked and rep.exporter == "dynamo" and rep.opset >= DEFAULT_OPSET
    assert set(rep.max_abs_diff) == {"a", "b"}
    assert all(0 <= d <= CHECK_ATOL for d in rep.max_abs_diff.values())
    assert (tmp_path / "m.onnx").is_file()
    assert not any(mod.training for mod in m.modules())
    assert not list(tmp_path.glob(".*tmp"))


def test_legacy_export_leaves_batchnorm_in_eval_mode(tmp_path):
    m = _trained_bn(TwoInTwoOut())
    rep = export_onnx(
        m,
        _inputs(0),
        tmp_path / "m.onnx",
        input_names=["x", "y"],
        output_names=["a", "b"],
        dynamo=False,
    )
    assert rep.exporter == "legacy" and rep.checked
    assert not any(mod.training for mod in m.modules())
    ref = m(*_inputs(2))[0]
    assert torch.equal(ref, m(*_inputs(2))[0])  # eval mode: deterministic, no stat updates


def test_mismatch_lists_each_output(tmp_path):
    m = _trained_bn(TwoInTwoOut())
    with pytest.raises(ExportMismatchError) as info:
        # A negative tolerance makes any difference (even 0) a mismatch: the error path.
        export_onnx(
            m,
            _inputs(0),
            tmp_path / "m.onnx",
            input_names=["x", "y"],
            output_names=["a", "b"],
            dynamo=False,
            atol=-1.0,
        )
    assert isinstance(info.value, HapiError)
    msg = str(info.value)
    assert "a=" in msg and "b=" in msg and "m.onnx" in msg
    assert not (tmp_path / "m.onnx").exists()  # nothing half-written


def test_comparison_feeds_inputs_that_have_defaults(tmp_path):
    """An input with a default (an overridable initializer) is still fed and compared."""
    import numpy as np
    import onnx

    from hapi_dse.onnx_tools import compare_with_torch

    class Scale(torch.nn.Module):
        def forward(self, x, k):
            return x * k

    path = tmp_path / "scale.onnx"
    x = torch.ones(1, 3)
    export_onnx(Scale(), (x, torch.tensor(2.0)), path, input_names=["x", "k"], output_names=["y"])
    model = onnx.load(str(path))
    k_init = onnx.numpy_helper.from_array(np.array(2.0, dtype=np.float32), "k")
    model.graph.initializer.append(k_init)  # k now has a default of 2
    onnx.save(model, str(path))
    same = compare_with_torch(Scale(), path, ["x", "k"], ["y"], [(x, torch.tensor(2.0))])
    fed = compare_with_torch(Scale(), path, ["x", "k"], ["y"], [(x, torch.tensor(5.0))])
    assert same["y"] == 0.0
    assert fed["y"] == 0.0  # k=5 was fed, not silently replaced by the default


@pytest.mark.parametrize("threads", [1, 3])
def test_the_shipped_staged_runtime_opens_sessions_as_hapi_does(threads: int) -> None:
    """``staged_runtime.py`` cannot import hapi (it ships alone), so it keeps its own copy of
    :func:`hapi_dse.onnx_tools.session_options`: the two must not drift apart."""
    from hapi_dse.deploy import staged_runtime
    from hapi_dse.onnx_tools import session_options

    def settings(opts: object) -> dict[str, object]:
        names = [n for n in dir(opts) if not n.startswith("_")]
        return {n: getattr(opts, n) for n in names if not callable(getattr(opts, n))}

    hapi, shipped = (
        settings(session_options(threads)),
        settings(staged_runtime.session_options(threads)),
    )
    assert hapi == shipped
    assert hapi["intra_op_num_threads"] == threads and hapi["log_severity_level"] == 3
