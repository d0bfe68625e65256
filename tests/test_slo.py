"""``--slo`` and ``--objectives`` parsing: units, bounds, and messages that say what to type."""

from __future__ import annotations

import pytest

from hapi_dse.cost import SLO, parse_objectives, parse_slo, parse_slos
from hapi_dse.errors import UsageError


@pytest.mark.parametrize(
    ("text", "metric", "value"),
    [
        ("latency=50ms", "latency_ms", 50.0),
        ("latency=0.05s", "latency_ms", 50.0),
        ("latency=1500us", "latency_ms", 1.5),
        ("latency = 50 ms", "latency_ms", 50.0),
        ("latency=50", "latency_ms", 50.0),
        ("p90_latency=3.5ms", "p90_latency_ms", 3.5),
        ("p99_latency=1e2ms", "p99_latency_ms", 100.0),
        ("max_latency=2s", "max_latency_ms", 2000.0),
        ("latency_ms=7", "latency_ms", 7.0),
        ("energy=20mJ", "energy_mj", 20.0),
        ("energy=0.02J", "energy_mj", 20.0),
        ("energy=500uJ", "energy_mj", 0.5),
        ("accuracy=92%", "accuracy", 0.92),
        ("accuracy=0.92", "accuracy", 0.92),
        ("ACCURACY=1", "accuracy", 1.0),
        ("size=2MB", "size_mb", 2.0),
        ("size=500KB", "size_mb", 0.5),
        ("size=1GB", "size_mb", 1000.0),
    ],
)
def test_good_slos(text: str, metric: str, value: float) -> None:
    slo = parse_slo(text)
    assert slo.metric == metric
    assert slo.value == pytest.approx(value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("latency=fast", r"expected METRIC=NUMBER\[UNIT\], e.g. latency=50ms"),
        ("latency", r"expected METRIC=NUMBER\[UNIT\]"),
        ("=50ms", r"expected METRIC=NUMBER\[UNIT\]"),
        ("latency=50mJ", r"unit 'mJ' does not fit latency; expected us, ms or s"),
        ("energy=3ms", r"unit 'ms' does not fit energy; expected uJ, mJ or J"),
        ("size=3ms", r"expected KB, MB or GB"),
        ("accuracy=92", r"fraction 0\.\.1 or a percentage"),
        ("accuracy=120%", r"fraction 0\.\.1 or a percentage"),
        ("latncy=50ms", r"unknown SLO metric 'latncy'.*did you mean 'latency'"),
        ("latency=-5ms", r"must be >= 0"),
        ("latency=5parsecs", r"unit 'parsecs' does not fit latency"),
    ],
)
def test_bad_slos_say_what_was_expected(text: str, expected: str) -> None:
    with pytest.raises(UsageError, match=expected) as err:
        parse_slo(text)
    assert repr(text) in str(err.value)
    assert "\n" not in str(err.value)


def test_violation_sign_and_direction() -> None:
    latency, accuracy = parse_slo("latency=10ms"), parse_slo("accuracy=90%")
    assert latency.upper and not accuracy.upper
    ok = {"latency_ms": 8.0, "accuracy": 0.95}
    bad = {"latency_ms": 12.0, "accuracy": 0.85}
    assert latency.violation(ok) < 0 < latency.violation(bad)
    assert accuracy.violation(ok) < 0 < accuracy.violation(bad)
    assert latency.violation(bad) == pytest.approx(2.0)
    assert accuracy.violation(bad) == pytest.approx(0.05)
    assert SLO("latency_ms", 10.0).violation({"latency_ms": 10.0}) == 0.0  # the bound holds


def test_the_same_metric_twice_is_refused() -> None:
    with pytest.raises(UsageError, match="already bounded by slos 'latency=5ms'"):
        parse_slos(["latency=5ms", "latency_ms=4"])
    assert len(parse_slos(["latency=5ms", "p99_latency=9ms", "accuracy=90%"])) == 3


def test_objectives() -> None:
    objs = parse_objectives("accuracy, latency,energy,goodput,size")
    assert [o.metric for o in objs] == ["accuracy", "latency_ms", "energy_mj", "goodput", "size_mb"]
    assert [o.direction for o in objs] == [
        "maximize",
        "minimize",
        "minimize",
        "maximize",
        "minimize",
    ]
    with pytest.raises(UsageError, match="unknown objective 'acuracy'.*'accuracy'"):
        parse_objectives("acuracy,latency")
    with pytest.raises(UsageError, match="listed twice"):
        parse_objectives("latency,latency_ms")
    with pytest.raises(UsageError, match="e.g. accuracy,latency"):
        parse_objectives(" , ")
