"""``hapi estimate``: modelled latency and energy of any ONNX graph on a device."""

from __future__ import annotations

import click

from hapi_dse.cli import options


@click.command("estimate")
@options.verbosity
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--device", required=True, help="Device whose spec models the graphs.")
@options.spec()
@options.threads(help="Threads to model (default: the spec's, the thread count users deploy with).")
@click.option("--breakdown", is_flag=True, help="Share of the latency per operator class.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document on stdout.")
@options.profiles
@options.seed
def estimate(
    files: tuple[str, ...],
    device: str,
    spec: str | None,
    threads: int | None,
    breakdown: bool,
    as_json: bool,
    profiles: str | None,
    seed: int,
) -> None:
    """Model the latency (mean, ms) and energy (mJ) of ONNX graphs on a device from its spec.

    Every figure is modelled: the spec's calibration (hapi calibrate) says how far to trust it.
    """
    from hapi_dse.profiling.estimate import estimate_files, estimates_json, format_estimates
    from hapi_dse.profiling.specs import load_spec

    dev = load_spec(device, spec, profiles)
    n = threads or dev.threads
    rows = estimate_files(list(files), dev, n)
    if as_json:
        click.echo(estimates_json(rows, dev, n, seed))
    else:
        options.report(format_estimates(rows, dev, n, breakdown=breakdown))
