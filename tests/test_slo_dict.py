"""An SLO as the result files record it: ``SLO.from_dict`` reads back what ``to_dict``
wrote, for every SLO metric, absolute and relative, and every reader of a stored SLO
(``hapi eval``'s export check and verdicts, ``hapi plot``) refuses a bad one with one
error that names the field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from hapi_dse.cost import METRIC_TABLE, SLO, parse_slo
from hapi_dse.errors import ArtefactError

SLO_METRICS = [m for m in METRIC_TABLE if m.slo]


def stored(slo: SLO) -> Any:
    """``to_dict`` through JSON, as a file holds it."""
    return json.loads(json.dumps(slo.to_dict()))


@pytest.mark.parametrize("m", SLO_METRICS, ids=lambda m: m.name)
def test_an_absolute_slo_reads_back_as_it_was(m) -> None:  # type: ignore[no-untyped-def]
    value = "0.87" if m.kind == "fraction" else f"3.5{m.unit}"
    slo = parse_slo(f"{m.name}={value}")
    assert SLO.from_dict(stored(slo)) == slo
    # the column name is what is stored; the bound follows the metric
    assert stored(slo)["metric"] == m.column
    assert SLO.from_dict({"metric": m.column, "value": slo.value}).upper == slo.upper


@pytest.mark.parametrize("m", SLO_METRICS, ids=lambda m: m.name)
def test_a_relative_slo_reads_back_with_its_factor_and_baseline(m) -> None:  # type: ignore[no-untyped-def]
    slo = parse_slo(f"{m.name}=0.6x").resolve({m.column: 1.7})
    back = SLO.from_dict(stored(slo))
    assert back == slo
    assert (back.relative, back.baseline, back.resolved) == (0.6, 1.7, True)
    assert back.label() == slo.label() and "0.6x backbone" in back.label()


GOOD = {"metric": "latency_ms", "bound": "max", "value": 2.0, "text": "latency=2ms"}
REL = {**GOOD, "text": "latency=0.5x", "relative": 0.5, "baseline": 4.0}


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ("latency=2ms", "slos[2]"),
        ({**GOOD, "metric": "latncy_ms"}, "slos[2].metric"),
        ({k: v for k, v in GOOD.items() if k != "metric"}, "slos[2].metric"),
        ({**GOOD, "metric": "goodput"}, "slos[2].metric"),
        ({**GOOD, "value": float("inf")}, "slos[2].value"),
        ({**GOOD, "value": "2"}, "slos[2].value"),
        ({**GOOD, "value": True}, "slos[2].value"),
        ({k: v for k, v in GOOD.items() if k != "value"}, "slos[2].value"),
        ({**GOOD, "bound": "min"}, "slos[2].bound"),
        ({**GOOD, "metric": "accuracy", "value": 0.9}, "slos[2].bound"),
        ({**GOOD, "text": 2}, "slos[2].text"),
        ({**REL, "relative": -0.5}, "slos[2].relative"),
        ({**REL, "relative": "half"}, "slos[2].relative"),
        ({**REL, "baseline": None}, "slos[2].baseline"),
        ({**REL, "relative": None}, "slos[2].relative"),
    ],
)
def test_a_bad_stored_slo_is_one_error_naming_the_field(data: Any, field: str) -> None:
    with pytest.raises(ArtefactError) as e:
        SLO.from_dict(data, name="slos[2]")
    msg = str(e.value)
    assert msg.startswith(f"{field} is ") and "expected" in msg and "\n" not in msg


def test_every_reader_of_stored_slos_names_the_file_and_the_field(tmp_path: Path) -> None:
    from hapi_dse.deploy.evaluate import slo_verdicts
    from hapi_dse.deploy.load import check_meta
    from hapi_dse.plotting.info import slo_lines

    bad = [GOOD, {**GOOD, "metric": "p99_latency_ms", "value": float("nan")}]
    where = tmp_path / "export.json"
    meta = {"design": {"policy": "max_softmax", "exits": []}, "slos": bad}
    with pytest.raises(ArtefactError, match=r"export\.json: slos .*slos\[1\]\.value is NaN"):
        check_meta(meta, where)
    with pytest.raises(ArtefactError, match=r"search\.json: slos\[1\]\.value is NaN"):
        slo_lines(bad, "accuracy", "latency_ms", tmp_path / "search.json")
    with pytest.raises(ArtefactError, match=r"slos\[1\]\.value is NaN"):
        slo_verdicts(bad, {"accuracy": 0.9, "latency_ms": {"mean": 1.0}}, None)
    check_meta({**meta, "slos": [GOOD, REL]}, where)  # good ones pass


def test_readers_take_relative_slos_as_their_bound() -> None:
    from hapi_dse.deploy.evaluate import slo_verdicts
    from hapi_dse.plotting.info import slo_lines

    (line,) = slo_lines([REL], "accuracy", "latency_ms")
    assert (line.axis, line.value, line.label) == ("y", 2.0, "SLO latency=0.5x")
    measured = {"accuracy": 0.9, "latency_ms": {"mean": 2.5}}
    (verdict,) = slo_verdicts([REL], measured, None)
    assert verdict["verdict"] == "broken" and verdict["slo"] == "latency=0.5x"
    assert verdict["value"] == 2.0 and verdict["bound"] == "max"
