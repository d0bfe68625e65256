"""Fit the deployment terms (:mod:`hapi_dse.cost.deployment`) on real one-graph exports.

Needs onnxruntime and numpy only, so a board can do it from ``--onnx-dir``. The probes
(:mod:`hapi_dse.graphs.probes`) are timed in rounds interleaved with the segments' rounds
(:class:`ProbeTimer`): in each round every probe runs a random stream of its feeds, so each
path is timed
both right after itself (warm) and right after shallower paths (its deeper blocks cold).
Each call is grouped by (probe, path taken, path of the previous call); a group's latency
is the smallest over the rounds of its per-round median, the profile's estimator.

A group's latency minus the sum of its segments from the table just measured (net of the
call overhead, which it pays once) is explained by non-negative least squares, relative to
the group's latency, with the features of :data:`FEATURES`: exit decisions evaluated under
each policy the probes use (``max_softmax`` / ``entropy`` / ``patience``, one column each; a
policy without a probe has no decision term: 0), stages entered after the
first, blocks run, milliseconds of blocks inside ``If`` branches, MB of block weights that
the previous call did not use, MB of block weights that it used beyond this path, and
whether the graph has exits (its optional threshold inputs resolved once per call).
The coefficients are the terms; the sidecar keeps them with the fit's residual error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from hapi_dse.cost.deployment import DeploymentTerms, first_decision
from hapi_dse.errors import ArtefactError
from hapi_dse.graphs.probes import PROBED_POLICIES
from hapi_dse.profiling.manifest import Manifest
from hapi_dse.profiling.timing import TimingSettings, make_session

log = logging.getLogger(__name__)

BYTES_PER_PARAM = 4
#: calls per feed in one round's stream (a 5-path probe: 150 calls a round)
CALLS_PER_FEED = 30
#: a group needs this many calls in a round for that round's median to count
MIN_GROUP_CALLS = 3
FEATURES = (
    *(f"decision_{p}" for p in PROBED_POLICIES),
    "stage_entry",
    "blocks",
    "nested_block_ms",
    "cold_block_mb",
    "evicted_block_mb",
    "graph_entry",
)
#: the coefficient of each feature: the DeploymentTerms field it becomes
_TERM = (
    *(f"decision_ms.{p}" for p in PROBED_POLICIES),
    "stage_entry_ms",
    "block_offset_ms",
    "nested_factor",
    "cold_ms_per_mb",
    "evicted_ms_per_mb",
    "graph_entry_ms",
)
_COLUMN = {f: i for i, f in enumerate(FEATURES)}


class _Probe:
    """One probe graph opened for timing: its feeds, and the path each one takes."""

    def __init__(self, manifest: Manifest, entry: Mapping[str, Any], settings: TimingSettings):
        from hapi_dse.cost.design import Design
        from hapi_dse.graphs.probes import probe_image

        self.name = str(entry["name"])
        self.design = Design.from_dict(entry)
        self.session = make_session(manifest.root / str(entry["file"]), settings)
        shape = manifest.segments[0].input_shape
        m = len(self.design.exits)
        self.feeds = []
        for f in entry["feeds"]:
            feed = {"input": probe_image(tuple(shape), int(f["image_seed"]))}
            if f.get("thresholds") is not None:  # optional inputs: omitted, the defaults
                feed["thresholds"] = np.asarray(f["thresholds"], np.float32)
                feed["temperatures"] = np.ones(m, np.float32)
            self.feeds.append(feed)
        self.paths = [int(self.session.run(None, f)[1][0]) for f in self.feeds]


class ProbeTimer:
    """The manifest's probes, timed one round at a time (:meth:`run_round`).

    The profile runs a round after each round of its segments
    (:func:`~hapi_dse.profiling.timing.time_sessions`' ``between_rounds``), so the probes'
    rounds are spread over the whole timing window, as the segments' are. Timed on their
    own after the segments, in a window of a few seconds, they could land as a whole in a
    slow spell of a shared VM whose speed swings by 25-30 % for seconds at a time: a term
    fitted on slow probes against quick segments goes into every prediction.

    In each round every probe, in a random order, runs a random stream of its feeds
    (:data:`CALLS_PER_FEED` calls per feed), each call timed; the calls are grouped by
    (probe, path taken, path of the previous call), and :meth:`latencies` gives each group
    the smallest over the rounds of its per-round median.
    """

    def __init__(
        self, manifest: Manifest, entries: Sequence[Mapping[str, Any]], settings: TimingSettings
    ) -> None:
        self.entries = list(entries)
        self._probes = [_Probe(manifest, e, settings) for e in self.entries]
        self._rng = np.random.default_rng(settings.seed)
        self._per_round: dict[tuple[str, int, int], list[float]] = {}
        self.rounds = 0
        for p in self._probes:
            for _ in range(max(settings.warmup // 2, 2)):
                for f in p.feeds:
                    p.session.run(None, f)

    def run_round(self) -> None:
        """One round of every probe (the caller pauses the garbage collector)."""
        clock = time.perf_counter_ns
        for j in self._rng.permutation(len(self._probes)):
            p = self._probes[j]
            order = self._rng.integers(len(p.feeds), size=CALLS_PER_FEED * len(p.feeds) + 1)
            ns = np.empty(len(order), np.int64)
            run = p.session.run
            for c, i in enumerate(order):
                feed = p.feeds[i]
                t0 = clock()
                run(None, feed)
                ns[c] = clock() - t0
            groups: dict[tuple[str, int, int], list[int]] = {}
            for c in range(1, len(order)):  # the first call has no known predecessor
                key = (p.name, p.paths[order[c]], p.paths[order[c - 1]])
                groups.setdefault(key, []).append(int(ns[c]))
            for key, vals in groups.items():
                if len(vals) >= MIN_GROUP_CALLS:
                    self._per_round.setdefault(key, []).append(float(np.median(vals)) / 1e6)
        self.rounds += 1

    def latencies(self) -> dict[tuple[str, int, int], float]:
        """Latency (ms) per (probe, path, previous path): min over rounds of the medians."""
        return {key: min(v) for key, v in self._per_round.items()}


def _segment_costs(
    rows: Sequence[Mapping[str, Any]], call_overhead_ms: float
) -> tuple[np.ndarray, np.ndarray, dict[tuple[int, str], float]]:
    """Net block latency (ms), block weights (MB) and net head latency by (position, head)."""
    blocks = sorted((int(r["position"]), r) for r in rows if r["segment"] == "block")
    block_ms = np.array([max(float(r["latency_ms"]) - call_overhead_ms, 0.0) for _, r in blocks])
    block_mb = np.array([int(r["params"]) * BYTES_PER_PARAM / 1e6 for _, r in blocks])
    heads = {
        (int(r["position"]), "final" if r["segment"] == "final" else str(r["head"])): max(
            float(r["latency_ms"]) - call_overhead_ms, 0.0
        )
        for r in rows
        if r["segment"] in ("head", "final")
    }
    return block_ms, block_mb, heads


def path_features(
    design: Any, path: int, prev_path: int, block_ms: np.ndarray, block_mb: np.ndarray
) -> np.ndarray:
    """The :data:`FEATURES` of one call: ``design`` leaving at ``path`` after a call that
    left at ``prev_path`` (``len(exits)`` = the final classifier)."""
    m = len(design.exits)
    last_block = len(block_ms) - 1
    ends = [e.position for e in design.exits] + [last_block]
    first = first_decision(design.policy, design.patience)
    out = np.zeros(len(FEATURES))
    at = _COLUMN
    decisions = sum(1 for i in range(min(path + 1, m)) if i >= first)
    out[at[f"decision_{design.policy}"]] = decisions
    out[at["stage_entry"]] = path
    out[at["blocks"]] = ends[path] + 1
    lo = 0
    for s in range(path + 1):
        if s > first:
            out[at["nested_block_ms"]] += float(block_ms[lo : ends[s] + 1].sum())
        lo = ends[s] + 1
    here, before = ends[path], ends[prev_path]
    out[at["cold_block_mb"]] = float(block_mb[before + 1 : here + 1].sum())
    out[at["evicted_block_mb"]] = float(block_mb[here + 1 : before + 1].sum())
    out[at["graph_entry"]] = 1.0 if m else 0.0
    return out


def segments_ms(
    design: Any,
    path: int,
    block_ms: np.ndarray,
    heads: Mapping[tuple[int, str], float],
    call_overhead_ms: float,
) -> float:
    """What the table alone predicts for ``design`` leaving at ``path``."""
    m = len(design.exits)
    last_block = len(block_ms) - 1
    end = design.exits[path].position if path < m else last_block
    head_ms = sum(heads[(e.position, e.head)] for e in design.exits[: path + 1])
    if path == m:
        head_ms += next(v for (p, h), v in heads.items() if h == "final")
    return call_overhead_ms + float(block_ms[: end + 1].sum()) + head_ms


def fit_terms(
    manifest: Manifest,
    entries: Sequence[Mapping[str, Any]],
    measured: Mapping[tuple[str, int, int], float],
    rows: Sequence[Mapping[str, Any]],
    call_overhead_ms: float,
    monolithic_ms: float | None = None,
) -> dict[str, Any]:
    """Bounded least squares of (measured - segments) on the features, relative to the
    measured latency; the sidecar's ``deployment`` section. Every term is >= 0 but the
    per-block offset.

    The per-block offset is not fitted with the rest when a probe has no exit
    (``probe_backbone``: every block plus the final classifier, as one graph): it is read
    from that probe, whose calls are timed like the other probes and like ``hapi eval``, in
    streams of calls of one graph: its measured latency minus the table's segments, per block.
    Fitted together with the exit decisions it trades off against them (deeper probe paths
    have more of both). ``monolithic_ms`` (the backbone graph timed in the segments' short
    interleaved bursts, where its weights, bigger than a core's L2, are evicted by the other
    segments between bursts, so that it reads colder than a deployed model, by as much as
    other tenants leave of the shared cache) is only the fallback for a manifest without
    that probe. Without either, the offset is fitted (it may take back up to half of the
    cheapest block)."""
    from scipy.optimize import lsq_linear

    from hapi_dse.cost.design import Design

    block_ms, block_mb, heads = _segment_costs(rows, call_overhead_ms)
    designs = {str(e["name"]): Design.from_dict(e) for e in entries}
    keys = sorted(measured)
    if not keys:
        raise ArtefactError(f"{manifest.root}: the deployment probes gave no timings")
    x = np.array([path_features(designs[k[0]], k[1], k[2], block_ms, block_mb) for k in keys])
    base = np.array(
        [segments_ms(designs[k[0]], k[1], block_ms, heads, call_overhead_ms) for k in keys]
    )
    y = np.array([measured[k] for k in keys])
    blocks = FEATURES.index("blocks")
    fixed = np.zeros(len(FEATURES), bool)
    coef = np.zeros(len(FEATURES))
    plain = [i for i, k in enumerate(keys) if not designs[k[0]].exits]
    offset_from = "probes"
    if plain and len(block_ms):
        fixed[blocks] = True
        coef[blocks] = float(np.mean([(y[i] - base[i]) / x[i, blocks] for i in plain]))
        offset_from = "probe_backbone"
    elif monolithic_ms is not None and len(block_ms):
        fixed[blocks] = True
        coef[blocks] = (monolithic_ms - call_overhead_ms - float(block_ms.sum())) / len(block_ms)
        offset_from = "monolithic backbone"
    # a feature no probe varies keeps 0; scale columns to comparable magnitudes
    free = ~fixed
    xf = x[:, free]
    peak = np.abs(xf).max(axis=0)
    scale = np.where(peak > 0, peak, 1.0)
    lower = np.zeros(len(FEATURES))
    if not fixed[blocks]:
        lower[blocks] = -0.5 * float(block_ms.min()) if len(block_ms) else 0.0
    upper = np.where(peak > 0, np.inf, 1e-12)
    target = y - base - x @ coef
    fit = lsq_linear(
        (xf / scale) / y[:, None],
        target / y,
        bounds=(lower[free] * scale, upper),
        method="bvls",
    )
    coef[free] = np.maximum(fit.x / scale, lower[free])  # bvls may undershoot 0 by ~1e-20
    pred = base + x @ coef
    c = dict(zip(_TERM, coef.tolist(), strict=True))
    terms = DeploymentTerms(
        decision_ms={p: c[f"decision_ms.{p}"] for p in PROBED_POLICIES},
        stage_entry_ms=c["stage_entry_ms"],
        block_offset_ms=c["block_offset_ms"],
        nested_factor=c["nested_factor"],
        cold_ms_per_mb=c["cold_ms_per_mb"],
        evicted_ms_per_mb=c["evicted_ms_per_mb"],
        graph_entry_ms=c["graph_entry_ms"],
        source="measured",
    )
    rel_before = np.abs(base / y - 1)
    rel_after = np.abs(pred / y - 1)
    return {
        **terms.to_dict(),
        "fit": {
            "method": "bounded least squares, relative to the measured latency",
            "groups": len(keys),
            "probes": [str(e["name"]) for e in entries],
            "block_offset_from": offset_from,
            "segments_only_median_abs_rel_err": float(np.median(rel_before)),
            "with_terms_median_abs_rel_err": float(np.median(rel_after)),
            "with_terms_max_abs_rel_err": float(np.max(rel_after)),
        },
        "note": "what one-graph exports add to the sum of segments; see hapi_dse.cost.deployment",
    }
