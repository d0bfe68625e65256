"""Interrupts while a study runs: Ctrl-C and SIGTERM stop a search between trials.

:class:`StopOnSignal` wraps ``study.optimize``: the first SIGINT or SIGTERM lets the trial in
flight finish and stops the study, so a storage holds whole trials only and a rerun resumes
with the exact count; a second one interrupts at once. :func:`quiet_optuna` keeps Optuna from
reporting a trial that an interrupt (or any error the CLI reports itself) cut short.
"""

from __future__ import annotations

import logging
import re
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from hapi_dse.search.optuna_compat import OPTIMIZE_LOGGER

_HARD_STOP = threading.Event()  # set once a second signal interrupts a trial
_FAILED_WITH_NONE = re.compile(r"Trial \d+ failed with value None\.")


def _not_repeated(record: logging.LogRecord) -> bool:
    """Drop Optuna's report of a trial that raised (its traceback, then "failed with value
    None"): optimize() raises the error again, and the CLI reports it once (one line for an
    interrupt or a full disk, the traceback for a bug)."""
    if _HARD_STOP.is_set() or record.exc_info:
        return False
    return not _FAILED_WITH_NONE.fullmatch(record.getMessage())


class StopOnSignal:
    """SIGINT and SIGTERM while a study runs: the first lets the trial in flight finish and
    then stops the study, so the storage holds only whole trials and a rerun resumes with the
    exact count; a second one interrupts at once. On leaving, a signal received goes on to
    the handler that was there before (``KeyboardInterrupt`` for SIGINT, the CLI's for
    SIGTERM); with ``deliver=False`` (workers) it is only recorded. Signals that were ignored
    stay ignored; outside the main thread nothing changes."""

    def __init__(
        self,
        stop: Callable[[], None],
        deliver: bool = True,
        on_signal: Callable[[], None] | None = None,
    ) -> None:
        self.stop = stop
        self.deliver = deliver
        self.on_signal = on_signal  # called on the first signal
        self.received: int | None = None
        self._saved: dict[int, Any] = {}
        self._hook: Any = None

    def __enter__(self) -> StopOnSignal:
        _HARD_STOP.clear()
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                prev = signal.getsignal(sig)
                if prev is not signal.SIG_IGN and prev is not None:
                    self._saved[sig] = prev
                    signal.signal(sig, self._handle)
            self._hook, sys.unraisablehook = sys.unraisablehook, self._unraisable
        return self

    def _unraisable(self, args: Any) -> None:
        """An interrupt raised while Python ran a finaliser or a weakref callback is
        swallowed there ("Exception ignored in ..." and a traceback): send it again, so that
        it lands in the search's own code, and print nothing."""
        if args.exc_type is not None and issubclass(args.exc_type, KeyboardInterrupt):
            signal.raise_signal(self.received or signal.SIGINT)
            return
        self._hook(args)

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            sys.unraisablehook, self._hook = self._hook, None
        self._put_back()
        try:
            if self.received is not None and self.deliver:
                self._deliver(self.received)
        finally:
            if _HARD_STOP.is_set():
                logging.disable(logging.NOTSET)

    def _put_back(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if first:
            if self.on_signal is not None:
                self.on_signal()
            try:
                self.stop()
                return
            except RuntimeError:  # Study.stop() outside optimize(): nothing to finish
                pass
        if self.deliver:
            # what the interrupted code logs on its way out (Optuna's failed trial, a
            # database driver's cursor) is noise: the CLI says "interrupted" in one line
            _HARD_STOP.set()
            logging.disable(logging.CRITICAL)
            self._put_back()
            self._deliver(signum)

    def _deliver(self, signum: int) -> None:
        """Act on ``signum`` as the handler this one replaced would: raise or end."""
        handler = self._saved.get(signum, signal.SIG_DFL)
        if callable(handler):
            handler(signum, None)  # raises: KeyboardInterrupt, or the CLI's for SIGTERM
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        signal.signal(signum, signal.SIG_DFL)
        signal.raise_signal(signum)  # the default action: the process ends here
        raise KeyboardInterrupt  # pragma: no cover - the signal was blocked


def quiet_optuna() -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger(OPTIMIZE_LOGGER).addFilter(_not_repeated)


__all__ = ["StopOnSignal", "quiet_optuna"]
