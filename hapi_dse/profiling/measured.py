"""Measured profiles: onnxruntime on this machine (needs onnxruntime and numpy, not torch).

Every table segment, the monolithic backbone graph and a no-op graph are timed together with
the interleaved protocol of :mod:`hapi_dse.profiling.timing`; the deployment probes (real
one-graph exports) take a round of their own after each of those rounds, and give the
sidecar's ``deployment`` terms (:mod:`hapi_dse.profiling.graph_terms`). Energy is measured with a
meter from :mod:`hapi_dse.profiling.energy` when one exists (a separate pass: each segment
runs back to back for a window while the counter is read before and after), otherwise
modelled as ``active_power_w * latency`` from a spec, labelled ``modelled``.
"""

from __future__ import annotations

import logging
import platform
from typing import Any

from hapi_dse.profiling.base import Profiler, ProfileResult, ProgressFn, make_row
from hapi_dse.profiling.energy import EnergyMeter, check_counter_moved
from hapi_dse.profiling.graph_terms import ProbeTimer, fit_terms
from hapi_dse.profiling.manifest import Manifest
from hapi_dse.profiling.specs import DEFAULT_ACTIVE_POWER_W
from hapi_dse.profiling.timing import (
    TimingSettings,
    make_session,
    random_feed,
    run_energy_window,
    time_sessions,
)

log = logging.getLogger(__name__)


class OrtProfiler(Profiler):
    """Times every segment with onnxruntime; see :mod:`hapi_dse.profiling.timing`."""

    source = "measured"

    def __init__(
        self,
        settings: TimingSettings,
        *,
        meter: EnergyMeter | None = None,
        active_power_w: float | None = None,
        power_source: str = "",
        energy_window_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.meter = meter
        self.active_power_w = DEFAULT_ACTIVE_POWER_W if active_power_w is None else active_power_w
        self.power_source = power_source or (
            "spec" if active_power_w is not None else f"default {DEFAULT_ACTIVE_POWER_W} W"
        )
        self.energy_window_s = energy_window_s

    def profile(self, manifest: Manifest, progress: ProgressFn | None = None) -> ProfileResult:
        import numpy as np
        import onnxruntime as ort

        segs = manifest.table_segments()
        extra = [s for s in (manifest.get("backbone"), manifest.get("noop")) if s is not None]
        graphs = [*segs, *extra]
        from hapi_dse import busy

        sessions = [make_session(manifest.path(s), self.settings) for s in graphs]
        probes = ProbeTimer(manifest, manifest.probes, self.settings) if manifest.probes else None
        with busy.watch(self.settings.threads) as load:
            timings = time_sessions(
                sessions,
                self.settings,
                on_progress=progress,
                between_rounds=probes.run_round if probes is not None else None,
            )
        by_kind = {s.kind: t for s, t in zip(graphs, timings, strict=True)}

        energy: list[float]
        if self.meter is not None:
            energy_source = self.meter.name
            rng = np.random.default_rng(self.settings.seed)
            energy = []
            deltas: list[float] = []
            metered_s = 0.0
            for sess in sessions[: len(segs)]:
                feed = random_feed(sess, rng)
                before = self.meter.read_j()
                calls, secs = run_energy_window(sess, feed, self.energy_window_s, 10)
                after = self.meter.read_j()
                deltas.append(max(self.meter.delta_j(before, after), 0.0))
                metered_s += secs
                energy.append(deltas[-1] * 1e3 / calls)
            check_counter_moved(self.meter, deltas, metered_s)
        else:
            energy_source = "modelled"
            energy = [self.active_power_w * t.median_ms for t in timings[: len(segs)]]

        rows = [
            make_row(
                seg,
                batch=manifest.batch,
                latency_ms=t.median_ms,
                latency_p90_ms=t.p90_ms,
                energy_mj=e,
                runs=t.runs,
                source=self.source,
                energy_source=energy_source,
            )
            for seg, t, e in zip(segs, timings[: len(segs)], energy, strict=True)
        ]
        block_sum = sum(
            t.median_ms
            for s, t in zip(segs, timings[: len(segs)], strict=True)
            if s.kind == "block"
        )
        side: dict[str, Any] = {
            "profiler": "onnxruntime",
            "provider": self.settings.provider,
            "threads": self.settings.threads,
            "onnxruntime_version": ort.__version__,
            "timing": {
                **self.settings.to_dict(),
                "protocol": "interleaved rounds, each call timed, median and p90",
            },
            "call_overhead_ms": by_kind["noop"].median_ms if "noop" in by_kind else 0.0,
            "segments_sum_ms": block_sum,
            "machine": {
                "platform": platform.platform(),
                "processor": platform.processor(),
                "machine": platform.machine(),
            },
            "load": load,  # busy: the readings behind the warning
            "energy_source": energy_source,
            "energy": (
                {
                    "meter": self.meter.describe(),
                    "window_s": self.energy_window_s,
                    "note": "gross energy of the metered domain while the segment ran",
                }
                if self.meter is not None
                else {
                    "model": "active_power_w * latency_ms",
                    "active_power_w": self.active_power_w,
                    "power_source": self.power_source,
                }
            ),
        }
        if probes is not None:
            side["deployment"] = fit_terms(
                manifest,
                probes.entries,
                probes.latencies(),
                rows,
                side["call_overhead_ms"],
                monolithic_ms=by_kind["backbone"].median_ms if "backbone" in by_kind else None,
            )
            side["deployment"]["fit"]["probe_rounds"] = probes.rounds
            side["deployment"]["fit"]["probe_timing"] = "a round after each round of the segments"
        if "backbone" in by_kind:
            mono = by_kind["backbone"].median_ms
            side["monolithic_backbone_ms"] = mono
            side["monolithic_backbone_note"] = "every block as one graph, no classifier"
            side["monolithic_backbone_p90_ms"] = by_kind["backbone"].p90_ms
            side["segments_sum_over_monolithic"] = block_sum / mono if mono > 0 else None
            # The same with the call overhead counted once, as one graph pays it: what a cost
            # model that subtracts call_overhead_ms per segment predicts for the backbone.
            n_blocks = sum(1 for s in segs if s.kind == "block")
            net = block_sum - (n_blocks - 1) * side["call_overhead_ms"]
            side["segments_net_sum_over_monolithic"] = net / mono if mono > 0 else None
        if load["busy"]:  # once the table is sure to be written: as hapi eval says it
            log.warning(busy.busy_warning(load))
        return ProfileResult(rows, side)
