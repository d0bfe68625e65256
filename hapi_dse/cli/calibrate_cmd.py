"""``hapi calibrate``: fit a device's spec from timings of reference graphs on the device.

Three steps, each its own flag: ``--export-kit DIR`` here (reference graphs, onnx only),
``--measure DIR`` on the device (base install: onnxruntime times them into
``DIR/measured.csv``; on a phone any benchmark tool's timings fill the same CSV), and
``--fit CSV --device NAME`` back here (writes ``PROFILES/specs/NAME.toml``).
"""

from __future__ import annotations

import click

from hapi_dse.cli import options


@click.command("calibrate")
@options.verbosity
@click.option(
    "--export-kit",
    "kit_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Write the reference ONNX graphs to time on the device into DIR.",
)
@click.option(
    "--measure",
    "measure_dir",
    type=click.Path(file_okay=False, exists=True),
    default=None,
    help="Time every .onnx in DIR with onnxruntime here; writes DIR/measured.csv.",
)
@click.option(
    "--fit",
    "csv_path",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Fit --device's spec to the timings of this CSV (model,latency_ms[,threads]).",
)
@click.option("--device", default=None, help="Device whose spec --fit starts from and writes.")
@options.spec("Spec to start the fit from instead of the one found for --device.")
@options.threads(
    help="--measure: intra-op threads (default 1); --fit: the threads of CSV rows that do "
    "not say (default: the spec's)."
)
@click.option(
    "--runs", type=click.IntRange(min=10), default=100, show_default=True, help="Timed runs."
)
@options.warmup(10, minimum=1, help="Untimed runs per graph first.")
@options.profiles
@options.seed
def calibrate(
    kit_dir: str | None,
    measure_dir: str | None,
    csv_path: str | None,
    device: str | None,
    spec: str | None,
    threads: int | None,
    runs: int,
    warmup: int,
    profiles: str | None,
    seed: int,
) -> None:
    """Calibrate a device's spec: --export-kit here, --measure on the device, --fit here."""
    from hapi_dse.errors import UsageError

    chosen = [f for f, v in (("--export-kit", kit_dir), ("--measure", measure_dir),
                             ("--fit", csv_path)) if v]  # fmt: skip
    if len(chosen) != 1:
        raise UsageError("give exactly one of --export-kit DIR, --measure DIR, --fit CSV")
    if kit_dir:
        from hapi_dse.profiling.calibrate import export_kit

        paths = export_kit(kit_dir, seed=seed)
        options.report(
            f"wrote {len(paths)} reference graphs to {kit_dir}; time them on the device with "
            f"'hapi calibrate --measure {kit_dir} --threads N', then bring "
            f"{kit_dir}/measured.csv back and run 'hapi calibrate --fit {kit_dir}/measured.csv "
            "--device NAME'"
        )
    elif measure_dir:
        from hapi_dse.profiling.calibrate import measure_dir as measure
        from hapi_dse.profiling.timing import TimingSettings

        settings = TimingSettings(
            threads=threads or 1, runs=runs, warmup=warmup, rounds=max(1, runs // 5), seed=seed
        )
        dest = measure(measure_dir, settings)
        options.report(f"timed the graphs of {measure_dir} at {settings.threads} thread(s): {dest}")
    elif csv_path:
        from hapi_dse.profiling.calibrate import fit_measured, write_calibrated
        from hapi_dse.profiling.specs import load_spec

        if not device:
            raise UsageError("--fit needs --device NAME (the spec it starts from and writes)")
        start = load_spec(device, spec, profiles)
        fitted, fit = fit_measured(csv_path, start, threads=threads)
        dest = write_calibrated(fitted, device, profiles)
        options.report(
            f"fitted {device}'s spec on {len(fit.residuals)} timings: mean abs error "
            f"{fit.mape * 100:.1f} %, worst {fit.max_abs_rel_error * 100:.1f} %; wrote {dest}"
        )
