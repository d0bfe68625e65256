"""``hapi train``."""

from __future__ import annotations

from pathlib import Path

import click

from hapi_dse.cli import options
from hapi_dse.training.config import TrainConfig
from hapi_dse.training.device import ACCELERATORS

# Defaults are TrainConfig's (torch-free, so 'hapi train --help' is instant and works on a
# board without torch); backbone and head names are checked against their registries when
# the command runs, and an unknown one lists them.


def _learning_rate(flag: str, default: float, optimiser: str) -> options.Decorator:
    return click.option(
        flag,
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        help=f"{optimiser} learning rate (> 0).",
    )


@click.command("train")
@options.verbosity
@options.dataset(default=TrainConfig.dataset)
@click.option(
    "--backbone",
    default=TrainConfig.backbone,
    show_default=True,
    help="Registered backbone (resnet32...; an unknown name lists them) or package.module:factory.",
)
@click.option(
    "--heads",
    default=",".join(TrainConfig.heads),
    show_default=True,
    help="Comma-separated head types (linear, conv...; an unknown name lists them), each "
    "attached after every block.",
)
@click.option(
    "--epochs",
    type=click.IntRange(min=0),
    default=TrainConfig.epochs,
    show_default=True,
    help="Backbone epochs.",
)
@click.option(
    "--exit-epochs",
    type=click.IntRange(min=1),
    default=TrainConfig.exit_epochs,
    show_default=True,
    help="IC-only epochs (backbone frozen).",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=TrainConfig.batch_size, show_default=True
)
@_learning_rate("--lr", TrainConfig.lr, "Backbone SGD")
@_learning_rate("--exit-lr", TrainConfig.exit_lr, "Head AdamW")
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
    "--image-size",
    default=None,
    metavar="SIZE|WxH",
    help="Image folders: resize every image to SIZE x SIZE or W x H pixels, e.g. 64 or 64x48 "
    "[default: keep the size, which must then be the same for all].",
)
@click.option(
    "--channels",
    type=click.Choice(["1", "3"]),
    default=None,
    help="Image folders: 1 (grey) or 3 (RGB; alpha dropped) [default: 3 if any image has "
    "colour, else 1].",
)
@options.limit("Train on N images (a quick subset).", minimum=1)
@click.option(
    "--accelerator",
    type=click.Choice(ACCELERATORS),
    default=TrainConfig.accelerator,
    show_default=True,
    help="Where to train: auto is cuda when torch sees a GPU, else cpu.",
)
@click.option(
    "--amp/--no-amp",
    default=None,
    help="Mixed precision on CUDA (bfloat16 autocast; float16 with loss scaling on GPUs "
    "without bf16) [default: off: small networks train no faster with it].",
)
@options.threads()
@options.seed
@options.out("Run directory to write (swapped in atomically when done).", kind="dir", required=True)
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
    image_size: str | None,
    channels: str | None,
    limit: int | None,
    accelerator: str,
    amp: bool | None,
    threads: int | None,
    seed: int,
    out: Path,
    overwrite: bool,
) -> None:
    """Train an overprovisioned early-exit network and cache every exit's statistics."""
    from hapi_dse.training import summary_table
    from hapi_dse.training import train as run_training
    from hapi_dse.training.config import Distill

    cfg = TrainConfig(
        out=out,
        dataset=dataset,
        data_dir=data_dir,
        backbone=backbone,
        heads=options.comma_list(heads),
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
        image_size=image_size,
        channels=int(channels) if channels else None,
        accelerator=accelerator,
        amp=amp,
        overwrite=overwrite,
    )
    result = run_training(cfg, progress=options.progress())
    options.report(summary_table(result))
    options.report(
        f"model {result['model_id']} written to {out} ({result['timings']['total_s']:.0f} s)"
    )
