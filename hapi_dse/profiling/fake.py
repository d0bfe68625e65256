"""A deterministic fake profiler for tests: latency is an exact function of FLOPs and params."""

from __future__ import annotations

from hapi_dse.profiling.base import Profiler, ProfileResult, ProgressFn, make_row
from hapi_dse.profiling.manifest import Manifest


class FakeProfiler(Profiler):
    """``latency_ms = call_overhead_ms + flops * ms_per_flop + params * ms_per_param``.

    p90 is ``p90_factor`` times the median and energy ``power_w * latency``. No ONNX file is
    opened, so a manifest of made-up segments works.
    """

    source = "measured"

    def __init__(
        self,
        *,
        call_overhead_ms: float = 0.005,
        ms_per_flop: float = 1e-8,
        ms_per_param: float = 1e-7,
        p90_factor: float = 1.1,
        power_w: float = 2.0,
        runs: int = 50,
    ) -> None:
        self.call_overhead_ms = call_overhead_ms
        self.ms_per_flop = ms_per_flop
        self.ms_per_param = ms_per_param
        self.p90_factor = p90_factor
        self.power_w = power_w
        self.runs = runs

    def latency_ms(self, flops: int, params: int) -> float:
        return self.call_overhead_ms + flops * self.ms_per_flop + params * self.ms_per_param

    def profile(self, manifest: Manifest, progress: ProgressFn | None = None) -> ProfileResult:
        rows = []
        segs = manifest.table_segments()
        for i, seg in enumerate(segs):
            lat = self.latency_ms(seg.flops, seg.params)
            rows.append(
                make_row(
                    seg,
                    batch=manifest.batch,
                    latency_ms=lat,
                    latency_p90_ms=lat * self.p90_factor,
                    energy_mj=self.power_w * lat,
                    runs=self.runs,
                    source=self.source,
                    energy_source="modelled",
                )
            )
            if progress:
                progress(i + 1, len(segs))
        blocks = [r["latency_ms"] for r in rows if r["segment"] == "block"]
        return ProfileResult(
            rows,
            {
                "profiler": "fake",
                "provider": "fake",
                "threads": 1,
                "call_overhead_ms": self.call_overhead_ms,
                "monolithic_backbone_ms": sum(blocks) - (len(blocks) - 1) * self.call_overhead_ms,
            },
        )
