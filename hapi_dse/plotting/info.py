"""What ``hapi plot`` draws, computed without matplotlib (DESIGN 2.4, STYLE point 6).

From ``trials.csv`` of one or more search result directories: per directory, the feasible
non-dominated designs on the two plotted metrics (the front), the feasible dominated ones
and the infeasible ones; the SLO bounds that apply to either axis; and reference points
(the plain backbone and every single-exit subnet) predicted by the cost model. Results are
grouped by device: one figure per device, several directories overlaid.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hapi_dse.cost.metrics import find_metric, metric, pareto_front
from hapi_dse.errors import ArtefactError, HapiError
from hapi_dse.readers import read_json

if TYPE_CHECKING:
    import pandas as pd

    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.run import ExitStats

log = logging.getLogger(__name__)


def metric_column(name: str) -> str:
    """``latency`` or ``latency_ms`` -> ``latency_ms``; unknown names list the known ones."""
    return metric(name).column


def _maximised(column: str) -> bool:
    found = find_metric(column)
    return found is not None and found.maximize


def _label(column: str) -> str:
    found = find_metric(column)
    return found.label if found is not None else column


@dataclass
class Series:
    """One result directory on one figure. Frames have columns ``x``, ``y``, ``trial``.

    ``label``: its legend entry. ``device``: the device searched. ``front``: the feasible
    Pareto front, sorted by x. ``dominated``: the other feasible trials. ``infeasible``:
    the trials that break an SLO. ``chosen``: the chosen design's point (x, y), ``None``
    when none was chosen."""

    label: str
    device: str
    front: pd.DataFrame  # sorted by x
    dominated: pd.DataFrame
    infeasible: pd.DataFrame
    chosen: tuple[float, float] | None = None


@dataclass(frozen=True)
class SLOLine:
    """An SLO bound on a plotted metric: ``axis`` (``x`` or ``y``), its ``value`` and
    ``label``."""

    axis: str  # "x" or "y"
    value: float
    label: str


@dataclass(frozen=True)
class Reference:
    """A reference point, predicted by the cost model: ``kind`` ``backbone`` (the plain
    backbone) or ``subnet`` (one exit, threshold 0: at ``position`` with ``head``), its
    ``label`` and its point ``x``, ``y``."""

    label: str
    kind: str  # "backbone" or "subnet"
    head: str
    position: int
    x: float
    y: float


@dataclass
class FigureInfo:
    """What one device's figure shows (:func:`hapi_dse.api.plot_info`, ``hapi plot``).

    ``device``: the device. ``x`` and ``y``: the metric columns plotted (``latency_ms``,
    ``accuracy``...), ``x_label`` and ``y_label`` their axis labels. ``series``: one
    :class:`Series` per result directory (front, dominated and infeasible trials, the
    chosen point). ``slo_lines``: the SLO bounds on x or y (:class:`SLOLine`).
    ``references``: the plain backbone and single-exit subnets (:class:`Reference`), when
    asked for."""

    device: str
    x: str
    y: str
    x_label: str
    y_label: str
    series: list[Series]
    slo_lines: list[SLOLine] = field(default_factory=list)
    references: list[Reference] = field(default_factory=list)


def _as_bool(col: pd.Series) -> np.ndarray:
    if col.dtype == bool:
        return col.to_numpy()
    return col.astype(str).str.strip().str.lower().isin(("true", "1", "yes")).to_numpy()


def _floats(column: Any) -> np.ndarray:
    """A trials.csv column as floats, NaN where a cell is not a number (an integer too large
    for a float, which pandas' own conversion raises on, reads as infinity)."""

    def one(v: Any) -> float:
        try:
            return float(v)
        except (TypeError, ValueError):
            return math.nan
        except OverflowError:
            return math.inf

    return np.fromiter((one(v) for v in column), float, count=len(column))


def series_info(
    trials: pd.DataFrame,
    x: str,
    y: str,
    *,
    label: str = "",
    device: str = "",
    chosen_trial: int | None = None,
) -> Series:
    """Split completed trials into front, dominated and infeasible on metrics ``x`` / ``y``."""
    import pandas as pd

    for col in (x, y):
        if col not in trials.columns:
            raise ArtefactError(f"{label or 'trials'}: no column {col!r} in trials.csv")
    df = trials
    if "state" in df.columns:
        df = df[df["state"].astype(str).str.upper() == "COMPLETE"]
    xs, ys = _floats(df[x]), _floats(df[y])
    ok = np.isfinite(xs) & np.isfinite(ys)
    trial = df["trial"].to_numpy() if "trial" in df.columns else np.arange(len(df))
    frame = pd.DataFrame(
        {
            "x": xs,
            "y": ys,
            "trial": trial,
            "exits": df["exits"].astype(str).to_numpy()
            if "exits" in df.columns
            else [""] * len(df),
        }
    )[ok].reset_index(drop=True)
    feas = (_as_bool(df["feasible"]) if "feasible" in df.columns else np.ones(len(df), bool))[ok]
    n_exits = (
        np.nan_to_num(_floats(df["n_exits"]), nan=0.0)[ok]
        if "n_exits" in df.columns
        else np.zeros(len(frame))
    )
    front_mask = np.zeros(len(frame), bool)
    if feas.any():  # the search's definition: equal points count once, the simplest design
        idx = np.flatnonzero(feas)
        front_mask[idx] = pareto_front(
            frame[["x", "y"]].to_numpy()[idx],
            maximize=[_maximised(x), _maximised(y)],
            rank=list(zip(n_exits[idx], frame["trial"].to_numpy()[idx], strict=True)),
        )
    chosen = None
    if chosen_trial is not None:
        hit = frame[frame["trial"] == chosen_trial]
        if len(hit):
            chosen = (float(hit["x"].iat[0]), float(hit["y"].iat[0]))
    return Series(
        label=label,
        device=device,
        front=frame[front_mask].sort_values(["x", "y"]).reset_index(drop=True),
        dominated=frame[feas & ~front_mask].reset_index(drop=True),
        infeasible=frame[~feas].reset_index(drop=True),
        chosen=chosen,
    )


def slo_lines(
    slos: list[dict[str, Any]], x: str, y: str, where: str | Path = "search.json"
) -> list[SLOLine]:
    """The SLO bounds on the plotted metrics (``search.json`` ``slos`` entries)."""
    from hapi_dse.cost.slo import SLO

    out = []
    for i, d in enumerate(slos):
        try:
            slo = SLO.from_dict(d, name=f"slos[{i}]")
        except HapiError as e:
            raise ArtefactError(f"{where}: {e}; rerun 'hapi search'") from None
        if slo.metric not in (x, y):
            continue
        label = slo.text or slo.describe()
        line = SLOLine("x" if slo.metric == x else "y", slo.value, f"SLO {label}")
        if line not in out:
            out.append(line)
    return out


def reference_points(stats: ExitStats, costs: SegmentCosts, x: str, y: str) -> list[Reference]:
    """The plain backbone and every single-exit subnet (one exit, threshold 0), predicted."""
    from hapi_dse.cost.design import Design, Exit
    from hapi_dse.cost.model import CostModel

    model = CostModel(stats, costs)
    refs = []
    last = int(stats.position[-1])
    designs = [("backbone", "final", last, Design(exits=()))]
    for p, h in zip(stats.position.tolist(), stats.head.tolist(), strict=True):
        if h != "final" and p < last:
            designs.append(("subnet", h, int(p), Design(exits=(Exit(int(p), h, 0.0),))))
    for kind, head, pos, design in designs:
        m = model.evaluate(design)
        label = "plain backbone" if kind == "backbone" else f"subnet {pos}:{head}"
        refs.append(Reference(label, kind, head, pos, float(m[x]), float(m[y])))
    return refs


# ------------------------------------------------------------------------------------------
# result directories


@dataclass
class ResultSet:
    """One ``hapi search`` output directory for one device."""

    path: Path
    device: str
    model_id: str
    trials: pd.DataFrame
    search: dict[str, Any]
    chosen_trial: int | None


def find_results(dirs: list[str | Path]) -> list[ResultSet]:
    """``DIR/trials.csv`` or ``DIR/DEVICE/trials.csv`` for every directory given."""

    found: list[ResultSet] = []
    for d in dirs:
        p = Path(d)
        if not p.is_dir():
            raise ArtefactError(f"{p}: no such directory (expected a 'hapi search --out' result)")
        subs = (
            [p]
            if (p / "trials.csv").is_file()
            else sorted(q.parent for q in p.glob("*/trials.csv"))
        )
        if not subs:
            raise ArtefactError(
                f"{p}: no trials.csv in it or in a device subdirectory; run "
                "'hapi search --out DIR' first"
            )
        for s in subs:
            search = _read_json(s / "search.json")
            design = _read_json(s / "design.json")
            trials = read_trials(s / "trials.csv", search)
            device = _device_name(s, search, design)
            model_id = str(search.get("model_id") or design.get("model_id") or "")
            chosen = design.get("trial")
            if chosen is not None and (not isinstance(chosen, int) or isinstance(chosen, bool)):
                raise ArtefactError(
                    f"{s / 'design.json'}: trial is {chosen!r}, expected a trial number; "
                    "rerun 'hapi search' or restore the file"
                )
            found.append(ResultSet(s, device, model_id, trials, search, chosen))
    return found


def _device_name(result: Path, search: dict[str, Any], design: dict[str, Any]) -> str:
    """The device a result names in ``search.json`` (else ``design.json``), checked as
    ``--device`` is: it names the figure's file when several devices are drawn, so a name
    from a file must be a plain one (not ``../x``, no NUL, no lone surrogate). A result with
    neither file is named by its directory."""
    from hapi_dse.profiling.names import NAME_RULE, valid_device_name

    for name, doc in (("search.json", search), ("design.json", design)):
        device = doc.get("device")
        if device is None or device == "":
            continue
        if not isinstance(device, str) or not valid_device_name(device):
            shown = ascii(device[:60]) if isinstance(device, str) else type(device).__name__
            raise ArtefactError(
                f"{result / name}: device {shown} is not a device name ({NAME_RULE}); "
                "rerun 'hapi search' or restore the file"
            )
        return device
    return result.name


def read_trials(path: Path, search: dict[str, Any]) -> pd.DataFrame:
    """``trials.csv`` of a search, refused when it is cut short: a last line without its
    newline, or fewer (or more) rows than the trial count ``search.json`` records."""
    import io

    import pandas as pd

    fix = "rerun 'hapi search' (same --storage and --study to resume) or restore the file"
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ArtefactError(f"{path}: cannot read ({e.strerror})") from None
    if raw and not raw.endswith(b"\n"):
        line = raw.count(b"\n") + 1
        raise ArtefactError(f"{path}: line {line} ends without a newline (truncated?); {fix}")
    try:
        trials = pd.read_csv(io.BytesIO(raw))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ArtefactError(f"{path}: not a readable CSV ({e}); {fix}") from None
    counts = search.get("trials")
    total = counts.get("total") if isinstance(counts, dict) else None
    if isinstance(total, int) and not isinstance(total, bool) and total != len(trials):
        raise ArtefactError(
            f"{path}: holds {len(trials)} trials but search.json records {total} "
            f"(truncated or edited?); {fix}"
        )
    return trials


def _read_json(p: Path) -> dict[str, Any]:
    if not p.is_file():
        return {}
    data = read_json(p)  # one line for any parse failure or limit
    return data if isinstance(data, dict) else {}


def figure_infos(
    results: list[ResultSet],
    x: str,
    y: str,
    references: dict[tuple[str, str], list[Reference]] | None = None,
) -> list[FigureInfo]:
    """One :class:`FigureInfo` per device; ``references`` keyed by (device, model_id)."""
    x, y = metric_column(x), metric_column(y)
    by_device: dict[str, list[ResultSet]] = {}
    for r in results:
        by_device.setdefault(r.device, []).append(r)
    figs = []
    for device, rs in by_device.items():
        labels = _labels(rs)
        series = [
            series_info(r.trials, x, y, label=lab, device=device, chosen_trial=r.chosen_trial)
            for r, lab in zip(rs, labels, strict=True)
        ]
        lines: list[SLOLine] = []
        for r in rs:
            slos = r.search.get("slos") or []
            if not isinstance(slos, list):
                raise ArtefactError(
                    f"{r.path / 'search.json'}: slos must be a list, got "
                    f"{json.dumps(slos, default=str)[:60]}; rerun 'hapi search'"
                )
            for line in slo_lines(slos, x, y, r.path / "search.json"):
                if line not in lines:
                    lines.append(line)
        refs: list[Reference] = []
        for r in rs:
            for ref in (references or {}).get((device, r.model_id), []):
                if ref not in refs:
                    refs.append(ref)
        figs.append(FigureInfo(device, x, y, _label(x), _label(y), series, lines, refs))
    return figs


def _labels(rs: list[ResultSet]) -> list[str]:
    """Short distinct labels: the result directory's name (its parent when it is the device)."""
    names = [
        (r.path.parent.name if r.path.name == r.device else r.path.name) or str(r.path) for r in rs
    ]
    if len(set(names)) < len(names):
        names = [str(r.path) for r in rs]
    return names
