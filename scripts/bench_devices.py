"""Benchmark hapi's device models; the last line printed is one JSON object.

1. On this machine (quiet, please): ``--nets`` random small CNNs
   (:func:`hapi_dse.profiling.kit.random_cnns`: cells of conv 1x1 / 3x3, depthwise-separable,
   pooling, skip; random widths; 28-64 px), timed with onnxruntime at 1 and 2 threads (the
   profile's protocol: interleaved rounds, each graph read as its quietest round's median).
   For each thread count (``_2t`` keys for 2 threads):
   - ``host_spec_*``: the spec ``hapi profile --calibrate --threads 2`` fits from its own
     micro-benchmark (never from these networks) vs measured;
   - ``calibrated10_*``: that spec calibrated (:func:`hapi_dse.profiling.fitting.fit_spec`,
     as ``hapi calibrate --fit`` does) on 10 of these networks chosen by ``--seed``, timed at
     1 and 2 threads, vs the other networks;
   - ``flops_spearman``: FLOPs alone (rank only) vs measured, on the same other networks.
   Keys: ``_mape`` (mean abs relative error), ``_within_10pct``, ``_spearman``.
2. ``published``: every published whole-network latency of
   ``hapi_dse/shipped_profiles/published.toml``, modelled with the shipped spec of its device
   at the thread count it was measured at: model, runtime, threads, precision, measured,
   modelled, ratio. The README's "How good is a modelled table" section is made from it.

Usage: python scripts/bench_devices.py [--nets N] [--runs N] [--seed S] [--record FILE]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import add_record_option, finish, machine

HAPI = [sys.executable, "-m", "hapi_dse"]


def host_spec(work: Path, seed: int) -> Any:
    from hapi_dse.profiling.specs import parse_spec

    res = subprocess.run(
        [*HAPI, "profile", "--calibrate", "--device", "host", "--threads", "2",
         "--profiles", str(work), "--seed", str(seed)],
        capture_output=True, text=True, env={**os.environ, "HAPI_NO_PROGRESS": "1"},
    )  # fmt: skip
    if res.returncode != 0:
        raise SystemExit(f"hapi profile --calibrate failed: {res.stderr}")
    return parse_spec(work / "specs" / "host.toml")


def published_rows() -> list[dict[str, Any]]:
    from hapi_dse.paths import SHIPPED_PROFILES
    from hapi_dse.profiling.modelled import estimate_s
    from hapi_dse.profiling.opcost import graph_costs
    from hapi_dse.profiling.published import load_published
    from hapi_dse.profiling.reference_nets import build
    from hapi_dse.profiling.specs import parse_spec

    rows = []
    costs: dict[tuple[str, int, int], Any] = {}
    for c in load_published():
        spec = parse_spec(SHIPPED_PROFILES / "specs" / f"{c.device}.toml")
        key = (c.model, c.input, spec.channel_block)
        if key not in costs:
            costs[key] = graph_costs(build(c.model, input_size=c.input), spec.channel_block)
        threads = c.threads or spec.threads
        modelled = estimate_s(costs[key], spec, threads) * 1e3
        rows.append(
            {
                "device": c.device,
                "measured_on": c.measured_on,
                "model": c.model,
                "input": c.input,
                "runtime": c.runtime,
                "threads": c.threads,
                "modelled_threads": threads,
                "precision": c.precision,
                "measured_ms": c.measured_ms,
                "modelled_ms": round(modelled, 2),
                "ratio": round(modelled / c.measured_ms, 3),
                "url": c.url,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", type=int, default=200)
    ap.add_argument("--runs", type=int, default=100, help="timed runs per network")
    ap.add_argument("--calibration-nets", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    add_record_option(ap)
    a = ap.parse_args()
    started, machine_start = time.time(), machine()

    import onnx

    from hapi_dse.profiling.calibrate import time_graphs
    from hapi_dse.profiling.fitting import Timing, errors, fit_spec
    from hapi_dse.profiling.kit import random_cnns
    from hapi_dse.profiling.opcost import graph_costs
    from hapi_dse.profiling.runner import spearman
    from hapi_dse.profiling.timing import TimingSettings

    out: dict[str, Any] = {"nets": a.nets, "runs": a.runs, "seed": a.seed}
    with tempfile.TemporaryDirectory(prefix="hapi-bench-devices-") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        spec = host_spec(work, a.seed)
        out["host_calibrate_wall_s"] = round(time.perf_counter() - t0, 1)
        nets = random_cnns(a.nets, seed=a.seed)
        paths = []
        for b in nets:
            p = work / f"{b.name}.onnx"
            onnx.save(b.model, str(p))
            paths.append(p)
        costs = [graph_costs(p, spec.channel_block) for p in paths]
        timings: dict[int, list[Timing]] = {}
        for threads in (1, 2):
            t0 = time.perf_counter()
            settings = TimingSettings(
                threads=threads, runs=a.runs, warmup=10, rounds=max(1, a.runs // 5), seed=a.seed
            )
            measured = time_graphs(paths, settings)
            out[f"timing_wall_s_{threads}t"] = round(time.perf_counter() - t0, 1)
            timings[threads] = [
                Timing(b.name, c, threads, m[0])
                for b, c, m in zip(nets, costs, measured, strict=True)
            ]
    lat = np.array([t.seconds for t in timings[1]]) * 1e3
    out["latency_ms_range_1t"] = [round(float(lat.min()), 4), round(float(lat.max()), 3)]
    out["mflops_range"] = [round(min(c.flops for c in costs) / 1e6, 2),
                           round(max(c.flops for c in costs) / 1e6, 1)]  # fmt: skip

    rng = np.random.default_rng(a.seed)
    chosen = set(rng.choice(a.nets, a.calibration_nets, replace=False).tolist())
    train = [timings[n][i] for n in (1, 2) for i in sorted(chosen)]
    t0 = time.perf_counter()
    fit = fit_spec(train, spec)
    out["calibration_fit_s"] = round(time.perf_counter() - t0, 2)
    out["calibration_fit_mape"] = round(fit.mape, 4)
    for threads, suffix in ((1, ""), (2, "_2t")):
        every = timings[threads]
        rest = [t for i, t in enumerate(every) if i not in chosen]
        host = errors(every, spec)
        cal = errors(rest, fit.spec)
        for k in ("mape", "within_10pct", "spearman", "median_ratio"):
            out[f"host_spec_{k}{suffix}"] = round(host[k], 4)
            out[f"calibrated10_{k}{suffix}"] = round(cal[k], 4)
        out[f"flops_spearman{suffix}"] = round(
            spearman([t.seconds for t in rest], [t.costs.flops for t in rest]), 4
        )
    speedup = np.array(
        [a1.seconds / a2.seconds for a1, a2 in zip(timings[1], timings[2], strict=True)]
    )
    out["measured_speedup_2t_median"] = round(float(np.median(speedup)), 3)
    out["host_spec"] = {k: v for k, v in spec.to_dict().items() if k != "path"}
    out["published"] = published_rows()
    finish(out, a.record, started=started, machine_start=machine_start)


if __name__ == "__main__":
    main()
