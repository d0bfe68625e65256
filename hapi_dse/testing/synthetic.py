"""Synthetic exit statistics and costs: fast, exact fixtures for tests and benchmarks.

Deeper exits and bigger heads are more accurate; confidence is higher on right answers, so
the statistics have the same shape of trade-off as a trained network's, without torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hapi_dse.cost.costs import SegmentCosts
from hapi_dse.run import ExitStats

HEAD_SKILL = {"linear": 0.0, "conv": 0.6, "mlp": 0.3}


def synthetic_stats(
    n: int = 1000,
    num_blocks: int = 8,
    heads: Sequence[str] = ("linear", "conv"),
    classes: int = 10,
    seed: int = 0,
) -> ExitStats:
    """Columns = every head after every block, then the final classifier."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    difficulty = rng.normal(0.0, 1.0, n)
    cols = [(p, h) for p in range(num_blocks) for h in heads] + [(num_blocks - 1, "final")]
    k = len(cols)
    conf = np.empty((n, k), np.float32)
    ent = np.empty((n, k), np.float32)
    pred = np.empty((n, k), np.int16)
    for j, (p, h) in enumerate(cols):
        skill = 3.0 * (p + 1) / num_blocks + HEAD_SKILL.get(h, 1.0) - 0.5
        margin = skill - difficulty + rng.normal(0.0, 0.7, n)
        right = margin > 0
        wrong = (labels + rng.integers(1, classes, n)) % classes
        pred[:, j] = np.where(right, labels, wrong)
        c = 1.0 / (1.0 + np.exp(-(margin + rng.normal(0.0, 0.8, n))))
        conf[:, j] = 1.0 / classes + (1.0 - 1.0 / classes) * c
        ent[:, j] = np.clip(1.0 - c + rng.normal(0.0, 0.05, n), 0.0, 1.0)
    return ExitStats(
        labels=labels.astype(np.int16),
        confidence=conf,
        entropy=ent,
        prediction=pred,
        position=np.array([p for p, _ in cols], np.int32),
        head=np.array([h for _, h in cols], dtype="U16"),
    )


def synthetic_costs(stats: ExitStats, seed: int = 0, overhead_ms: float = 0.05) -> SegmentCosts:
    """Blocks of 1..3 ms, heads 3..30 % of a block (conv dearest), energy = 2 W x time."""
    rng = np.random.default_rng(seed + 1)
    num_blocks = int(stats.position.max()) + 1
    block_ms = rng.uniform(1.0, 3.0, num_blocks)
    share = {"linear": 0.03, "mlp": 0.08, "conv": 0.3, "final": 0.03}
    head_ms = np.array(
        [
            block_ms[p] * share.get(h, 0.1) * rng.uniform(0.8, 1.2)
            for p, h in zip(stats.position.tolist(), stats.head.tolist(), strict=True)
        ]
    )
    params = {"linear": 650, "mlp": 9000, "conv": 30000, "final": 650}
    return SegmentCosts.from_arrays(
        position=stats.position,
        head=stats.head,
        block_latency_ms=block_ms,
        head_latency_ms=head_ms,
        block_energy_mj=2.0 * block_ms,
        head_energy_mj=2.0 * head_ms,
        block_params=rng.integers(4000, 80000, num_blocks),
        head_params=[params.get(h, 1000) for h in stats.head.tolist()],
        call_overhead_ms=overhead_ms,
        call_overhead_mj=2.0 * overhead_ms,
        device="synthetic",
        model_id="synthetic",
        source="modelled",
    )


def write_synthetic_run(
    out: str | Path,
    *,
    n_val: int = 1000,
    n_test: int = 2000,
    num_blocks: int = 8,
    heads: Sequence[str] = ("linear", "conv"),
    seed: int = 0,
    model_id: str | None = None,
) -> Path:
    """A run directory (``model.json`` and both ``.npz``) holding synthetic statistics.

    Val and test come from the same generator with different seeds, as real splits would.
    """
    import json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    val = synthetic_stats(n_val, num_blocks, heads, seed=seed)
    test = synthetic_stats(n_test, num_blocks, heads, seed=seed + 7919)
    val.save(out / "exits_val.npz")
    test.save(out / "exits_test.npz")
    model_id = model_id or f"synthetic{num_blocks}-{seed}"
    model = {
        "schema_version": 1,
        "model_id": model_id,
        "arch": {"backbone": "synthetic", "heads": list(heads), "num_classes": 10},
        "exits": [{"position": p} for p in range(num_blocks)],
        "columns": [
            {"position": int(p), "head": str(h)}
            for p, h in zip(val.position.tolist(), val.head.tolist(), strict=True)
        ],
    }
    (out / "model.json").write_text(json.dumps(model, indent=2))
    return out


def write_synthetic_table(
    run: str | Path,
    device: str,
    profiles: str | Path,
    *,
    scale: float = 1.0,
    seed: int = 0,
    model_id: str | None = None,
) -> Path:
    """A profile table (DESIGN 2.2) for a synthetic run: ``synthetic_costs`` x ``scale``."""
    from hapi_dse.profiling.table import write_table
    from hapi_dse.run import RunDir

    rd = RunDir(run)
    stats = rd.stats("val")
    c = synthetic_costs(stats, seed=seed)
    ovh = c.call_overhead_ms
    rows = []

    def row(segment: str, position: int, head: str, ms: float, params: int) -> None:
        lat = scale * ms + ovh
        rows.append(
            {
                "segment": segment,
                "position": position,
                "head": head,
                "batch": 1,
                "latency_ms": lat,
                "latency_p90_ms": 1.1 * lat,
                "energy_mj": 2.0 * lat,
                "flops": int(1e6 * ms),
                "params": int(params),
                "runs": 50,
                "source": "modelled",
            }
        )

    for b in range(c.num_blocks):
        row("block", b, "", float(c.block_latency_ms[b]), int(c.block_params[b]))
    for p, h, ms, n in zip(
        c.position.tolist(),
        c.head.tolist(),
        c.head_latency_ms.tolist(),
        c.head_params.tolist(),
        strict=True,
    ):
        row("final" if h == "final" else "head", p, h, ms, n)
    return write_table(
        rows,
        {"call_overhead_ms": ovh},
        device=device,
        model_id=model_id or rd.model_id,
        profiles=profiles,
    )


@dataclass(frozen=True)
class SyntheticSetup:
    """A synthetic run and the profile tables ``hapi search`` reads for it (see
    :func:`write_synthetic_setup`): paths, and what tests compute from them."""

    root: Path
    run: Path
    profiles: Path
    tables: dict[str, Path] = field(default_factory=dict)  # device -> its table's .csv

    def search_args(
        self,
        out: str | Path,
        *extra: object,
        device: str | None = "devA",
        trials: int | str | None = None,
        seed: int | str | None = None,
    ) -> list[str]:
        """``hapi search`` arguments on this run and tables (:func:`~hapi_dse.testing.cli.
        search_args`)."""
        from hapi_dse.testing.cli import search_args

        return search_args(
            self.run, self.profiles, out, *extra, device=device, trials=trials, seed=seed
        )

    def stats(self, split: str = "val") -> ExitStats:
        """The run's exit statistics of ``split``."""
        from hapi_dse.run import RunDir

        return RunDir(self.run).stats(split)

    def costs(self, device: str = "devA", stats: ExitStats | None = None) -> SegmentCosts:
        """The segment costs of ``device``'s table, bound to ``stats`` (default: val)."""
        from hapi_dse.profiling.table import load_table
        from hapi_dse.run import RunDir

        stats = self.stats() if stats is None else stats
        return SegmentCosts.from_table(
            load_table(device, RunDir(self.run).model_id, self.profiles), stats
        )

    def backbone(self, device: str = "devA") -> dict[str, float]:
        """The plain backbone's predicted val metrics on ``device`` (what the search prints)."""
        from hapi_dse.cost.design import Design
        from hapi_dse.cost.model import CostModel

        val = self.stats()
        return CostModel(val, self.costs(device, val)).evaluate(Design(()))


def write_synthetic_setup(
    root: str | Path,
    *,
    n_val: int = 200,
    n_test: int = 200,
    num_blocks: int = 4,
    devices: Mapping[str, float] | Sequence[str] = ("devA",),
    foreign: Sequence[str] = (),
    seed: int = 0,
) -> SyntheticSetup:
    """A synthetic run at ``root/run`` (:func:`write_synthetic_run`) with a profile table
    under ``root/profiles`` for each of ``devices`` (a mapping gives each its ``scale``: 3.0,
    a device three times slower). Each of ``foreign`` holds only a table of another model
    (``other-model``, a synthetic run at ``root/other``), for tests of that refusal."""
    root = Path(root)
    run = write_synthetic_run(
        root / "run", n_val=n_val, n_test=n_test, num_blocks=num_blocks, seed=seed
    )
    profiles = root / "profiles"
    scales = devices if isinstance(devices, Mapping) else dict.fromkeys(devices, 1.0)
    tables = {d: write_synthetic_table(run, d, profiles, scale=s) for d, s in scales.items()}
    if foreign:
        other = write_synthetic_run(
            root / "other", n_val=50, n_test=50, num_blocks=num_blocks, seed=seed + 1,
            model_id="other-model",
        )  # fmt: skip
        for d in foreign:
            tables[d] = write_synthetic_table(other, d, profiles)
    return SyntheticSetup(root=root, run=run, profiles=profiles, tables=tables)
