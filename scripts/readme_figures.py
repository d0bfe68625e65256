"""Regenerate the README's figures from the files that measured them, so none is typed.

Two kinds of generated block, each between ``<!-- figures:NAME -->`` and
``<!-- /figures:NAME -->`` in ``README.md``:

- ``accuracy``: test accuracy per exit position and head type of the bundled example, from its
  ``train.json``;
- ``bench``: the benchmark table, from the records ``make bench`` keeps under ``docs/bench/``
  (each benchmark script's ``--record FILE``: its JSON line, as printed);
- ``devices``: how good a modelled table is (``docs/bench/devices.json``): this machine's
  spec against 200 random CNNs, and every published whole-network latency against the
  shipped spec of its device.

``python scripts/readme_figures.py`` rewrites the blocks; ``--check`` only compares and exits
1 when the README is out of date (``tests/test_readme_figures.py`` runs it).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
EXAMPLE = ROOT / "hapi_dse" / "examples" / "fashion-mnist"
BENCH = ROOT / "docs" / "bench"

# (record, key, label, format, target): one row of the benchmark table per entry
BENCH_ROWS: list[tuple[str, str, str, str, str]] = [
    (
        "profile",
        "profile_wall_s",
        "`hapi profile --device host`, s (export + profile of every segment and the probes)",
        "{:.1f}",
        "<= 60",
    ),
    (
        "profile",
        "second_profile_wall_s",
        "a second profile of the exported segments (`--onnx-dir`), s",
        "{:.1f}",
        "",
    ),
    ("profile", "call_overhead_us", "one `session.run` call", "{:.1f}", ""),
    (
        "profile",
        "segments_sum_over_monolithic",
        "sum of segments / monolithic backbone",
        "{:.2f}",
        "",
    ),
    ("profile", "repeat_max_rel_diff", "two profiles, segments > 20 us", "{:.3f}", "<= 0.05"),
    ("profile", "modelled_spearman", "modelled vs measured, rank", "{:.3f}", ">= 0.9"),
    ("profile", "modelled_mape", "modelled vs measured", "{:.3f}", "<= 0.20"),
    (
        "devices",
        "calibrated10_mape",
        "spec calibrated on 10 random CNNs, the other 190, 1 thread",
        "{:.3f}",
        "<= 0.08",
    ),
    ("devices", "calibrated10_within_10pct", "... within 10 %", "{:.2f}", ">= 0.80"),
    ("devices", "calibrated10_spearman", "... rank", "{:.3f}", ">= 0.97, > FLOPs"),
    ("devices", "flops_spearman", "FLOPs alone, rank", "{:.3f}", ""),
    ("devices", "calibrated10_mape_2t", "calibrated on 10, 2 threads", "{:.3f}", "<= 0.08"),
    ("devices", "calibrated10_within_10pct_2t", "... within 10 %", "{:.2f}", ">= 0.80"),
    ("devices", "calibrated10_spearman_2t", "... rank", "{:.3f}", ">= 0.97, > FLOPs"),
    ("devices", "flops_spearman_2t", "FLOPs alone, rank, 2 threads", "{:.3f}", ""),
    ("search", "evals_per_s", "cost model, designs/s on the val split", "{:,.0f}", ">= 20,000"),
    ("search", "default_search_wall_s", "default 1,000-trial search", "{:.2f}", "< 5"),
    ("search", "hv_ratio", "small space vs exhaustive sweep", "{:.4f}", ">= 0.995"),
    ("search", "wall_s_20k", "20,000-trial search in memory, s", "{:.1f}", "<= 30"),
    (
        "search",
        "trials_per_s_ratio_20k_over_1k",
        "trial rate, 20,000 trials over 1,000",
        "{:.2f}",
        ">= 0.7",
    ),
    ("search", "pg_trials_per_s_1w", "PostgreSQL, one worker, trials/s", "{:.1f}", ""),
    ("search", "pg_trials_per_s_2w", "PostgreSQL, two workers, trials/s", "{:.1f}", ">= 1.5x one"),
    (
        "export",
        "export_wall_s",
        "first `hapi export` (empty network cache: it exports the network), s",
        "{:.1f}",
        "<= 5",
    ),
    ("export", "export_wall_warm_s", "`hapi export` again (network cached), s", "{:.1f}", ""),
    ("export", "latency_median_abs_err", "predicted vs measured mean latency", "{:.3f}", "<= 0.05"),
    ("export", "latency_share_within_10pct", "designs within 10 %", "{:.2f}", ">= 0.95"),
    (
        "export",
        "latency_mean_signed_err",
        "bias (measured slower: > 0)",
        "{:+.3f}",
        "\\|x\\| <= 0.03",
    ),
    ("export", "p90_latency_median_abs_err", "p90 latency", "{:.3f}", "<= 0.10"),
    (
        "export",
        "verified_slo_met",
        "`--verify 5` meets the SLO as measured, seeds 0-4",
        "{} / 5",
        "5 / 5",
    ),
    ("export", "exit_agreement_min", "exits as simulated", "{:.4f}", ">= 0.995"),
    ("export", "accuracy_abs_diff_pp_max", "accuracy as simulated (pp)", "{:.2f}", "<= 0.1"),
    (
        "export",
        "single_graph_deep_path_ratio",
        "deep path, one graph / segments",
        "{:.3f}",
        "<= 1.10",
    ),
    ("export", "staged_overhead_us_per_stage", "staged runtime, per stage (us)", "{:.1f}", "<= 5"),
    (
        "export",
        "iso_accuracy_speedup",
        "fastest design within 0.5 pp of the backbone (test)",
        "{:.2f}",
        ">= 2.0",
    ),
    (
        "export",
        "iso_accuracy_speedup_valpick",
        "`--pick iso_accuracy` on val, measured on test",
        "{:.2f}",
        ">= 2.0",
    ),
]


def _load(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise SystemExit(f"{path}: cannot read a benchmark record ({e})") from None
    if not isinstance(doc, dict):
        raise SystemExit(f"{path}: not a JSON object")
    return doc


def accuracy_block(train_json: Path) -> str:
    t = _load(train_json)
    per_exit = [e for e in t["per_exit"] if e["head"] != "final"]
    heads = list(dict.fromkeys(e["head"] for e in per_exit))
    positions = sorted({int(e["position"]) for e in per_exit})
    acc = {(int(e["position"]), e["head"]): 100 * e["test_acc"] for e in per_exit}
    lines = [
        "| block | " + " | ".join(f"`{h}`" for h in heads) + " | best |",
        "| --- | " + " | ".join("---:" for _ in heads) + " | --- |",
    ]
    for p in positions:
        row = [acc.get((p, h)) for h in heads]
        best = max((a, h) for a, h in zip(row, heads, strict=True) if a is not None)
        cells = [
            "" if a is None else f"**{a:.1f}**" if h == best[1] else f"{a:.1f}"
            for a, h in zip(row, heads, strict=True)
        ]
        lines.append(f"| {p} | " + " | ".join(cells) + f" | `{best[1]}` |")
    secs = t.get("timings", {}).get("exits_s")
    took = f"; the heads took {secs / 60:.0f} min to train" if secs else ""
    lines += [
        "",
        f"Test accuracy (%) of every exit of `{t['model_id']}`; the plain backbone: "
        f"{100 * t['backbone_test_acc']:.2f} % (val {100 * t['backbone_val_acc']:.2f} %). "
        f"Made by `{t['command']}`{took} (`train.json`).",
    ]
    return "\n".join(lines)


def bench_block(bench_dir: Path) -> str:
    records = {}
    for name in sorted({r[0] for r in BENCH_ROWS}):
        f = bench_dir / f"{name}.json"
        if f.is_file():
            records[name] = _load(f)
    lines = [
        "| script | key | what | measured | target |",
        "| --- | --- | --- | --- | --- |",
    ]
    last = None
    for rec, key, label, fmt, target in BENCH_ROWS:
        doc = records.get(rec)
        value = "not run" if doc is None or doc.get(key) is None else fmt.format(doc[key])
        script = f"`bench_{rec}.py`" if rec != last else ""
        last = rec
        lines.append(f"| {script} | `{key}` | {label} | {value} | {target} |")
    lines.append("")
    for name, doc in records.items():
        m = doc.get("machine", {})
        load = m.get("loadavg_start")
        started = str(doc.get("started_utc", "?"))[:16].replace("T", " ")
        wall = doc.get("wall_s")
        lines.append(
            f"- `bench_{name}.py`: {started} UTC"
            + (
                f", {wall:.0f} s"
                if wall and wall < 120
                else f", {wall / 60:.0f} min"
                if wall
                else ""
            )
            + (f", {m['cpus']} cores" if m.get("cpus") else "")
            + (f", load average {load[0]:.2f} at the start" if load else "")
            + (f", model `{doc['model_id']}`" if doc.get("model_id") else "")
            + f" (`docs/bench/{name}.json`)"
        )
    return "\n".join(lines)


def devices_block(record: Path) -> str:
    if not record.is_file():
        return "Not run yet: `python scripts/bench_devices.py --record docs/bench/devices.json`."
    doc = _load(record)
    pct = "{:.1%}".format
    lines = [
        "| this machine, onnxruntime | threads | MAPE | within 10 % | Spearman |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, key in (("spec from `hapi profile --calibrate`", "host_spec"),
                      ("... calibrated on 10 of the networks", "calibrated10")):  # fmt: skip
        for threads, sfx in ((1, ""), (2, "_2t")):
            lines.append(
                f"| {name} | {threads} | {pct(doc[f'{key}_mape{sfx}'])} | "
                f"{pct(doc[f'{key}_within_10pct{sfx}'])} | {doc[f'{key}_spearman{sfx}']:.3f} |"
            )
    for threads, sfx in ((1, ""), (2, "_2t")):
        lines.append(f"| FLOPs alone | {threads} | | | {doc[f'flops_spearman{sfx}']:.3f} |")
    lines += [
        "",
        "| device (spec) | network | measured on | runtime | threads | precision | measured ms "
        "| modelled ms | modelled / measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in doc["published"]:
        on = r["measured_on"] or "the device"
        threads = r["threads"] or f"? (modelled at {r['modelled_threads']})"
        lines.append(
            f"| `{r['device']}` | {r['model']} | {on} | [{r['runtime']}]({r['url']}) | {threads} "
            f"| {r['precision']} | {r['measured_ms']:g} | {r['modelled_ms']:g} | {r['ratio']:.2f} |"
        )
    started = str(doc.get("started_utc", "?"))[:16].replace("T", " ")
    load = doc.get("machine", {}).get("loadavg_start")
    lines += [
        "",
        f"`bench_devices.py`: {started} UTC, {doc['nets']} networks, "
        f"{doc['runs']} timed runs each"
        + (f", load average {load[0]:.2f} at the start" if load else "")
        + " (`docs/bench/devices.json`).",
    ]
    return "\n".join(lines)


BLOCKS = {
    "accuracy": lambda: accuracy_block(EXAMPLE / "train.json"),
    "bench": lambda: bench_block(BENCH),
    "devices": lambda: devices_block(BENCH / "devices.json"),
}


def render(text: str) -> str:
    for name, make in BLOCKS.items():
        pat = re.compile(rf"(<!-- figures:{name} -->\n)(.*?)(<!-- /figures:{name} -->)", re.DOTALL)
        if not pat.search(text):
            raise SystemExit(f"README.md: no <!-- figures:{name} --> block")
        body = make()
        text = pat.sub(lambda m, b=body: m.group(1) + b + "\n" + m.group(3), text)
    return text


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    args = ap.parse_args()
    old = README.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print(
                "README.md figures are stale: run python scripts/readme_figures.py", file=sys.stderr
            )
            return 1
        return 0
    if new != old:
        tmp = README.with_suffix(".md.tmp")
        tmp.write_text(new)
        tmp.replace(README)
        print("README.md figures regenerated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
