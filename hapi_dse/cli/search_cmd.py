"""``hapi search``: a thin shell over :func:`hapi_dse.search.run_search` (no torch here).

It parses ``--slo`` and ``--objectives`` once, into the SLO and objective objects a
:class:`~hapi_dse.search.config.SearchConfig` holds.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from hapi_dse.cli import options
from hapi_dse.search.config import MAX_TRIALS, SearchConfig
from hapi_dse.search.picking import ISO_ACCURACY_DROP_PP, PICK_RULES
from hapi_dse.search.sampling import DEFAULT_POPULATION, SAMPLERS

if TYPE_CHECKING:
    from hapi_dse.run import CodeTrust


def _slo_help() -> str:
    """``--slo``'s help: the SLO metrics of the metric table, grouped by the units they take."""
    from hapi_dse.cost.metrics import METRIC_TABLE, UNIT_HELP

    groups: dict[str, list[str]] = {}
    for m in METRIC_TABLE:
        if m.slo:
            groups.setdefault(m.kind, []).append(m.name)
    bound = {m.kind: ", a lower bound" for m in METRIC_TABLE if m.slo and m.maximize}
    parts = [
        f"{', '.join(names)} ({UNIT_HELP[k]}{bound.get(k, '')})" for k, names in groups.items()
    ]
    return (
        f"A bound, repeatable: {', '.join(parts)}. Or METRIC=FACTORx, relative to the plain "
        "backbone's predicted value on each device: latency=0.6x, accuracy=0.99x."
    )


_METRIC_RULES = ", ".join(r for r in PICK_RULES if r not in ("knee", "iso_accuracy"))


@click.command("search")
@options.verbosity
@options.model()
@click.option(
    "--device",
    "devices",
    required=True,
    metavar="DEVICE[,DEVICE...]",
    help="Device(s) to search for, e.g. pixel6 or pixel6,raspberry-pi-4; one result "
    "directory each.",
)
@options.profiles
@click.option(
    "--slo",
    "slos",
    multiple=True,
    metavar="METRIC=VALUE[UNIT]",
    help=_slo_help(),
)
@click.option(
    "--objectives",
    default=None,
    metavar="LIST",
    help="Comma-separated objectives [default: accuracy,latency, plus energy when "
    "the table has it].",
)
@click.option(
    "--space",
    default=SearchConfig.space,
    show_default=True,
    metavar="NAME|FILE",
    help="Search space: a name from search_spaces/ (default, small...) or a file.",
)
@click.option(
    "--sampler",
    type=click.Choice(SAMPLERS),
    default=SearchConfig.sampler,
    show_default=True,
    help="Optuna sampler.",
)
@click.option(
    "--trials",
    type=int,
    default=None,
    help=f"Complete trials the study should hold, at most {MAX_TRIALS:,} "
    f"[default: {SearchConfig.trials}].",
)
@click.option(
    "--timeout",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Stop each device's search after this long.",
)
@options.seed
@click.option(
    "--storage",
    default=None,
    metavar="URL",
    help="Optuna storage to resume or share: sqlite:///x.db, "
    "postgresql://user@host/db, journal:FILE [default: in memory].",
)
@click.option(
    "--study",
    default=None,
    metavar="NAME",
    help="Study name in --storage [default: hapi-MODEL_ID-DEVICE].",
)
@click.option(
    "--jobs",
    type=int,
    default=1,
    show_default=True,
    help="Local worker processes (sharing a journal file, or --storage).",
)
@click.option(
    "--population",
    type=click.IntRange(min=2),
    default=None,
    help=f"NSGA-II population size, at least 2 [default: the space's, else {DEFAULT_POPULATION}].",
)
@click.option(
    "--pick",
    default=None,
    metavar="RULE",
    help=f"How to choose design.json among the feasible Pareto designs: the best "
    f"{_METRIC_RULES}, knee, or iso_accuracy[:D] (the fastest whose val accuracy is at most "
    f"D pp below the plain backbone's; D defaults to {ISO_ACCURACY_DROP_PP}) "
    "[default: the first objective].",
)
@click.option(
    "--verify",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    metavar="K",
    help="Export the K feasible Pareto designs nearest the pick, measure them here as "
    "'hapi eval' does, and pick again among those meeting every SLO as measured (needs "
    "the device's table measured on this machine).",
)
@options.out(
    "Results root; each device writes OUT/DEVICE/ [default: RUN/search, or "
    "runs/fashion-mnist/search for the bundled example].",
    kind="dir",
)
@options.overwrite("previous results in OUT/DEVICE/")
@options.run_code
def search(
    model: str | None,
    devices: str,
    profiles: str | None,
    slos: tuple[str, ...],
    objectives: str | None,
    space: str,
    sampler: str,
    trials: int | None,
    timeout: float | None,
    seed: int,
    storage: str | None,
    study: str | None,
    jobs: int,
    population: int | None,
    pick: str | None,
    verify: int,
    out: Path | None,
    overwrite: bool,
    code: CodeTrust,
) -> None:
    """Search early-exit designs per device under SLOs; write the Pareto front and the choice.

    Exit status 1 when some device has no design meeting every SLO (the closest designs are
    shown), 2 on bad input.
    """
    from hapi_dse.cost import parse_objectives, parse_slos
    from hapi_dse.search.picking import check_pick
    from hapi_dse.search.runner import run_search

    check_pick(pick)
    cfg = SearchConfig(
        devices=tuple(dict.fromkeys(options.comma_list(devices))),
        model=model,
        profiles=profiles,
        space=space,
        slos=tuple(parse_slos(slos)),
        objectives=tuple(parse_objectives(objectives)) if objectives else None,
        sampler=sampler,
        trials=SearchConfig.trials if trials is None else trials,
        timeout=timeout,
        seed=seed,
        storage=storage,
        study=study,
        jobs=jobs,
        out=out,
        pick=pick,
        population=population,
        verify=verify,
        overwrite=overwrite,
    )
    # code: what the run's model may run when --verify exports it
    results = run_search(cfg, echo=options.report, progress=options.progress(), code=code)
    infeasible = [r.device for r in results if not r.feasible]
    if infeasible:  # a normal outcome, not an error: the report says why
        if options.quiet():
            click.echo(
                f"hapi: no feasible design for {', '.join(infeasible)} (see search.json)",
                err=True,
            )
        sys.exit(1)
