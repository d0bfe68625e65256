"""The console text of ``hapi eval`` and ``hapi export``.

:func:`format_report`: an evaluation report (:mod:`hapi_dse.deploy.evaluate`) as measured,
predicted and relative error side by side, the exit histogram, the fidelity of the exported
decisions and the verdict on each SLO. :func:`format_export`: what an export holds and how
it was checked, from its sidecar.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hapi_dse.cost.metrics import STATISTICS


def format_report(rep: dict[str, Any]) -> str:
    """The console table of ``hapi eval``."""
    meas, pred, rel = rep["measured"], rep["predicted"], rep["relative_error"]
    lines = [
        f"{rep['model']} ({rep['format']}) on {rep['dataset']} {rep['split']}, {rep['n']} samples"
    ]
    lines.append(f"{'':18}{'measured':>12}{'predicted':>12}{'rel. error':>12}")

    def row(label: str, mv: float, pv: float | None, rv: float | None, fmt: str) -> None:
        ps = "-" if pv is None else format(pv, fmt)
        rs = "-" if rv is None else f"{100 * rv:+.1f} %"
        lines.append(f"{label:18}{format(mv, fmt):>12}{ps:>12}{rs:>12}")

    row(
        "accuracy (%)",
        100 * meas["accuracy"],
        None if pred is None else 100 * pred["accuracy"],
        rel.get("accuracy"),
        ".2f",
    )
    for k in STATISTICS:
        pv = None if pred is None or pred["latency_ms"] is None else pred["latency_ms"][k]
        row(f"latency {k} (ms)", meas["latency_ms"][k], pv, rel.get(f"latency_{k}"), ".4f")
    lines.append("exit histogram (samples):")
    for i, name in enumerate(rep["exits"]):
        pv = "-" if pred is None else str(pred["exit_histogram"][i])
        lines.append(f"  {i} {name:14}{meas['exit_histogram'][i]:>12}{pv:>12}")
    if rep.get("fidelity"):
        f = rep["fidelity"]
        lines.append(
            f"exit decisions agreeing with the cost model: "
            f"{100 * f['exit_agreement']:.2f} % ({f['disagreeing_samples']} differ)"
        )
    if rep.get("slos"):
        lines.append("SLOs the design was searched under:")
        for v in rep["slos"]:
            fmt = _slo_value
            lines.append(
                f"  {v['slo']:24}measured {fmt(v['metric'], v['measured']):>10}  predicted "
                f"{fmt(v['metric'], v['predicted']):>10}  {v['verdict'].upper()}"
            )
    # (a busy machine is warned about once, on stderr, as the measurement ends)
    table = rep.get("table") or {}
    if table.get("error"):
        lines.append(f"no latency prediction: {table['error']}")
    elif table.get("note"):
        lines.append(f"note: {table['note']}")
    return "\n".join(lines)


def _slo_value(metric: str, v: float | None) -> str:
    if v is None:
        return "-"
    if metric == "accuracy":
        return f"{100 * v:.2f}%"
    return f"{v:.4g}"


def format_export(info: dict[str, Any], out: Path, fmt: str) -> str:
    """Three console lines of ``hapi export``: what went where, how it was checked, and the
    sidecar; ``info`` is the sidecar's content (what :func:`~hapi_dse.deploy.export_design`
    returns)."""
    from hapi_dse.deploy.export import sidecar_for

    chk = info["check"]
    worst = max(chk["max_abs_diff"].values())
    paths = len(chk["paths"])
    forced = sum(p["thresholds_forced"] for p in chk["paths"])
    return "\n".join(
        [
            f"exported {len(info['exits']) - 1} exits + final ({info['design']['policy']}) of "
            f"{info['model_id']} to {out} [{fmt}, opset {info['opset']}]",
            f"checked: onnx.checker {chk['onnx_checker']}; onnxruntime vs PyTorch max abs "
            f"difference {worst:.2g} on {paths} real samples, one per exit path"
            + (f" ({forced} with thresholds overridden)" if forced else "")
            + (f"; {chk['paths_unchecked']} path(s) unreachable" if chk["paths_unchecked"] else ""),
            f"sidecar: {sidecar_for(out, fmt)}",
        ]
    )
