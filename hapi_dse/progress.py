"""Progress bars: a bar with an ETA on a terminal, silence in pipes and CI."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def enabled(show: bool = True) -> bool:
    """Whether a progress bar is drawn: when asked (``show``: a library call's ``progress``
    argument, false with ``hapi -q``), on a terminal, unless ``CI`` or ``HAPI_NO_PROGRESS``
    is set."""
    if not show or os.environ.get("CI") or os.environ.get("HAPI_NO_PROGRESS"):
        return False
    return sys.stderr.isatty()


class Progress:
    """A minimal stderr progress bar. Draws at most ~10 times a second; no-op off a terminal
    or unless ``show`` (see :func:`enabled`; ``enabled_`` decides alone, for tests)."""

    def __init__(
        self,
        total: int,
        desc: str = "",
        *,
        show: bool = True,
        enabled_: bool | None = None,
        status: Callable[[], str] | None = None,
    ) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.n = 0
        self.start = time.perf_counter()
        self._last = 0.0
        self.postfix = ""
        #: called for the postfix only when the bar is drawn (at most ~10 times a second)
        self.status = status
        self.on = enabled(show) if enabled_ is None else enabled_

    def update(self, n: int = 1, postfix: str | None = None) -> None:
        self.n += n
        if postfix is not None:
            self.postfix = postfix
        now = time.perf_counter()
        if self.on and (now - self._last > 0.1 or self.n >= self.total):
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        if self.status is not None:
            self.postfix = self.status()
        frac = min(self.n / self.total, 1.0)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else float("nan")
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (
            f"\r{self.desc} [{bar}] {self.n}/{self.total} {elapsed:5.0f}s"
            f" eta {_fmt(eta)} {self.postfix}"
        )
        sys.stderr.write(line[:120].ljust(80))
        sys.stderr.flush()

    def close(self) -> None:
        if self.on:
            sys.stderr.write("\n")
            sys.stderr.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _fmt(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "--:--"
    m, s = divmod(int(seconds), 60)
    return f"{m:02d}:{s:02d}"
