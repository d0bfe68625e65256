"""``hapi train``."""

from __future__ import annotations

from pathlib import Path

import click

from hapi_dse.cli import options


@click.command("train")
@options.dataset
@click.option(
    "--backbone",
    default="resnet32",
    show_default=True,
    help="Registered backbone (resnet20, resnet32, resnet56, mobilenetv2) or "
    "package.module:factory.",
)
@click.option(
    "--heads",
    default="linear,conv,mlp",
    show_default=True,
    help="Comma-separated head types, each attached after every block.",
)
@click.option(
    "--epochs", type=click.IntRange(min=0), default=20, show_default=True, help="Backbone epochs."
)
@click.option(
    "--exit-epochs",
    type=click.IntRange(min=1),
    default=8,
    show_default=True,
    help="IC-only epochs (backbone frozen).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option(
    "--lr",
    type=click.FloatRange(min=0, min_open=True),
    default=0.1,
    show_default=True,
    help="Backbone SGD learning rate (> 0).",
)
@click.option(
    "--exit-lr",
    type=click.FloatRange(min=0, min_open=True),
    default=2e-3,
    show_default=True,
    help="Head AdamW learning rate (> 0).",
)
@click.option(
    "--distill",
    default=None,
    metavar="T:ALPHA",
    help="Distil every head from the final exit, e.g. 3:0.5.",
)
@click.option(
    "--init",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start from this backbone state dict (weights.pt of a run works too).",
)
@click.option("--no-augment", is_flag=True, help="No random crop / flip.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=None,
    help="Train on N images (a quick subset).",
)
@options.threads()
@options.seed
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Run directory to write (swapped in atomically when done).",
)
@options.overwrite("a previous run in --out")
def train(
    dataset: str,
    data_dir: str | None,
    backbone: str,
    heads: str,
    epochs: int,
    exit_epochs: int,
    batch_size: int,
    lr: float,
    exit_lr: float,
    distill: str | None,
    init: Path | None,
    no_augment: bool,
    limit: int | None,
    threads: int | None,
    seed: int,
    out: Path,
    overwrite: bool,
) -> None:
    """Train an overprovisioned early-exit network and cache every exit's statistics."""
    from hapi_dse.training import TrainConfig, summary_table
    from hapi_dse.training import train as run_training
    from hapi_dse.training.losses import Distill

    cfg = TrainConfig(
        out=out,
        dataset=dataset,
        data_dir=data_dir,
        backbone=backbone,
        heads=tuple(h.strip() for h in heads.split(",") if h.strip()),
        epochs=epochs,
        exit_epochs=exit_epochs,
        batch_size=batch_size,
        lr=lr,
        exit_lr=exit_lr,
        distill=Distill.parse(distill) if distill else None,
        init=init,
        augment=not no_augment,
        seed=seed,
        threads=threads,
        limit=limit,
        overwrite=overwrite,
    )
    result = run_training(cfg)
    click.echo(summary_table(result))
    click.echo(
        f"model {result['model_id']} written to {out} ({result['timings']['total_s']:.0f} s)"
    )
