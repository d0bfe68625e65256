"""An interrupt that a library caught and turned into its own error still ends the command as
an interrupt: exit status 130 and one line, never an export failure (issue #22, class 11).

torch's ONNX exporter catches every exception of its tracing steps, a SIGTERM raised as a
``KeyboardInterrupt`` among them, and raises ``TorchExportError`` instead; hapi reported that
as "torch.onnx.export failed", exit status 2, in 3 of 15 tries.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.cli import Terminated
from hapi_dse.errors import ArtefactError, interrupt_in

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM")


@pytest.fixture(autouse=True)
def default_signals() -> Any:
    """SIGINT and SIGTERM as a terminal leaves them (a suite started in the background may
    inherit SIGINT ignored, and hapi leaves an ignored signal ignored)."""
    prev = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, handler in prev.items():
        signal.signal(s, handler)


def _wrapped(interrupt: BaseException, text: str = "Failed to export the model") -> Exception:
    """What torch.export does: catch, then raise its own error while handling."""
    try:
        try:
            raise interrupt
        except BaseException as e:
            raise AttributeError("'NoneType' object has no attribute 'f_locals'") from e
    except AttributeError as e:
        try:
            raise RuntimeError(text) from e
        except RuntimeError as outer:
            return outer


def test_interrupt_in_finds_an_interrupt_anywhere_in_the_chain() -> None:
    t = Terminated()
    assert interrupt_in(_wrapped(t)) is t
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ArtefactError("failed") from None  # the context is kept
    except ArtefactError as e:
        assert isinstance(interrupt_in(e), KeyboardInterrupt)
    assert interrupt_in(ValueError("plain")) is None


def test_export_onnx_lets_an_interrupt_the_exporter_wrapped_through(
    tmp_path: Path, monkeypatch
) -> None:
    import torch

    from hapi_dse.onnx_tools import export_onnx

    def exporter(*args: Any, **kwargs: Any) -> None:
        raise _wrapped(Terminated())

    monkeypatch.setattr(torch.onnx, "export", exporter)
    out = tmp_path / "m.onnx"
    with pytest.raises(Terminated):
        export_onnx(
            torch.nn.Linear(3, 2), (torch.zeros(1, 3),), out, input_names=["x"], output_names=["y"]
        )
    assert list(tmp_path.iterdir()) == []  # nothing half-written

    def failing(*args: Any, **kwargs: Any) -> None:  # a real failure is still one
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(torch.onnx, "export", failing)
    with pytest.raises(ArtefactError, match="unsupported operator"):
        export_onnx(
            torch.nn.Linear(3, 2), (torch.zeros(1, 3),), out, input_names=["x"], output_names=["y"]
        )


@pytest.fixture
def design(tiny_run: Path, write_design, tmp_path: Path, monkeypatch) -> Path:
    from hapi_dse.onnx_tools import network

    monkeypatch.setenv("HAPI_CACHE_DIR", "off")  # export, not a cached network graph
    monkeypatch.setattr(network, "_MEMO", {})  # nor one this process exported before
    return write_design(tiny_run, tmp_path / "res" / "host" / "design.json", [(1, "linear", 0.6)])


def _export(run_cli, tiny_run: Path, design: Path, tmp_path: Path) -> Any:
    return run_cli("export", design.parent, "--model", tiny_run, "--out", tmp_path / "m.onnx")


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
def test_hapi_export_interrupted_inside_the_exporter_exits_130(
    run_cli, tiny_run: Path, design: Path, tmp_path: Path, monkeypatch, how: str
) -> None:
    """The signal arrives inside torch.onnx.export, which wraps it in its own error."""
    import torch

    signum = getattr(signal, how)

    def exporter(*args: Any, **kwargs: Any) -> None:
        try:
            signal.raise_signal(signum)  # through hapi's handler, as a real signal is
        except KeyboardInterrupt as e:
            raise RuntimeError("Failed to export the model with torch.export") from e

    monkeypatch.setattr(torch.onnx, "export", exporter)
    res = _export(run_cli, tiny_run, design, tmp_path)
    assert res.exit_code == 130, res.stderr
    by = " by SIGTERM" if how == "SIGTERM" else ""
    assert res.stderr.strip().splitlines() == [
        f"hapi: interrupted{by}; nothing half-written was kept"
    ]
    assert not (tmp_path / "m.onnx").exists()


def test_an_error_raised_after_a_swallowed_signal_still_exits_130(
    run_cli, tiny_run: Path, design: Path, tmp_path: Path, monkeypatch
) -> None:
    """A library that swallowed the interrupt and failed later, with no trace of it in its
    error: the signal hapi received decides."""
    import torch

    def exporter(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(KeyboardInterrupt):  # swallowed
            signal.raise_signal(signal.SIGTERM)
        raise AttributeError("'NoneType' object has no attribute 'graph'")

    monkeypatch.setattr(torch.onnx, "export", exporter)
    res = _export(run_cli, tiny_run, design, tmp_path)
    assert res.exit_code == 130, res.stderr
    assert res.stderr.strip().splitlines() == [
        "hapi: interrupted by SIGTERM; nothing half-written was kept"
    ]


def test_an_export_failure_without_a_signal_is_still_an_error(
    run_cli, tiny_run: Path, design: Path, tmp_path: Path, monkeypatch
) -> None:
    import torch

    def exporter(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("unsupported operator aten::foo")

    monkeypatch.setattr(torch.onnx, "export", exporter)
    res = _export(run_cli, tiny_run, design, tmp_path)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "unsupported operator aten::foo" in lines[0]
