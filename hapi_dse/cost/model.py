"""The vectorised cost model: a design's predicted metrics from exit statistics and costs.

How it stays cheap (tens of microseconds per design at 5,000 samples): each exit's "fires"
mask is bit-packed into ``ceil(n / 64)`` words and cached by (policy, column, threshold);
thresholds on a search grid make the same masks recur. For a design with ``m`` exits:

* ``F`` = the ``(m + 1, W)`` fire masks, the last row all ones (the final classifier);
* the samples leaving at exit ``i`` are ``F[i] & ~(F[0] | ... | F[i-1])``, one
  ``bitwise_or.accumulate`` for all exits;
* a popcount gives how many leave at each exit and how many of those are right.

Every sample leaving at exit ``i`` costs the same: the blocks up to that exit's position,
every head evaluated on the way (exits ``0..i``), one call overhead, and what the one-graph
export adds on that path (:mod:`hapi_dse.cost.deployment`: a cost per exit decision and per
stage entered, blocks slowed inside ``If`` branches, and blocks that the previous sample did
not reach read cold, which depends on how many samples reach them). Those ``m + 1`` costs
increase with ``i``, so the mean, percentiles and maximum follow from the counts alone.

Metrics (names shared with ``trials.csv`` / ``pareto.csv`` / ``design.json``):
``accuracy`` (0..1), ``latency_ms`` (mean), ``p90_latency_ms``, ``p99_latency_ms``
(the smallest latency that at least 90 / 99 % of samples do not exceed, numpy's
``inverted_cdf``), ``max_latency_ms``, ``energy_mj`` (mean), ``size_mb`` (float32 weights of
every block, the design's heads and the final classifier, 1 MB = 1e6 bytes), ``goodput``
(correct predictions per second of sequential batch-1 inference: accuracy / mean latency)
and ``exit_fraction`` (share of samples leaving before the final classifier).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from hapi_dse.cost.costs import BYTES_PER_PARAM, SegmentCosts
from hapi_dse.cost.deployment import first_decision, path_extra_ms, path_extra_ms_one
from hapi_dse.cost.design import Design
from hapi_dse.cost.metrics import METRICS, percentile_rank
from hapi_dse.cost.policies import get_policy
from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.exit_stats import ExitStats

_MAX_CACHED_MASKS = 32_768  # rows of ceil(n / 64) words: 20 MB at n = 5,000


def _pack(mask: np.ndarray, words: int) -> np.ndarray:
    """Boolean ``(..., n)`` -> ``(..., words)`` uint64, little-endian bits, zero padding."""
    packed = np.packbits(mask, axis=-1, bitorder="little")
    pad = words * 8 - packed.shape[-1]
    if pad:
        packed = np.concatenate([packed, np.zeros((*packed.shape[:-1], pad), np.uint8)], axis=-1)
    return np.ascontiguousarray(packed).view(np.uint64)


class _Columns:
    """Per-column statistics transposed to ``(k, n)`` rows (float64 for exact compares)."""

    def __init__(self, stats: ExitStats) -> None:
        self.confidence = np.ascontiguousarray(stats.confidence.T, dtype=np.float64)
        self.entropy = np.ascontiguousarray(stats.entropy.T, dtype=np.float64)
        self.prediction = np.ascontiguousarray(stats.prediction.T)


class CostModel:
    """Evaluates designs on one split (``stats``) with one device's ``costs``."""

    def __init__(self, stats: ExitStats, costs: SegmentCosts) -> None:
        if stats.k != len(costs.position) or not (
            np.array_equal(stats.position, costs.position)
            and np.array_equal(stats.head.astype(str), costs.head.astype(str))
        ):
            raise ArtefactError(
                "the profile costs do not describe the exit statistics' columns "
                f"({len(costs.position)} vs {stats.k}); build them with "
                "SegmentCosts.from_table(table, stats)"
            )
        if stats.k == 0 or str(stats.head[-1]) != "final":
            raise ArtefactError("exit statistics must end with the final classifier column")
        self.stats = stats
        self.costs = costs
        self.n = stats.n
        self.words = max((self.n + 63) // 64, 1)
        self._data = _Columns(stats)
        self._correct = _pack(stats.correct.T, self.words)  # (k, W)
        self._all = _pack(np.ones(self.n, bool), self.words)
        self._none = np.zeros(self.words, np.uint64)
        self._final = stats.k - 1
        self._last_block = int(costs.position[self._final])
        self._col = {
            (int(p), str(h)): j
            for j, (p, h) in enumerate(
                zip(stats.position.tolist(), stats.head.tolist(), strict=True)
            )
        }
        # per-column costs as Python scalars: the per-exit arithmetic is on m + 1 numbers,
        # where plain floats beat numpy calls
        self._pos = costs.position.tolist()
        self._head_ms = costs.head_latency_ms.tolist()
        self._head_mj = costs.head_energy_mj.tolist()
        self._head_params = costs.head_params.tolist()
        self._cum_ms = np.cumsum(costs.block_latency_ms).tolist()
        self._cum_mj = np.cumsum(costs.block_energy_mj).tolist()
        # the same with a leading 0: the blocks before position p sum to cum0[p]
        self._cum_ms0 = [0.0, *self._cum_ms]
        self._cum_mb0 = [0.0, *np.cumsum(costs.block_mb).tolist()]
        self._terms = costs.terms
        self._base_params = int(costs.block_params.sum()) + int(costs.head_params[self._final])
        # cached masks, one entry per (policy key, column): [0] the samples for which the
        # exit fires, [1] those of them that the column gets right. Entry 0 is the final
        # classifier (fires for all), entry 1 an exit that never fires.
        self._ids: dict[Hashable, int] = {}
        self._store = np.empty((1024, 2, self.words), np.uint64)
        self._store[0, 0] = self._all
        self._store[0, 1] = self._correct[self._final]
        self._store[1] = 0
        self._rows = 2
        # ranks (1-based) of the order statistics giving p90 / p99 (Metric.statistic)
        self._rank90 = percentile_rank(90, self.n)
        self._rank99 = percentile_rank(99, self.n)

    # -- designs --------------------------------------------------------------------------
    def columns(self, design: Design) -> list[int]:
        try:
            return [self._col[(e.position, e.head)] for e in design.exits]
        except KeyError as e:
            p, h = e.args[0]
            heads = sorted({str(x) for x in self.stats.head.tolist()} - {"final"})
            raise UsageError(
                f"this model has no {h!r} head at position {p}: positions 0.."
                f"{self._last_block}, heads {', '.join(heads)}"
            ) from None

    def _mask_id(self, key: Hashable | None, col: int, policy: Any) -> int:
        if key is None:
            return 1
        i = self._ids.get(key)
        if i is None:
            parts = policy.parts(key)
            if parts:  # AND of cached packed masks
                ids = [self._mask_id(k, c, policy) for k, c in parts]
                packed = np.bitwise_and.reduce(self._store[ids, 0], axis=0)[None]
                i = self._add(packed, col, packed=True)
            else:
                i = self._add(policy.fires(key, self._data)[None], col)
            self._ids[key] = i
        return i

    def _add(self, fires: np.ndarray, col: int, packed: bool = False) -> int:
        """Store ``(r, n)`` boolean (or ``(r, W)`` packed) fire masks of column ``col``;
        return the index of the first."""
        r = len(fires)
        if self._rows + r > len(self._store):
            grown = np.empty((max(2 * len(self._store), self._rows + r), 2, self.words), np.uint64)
            grown[: self._rows] = self._store[: self._rows]
            self._store = grown
        i = self._rows
        bits = fires if packed else _pack(fires, self.words)
        self._store[i : i + r, 0] = bits
        self._store[i : i + r, 1] = bits & self._correct[col]
        self._rows += r
        return i

    def prepare(self, policy: str, thresholds: Sequence[float] = ()) -> None:
        """Compute up front the masks a search will need (the policy's ``grid``: every column
        at every threshold of the search grid), vectorised per column."""
        pol = get_policy(policy)
        cols = list(range(self.stats.k - 1))
        for col, keys in pol.grid(cols, self._pos, [float(t) for t in thresholds]):
            todo = [k for k in keys if k not in self._ids]
            if todo:
                first = self._add(pol.fires_many(todo, self._data), col)
                for offset, k in enumerate(todo):
                    self._ids[k] = first + offset

    def _entries(self, design: Design) -> tuple[list[int], list[int]]:
        """The design's columns and cache entries, each ending with the final classifier."""
        cols = self.columns(design)
        policy = get_policy(design.policy)
        keys = policy.keys(cols, [e.threshold for e in design.exits], design.patience)
        get = self._ids.get
        ids: list[int] = [get(key, -1) if key is not None else 1 for key in keys]
        if -1 in ids:  # a miss
            ids = [self._mask_id(key, c, policy) for key, c in zip(keys, cols, strict=True)]
        ids.append(0)
        cols.append(self._final)
        return cols, ids

    def _make_room(self) -> None:
        """Empty a full cache, between evaluations only (entries 0 and 1 stay)."""
        if self._rows >= _MAX_CACHED_MASKS:
            self._ids.clear()
            self._rows = 2

    def evaluate(self, design: Design) -> dict[str, float]:
        """The predicted metrics of ``design`` on this split (see the module docstring)."""
        self._make_room()
        cols, ids = self._entries(design)
        masks = self._store.take(ids, axis=0)  # (m + 1, 2, W): fires, fires and right
        reached = np.bitwise_or.accumulate(masks[:, 0], axis=0)  # left at an exit <= i
        masks[1:] &= ~reached[:-1, None]  # now: left exactly at exit i (and right)
        counts = np.bitwise_count(masks).sum(axis=2).tolist()
        return self._metrics(counts, cols, design)

    def evaluate_many(self, designs: Sequence[Design]) -> list[dict[str, float]]:
        """:meth:`evaluate` for many designs, the bit operations batched over the designs
        with the same number of exits (sweeps and benchmarks; a search scores one at a time)."""
        self._make_room()
        groups: dict[int, list[tuple[int, list[int], list[int]]]] = {}
        for i, design in enumerate(designs):
            cols, ids = self._entries(design)
            groups.setdefault(len(ids), []).append((i, cols, ids))
        decision = np.array([self._terms.decision(d.policy) for d in designs])
        first = np.array([first_decision(d.policy, d.patience) for d in designs])
        out: list[dict[str, float]] = [{}] * len(designs)
        for items in groups.values():
            masks = self._store[np.array([ids for _, _, ids in items])]  # (D, m + 1, 2, W)
            reached = np.bitwise_or.accumulate(masks[:, :, 0], axis=1)
            masks[:, 1:] &= ~reached[:, :-1, None]
            counts = np.bitwise_count(masks).sum(axis=3)
            columns = np.array([c for _, c, _ in items])
            which = [i for i, _, _ in items]
            batch = self._metrics_batch(counts, columns, decision[which], first[which])
            for (i, _, _), metrics in zip(items, batch, strict=True):
                out[i] = metrics
        return out

    def _metrics_batch(
        self, counts: np.ndarray, cols: np.ndarray, decision: np.ndarray, first: np.ndarray
    ) -> list[dict[str, float]]:
        """:meth:`_metrics` for ``(D, m + 1, 2)`` counts and ``(D, m + 1)`` columns;
        ``decision`` / ``first``: each design's decision cost and first deciding exit."""
        c, n = self.costs, self.n
        left, right = counts[:, :, 0], counts[:, :, 1].sum(axis=1)
        lat, en = self._path_costs(cols, left, decision, first)
        reached = np.cumsum(left, axis=1)
        rows = np.arange(len(cols))
        p90 = lat[rows, np.argmax(reached >= self._rank90, axis=1)]
        p99 = lat[rows, np.argmax(reached >= self._rank99, axis=1)]
        worst = lat[rows, np.argmax(reached >= n, axis=1)]
        mean_ms = (left * lat).sum(axis=1) / n
        acc = right / n
        with np.errstate(divide="ignore"):
            goodput = np.where(mean_ms > 0, acc * 1000.0 / mean_ms, np.inf)
        params = self._base_params + c.head_params[cols[:, :-1]].sum(axis=1)
        table = np.stack(
            [
                acc,
                mean_ms,
                p90,
                p99,
                worst,
                (left * en).sum(axis=1) / n,
                params * BYTES_PER_PARAM / 1e6,
                goodput,
                1.0 - left[:, -1] / n,
            ],
            axis=1,
        )
        return [dict(zip(METRICS, row, strict=True)) for row in table.tolist()]

    def _path_costs(
        self, cols: np.ndarray, left: np.ndarray, decision: np.ndarray, first: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Latency and energy ``(D, m + 1)`` of leaving at each exit of ``D`` designs."""
        c = self.costs
        pos = c.position[cols]
        cum_ms = np.cumsum(c.block_latency_ms)[pos]
        lat = c.call_overhead_ms + cum_ms + np.cumsum(c.head_latency_ms[cols], axis=1)
        en = (
            c.call_overhead_mj
            + np.cumsum(c.block_energy_mj)[pos]
            + np.cumsum(c.head_energy_mj[cols], axis=1)
        )
        if not self._terms.is_zero:
            cum_mb = np.cumsum(c.block_mb)[pos]
            stage_ms = np.diff(cum_ms, axis=1, prepend=0.0)
            stage_mb = np.diff(cum_mb, axis=1, prepend=0.0)
            stage_blocks = np.diff(pos + 1, axis=1, prepend=0)
            extra = path_extra_ms(
                self._terms, decision, first, stage_ms, stage_mb, stage_blocks, left, self.n
            )
            lat = lat + extra
            en = en + extra * c.power_mj_per_ms
        return lat, en

    def _metrics(
        self, counts: list[list[int]], cols: list[int], design: Design
    ) -> dict[str, float]:
        """From ``[left, left and right]`` per exit; ``cols`` ends with the final column.

        The same arithmetic as :meth:`_path_costs` on plain floats (m + 1 numbers)."""
        n = self.n
        head_ms, head_mj, cum_ms, cum_mj = self._head_ms, self._head_mj, self._cum_ms, self._cum_mj
        ovh_ms, ovh_mj = self.costs.call_overhead_ms, self.costs.call_overhead_mj
        terms = self._terms
        extras: list[float] | None = None
        if not terms.is_zero:
            extras = path_extra_ms_one(
                terms,
                terms.decision(design.policy),
                first_decision(design.policy, design.patience),
                [self._pos[c] for c in cols],
                [c[0] for c in counts],
                n,
                self._cum_ms0,
                self._cum_mb0,
            )
        power = self.costs.power_mj_per_ms
        heads_ms = heads_mj = extra = 0.0
        total_ms = total_mj = 0.0
        p90 = p99 = worst = 0.0
        prev = reached = right = 0
        params = self._base_params
        r90, r99 = self._rank90, self._rank99
        for i, (c, (count, good)) in enumerate(zip(cols, counts, strict=True)):
            heads_ms += head_ms[c]
            heads_mj += head_mj[c]
            p = self._pos[c]
            if extras is not None:
                extra = extras[i]
            lat = ovh_ms + cum_ms[p] + heads_ms + extra
            reached += count
            right += good
            if count:
                total_ms += count * lat
                total_mj += count * (ovh_mj + cum_mj[p] + heads_mj + extra * power)
                worst = lat
                if prev < r90 <= reached:
                    p90 = lat
                if prev < r99 <= reached:
                    p99 = lat
            prev = reached
        for c in cols[:-1]:
            params += self._head_params[c]
        mean_ms = total_ms / n
        acc = right / n
        return {
            "accuracy": acc,
            "latency_ms": mean_ms,
            "p90_latency_ms": p90,
            "p99_latency_ms": p99,
            "max_latency_ms": worst,
            "energy_mj": total_mj / n,
            "size_mb": params * BYTES_PER_PARAM / 1e6,
            "goodput": acc * 1000.0 / mean_ms if mean_ms > 0 else float("inf"),
            "exit_fraction": 1.0 - counts[-1][0] / n,
        }

    def exit_costs(self, design: Design, left: Any) -> tuple[np.ndarray, np.ndarray]:
        """Latency (ms) and energy (mJ) of a sample leaving at exit ``0..m-1`` or at the
        final classifier (index ``m``), when ``left[i]`` samples of this split leave at
        exit ``i`` (the cold-weight term depends on how many go deep)."""
        cols = np.array([[*self.columns(design), self._final]])
        lat, en = self._path_costs(
            cols,
            np.asarray(left, np.int64).reshape(1, -1),
            np.array([self._terms.decision(design.policy)]),
            np.array([first_decision(design.policy, design.patience)]),
        )
        return lat[0], en[0]

    def simulate(self, design: Design) -> tuple[np.ndarray, np.ndarray]:
        """Per sample: the exit taken (0..m-1, or m = len(exits) for the final classifier)
        and its latency in ms."""
        cols = self.columns(design)
        policy = get_policy(design.policy)
        keys = policy.keys(cols, [e.threshold for e in design.exits], design.patience)
        fires = np.ones((len(cols) + 1, self.n), bool)
        for i, key in enumerate(keys):
            fires[i] = False if key is None else policy.fires(key, self._data)
        exit_index = np.argmax(fires, axis=0)
        lat, _ = self.exit_costs(design, np.bincount(exit_index, minlength=len(cols) + 1))
        return exit_index, lat[exit_index]


def _as_design(design: Design | Mapping[str, Any]) -> Design:
    return design if isinstance(design, Design) else Design.from_dict(design)


def predict(
    design: Design | Mapping[str, Any], stats: ExitStats, costs: SegmentCosts
) -> dict[str, float]:
    """Predicted metrics of a design (a :class:`Design` or a ``design.json`` dict)."""
    return CostModel(stats, costs).evaluate(_as_design(design))


def simulate(
    design: Design | Mapping[str, Any], stats: ExitStats, costs: SegmentCosts
) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample exit index (``len(exits)`` = final classifier) and latency in ms."""
    return CostModel(stats, costs).simulate(_as_design(design))
