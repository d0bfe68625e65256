"""The console summary of a search: the Pareto table and the chosen design, or the
closest designs when none meets every SLO."""

from __future__ import annotations

from hapi_dse.cost import Design, Metric, metric
from hapi_dse.search.picking import SHORTFALL_MARGIN_PP, rule_words, shortfall
from hapi_dse.search.records import DeviceResult, TrialRecord, broken_slos, fmt_metric, speedup
from hapi_dse.search.relax import relax_line, relax_slos

#: the latency figures a line states beside accuracy: the mean and the tail
MEAN, TAIL = metric("latency"), metric("p99_latency")

LEGEND = (
    "* chosen; exits POSITION:HEAD@THRESHOLD (ent: entropy policy, patN: patience N, else "
    "max_softmax); test: the SLOs checked again on the test split, and whether the test "
    f"accuracy falls over {SHORTFALL_MARGIN_PP:g} pp further below the plain backbone's than "
    "val showed"
)


def _test_verdict(result: DeviceResult, r: TrialRecord) -> str:
    """The ``test`` cell of a row: ``ok``, or the SLOs it breaks and, when the test split
    loses clearly more to the plain backbone than val showed, both gaps."""
    flags = ["breaks " + ",".join(r.test_broken)] if r.test_broken else []
    short = shortfall(r.metrics, r.test, result.backbone)
    if short is not None and short.flagged:
        flags.append(f"{short.test_pp:.2f}pp below backbone (val {short.val_pp:.2f})")
    return "; ".join(flags) or "ok"


def _slack_lines(result: DeviceResult) -> list[str]:
    """A note for each SLO that every trial meets: it shaped nothing in this search."""
    complete = result.complete
    out = []
    for s in result.slos:
        if complete and all(r.violations.get(s.name, 0.0) <= 0 for r in complete):
            worst = max(complete, key=lambda r: r.violations[s.name])
            assert worst.metrics is not None
            out.append(
                f"note: {s.label()} binds no design: all {len(complete)} trials "
                f"meet it (the {'lowest' if not s.upper else 'highest'} {s.metric} is "
                f"{fmt_metric(s.metric, worst.metrics[s.metric])}); tighten it to trade "
                "accuracy for it"
            )
    return out


def console_report(result: DeviceResult, max_rows: int = 12) -> str:
    """The Pareto table and the chosen design (or the closest designs when none fits)."""
    complete = result.complete
    n_feasible = sum(r.feasible for r in complete)
    slos = ", ".join(s.label() for s in result.slos) or "none"
    source = f", {result.table_source} table" if result.table_source else ""
    if "table" in result.inputs:  # which one: ./profiles shadows the installed copy
        source += f" {result.inputs['table']}"
    lines = [
        f"{result.device} ({result.model_id}{source}): {len(complete)} trials, "
        f"{n_feasible} feasible, {len(result.front)} on the Pareto front; SLOs: {slos}"
    ]
    metrics = ["accuracy", "latency_ms", "p99_latency_ms", "energy_mj", "size_mb"]
    extra = [o.metric for o in result.objectives if o.metric not in metrics]
    metrics += extra
    if result.front:
        header = ["trial", "exits", *metrics, "test_accuracy", "test"]
        shown = _spread(result.front, max_rows)
        chosen = result.chosen
        if chosen is not None and chosen not in shown:  # always show the chosen design
            at = result.front.index(chosen)
            nearest = min(range(len(shown)), key=lambda i: abs(result.front.index(shown[i]) - at))
            shown[nearest] = chosen
        rows = []
        for r in shown:
            assert r.metrics is not None and r.design is not None and r.test is not None
            mark = "*" if r is result.chosen else ""
            rows.append(
                [
                    f"{r.number}{mark}",
                    _short(r.design),
                    *[fmt_metric(m, r.metrics[m]) for m in metrics],
                    fmt_metric("accuracy", r.test["accuracy"]),
                    _test_verdict(result, r),
                ]
            )
        lines.append(_table(rows, header))
        if len(shown) < len(result.front):
            lines.append(f"({len(result.front) - len(shown)} more designs in pareto.csv)")
        lines.append(LEGEND)
    lines += _slack_lines(result)
    lines += _verify_lines(result)
    if result.chosen is not None:
        r = result.chosen
        assert r.metrics is not None and r.design is not None and r.test is not None
        pol = r.design.policy + "".join(f"(p={v})" for v in r.design.policy_params.values())
        lines.append(
            f"chosen for {result.device} ({rule_words(result.pick_rule)} under the SLOs): trial "
            f"{r.number}, {pol} exits [{r.design.compact(digits=4) or 'none: plain backbone'}]: "
            f"accuracy {fmt_metric('accuracy', r.metrics['accuracy'])} (test "
            f"{fmt_metric('accuracy', r.test['accuracy'])}), latency "
            f"{_stat(MEAN, r.metrics)} / {_stat(TAIL, r.metrics)}, energy "
            f"{r.metrics['energy_mj']:.3g} mJ, {r.metrics['size_mb']:.3g} MB"
        )
        up = speedup(result, r)
        if up is not None:
            b = result.backbone["val"]
            lines.append(
                f"predicted speed-up over the plain backbone: {up:.2f}x (backbone "
                f"{_stat(MEAN, b)}, accuracy {fmt_metric('accuracy', b['accuracy'])})"
            )
        if r.test_broken:
            lines.append(f"warning: on the test split it breaks {', '.join(r.test_broken)}")
        short = shortfall(r.metrics, r.test, result.backbone)
        if short is not None and short.flagged:
            assert r.test is not None
            lines.append(
                f"warning: on the test split its accuracy "
                f"{fmt_metric('accuracy', r.test['accuracy'])} is {short.test_pp:.2f} pp below "
                "the plain backbone's "
                f"{fmt_metric('accuracy', result.backbone['test']['accuracy'])}"
                f", against {short.val_pp:.2f} pp on val: the val split over-promised (a larger "
                "val split, or an accuracy SLO, guards against it)"
            )
    elif result.verify and result.verify.get("verified_trials"):
        lines.append(
            f"no feasible design for {result.device}: no verified design meets every SLO "
            f"({slos}) as measured on this machine; verify more designs (--verify) or relax "
            "an SLO"
        )
    else:
        lines.append(
            f"no feasible design for {result.device}: no trial meets every SLO "
            f"({slos}). Closest designs:"
        )
        for r in result.closest:
            assert r.design is not None
            lines.append(
                f"  trial {r.number} [{_short(r.design)}]: "
                + "; ".join(broken_slos(r, result.slos))
            )
        lines.append(
            f"{relax_line(relax_slos(result))}, widen the search space (--space) or add trials "
            "(--trials)"
        )
    if result.out_dir is not None:
        lines.append(f"wrote {result.out_dir}/")
    return "\n".join(lines)


def _verify_lines(result: DeviceResult) -> list[str]:
    """What ``--verify`` measured: predicted vs measured latency per verified design."""
    v = result.verify or {}
    if not v.get("verified_trials"):
        return [f"--verify: {v['note']}"] if v.get("note") else []
    by_number = {r.number: r for r in result.front}
    lines = [
        f"verified {len(v['verified_trials'])} Pareto designs near the pick on this machine "
        "(val split, measured as 'hapi eval' does):"
    ]
    for n in v["verified_trials"]:
        r = by_number[n]
        assert r.metrics is not None and r.measured is not None
        verdict = "breaks " + ", ".join(r.measured_broken) if r.measured_broken else "meets SLOs"
        mean, tail = MEAN.column, TAIL.column
        lines.append(
            f"  trial {n}: latency {r.measured[mean]:.4g} {MEAN.unit} measured / "
            f"{r.metrics[mean]:.4g} predicted, {TAIL.statistic} {r.measured[tail]:.4g} / "
            f"{r.metrics[tail]:.4g} {TAIL.unit}: {verdict}"
        )
    if v.get("repicked") and v.get("chosen_trial") is not None:
        lines.append(f"re-picked as measured: trial {v['predicted_pick']} -> {v['chosen_trial']}")
    return lines


def _stat(m: Metric, metrics: dict[str, float]) -> str:
    """E.g. ``0.432 ms mean``: a latency metric's value, unit and statistic."""
    return f"{metrics[m.column]:.3g} {m.unit} {m.statistic}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)
    ]
    lines = [
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    for r in rows:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _spread(items: list[TrialRecord], k: int) -> list[TrialRecord]:
    """At most ``k`` items, evenly spaced along the list (first and last kept)."""
    if len(items) <= k:
        return items
    idx = sorted({round(i * (len(items) - 1) / (k - 1)) for i in range(k)})
    return [items[i] for i in idx]


def _short(design: Design, width: int = 44) -> str:
    s = design.compact(digits=4) or "(backbone only)"
    if design.policy != "max_softmax":
        s = f"{design.policy[:3]}{design.patience or ''} {s}"
    return s if len(s) <= width else s[: width - 1] + "…"
