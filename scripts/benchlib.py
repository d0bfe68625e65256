"""What every benchmark script under ``scripts/`` shares: the machine it ran on, and
``--record FILE`` (the JSON line it prints, also written to FILE, atomically), which
``make bench`` keeps under ``docs/bench/`` for ``scripts/readme_figures.py``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any


def add_record_option(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--record",
        default=None,
        metavar="FILE",
        help="also write the JSON result to FILE (make bench: docs/bench/)",
    )


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "platform": platform.system().lower(),
        "loadavg_start": list(os.getloadavg()),
    }


def finish(
    result: dict[str, Any], record: str | None, *, started: float, machine_start: dict[str, Any]
) -> None:
    """Add when, how long and on what; print the JSON line; write ``record`` if asked."""
    result = {
        **result,
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(started)),
        "wall_s": round(time.time() - started, 1),
        "machine": {
            **machine_start,
            **result.get("machine", {}),
            "loadavg_end": list(os.getloadavg()),
        },
    }
    line = json.dumps(result)
    if record:
        path = Path(record)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(line + "\n")
        tmp.replace(path)
    print(line)
