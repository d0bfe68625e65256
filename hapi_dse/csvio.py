"""CSV text in the one dialect every hapi table uses: a header line, ``\\n`` line ends.

Used for ``flops.csv`` (training), the profile tables (profiling) and ``trials.csv`` /
``pareto.csv`` (search). It returns text, so the caller writes it atomically
(:func:`hapi_dse.atomic.write_text`) and no stage imports another to write a table.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from typing import Any


def csv_text(rows: Sequence[Mapping[str, Any]], header: Sequence[str] | None = None) -> str:
    """``rows`` as CSV text under ``header`` (default: the keys of the first row, in order).

    >>> print(csv_text([{"segment": "block", "flops": 10}]), end="")
    segment,flops
    block,10
    """
    if header is None:
        if not rows:
            raise ValueError("csv_text: no rows and no header: the columns are unknown")
        header = list(rows[0])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(header), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()
