"""The README's examples that time *this* machine find a design on any machine.

The worked example (``hapi search --device host --slo ... --out runs/host``) and the
``--verify`` example search the table ``hapi profile --device host`` measured on the machine
that runs them, so an absolute SLO there holds on one machine and not on another (issue 23:
``p99_latency=0.5ms`` found nothing on a machine whose backbone takes 1 ms). Here both
commands, read from README.md and run as written, search a host table measured on the
development machine (``tests/data/host_table``, ``hapi profile --device host``, 2026-12-05),
scaled by 0.5 (a machine twice as fast), 1 and 2 (twice as slow): each finds a feasible
design, the same one at every scale.

``--verify`` exports and times designs here, which cannot stand for a machine of another
speed; these tests replace the export and the timing with the cost model on the scaled
table plus 3 % (a machine measuring a little slower than its table predicts), so that the
re-pick as measured is exercised. The real export and timing are tested in test_verify.py.
The README's trial count (the default, 1000) is kept: a search of the bundled example takes
about a second.
"""

from __future__ import annotations

import csv
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HOST_TABLE = ROOT / "tests" / "data" / "host_table" / "host"
SCALES = (0.5, 1.0, 2.0)  # powers of two: every predicted latency scales exactly
MEASURED_OVER_PREDICTED = 1.03


def readme_search(heading: str) -> list[str]:
    """The ``hapi search`` command of the first shell block under the README heading that
    starts with ``heading``, as arguments after ``hapi``."""
    text = README.read_text()
    at = next(
        (m.end() for m in re.finditer(r"^#+ (.*)$", text, re.M) if m[1].startswith(heading)),
        None,
    )
    assert at is not None, f"README.md has no heading starting with {heading!r}"
    section = re.split(r"^#+ ", text[at:], maxsplit=1, flags=re.M)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, re.M | re.S)
    assert block is not None, f"README.md section {heading!r} has no sh block"
    for line in block[1].splitlines():
        args = shlex.split(line, comments=True)
        if args[:2] == ["hapi", "search"]:
            return args[1:]
    raise AssertionError(f"README.md section {heading!r} has no 'hapi search' command")


WORKED = readme_search("From a search to a deployed model")
VERIFY = readme_search("Verifying on the hardware")


def write_scaled_table(profiles: Path, factor: float) -> None:
    """``profiles/host/``: the recorded host table with every time (and the energy modelled
    from it) times ``factor``, marked as measured on this machine (as ``--verify`` needs)."""
    from hapi_dse.search.verify import this_machine

    dst = profiles / "host"
    dst.mkdir(parents=True)
    for src in HOST_TABLE.glob("*.csv"):
        with open(src, newline="") as f:
            reader = csv.DictReader(f)
            rows, header = list(reader), reader.fieldnames
        assert header is not None
        for row in rows:
            for col in ("latency_ms", "latency_p90_ms", "energy_mj"):
                row[col] = repr(float(row[col]) * factor)
        with open(dst / src.name, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=header)
            w.writeheader()
            w.writerows(rows)
        sidecar = json.loads(src.with_suffix(".json").read_text())
        sidecar["machine"] = this_machine()
        (dst / src.with_suffix(".json").name).write_text(json.dumps(_scale_ms(sidecar, factor)))


def _scale_ms(doc: Any, factor: float, timed: bool = False) -> Any:
    """Every number under a key ending in ``_ms`` (or ``_ms_per_mb``) times ``factor``."""
    if isinstance(doc, dict):
        return {
            k: _scale_ms(v, factor, timed or k.endswith(("_ms", "_ms_per_mb")))
            for k, v in doc.items()
        }
    if isinstance(doc, list):
        return [_scale_ms(v, factor, timed) for v in doc]
    if timed and isinstance(doc, int | float) and not isinstance(doc, bool):
        return doc * factor
    return doc


@pytest.fixture
def on_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """``on_machine(factor)``: a fresh working directory whose ``./profiles`` holds the host
    table scaled by ``factor``, as ``hapi profile --device host`` leaves it."""
    monkeypatch.delenv("HAPI_PROFILES", raising=False)

    def make(factor: float) -> Path:
        work = tmp_path / f"x{factor}"
        write_scaled_table(work / "profiles", factor)
        monkeypatch.chdir(work)
        return work

    return make


def test_the_readme_commands_time_this_machine_with_relative_slos() -> None:
    """The premise: both commands search the host table, under a relative SLO only."""
    for args in (WORKED, VERIFY):
        assert args[args.index("--device") + 1] == "host"
        slos = [args[i + 1] for i, a in enumerate(args) if a == "--slo"]
        assert slos and all(s.endswith("x") for s in slos), args
    assert "--out" in WORKED and "--verify" in VERIFY


def test_the_worked_example_finds_the_same_design_at_any_speed(run_cli, on_machine) -> None:
    from hapi_dse.deploy.inputs import load_design

    chosen = {}
    for factor in SCALES:
        work = on_machine(factor)
        res = run_cli(*WORKED)
        assert res.exit_code == 0, f"x{factor}: {res.stdout}{res.stderr}"
        out = work / WORKED[WORKED.index("--out") + 1]
        design = json.loads((out / "host" / "design.json").read_text())
        (slo,) = design["slos"]
        base = design["backbone_predicted"]["val"][slo["metric"]]
        assert slo["baseline"] == pytest.approx(base)
        assert slo["value"] == pytest.approx(slo["relative"] * base)
        assert design["predicted_val"][slo["metric"]] <= slo["value"]
        assert load_design(out).design.to_dict()["exits"] == design["exits"]  # hapi export's input
        chosen[factor] = design["trial"]
    assert len(set(chosen.values())) == 1, chosen  # the bound scales with the machine


def test_the_verify_example_finds_the_same_design_at_any_speed(
    run_cli, on_machine, monkeypatch
) -> None:
    import hapi_dse.deploy.evaluate as evaluate
    import hapi_dse.deploy.export as export
    from hapi_dse.cost import CostModel, Design, SegmentCosts
    from hapi_dse.profiling.table import load_table
    from hapi_dse.run import CodeTrust, resolve_run

    models: dict[str, Any] = {}

    def fake_export(cfg: Any, *, code: CodeTrust) -> None:  # holds the design it was given
        Path(cfg.out).write_text(Path(cfg.source).read_text())

    def fake_eval(paths: list[Path], cfg: Any, **_: Any) -> list[dict[str, Any]]:
        out = []
        for p in paths:
            m = models["now"].evaluate(Design.from_dict(json.loads(p.read_text())))
            k = MEASURED_OVER_PREDICTED
            lat = {"mean": k * m["latency_ms"], "p50": k * m["latency_ms"]}
            lat |= {s: k * m[f"{s}_latency_ms"] for s in ("p90", "p99", "max")}
            out.append(
                {"measured": {"accuracy": m["accuracy"], "latency_ms": lat, "load": {},
                              "protocol": "cost model x 1.03"}}
            )  # fmt: skip
        return out

    monkeypatch.setattr(export, "export_design", fake_export)
    monkeypatch.setattr(evaluate, "evaluate_exports", fake_eval)
    run = resolve_run(None)  # the bundled example, as the command uses
    val = run.stats("val")
    chosen = {}
    for factor in SCALES:
        work = on_machine(factor)
        table = load_table("host", run.model_id, None)  # ./profiles, as the command reads it
        models["now"] = CostModel(val, SegmentCosts.from_table(table, val))
        res = run_cli(*VERIFY)
        assert res.exit_code == 0, f"x{factor}: {res.stdout}{res.stderr}"
        (result,) = (work / "runs").glob("*/search/host")
        design = json.loads((result / "design.json").read_text())
        info = json.loads((result / "search.json").read_text())["verify"]
        assert design["trial"] in info["meeting_slos_as_measured"]
        (slo,) = design["slos"]
        assert design["measured_val"][slo["metric"]] <= slo["value"]
        chosen[factor] = (design["trial"], tuple(info["verified_trials"]))
    assert len(set(chosen.values())) == 1, chosen
