"""``hapi export``: a design as ONNX with the exit decisions inside, checked on real samples.

Formats (``ExportConfig.fmt``):

* ``onnx`` (default): one graph, standard ``ai.onnx`` operators only (``If`` for the exits),
  runnable by any ONNX runtime. Inputs ``input`` (1, C, H, W), and for threshold policies
  ``thresholds`` and ``temperatures``: optional inputs (``optional(tensor(float))``, one
  value per exit, listed by ``get_inputs()``): omit them to use the searched values, feed
  them to change a threshold without re-exporting. Outputs ``logits`` (1, classes) of the exit taken
  and ``exit_index`` (int64, ``0..m-1`` an exit, ``m`` the final classifier).
* ``staged``: a directory with one graph per stage (blocks, head, decision), ``manifest.json``
  (thresholds live there) and ``staged_runtime.py`` (needs only numpy and onnxruntime).

Every export is checked: ``onnx.checker`` full check, then onnxruntime against PyTorch on
real samples of the run's validation split chosen so that every exit path is taken (when no
real sample takes a path at the searched thresholds, a real sample is sent down it with the
thresholds overridden, which the export records). The sidecar ``<name>.export.json`` (or
``export.json`` in a staged directory) records the check, the opset and the design's sha256.

This module is the entry point; the work is in :mod:`~hapi_dse.deploy.checks` (which samples
check which exit path), :mod:`~hapi_dse.deploy.single` and :mod:`~hapi_dse.deploy.staged`
(the two formats) and :mod:`~hapi_dse.deploy.load` (what an export holds, and opening it).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hapi_dse.atomic import write_json
from hapi_dse.deploy.checks import CheckedDesign
from hapi_dse.deploy.inputs import (
    DesignFile,
    design_run,
    exit_temperatures,
    load_design,
    load_samples,
)
from hapi_dse.deploy.load import EXPORT_SCHEMA_VERSION, STAGED_SIDECAR
from hapi_dse.deploy.single import export_single
from hapi_dse.deploy.staged import export_staged
from hapi_dse.errors import SettingError
from hapi_dse.onnx_tools import DEFAULT_OPSET
from hapi_dse.provenance import provenance
from hapi_dse.run import REGISTERED_ONLY, CodeTrust

FORMATS = ("onnx", "staged")


@dataclass
class ExportConfig:
    source: Path  # search result directory or design.json
    out: Path  # .onnx file (onnx) or directory (staged)
    model: str | None = None  # run directory; default the bundled example
    fmt: str = "onnx"
    opset: int = DEFAULT_OPSET
    layout_anchor: bool = True
    data_dir: str | None = None
    check_samples: int = 512
    seed: int = 0
    trial: int | None = None  # a trial of the search result, not its chosen design
    overwrite: bool = False  # replace a previous staged export, or a file hapi did not write

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            from hapi_dse.errors import unknown_name

            raise unknown_name("export format", self.fmt, FORMATS)
        if self.fmt != "staged" and self.out.suffix != ".onnx":
            raise SettingError(
                "out", f"{self.out}: expected a file name ending in .onnx (format {self.fmt})"
            )
        if self.fmt != "staged" and self.out.is_dir():
            raise SettingError("out", f"{self.out}: is a directory; expected a .onnx file name")
        if self.fmt == "staged" and self.out.is_file():
            raise SettingError(
                "out", f"{self.out}: is a file; {{fmt}} staged writes a directory", ("fmt",)
            )
        if self.check_samples < 1:
            raise SettingError("check_samples", f"{self.check_samples}: expected >= 1")
        if not 7 <= self.opset <= 23:
            raise SettingError(
                "opset", f"{self.opset}: expected {DEFAULT_OPSET} (tested), at least 7"
            )

    def check_out(self, *inputs: Path) -> None:
        """Refuse an ``out`` hapi must not replace or cannot write (before the export);
        ``inputs`` are the command's inputs beyond ``source`` and ``model``."""
        from hapi_dse.outdirs import check_out_dir, check_out_file

        if self.fmt == "staged":  # before the export and its check, not after
            check_out_dir(self.out, "staged-export", self.overwrite)
            return
        for dest in (self.out, sidecar_for(self.out, self.fmt)):
            check_out_file(
                dest, inputs=[self.source, self.model, *inputs], overwrite=self.overwrite
            )


def sidecar_for(out: Path, fmt: str) -> Path:
    """Where the export ``out`` of format ``fmt`` records itself."""
    return out / STAGED_SIDECAR if fmt == "staged" else out.with_suffix(".export.json")


def export_design(cfg: ExportConfig, *, code: CodeTrust = REGISTERED_ONLY) -> dict[str, Any]:
    """Export, check and describe one design; returns the ``export.json`` content.
    ``code``: what code the run's model.json may run (:class:`~hapi_dse.run.CodeTrust`)."""
    cfg.validate()
    t0 = time.perf_counter()
    dfile = load_design(cfg.source, trial=cfg.trial)
    run = design_run(dfile, cfg.model)
    cfg.check_out(run.path)  # before any work; '--out RUN/model.json' is refused too
    temps = exit_temperatures(dfile.design, run)
    # only the images the check uses: a big image folder is not decoded whole
    samples = load_samples(run, "val", data_dir=cfg.data_dir, first=cfg.check_samples)
    x = samples.x[: cfg.check_samples]

    import torch

    torch.manual_seed(cfg.seed)
    net = run.load_model(code)
    checked = CheckedDesign.prepare(net, dfile.design, temps, x)
    common = _common_info(cfg, dfile, run, temps)
    common["timings_s"] = {"inputs_and_check_plan": round(time.perf_counter() - t0, 2)}
    if cfg.fmt == "staged":
        info = export_staged(
            checked,
            common,
            out=cfg.out,
            opset=cfg.opset,
            layout_anchor=cfg.layout_anchor,
            overwrite=cfg.overwrite,
        )
    else:
        info = export_single(
            checked, common, out=cfg.out, opset=cfg.opset, layout_anchor=cfg.layout_anchor
        )
    info["provenance"] = provenance(
        seed=cfg.seed,
        inputs={
            "design": dfile.path,
            "model.json": run.path / "model.json",
            "weights.pt": run.path / "weights.pt",
        },
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
        libraries=("numpy", "torch", "onnx", "onnxruntime", "onnxscript"),
    )
    write_json(sidecar_for(cfg.out, cfg.fmt), info)
    if cfg.fmt == "staged":
        from hapi_dse.ownership import adopt

        adopt(sidecar_for(cfg.out, cfg.fmt))  # written after the swap: part of the export
    return info


def _common_info(
    cfg: ExportConfig, dfile: DesignFile, run: Any, temps: list[float]
) -> dict[str, Any]:
    d = dfile.design
    exits = [
        {
            "index": i,
            "position": e.position,
            "head": e.head,
            "threshold": e.threshold,
            "temperature": temps[i],
        }
        for i, e in enumerate(d.exits)
    ]
    exits.append({"index": len(d.exits), "position": run.num_blocks - 1, "head": "final"})
    return {
        "schema_version": EXPORT_SCHEMA_VERSION,
        "format": cfg.fmt,
        "model_id": run.model_id,
        "run": str(run.path.resolve()),
        "design": {**d.to_dict(), "model_id": run.model_id},
        "design_path": str(dfile.path),
        "design_sha256": dfile.sha256,
        "device": dfile.doc.get("device"),
        "slos": dfile.doc.get("slos") or [],
        "exits": exits,
        "classes": run.model.get("classes"),
        "normalization": run.model.get("normalization"),
        "input_shape": [1, *run.model["arch"]["input_shape"]],
    }
