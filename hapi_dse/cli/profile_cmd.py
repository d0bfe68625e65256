"""``hapi profile`` and ``hapi devices``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from hapi_dse.cli import options
from hapi_dse.onnx_tools import EXPORTERS
from hapi_dse.profiling.modes import ProfileConfig

if TYPE_CHECKING:
    from hapi_dse.run import CodeTrust


@click.command("profile")
@options.verbosity
@options.model()
@options.device(
    "Device name: the table goes to PROFILES/DEVICE/MODEL_ID.csv. With "
    "--modelled, the spec profiles/specs/DEVICE.toml is used."
)
@click.option(
    "--modelled",
    is_flag=True,
    help="Model the device from its spec instead of timing this machine.",
)
@options.spec()
@click.option(
    "--calibrate",
    is_flag=True,
    help="Fit a spec for this machine (specs/DEVICE.toml) from a micro-benchmark and "
    "compare it with this machine's measured table if there is one.",
)
@click.option(
    "--onnx-dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Profile segments exported elsewhere (needs onnxruntime and numpy only).",
)
@click.option(
    "--export-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Keep the exported segments here (copy this to a board).",
)
@click.option("--export-only", is_flag=True, help="Export the segments and stop.")
@click.option(
    "--provider",
    default=ProfileConfig.provider,
    show_default=True,
    help="onnxruntime execution provider.",
)
@options.threads(default=ProfileConfig.threads)
@click.option(
    "--runs",
    type=click.IntRange(min=50),
    default=ProfileConfig.runs,
    show_default=True,
    help="Timed runs per segment (at least 50).",
)
@options.warmup(ProfileConfig.warmup, minimum=1, help="Untimed runs per segment first.")
@click.option(
    "--batch",
    type=click.IntRange(min=1),
    default=ProfileConfig.batch,
    show_default=True,
    help="Batch size.",
)
@click.option(
    "--energy-cmd",
    default=None,
    metavar="CMD",
    help="Command that prints a cumulative energy counter in joules.",
)
@click.option(
    "--exporter",
    type=click.Choice(EXPORTERS),
    default=ProfileConfig.exporter,
    show_default=True,
    help="torch.onnx exporter.",
)
@click.option(
    "--force",
    is_flag=True,
    help="Let a modelled table replace a measured one, or this model's table replace a file "
    "under its name whose sidecar names another model, or the segments replace hapi's own "
    "earlier segment export in --export-dir (anything else there is never replaced).",
)
@options.profiles
@options.seed
@options.run_code
def profile(
    model: str | None,
    device: str,
    modelled: bool,
    spec: str | None,
    calibrate: bool,
    onnx_dir: str | None,
    export_dir: str | None,
    export_only: bool,
    provider: str,
    threads: int,
    runs: int,
    warmup: int,
    batch: int,
    energy_cmd: str | None,
    exporter: str,
    force: bool,
    profiles: str | None,
    seed: int,
    code: CodeTrust,
) -> None:
    """Build a latency/energy lookup table of every segment of a model on one device.

    Measured here with onnxruntime by default; --modelled estimates a device from its spec.
    """
    from hapi_dse.profiling.modes import ProfileMode
    from hapi_dse.profiling.runner import run_profile

    cfg = ProfileConfig(
        device=device,
        mode=ProfileMode.from_flags(
            modelled=modelled, export_only=export_only, calibrate=calibrate
        ),
        model=model,
        profiles=profiles,
        onnx_dir=onnx_dir,
        export_dir=export_dir,
        spec=spec,
        provider=provider,
        threads=threads,
        runs=runs,
        warmup=warmup,
        batch=batch,
        energy_cmd=energy_cmd,
        exporter=exporter,
        seed=seed,
        force=force,
    )
    out = run_profile(cfg, progress=options.progress(), code=code)
    options.report(out.summary())


@click.command("devices")
@options.verbosity
@click.option(
    "--check",
    is_flag=True,
    help="Load and validate every table and spec listed (exit 2 on the first bad one).",
)
@options.profiles
@options.seed
def devices(check: bool, profiles: str | None, seed: int) -> None:
    """Every known device: its tables (measured or modelled, for which models, when), its spec."""
    from hapi_dse.profiling.devices import check_devices, device_rows, format_devices

    counts = check_devices(profiles) if check else None
    rows = device_rows(profiles)
    click.echo(format_devices(rows))
    if counts and rows:
        click.echo(f"{counts[0]} table(s) and {counts[1]} spec(s) valid")
