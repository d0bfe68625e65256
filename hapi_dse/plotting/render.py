"""Draw a :class:`~hapi_dse.plotting.info.FigureInfo` with matplotlib (Agg backend)."""

from __future__ import annotations

from pathlib import Path

from hapi_dse.cost.metrics import find_metric
from hapi_dse.errors import SettingError
from hapi_dse.plotting.info import FigureInfo

FORMATS = (".png", ".svg", ".pdf")
_COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink")
_HEAD_MARKERS = {"linear": "v", "conv": "^", "mlp": "<", "sdn": ">", "conv2": "P", "dws": "X"}


def output_paths(out: Path, devices: list[str]) -> list[Path]:
    """``out`` for one device; ``STEM-DEVICE.EXT`` for several."""
    if out.suffix.lower() not in FORMATS:
        raise SettingError("out", f"{out}: expected a file ending in {', '.join(FORMATS)}")
    if len(devices) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{d}{out.suffix}") for d in devices]


def _scale(metric: str) -> float:
    found = find_metric(metric)
    return 100.0 if found is not None and found.kind == "fraction" else 1.0


def render(info: FigureInfo, out: Path, *, title: str | None = None, dpi: int = 150) -> Path:
    """Write one figure; the format follows the file suffix (PNG, SVG or PDF)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hapi_dse.atomic import atomic_path

    sx, sy = _scale(info.x), _scale(info.y)
    fig, ax = plt.subplots(figsize=(7.5, 5.0))
    for i, s in enumerate(info.series):
        colour = _COLOURS[i % len(_COLOURS)]
        name = f"{s.label}: " if len(info.series) > 1 else ""
        if len(s.infeasible):
            ax.scatter(
                s.infeasible["x"] * sx,
                s.infeasible["y"] * sy,
                s=9,
                c="0.75",
                marker="x",
                linewidths=0.7,
                label=f"{name}infeasible",
                zorder=1,
            )
        if len(s.dominated):
            ax.scatter(
                s.dominated["x"] * sx,
                s.dominated["y"] * sy,
                s=10,
                color=colour,
                alpha=0.3,
                linewidths=0,
                label=f"{name}feasible",
                zorder=2,
            )
        if len(s.front):
            ax.step(
                s.front["x"] * sx,
                s.front["y"] * sy,
                where="post",
                color=colour,
                linewidth=1.5,
                zorder=3,
            )
            ax.scatter(
                s.front["x"] * sx,
                s.front["y"] * sy,
                s=24,
                color=colour,
                edgecolors="black",
                linewidths=0.5,
                label=f"{name}Pareto front",
                zorder=4,
            )
        if s.chosen is not None:
            ax.scatter(
                [s.chosen[0] * sx],
                [s.chosen[1] * sy],
                s=160,
                marker="*",
                color=colour,
                edgecolors="black",
                linewidths=0.8,
                label=f"{name}design.json",
                zorder=5,
            )
    seen: set[str] = set()
    for r in info.references:
        if r.kind == "backbone":
            ax.scatter(
                [r.x * sx],
                [r.y * sy],
                s=60,
                marker="s",
                color="black",
                label="plain backbone",
                zorder=5,
            )
            continue
        lab = f"single-exit subnet ({r.head})"
        ax.scatter(
            [r.x * sx],
            [r.y * sy],
            s=16,
            marker=_HEAD_MARKERS.get(r.head, "d"),
            color="0.35",
            alpha=0.7,
            label=None if lab in seen else lab,
            zorder=2,
        )
        seen.add(lab)
    for line in info.slo_lines:
        if line.axis == "x":
            ax.axvline(
                line.value * sx, color="tab:red", linestyle="--", linewidth=1.0, label=line.label
            )
        else:
            ax.axhline(
                line.value * sy, color="tab:red", linestyle=":", linewidth=1.0, label=line.label
            )
    ax.set_xlabel(info.x_label)
    ax.set_ylabel(info.y_label)
    ax.set_title(title or f"{info.device}: {info.y_label} vs {info.x_label}")
    ax.grid(True, linewidth=0.3, alpha=0.6)
    ax.legend(fontsize=7, loc="best", framealpha=0.85)
    fig.tight_layout()
    out = Path(out)
    with atomic_path(out) as tmp:
        fig.savefig(
            tmp,
            format=out.suffix.lstrip(".").lower(),
            dpi=dpi,
            metadata=_metadata(out.suffix.lower()),
        )
    plt.close(fig)
    return out


def _metadata(suffix: str) -> dict[str, str | None]:
    """Reproducible files: no creation date (SVG/PDF embed one by default)."""
    if suffix == ".svg":
        return {"Date": None}
    if suffix == ".pdf":
        return {"CreationDate": None}
    return {}
