"""hapi plot: what to draw (front, dominated, infeasible, SLO lines) and one rendered PNG."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hapi_dse.plotting import (
    figure_infos,
    find_results,
    reference_points,
    series_info,
    slo_lines,
)


def synthetic_trials() -> pd.DataFrame:
    """Nine trials in the shape of trials.csv: a known front, dominated and infeasible ones."""
    rows = [
        # trial, latency, accuracy, feasible, state
        (0, 1.0, 0.80, True, "COMPLETE"),  # front
        (1, 2.0, 0.85, True, "COMPLETE"),  # front
        (2, 3.0, 0.90, True, "COMPLETE"),  # front
        (3, 2.5, 0.84, True, "COMPLETE"),  # dominated by 1
        (4, 3.0, 0.89, True, "COMPLETE"),  # dominated by 2 (same latency, less accurate)
        (5, 0.5, 0.95, False, "COMPLETE"),  # infeasible (would dominate everything)
        (6, 4.0, 0.70, False, "COMPLETE"),  # infeasible and dominated
        (7, 1.5, 0.99, True, "FAIL"),  # not complete: ignored
        (8, 2.0, 0.85, True, "COMPLETE"),  # repeats 1: the front counts it once, as the search
        # does (the simplest design, then the earliest trial: 1)
    ]
    df = pd.DataFrame(rows, columns=["trial", "latency_ms", "accuracy", "feasible", "state"])
    df["exits"] = [f"{i}:conv@0.9" for i in range(len(df))]
    df["constraint_latency_ms"] = np.where(df["feasible"], -1.0, 1.0)
    df["pareto"] = False
    return df


def test_series_info_splits_front_dominated_infeasible() -> None:
    s = series_info(synthetic_trials(), "latency_ms", "accuracy", chosen_trial=2)
    assert sorted(s.front["trial"]) == [0, 1, 2]
    assert s.front["x"].is_monotonic_increasing
    assert sorted(s.dominated["trial"]) == [3, 4, 8]
    assert sorted(s.infeasible["trial"]) == [5, 6]
    assert 7 not in set(s.front["trial"]) | set(s.dominated["trial"]) | set(s.infeasible["trial"])
    assert s.chosen == (3.0, 0.90)


def test_series_info_reads_csv_strings_and_other_axes(tmp_path: Path) -> None:
    p = tmp_path / "trials.csv"
    df = synthetic_trials()
    df["energy_mj"] = df["latency_ms"] * 2
    df.to_csv(p, index=False)
    back = pd.read_csv(p)
    back["feasible"] = back["feasible"].astype(str)  # "True"/"False" as written by csv
    s = series_info(back, "energy_mj", "accuracy")
    assert sorted(s.front["trial"]) == [0, 1, 2]
    assert sorted(s.infeasible["trial"]) == [5, 6]


def test_slo_lines_only_for_plotted_metrics() -> None:
    slos = [
        {"metric": "latency_ms", "bound": "max", "value": 2.5, "text": "latency=2.5ms"},
        {"metric": "accuracy", "bound": "min", "value": 0.82, "text": "accuracy=82%"},
        {"metric": "size_mb", "bound": "max", "value": 1.0, "text": "size=1MB"},
    ]
    lines = slo_lines(slos, "latency_ms", "accuracy")
    assert [(line.axis, line.value) for line in lines] == [("x", 2.5), ("y", 0.82)]
    assert "latency=2.5ms" in lines[0].label


def _result_dir(root: Path, device: str, df: pd.DataFrame, slos: list[dict]) -> Path:
    d = root / device
    d.mkdir(parents=True)
    df.to_csv(d / "trials.csv", index=False)
    (d / "search.json").write_text(json.dumps({"device": device, "model_id": "m-1", "slos": slos}))
    (d / "design.json").write_text(
        json.dumps({"device": device, "model_id": "m-1", "trial": 1, "exits": []})
    )
    return root


def test_figure_infos_overlay_several_dirs_per_device(tmp_path: Path) -> None:
    df = synthetic_trials()
    slo = [{"metric": "latency_ms", "value": 2.5, "text": "latency=2.5ms"}]
    a = _result_dir(tmp_path / "a", "pixel6", df, slo)
    b = _result_dir(tmp_path / "b", "pixel6", df.assign(latency_ms=df["latency_ms"] * 2), slo)
    c = _result_dir(tmp_path / "c", "jetson", df, [])
    infos = figure_infos(find_results([a, b, c]), "latency", "accuracy")
    assert [i.device for i in infos] == ["pixel6", "jetson"]
    assert [s.label for s in infos[0].series] == ["a", "b"]
    assert len(infos[0].slo_lines) == 1 and not infos[1].slo_lines
    assert infos[0].series[0].chosen == (2.0, 0.85)


def test_reference_points_backbone_and_subnets() -> None:
    from hapi_dse.cost.costs import SegmentCosts
    from hapi_dse.run import ExitStats

    n, pos, head = 50, np.array([0, 0, 1]), np.array(["linear", "conv", "final"])
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n).astype(np.int16)
    pred = np.stack([labels, labels, labels], 1)
    pred[:10, 0] = (labels[:10] + 1) % 3
    stats = ExitStats(
        labels,
        rng.random((n, 3), dtype=np.float32),
        rng.random((n, 3), dtype=np.float32),
        pred,
        pos,
        head,
    )
    costs = SegmentCosts.from_arrays(
        position=pos, head=head, block_latency_ms=[1.0, 2.0], head_latency_ms=[0.1, 0.5, 0.2]
    )
    refs = reference_points(stats, costs, "latency_ms", "accuracy")
    assert [r.kind for r in refs] == ["backbone", "subnet", "subnet"]
    backbone, linear, _ = refs
    assert backbone.x == pytest.approx(3.2) and backbone.y == pytest.approx(1.0)
    assert linear.x == pytest.approx(1.1) and linear.y == pytest.approx(0.8)


def test_plot_cli_renders_a_png(run_cli, tmp_path: Path) -> None:
    slo = [{"metric": "latency_ms", "value": 2.5, "text": "latency=2.5ms"}]
    a = _result_dir(tmp_path / "a", "pixel6", synthetic_trials(), slo)
    out = tmp_path / "front.png"
    res = run_cli("plot", a, "--out", out, "--no-references")
    assert res.exit_code == 0, res.stderr
    import matplotlib.colors
    import matplotlib.image

    img = matplotlib.image.imread(out)  # decodes the PNG: a real image, not just a header
    assert img.ndim == 3 and img.shape[0] >= 400 and img.shape[1] >= 500
    rgb = img[..., :3].reshape(-1, 3)
    assert len(np.unique(np.round(rgb, 2), axis=0)) > 20  # axes, points, text: not blank
    front_colour = np.array(matplotlib.colors.to_rgb("tab:blue"))
    assert (np.abs(rgb - front_colour).max(axis=1) < 0.05).sum() > 50  # the front is drawn
    side = json.loads(out.with_suffix(".plot.json").read_text())
    series = side["series"][0]
    assert [p["trial"] for p in series["front"]] == [0, 1, 2]
    assert (series["dominated"], series["infeasible"]) == (3, 2)  # trial 8 repeats 1
    assert side["slo_lines"] == [{"axis": "x", "value": 2.5, "label": "SLO latency=2.5ms"}]
    assert (side["x"], side["y"]) == ("latency_ms", "accuracy")
    assert side["provenance"]["settings"] == {
        "x": "latency_ms",
        "y": "accuracy",
        "references": False,
    }


@pytest.mark.parametrize(
    "args, message",
    [
        (["MISSING", "--out", "x.png"], "no such directory"),
        (["EMPTY", "--out", "x.png"], "no trials.csv"),
        (["GOOD", "--out", "x.gif"], "expected a file ending in .png"),
        (["GOOD", "--out", "x.png", "--x", "speed"], "unknown metric 'speed'"),
    ],
)
def test_plot_errors_are_one_line_exit_2(
    run_cli, tmp_path: Path, args: list[str], message: str
) -> None:
    good = _result_dir(tmp_path / "good", "pixel6", synthetic_trials(), [])
    (tmp_path / "empty").mkdir()
    subst = {"MISSING": tmp_path / "missing", "EMPTY": tmp_path / "empty", "GOOD": good}
    argv = [str(subst.get(a, tmp_path / a if a.startswith("x.") else a)) for a in args]
    res = run_cli("plot", *argv, "--no-references")
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr


@pytest.mark.parametrize(
    ("where", "device"),
    [
        ("search.json", "../../x"),
        ("search.json", "a\x00b"),
        ("search.json", "\ud800"),
        ("search.json", ["pixel6"]),
        ("design.json", "../x"),
    ],
)
def test_plot_refuses_a_device_name_from_a_file_that_is_not_a_name(
    run_cli, tmp_path: Path, where: str, device: object
) -> None:
    """The device a result names becomes part of the figure's file name: one from a file is
    checked as ``--device`` is (issue #22, class 8)."""
    a = _result_dir(tmp_path / "a", "pixel6", synthetic_trials(), [])
    b = _result_dir(tmp_path / "b", "jetson", synthetic_trials(), [])
    doc = json.loads((b / "jetson" / where).read_text())
    doc["device"] = device
    if where == "design.json":
        doc_search = json.loads((b / "jetson" / "search.json").read_text())
        del doc_search["device"]
        (b / "jetson" / "search.json").write_text(json.dumps(doc_search))
    (b / "jetson" / where).write_text(json.dumps(doc))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    res = run_cli("plot", a, b, "--out", tmp_path / "out" / "f.png", "--no-references")
    assert res.exit_code == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith(f"hapi: error: {b / 'jetson' / where}: device ")
    assert "is not a device name (letters, digits" in lines[0]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_a_number_too_large_for_a_float_is_not_a_crash() -> None:
    """Found by the slow fuzzing: pandas reads a trials.csv cell holding a 400-digit integer
    as a Python int, which its numeric conversion refused with OverflowError (a traceback
    from 'hapi plot'). It now reads as infinity: a point off the plot for a metric, the last
    in rank for n_exits (so of two equal points the front keeps the other one)."""
    import io

    from hapi_dse.plotting.info import series_info

    huge = "9" * 400
    text = (
        "trial,state,n_exits,latency_ms,accuracy,feasible\n"
        f"0,COMPLETE,{huge},1.0,0.9,True\n"
        "1,COMPLETE,2,1.0,0.9,True\n"
        f"2,COMPLETE,1,{huge},0.95,True\n"
        "3,COMPLETE,1,2.0,0.97,True\n"
    )
    trials = pd.read_csv(io.StringIO(text))  # as hapi plot reads the file
    assert isinstance(trials["n_exits"][0], int) and trials["n_exits"][0] > 2**64
    s = series_info(trials, "latency_ms", "accuracy")
    assert sorted(s.front["trial"]) == [1, 3]  # 0 ties with 1 and ranks last; 2 is off
    assert list(s.dominated["trial"]) == [0] and len(s.infeasible) == 0
