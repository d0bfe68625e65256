"""Relative SLOs (``--slo latency=0.6x``: a factor of the plain backbone's predicted value on
the device searched) and what an infeasible search leaves for the next command."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from hapi_dse.cost import parse_slo, parse_slos
from hapi_dse.errors import UsageError
from hapi_dse.search.relax import loosen
from hapi_dse.testing import SyntheticSetup

pytestmark = pytest.mark.synth(
    n_val=400, n_test=400, num_blocks=6, devices={"devA": 1.0, "devB": 3.0}
)


def search(run_cli, synth: SyntheticSetup, out: Path, *extra: str):  # type: ignore[no-untyped-def]
    """``hapi search`` of 60 trials, seed 2, on ``synth`` (the devices in ``extra``)."""
    return run_cli(*synth.search_args(out, *extra, device=None, trials=60, seed=2))


# -- parsing and resolving ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "metric", "factor", "label"),
    [
        ("latency=0.6x", "latency_ms", 0.6, "latency <= 0.6x backbone"),
        ("p99_latency=0.5x", "p99_latency_ms", 0.5, "p99_latency <= 0.5x backbone"),
        ("energy = 0.7 X", "energy_mj", 0.7, "energy <= 0.7x backbone"),
        ("accuracy=0.99x", "accuracy", 0.99, "accuracy >= 0.99x backbone"),
        ("size=1.5x", "size_mb", 1.5, "size <= 1.5x backbone"),
    ],
)
def test_relative_slos_parse_unresolved(text: str, metric: str, factor: float, label: str) -> None:
    slo = parse_slo(text)
    assert (slo.metric, slo.relative, slo.text) == (metric, factor, text.strip())
    assert not slo.resolved and slo.label() == label
    with pytest.raises(UsageError, match="relative to the plain backbone; resolve it"):
        slo.violation({metric: 1.0})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency=0x", r"factor must be a finite number > 0, but got 0;"),
        ("latency=-1x", r"factor must be a finite number > 0, but got -1;"),
        ("latency=1e999x", r"factor must be a finite number > 0"),
        ("latency=x", r"expected METRIC=FACTORx, e\.g\. latency=0\.6x"),
        ("latency=1.5xx", r"expected METRIC=FACTORx, e\.g\. latency=0\.6x"),
        ("latency=0.6 x x", r"expected METRIC=FACTORx"),
        ("latncy=0.6x", r"unknown SLO metric 'latncy'"),
        ("latency=5parsecs", r"expected us, ms or s, e\.g\. latency=50ms, or a factor x"),
    ],
)
def test_bad_relative_slos_are_one_line(text: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected) as err:
        parse_slo(text)
    assert repr(text) in str(err.value) and "\n" not in str(err.value)


def test_resolve_and_record() -> None:
    slo = parse_slo("latency=0.6x").resolve({"latency_ms": 0.72, "accuracy": 0.9})
    assert slo.resolved and slo.value == pytest.approx(0.432) and slo.baseline == 0.72
    assert slo.label() == "latency <= 0.6x backbone = 0.432 ms"
    assert slo.violation({"latency_ms": 0.43}) < 0 < slo.violation({"latency_ms": 0.44})
    assert slo.to_dict() == {
        "metric": "latency_ms", "bound": "max", "value": slo.value, "text": "latency=0.6x",
        "relative": 0.6, "baseline": 0.72,
    }  # fmt: skip
    acc = parse_slo("accuracy=0.99x").resolve({"accuracy": 0.9})
    assert acc.label() == "accuracy >= 0.99x backbone = 89.10%"
    assert acc.violation({"accuracy": 0.89}) > 0 > acc.violation({"accuracy": 0.895})
    # an absolute SLO is unchanged by resolving, and records what it always recorded
    plain = parse_slo("latency=50ms")
    assert plain.resolve({"latency_ms": 1.0}) is plain and plain.label() == "latency=50ms"
    assert plain.to_dict() == {"metric": "latency_ms", "bound": "max", "value": 50.0,
                               "text": "latency=50ms"}  # fmt: skip
    with pytest.raises(UsageError, match="already bounded"):
        parse_slos(["latency=0.6x", "latency=50ms"])


@pytest.mark.parametrize(
    ("value", "upper", "digits", "expected"),
    [
        (0.6161, True, 3, 0.617),
        (0.616, True, 3, 0.616),
        (0.61, True, 2, 0.61),
        (1.0, True, 3, 1.0),
        (12.34, True, 3, 12.4),
        (0.91234, False, 3, 0.912),
        (91.234, False, 3, 91.2),
    ],
)
def test_loosen_rounds_away_from_the_bound(value, upper, digits, expected) -> None:
    out = loosen(value, upper=upper, digits=digits)
    assert out == pytest.approx(expected)
    assert (out >= value) if upper else (out <= value)  # the value itself meets the bound


# -- the search -----------------------------------------------------------------------------


def test_a_relative_slo_is_the_absolute_bound_it_resolves_to(synth, run_cli, tmp_path) -> None:
    """latency=0.4x on two devices: each device's bound is 0.4 times its own backbone's mean
    latency, recorded with both figures, and the search is the one the absolute bound makes."""
    res = search(run_cli, synth, tmp_path / "rel", "--device", "devA,devB", "--slo",
                 "latency=0.4x")  # fmt: skip
    assert res.exit_code == 0, res.stderr
    bounds = {}
    for dev in ("devA", "devB"):
        base = synth.backbone(dev)["latency_ms"]
        bounds[dev] = 0.4 * base
        assert f"latency <= 0.4x backbone = {0.4 * base:.4g} ms" in res.stdout
        info = json.loads((tmp_path / "rel" / dev / "search.json").read_text())
        design = json.loads((tmp_path / "rel" / dev / "design.json").read_text())
        for slos in (info["slos"], design["slos"]):
            assert slos == [
                {"metric": "latency_ms", "bound": "max", "value": pytest.approx(0.4 * base),
                 "text": "latency=0.4x", "relative": 0.4, "baseline": pytest.approx(base)}
            ]  # fmt: skip
        assert info["provenance"]["settings"]["slos"] == ["latency=0.4x"]
        assert design["predicted_val"]["latency_ms"] <= 0.4 * base
        assert design["backbone_predicted"]["val"]["latency_ms"] == pytest.approx(base)
    assert bounds["devB"] == pytest.approx(3 * bounds["devA"], rel=0.05)  # devB is 3x slower
    # the same search with the resolved bound typed in: the same trials and verdicts
    value = json.loads((tmp_path / "rel" / "devA" / "search.json").read_text())["slos"][0]["value"]
    res = search(run_cli, synth, tmp_path / "abs", "--device", "devA", "--slo",
                 f"latency={value!r}ms")  # fmt: skip
    assert res.exit_code == 0, res.stderr

    def rows(d: Path) -> list[dict[str, str]]:
        with open(d / "devA" / "trials.csv", newline="") as f:
            return list(csv.DictReader(f))

    assert rows(tmp_path / "rel") == rows(tmp_path / "abs")
    assert any(r["feasible"] == "False" for r in rows(tmp_path / "rel"))  # the bound binds


@pytest.mark.parametrize("text", ["latency=0x", "latency=-1x", "latency=x", "latency=1.5xx"])
def test_cli_refuses_a_bad_factor_in_one_line(synth, run_cli, tmp_path, text) -> None:
    res = search(run_cli, synth, tmp_path / "o", "--device", "devA", "--slo", text)
    assert res.exit_code == 2 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and repr(text) in res.stderr
    assert not (tmp_path / "o").exists()


def test_the_library_takes_relative_slos(synth) -> None:
    from hapi_dse import api

    val = synth.stats("val")
    costs = synth.costs("devA", val)
    result = api.search(val, costs, slos=["latency=0.5x", "accuracy=0.9x"], trials=40, seed=0)
    base = synth.backbone("devA")
    lat, acc = result.slos
    assert lat.value == pytest.approx(0.5 * base["latency_ms"]) and lat.relative == 0.5
    assert acc.value == pytest.approx(0.9 * base["accuracy"]) and acc.baseline == base["accuracy"]
    assert result.chosen is not None
    assert result.chosen.metrics["latency_ms"] <= lat.value


# -- nothing feasible -----------------------------------------------------------------------


def test_an_infeasible_search_says_what_would_be_feasible(synth, run_cli, tmp_path) -> None:
    out = tmp_path / "out"
    res = search(run_cli, synth, out, "--device", "devA", "--slo", "latency=0.01x")
    assert res.exit_code == 1 and res.stderr == ""
    info = json.loads((out / "devA" / "search.json").read_text())
    relax = info["relax"]
    closest = info["closest"][0]["trial"]
    assert relax["trial"] == closest
    with open(out / "devA" / "trials.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if int(r["trial"]) == closest)
    lat = float(row["latency_ms"])
    base = synth.backbone("devA")["latency_ms"]
    (absolute,), (relative,) = relax["slos"], relax["relative_slos"]
    # each suggestion admits the closest trial, and by no more than a rounding step
    assert absolute.startswith("latency=") and absolute.endswith("ms")
    bound = parse_slo(absolute).value
    assert lat <= bound <= lat * 1.01
    factor = parse_slo(relative).relative
    assert factor is not None and lat <= factor * base <= lat + 0.01 * base
    assert (
        f"relax an SLO (the closest design, trial {closest}, meets --slo {absolute}, or "
        f"--slo {relative} relative to the plain backbone)"
    ) in res.stdout
    # the suggestion is feasible as typed: the closest design meets it
    res = search(run_cli, synth, tmp_path / "again", "--device", "devA", "--slo", relative)
    assert res.exit_code == 0, res.stdout


def test_export_of_an_infeasible_result_says_why(synth, run_cli, tmp_path) -> None:
    out = tmp_path / "out"
    assert search(run_cli, synth, out, "--device", "devA", "--slo", "latency=0.01x").exit_code == 1
    info = json.loads((out / "devA" / "search.json").read_text())
    bound = info["slos"][0]["value"]
    closest = info["closest"][0]
    for source in (out, out / "devA"):  # the result, or its device folder
        res = run_cli("export", source, "--out", tmp_path / "m.onnx")
        assert res.exit_code == 2 and res.stdout == ""
        err = res.stderr
        assert err.count("\n") == 1 and "no design.json in it" not in err
        assert err.startswith(
            f"hapi: error: {out / 'devA'}: the search found no feasible design under SLO "
            f"latency=0.01x (= {bound:.4g} ms), so it wrote no design.json; the closest trial, "
            f"{closest['trial']}, had {closest['broken'][0]}; relax the SLO (e.g. --slo "
            f"{info['relax']['slos'][0]}, or --slo {info['relax']['relative_slos'][0]} "
            "relative to the plain backbone) and run 'hapi search' again, or export that "
            f"trial anyway with --trial {closest['trial']}"
        ), err
    assert not (tmp_path / "m.onnx").exists()
    # a result written before search.json recorded suggestions still says what happened
    info.pop("relax")
    (out / "devA" / "search.json").write_text(json.dumps(info))
    res = run_cli("export", out, "--out", tmp_path / "m.onnx")
    assert res.exit_code == 2
    assert "the search found no feasible design under SLO latency=0.01x" in res.stderr
    assert "; relax an SLO and run 'hapi search' again, or export that trial" in res.stderr


def test_any_search_json_explains_itself_in_one_line() -> None:
    """Whatever an infeasible result's search.json holds (edited, truncated, older), the
    explanation is built without an error and is one line."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from hapi_dse.deploy.inputs import _infeasible_text

    scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
        max_leaves=12,
    )
    keys = st.sampled_from(["slos", "closest", "relax", "verify", "trial", "broken", "text",
                            "value", "relative", "metric", "slos", "relative_slos"])  # fmt: skip
    docs = st.dictionaries(keys, values | st.lists(st.dictionaries(keys, values), max_size=3))

    @settings(max_examples=200, deadline=None, database=None)
    @given(docs)
    def check(doc: dict) -> None:
        text = _infeasible_text(doc)
        assert text.startswith("the search found no feasible design")
        assert str(UsageError(text)).count("\n") == 0

    check()
