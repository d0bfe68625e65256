"""Benchmark of the cost model and the search (bundled example, pixel6 table).

Prints a few lines of context, then ONE JSON object as the last line:

* ``evals_per_s``: cost-model evaluations per second on the val split (5,000 samples),
  over 20,000 distinct random designs of the default space, timed from the cost model's
  construction (mask cache empty, threshold grid prepared inside the timing), with
  ``CostModel.evaluate_many`` in batches of 1,000 (target >= 20,000); also reported:
  ``evals_per_s_single`` (``evaluate``, one design per call, as the search does) and the same
  on a second pass;
* ``default_search_wall_s``: ``hapi search --device pixel6 --slo latency=50ms`` end to end,
  as a fresh process (target < 5);
* ``trials_per_s``: the trial rate of that search (from its ``search.json``);
* ``hv_ratio``: on the ``small`` space with objectives accuracy and mean latency, the
  hypervolume of the front the default search finds divided by that of the exact front,
  which an exhaustive sweep of the space gives (target >= 0.995). The reference point is the
  nadir of the whole space: the worst accuracy and the worst mean latency over every design
  of the sweep, so every design counts and no tuning constant enters. Mean and minimum over
  ``--seeds`` search seeds.
* ``wall_s_1k`` / ``wall_s_20k``: a search of 1,000 and of 20,000 trials (default space,
  NSGA-II, in-memory storage, no SLO, seed 0), in this process, from the call to the written
  result (target for 20,000: <= 30 s); ``trials_per_s_ratio_20k_over_1k``: the trial rate
  of the long search over that of the short one (target >= 0.7: a trial costs the same
  however many the study holds);
* ``pg_trials_per_s_1w`` / ``pg_trials_per_s_2w``: ``--pg-trials`` trials into a fresh
  study on PostgreSQL (``--pg URL``, else ``$HAPI_TEST_POSTGRES_URL``; null without one) by
  one worker and by two (``--jobs 2``), trials over the wall time of the search call
  (target: two >= 1.5x one, on a machine with two cores).

Usage: python scripts/bench_search.py [--model RUN] [--profiles DIR] [--device pixel6]
       [--pg URL] [--pg-trials 1000] [--scale-trials 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import add_record_option, finish, machine


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run directory (default: bundled example)")
    ap.add_argument("--profiles", default=None)
    ap.add_argument("--device", default="pixel6")
    ap.add_argument("--designs", type=int, default=20_000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--batch", type=int, default=1000, help="designs per evaluate_many call")
    ap.add_argument("--scale-trials", type=int, default=20_000)
    ap.add_argument("--pg", default=os.environ.get("HAPI_TEST_POSTGRES_URL"))
    ap.add_argument("--pg-trials", type=int, default=1000)
    add_record_option(ap)
    args = ap.parse_args()
    started, machine_start = time.time(), machine()

    from hapi_dse.cost import CostModel, Design, SegmentCosts, parse_objectives
    from hapi_dse.profiling.table import load_table
    from hapi_dse.run import resolve_run
    from hapi_dse.search import SearchConfig, load_space, run_search
    from hapi_dse.search.live import hypervolume

    run = resolve_run(args.model)
    val = run.stats("val")
    table = load_table(args.device, run.model_id, args.profiles)
    costs = SegmentCosts.from_table(table, val)
    print(
        f"model {run.model_id}: {val.n} val samples, {val.k} columns; "
        f"{args.device} table ({table.source})"
    )

    # 1. cost-model evaluations per second: distinct random designs of the default space
    space = load_space("default").bind(val, run.model_id)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(0)
    designs: list[Design] = []
    seen: set[object] = set()
    while len(designs) < args.designs:
        params = _random_params(space, rng)
        d = space.decode(params)
        if d.key not in seen:
            seen.add(d.key)
            designs.append(d)

    def fresh() -> CostModel:  # what a search does: build the model, prepare the grid
        m = CostModel(val, costs)
        for policy in space.space.policies:
            m.prepare(policy, space.space.grid(policy))
        return m

    t0 = time.perf_counter()
    model = fresh()
    for i in range(0, len(designs), args.batch):
        model.evaluate_many(designs[i : i + args.batch])
    batched = time.perf_counter() - t0
    t0 = time.perf_counter()
    single_model = fresh()
    for d in designs:
        single_model.evaluate(d)
    single = time.perf_counter() - t0
    t0 = time.perf_counter()
    for d in designs:
        single_model.evaluate(d)
    warm = time.perf_counter() - t0
    evals_per_s = len(designs) / batched
    print(
        f"cost model, {len(designs)} distinct designs of the default space, timed from an "
        f"empty cache (model set-up and grid included): {evals_per_s:,.0f} evaluations/s "
        f"in batches of {args.batch}, {len(designs) / single:,.0f}/s one at a time "
        f"({len(designs) / warm:,.0f}/s on a second pass)"
    )

    # 2. the default search, end to end, as a user runs it
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            str(Path(sys.executable).with_name("hapi")),
            "search",
            "--device",
            args.device,
            "--slo",
            "latency=50ms",
            "--out",
            tmp,
        ]
        if args.model:
            cmd += ["--model", args.model]
        if args.profiles:
            cmd += ["--profiles", args.profiles]
        env = dict(os.environ, HAPI_NO_PROGRESS="1")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode not in (0, 1):
            sys.exit(f"default search failed: {proc.stderr.strip()}")
        info = json.loads((Path(tmp) / args.device / "search.json").read_text())
        trials_per_s = info["timings"]["trials_per_s"]
    print(f"default search: {wall:.2f} s end to end, {trials_per_s:,.0f} trials/s")

    # 3. hypervolume on the small space: exact front from a sweep vs the searched front
    small = load_space("small").bind(val, run.model_id)
    sweep = model.evaluate_many(list(small.enumerate()))
    acc = np.array([m["accuracy"] for m in sweep])
    lat = np.array([m["latency_ms"] for m in sweep])
    # hapi's hypervolume (the live progress line's): accuracy maximised, latency minimised
    ref = [-float(acc.min()), float(lat.max())]
    exact = hypervolume(np.column_stack([-acc, lat]), ref)
    ratios = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SearchConfig(
                devices=(args.device,),
                model=args.model,
                profiles=args.profiles,
                space="small",
                objectives=tuple(parse_objectives("accuracy,latency")),
                seed=seed,
                out=Path(tmp),
            )
            (res,) = run_search(cfg)
        front = [r.metrics for r in res.front if r.metrics]
        found = hypervolume(np.array([[-m["accuracy"], m["latency_ms"]] for m in front]), ref)
        ratios.append(found / exact)
        distinct = len({r.design.key for r in res.complete if r.design})
        print(
            f"small space ({small.size()} designs): seed {seed}: hv ratio {found / exact:.4f} "
            f"({len(res.complete)} trials, {distinct} distinct designs, "
            f"{len(res.front)} on the found front)"
        )

    # 4. scale: the trial rate of a long search against a short one, in memory
    def timed_search(trials: int, **kw: object) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = SearchConfig(
                devices=(args.device,),
                model=args.model,
                profiles=args.profiles,
                trials=trials,
                seed=0,
                out=Path(tmp),
                **kw,  # type: ignore[arg-type]
            )
            t0 = time.perf_counter()
            run_search(cfg)
            return time.perf_counter() - t0

    wall_1k = timed_search(1000)
    wall_big = timed_search(args.scale_trials)
    ratio = (args.scale_trials / wall_big) / (1000 / wall_1k)
    print(
        f"in memory: 1,000 trials in {wall_1k:.2f} s, {args.scale_trials:,} in {wall_big:.2f} s "
        f"(trial rate ratio {ratio:.2f})"
    )

    # 5. PostgreSQL, one worker and two, each into a fresh study
    pg: dict[str, float | None] = {"1": None, "2": None}
    if args.pg:
        import uuid

        for jobs in (1, 2):
            name = f"bench-{uuid.uuid4().hex[:10]}"
            wall_pg = timed_search(args.pg_trials, storage=args.pg, study=name, jobs=jobs)
            pg[str(jobs)] = args.pg_trials / wall_pg
            print(f"PostgreSQL, {jobs} worker(s): {pg[str(jobs)]:,.1f} trials/s")
    else:
        print("PostgreSQL: skipped (no --pg URL and no $HAPI_TEST_POSTGRES_URL)")

    finish(
        {
            "evals_per_s": round(evals_per_s),
            "evals_per_s_single": round(len(designs) / single),
            "evals_per_s_single_warm": round(len(designs) / warm),
            "default_search_wall_s": round(wall, 3),
            "trials_per_s": round(trials_per_s, 1),
            "hv_ratio": round(float(np.mean(ratios)), 4),
            "hv_ratio_min": round(float(np.min(ratios)), 4),
            "hv_seeds": args.seeds,
            "wall_s_1k": round(wall_1k, 3),
            "wall_s_20k": round(wall_big, 3),
            "scale_trials": args.scale_trials,
            "trials_per_s_ratio_20k_over_1k": round(ratio, 3),
            "pg_trials_per_s_1w": None if pg["1"] is None else round(pg["1"], 1),
            "pg_trials_per_s_2w": None if pg["2"] is None else round(pg["2"], 1),
            "pg_trials": args.pg_trials if args.pg else None,
            "val_samples": val.n,
            "small_space_designs": small.size(),
            "model_id": run.model_id,
        },
        args.record,
        started=started,
        machine_start=machine_start,
    )


def _random_params(space, rng):  # type: ignore[no-untyped-def]
    """Parameters as a random sampler would draw them from the space's encoding."""
    s = space.space
    params = {"policy": s.policies[rng.integers(len(s.policies))]}
    if s.patience:
        params["patience"] = int(rng.integers(s.patience[0], s.patience[1] + 1))
    for i in range(s.max_exits):
        last = len(space.positions) * len(space.heads) - 1
        params[f"exit{i}"] = int(rng.integers(0 if i < s.min_exits else -1, last + 1))
        params[f"q{i}"] = int(rng.integers(s.levels))
    return params


if __name__ == "__main__":
    main()
