"""Record, or check, what ``hapi search`` writes for the bundled example at fixed seeds.

A refactor must not change a search's results: the same trials, the same Pareto front, the
same chosen design. This script runs a few fixed searches and writes everything they wrote
(``trials.csv``, ``pareto.csv``, ``design.json`` without its provenance) to
``tests/data/search_snapshot.json``; ``tests/test_search_snapshot.py`` runs the same searches
and compares. Rewrite the snapshot (``--write``) only on purpose: when the bundled example is
rebuilt, or when a change is meant to change search results (say why in the commit).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "tests" / "data" / "search_snapshot.json"

# (name, arguments after 'hapi search'); each writes to --out <tmp>/<name>
CASES: list[tuple[str, list[str]]] = [
    (
        "nsga2-slo",
        ["--device", "pixel6", "--trials", "300", "--seed", "3", "--slo", "latency=0.2ms"],
    ),
    (
        "tpe-two-devices",
        ["--device", "pixel6,raspberry-pi-4", "--sampler", "tpe", "--trials", "80", "--seed", "1"],
    ),
    (
        "random-energy-knee",
        [
            "--device", "jetson-nano", "--sampler", "random", "--trials", "120", "--seed", "5",
            "--objectives", "accuracy,energy", "--pick", "knee",
        ],
    ),
]  # fmt: skip


def _rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def run_case(args: list[str], out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "hapi_dse", "search", *args, "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: exit {res.returncode}: {res.stderr.strip()}")
    result: dict[str, Any] = {}
    for dev_dir in sorted(p for p in out.iterdir() if p.is_dir()):
        design = json.loads((dev_dir / "design.json").read_text())
        design.pop("provenance", None)
        result[dev_dir.name] = {
            "trials": _rows((dev_dir / "trials.csv").read_text()),
            "pareto": _rows((dev_dir / "pareto.csv").read_text()),
            "design": design,
        }
    return result


def run_all() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        return {name: run_case(args, Path(tmp) / name) for name, args in CASES}


def _close(a: Any, b: Any, where: str, out: list[str]) -> None:
    """Equal, with floats (also as CSV text) to 1e-9 relative: the same arithmetic, any libm."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            out.append(f"{where}: keys {sorted(a.keys() ^ b.keys())} differ")
            return
        for k in a:
            _close(a[k], b[k], f"{where}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} items, snapshot has {len(b)}")
            return
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _close(x, y, f"{where}[{i}]", out)
    elif a != b:
        try:
            fa, fb = float(a), float(b)
        except (TypeError, ValueError):
            out.append(f"{where}: {a!r} != {b!r}")
            return
        if not math.isclose(fa, fb, rel_tol=1e-9, abs_tol=1e-12):
            out.append(f"{where}: {a!r} != {b!r}")


def differences(now: dict[str, Any], snapshot: dict[str, Any]) -> list[str]:
    out: list[str] = []
    _close(now, snapshot, "search", out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help="rewrite the snapshot")
    args = ap.parse_args()
    now = run_all()
    if args.write:
        SNAPSHOT.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
        return
    diffs = differences(now, json.loads(SNAPSHOT.read_text()))
    print("\n".join(diffs[:20]) if diffs else "search results match the snapshot")
    sys.exit(1 if diffs else 0)


if __name__ == "__main__":
    main()
