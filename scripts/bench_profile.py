"""Benchmark ``hapi profile`` on this machine; the last line printed is one JSON object.

1. ``hapi profile --device host`` (a subprocess, as a user runs it the first time: with an
   EMPTY network cache, ``HAPI_CACHE_DIR`` a new folder, so the network is exported):
   ``profile_wall_s``,
   ``call_overhead_us``, ``segments_sum_over_monolithic`` (sum of the block medians / the
   monolithic backbone's median).
2. A second profile right after, of the same exported segments (``--onnx-dir``):
   ``repeat_max_rel_diff``, the largest per-segment relative difference of the medians over
   segments above 20 us (``repeat_max_rel_diff_all`` over every segment).
3. ``hapi profile --calibrate`` fits this machine's spec from its micro-benchmark (not from
   the model); the model's segments are then modelled with it and compared with the first
   measured table: ``modelled_spearman`` and ``modelled_mape`` over segments.

Usage: python scripts/bench_profile.py [--model RUN] [--runs N] [--threads N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from benchlib import add_record_option, finish, machine

HAPI = [sys.executable, "-m", "hapi_dse"]


def run(args: list[str], cache: Path) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "HAPI_NO_PROGRESS": "1", "HAPI_CACHE_DIR": str(cache)}
    res = subprocess.run([*HAPI, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    sys.stdout.write(res.stdout)
    if res.returncode != 0:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"hapi {' '.join(args)} failed with status {res.returncode}")
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="run directory (default: the bundled example)")
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--keep", default=None, help="keep the tables and segments in this dir")
    ap.add_argument("--seed", type=int, default=0)
    add_record_option(ap)
    a = ap.parse_args()
    started, machine_start = time.time(), machine()

    from hapi_dse.profiling.manifest import load_manifest
    from hapi_dse.profiling.modelled import ModelledProfiler
    from hapi_dse.profiling.runner import compare_rows
    from hapi_dse.profiling.specs import parse_spec
    from hapi_dse.profiling.table import read_table

    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="hapi-bench-profile-"))
    try:
        model = ["--model", a.model] if a.model else []
        common = [
            "--device",
            "host",
            "--runs",
            str(a.runs),
            "--threads",
            str(a.threads),
            "--seed",
            str(a.seed),
        ]
        cache = work / "network-cache"  # empty: the first profile exports the network
        shutil.rmtree(cache, ignore_errors=True)
        wall = run(
            [
                "profile",
                *model,
                *common,
                "--profiles",
                str(work / "first"),
                "--export-dir",
                str(work / "segments"),
            ],
            cache,
        )
        wall2 = run(
            [
                "profile",
                "--onnx-dir",
                str(work / "segments"),
                *common,
                "--profiles",
                str(work / "second"),
            ],
            cache,
        )
        run(
            [
                "profile",
                "--calibrate",
                "--onnx-dir",
                str(work / "segments"),
                "--device",
                "host",
                "--threads",
                str(a.threads),
                "--profiles",
                str(work / "first"),
                "--seed",
                str(a.seed),
            ],
            cache,
        )

        first = read_table(next((work / "first" / "host").glob("*.csv")))
        second = read_table(next((work / "second" / "host").glob("*.csv")))
        m1 = first.rows["latency_ms"].to_numpy()
        m2 = second.rows["latency_ms"].to_numpy()
        rel = np.abs(m1 - m2) / np.minimum(m1, m2)
        big = np.minimum(m1, m2) > 0.020
        spec = parse_spec(work / "first" / "specs" / "host.toml")
        modelled = ModelledProfiler(spec).profile(load_manifest(work / "segments")).rows
        cmp = compare_rows(first.rows.to_dict("records"), modelled)
        side = first.sidecar
        worst = int(np.argmax(np.where(big, rel, -1))) if big.any() else 0
        r = first.rows.iloc[worst]
        print(
            f"largest repeat difference: {r['segment']} {r['position']} {r['head']} "
            f"{m1[worst] * 1e3:.1f} vs {m2[worst] * 1e3:.1f} us"
        )
        out = {
            "profile_wall_s": round(wall, 2),
            "network_cache": "empty at the first profile",
            "second_profile_wall_s": round(wall2, 2),
            "segments": len(m1),
            "call_overhead_us": round(side["call_overhead_ms"] * 1e3, 3),
            "monolithic_backbone_ms": round(side["monolithic_backbone_ms"], 4),
            "segments_sum_ms": round(side["segments_sum_ms"], 4),
            "segments_sum_over_monolithic": round(side["segments_sum_over_monolithic"], 4),
            "segments_net_sum_over_monolithic": round(side["segments_net_sum_over_monolithic"], 4),
            "repeat_max_rel_diff": round(float(rel[big].max()) if big.any() else 0.0, 4),
            "repeat_max_rel_diff_all": round(float(rel.max()), 4),
            "repeat_segments_above_20us": int(big.sum()),
            "modelled_spearman": round(cmp["spearman"], 4),
            "modelled_mape": round(cmp["mape"], 4),
            "runs": a.runs,
            "threads": a.threads,
            "model_id": side.get("model_id"),
        }
        finish(out, a.record, started=started, machine_start=machine_start)
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
