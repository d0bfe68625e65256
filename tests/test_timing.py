"""The interleaved timing protocol (no real timing: fake sessions record what ran when)."""

from __future__ import annotations

import gc

import numpy as np

from hapi_dse.profiling.timing import TimingSettings, time_sessions


class _Input:
    name = "x"
    shape = (1, 2)


class FakeSession:
    def __init__(self, name: str, log: list[str]):
        self.name = name
        self.log = log

    def get_inputs(self):
        return [_Input()]

    def run(self, _outputs, feed):
        assert feed["x"].shape == (1, 2) and feed["x"].dtype == np.float32
        self.log.append(self.name)


def test_between_rounds_runs_after_every_round_with_the_collector_paused():
    log: list[str] = []
    sessions = [FakeSession(n, log) for n in ("a", "b", "c")]
    paused: list[bool] = []

    def probes() -> None:
        paused.append(not gc.isenabled())
        log.append("probes")

    settings = TimingSettings(runs=20, warmup=1, rounds=4)
    res = time_sessions(sessions, settings, between_rounds=probes)
    assert [r.runs for r in res] == [20, 20, 20]
    timed = log[3:]  # after one warm-up call each
    rounds = " ".join(timed).split("probes")
    assert rounds[-1] == "" and len(rounds) == 5  # the hook ended each of the 4 rounds
    for chunk in rounds[:-1]:
        # each round: every session, one re-warm call + 5 timed calls, before the hook
        assert sorted(chunk.split()) == sorted(["a"] * 6 + ["b"] * 6 + ["c"] * 6)
    assert paused == [True] * 4
    assert gc.isenabled()
