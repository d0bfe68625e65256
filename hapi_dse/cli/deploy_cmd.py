"""``hapi export`` and ``hapi eval``: thin shells over :mod:`hapi_dse.deploy`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from hapi_dse.cli import options
from hapi_dse.deploy.evaluate import EvalConfig
from hapi_dse.deploy.export import FORMATS, ExportConfig

if TYPE_CHECKING:
    from hapi_dse.run import CodeTrust


@click.command("export")
@options.verbosity
@click.argument("source", metavar="RESULT_DIR|DESIGN_JSON", type=click.Path(path_type=Path))
@options.model()
@options.out("The .onnx file to write (a directory for --format staged).", required=True)
@options.overwrite("a previous staged export in --out, or a --out file hapi did not write")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default=ExportConfig.fmt,
    show_default=True,
    help="onnx: one standard-ONNX graph, any runtime; staged: one graph per stage, "
    "a manifest and a numpy+onnxruntime runtime.",
)
@click.option(
    "--opset", type=int, default=ExportConfig.opset, show_default=True, help="ONNX opset."
)
@click.option(
    "--layout-anchor/--no-layout-anchor",
    default=ExportConfig.layout_anchor,
    show_default=True,
    help="Start each exit branch with an identity 1x1 Conv so onnxruntime keeps "
    "its NCHWc layout there.",
)
@click.option(
    "--check-samples",
    type=int,
    default=ExportConfig.check_samples,
    show_default=True,
    help="Validation samples scanned for one real sample per exit path.",
)
@options.data_dir
@click.option(
    "--trial",
    type=click.IntRange(min=0),
    default=None,
    help="Export this trial of RESULT_DIR (its row of trials.csv) instead of the chosen design.",
)
@options.seed
@options.run_code
def export(
    source: Path,
    model: str | None,
    out: Path,
    overwrite: bool,
    fmt: str,
    opset: int,
    layout_anchor: bool,
    check_samples: int,
    data_dir: str | None,
    trial: int | None,
    seed: int,
    code: CodeTrust,
) -> None:
    """Export a searched design to ONNX with the early-exit decisions inside.

    RESULT_DIR is a 'hapi search' output (its DEVICE/design.json) or a design.json itself;
    with --trial N, the design of trial N of RESULT_DIR/DEVICE/trials.csv, exactly as
    searched.
    The export is checked (onnx.checker, and onnxruntime vs PyTorch on real samples taking
    every exit path); the sidecar OUT.export.json (export.json in a staged directory)
    records the check, the opset, the design's sha256 and what the file needs to run.
    """
    from hapi_dse import api
    from hapi_dse.deploy import format_export

    exported = api.export(
        source,
        out,
        run=model,
        fmt=fmt,
        trial=trial,
        opset=opset,
        layout_anchor=layout_anchor,
        check_samples=check_samples,
        data_dir=data_dir,
        seed=seed,
        overwrite=overwrite,
        trust_code=code.trust,
        backbone=code.backbone,
    )
    options.report(format_export(exported.info, out, fmt))


@click.command("eval")
@options.verbosity
@click.argument("model_path", metavar="MODEL.onnx|STAGED_DIR", type=click.Path(path_type=Path))
@options.model(
    "Run directory from 'hapi train' [default: the run recorded in the export, else the "
    "bundled example]."
)
@options.dataset(default=None, help="Dataset [default: the one the model was trained on].")
@click.option(
    "--split", type=click.Choice(["test", "val"]), default=EvalConfig.split, show_default=True
)
@options.device(
    "Profile table for the prediction ('hapi profile --device host' measures this machine)."
)
@options.profiles
@options.threads(EvalConfig.threads)
@options.limit("Evaluate the first N samples only.")
@options.warmup(EvalConfig.warmup, minimum=0, help="Untimed calls before timing.")
@click.option(
    "--passes",
    type=click.IntRange(min=1),
    default=EvalConfig.passes,
    show_default=True,
    help="Timed passes over the samples, in rounds of 500; each exit path's latency is the "
    "median of its quietest round, as in 'hapi profile'.",
)
@click.option(
    "--check-slo",
    is_flag=True,
    help="Exit with status 1 when a measured figure breaks an SLO the design was searched under.",
)
@options.out(
    "JSON report [default: MODEL.eval.json, or DIR/eval.json].", kind="file", dest="json_out"
)
@options.overwrite("a --out file that hapi did not write")
@options.seed
def eval_(
    model_path: Path,
    model: str | None,
    dataset: str | None,
    data_dir: str | None,
    split: str,
    device: str,
    profiles: str | None,
    threads: int,
    limit: int | None,
    warmup: int,
    passes: int,
    check_slo: bool,
    json_out: Path | None,
    overwrite: bool,
    seed: int,
) -> None:
    """Run an export with onnxruntime: accuracy, exit histogram and latency, each beside the
    cost model's prediction for this machine's profile table and its relative error, and a
    verdict for each SLO the design was searched under (met or broken, as measured)."""
    from hapi_dse import api
    from hapi_dse.deploy import format_report
    from hapi_dse.deploy.evaluate import report_path

    ev = api.evaluate(
        model_path,
        run=model,
        dataset=dataset,
        data_dir=data_dir,
        split=split,
        device=device,
        profiles=profiles,
        threads=threads,
        limit=limit,
        warmup=warmup,
        passes=passes,
        seed=seed,
        out=report_path(model_path) if json_out is None else json_out,
        overwrite=overwrite,
        progress=options.progress(),
    )
    options.report(format_report(ev.report))
    options.report(f"report: {ev.path}")
    if check_slo and ev.broken:
        click.echo(f"hapi eval: SLO broken as measured: {', '.join(ev.broken)}", err=True)
        raise SystemExit(1)
