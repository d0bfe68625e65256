"""``hapi export``: a design as ONNX with the exit decisions inside, checked on real samples.

Formats (``ExportConfig.fmt``):

* ``onnx`` (default): one graph, standard ``ai.onnx`` operators only (``If`` for the exits),
  runnable by any ONNX runtime. Inputs ``input`` (1, C, H, W), and for threshold policies
  ``thresholds`` and ``temperatures`` (float32, one per exit) that have default values
  (initializers of the same name): omit them to use the searched values, feed them to
  change a threshold without re-exporting. Outputs ``logits`` (1, classes) of the exit taken
  and ``exit_index`` (int64, ``0..m-1`` an exit, ``m`` the final classifier).
* ``staged``: a directory with one graph per stage (blocks, head, decision), ``manifest.json``
  (thresholds live there) and ``staged_runtime.py`` (needs only numpy and onnxruntime).

Every export is checked: ``onnx.checker`` full check, then onnxruntime against PyTorch on
real samples of the run's validation split chosen so that every exit path is taken (when no
real sample takes a path at the searched thresholds, a real sample is sent down it with the
thresholds overridden, which the export records). The sidecar ``<name>.export.json`` (or
``export.json`` in a staged directory) records the check, the opset and the design's sha256.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hapi_dse.deploy.inputs import (
    DesignFile,
    design_run,
    exit_temperatures,
    load_design,
    load_samples,
)
from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.provenance import atomic_dir, atomic_path, provenance, sha256_file, write_json

log = logging.getLogger(__name__)

FORMATS = ("onnx", "staged")
SCHEMA_VERSION = 1
ATOL = 1e-4
RUNTIME_FILE = "staged_runtime.py"
MANIFEST = "manifest.json"
META_PREFIX = "hapi."


@dataclass
class ExportConfig:
    source: Path  # search result directory or design.json
    out: Path  # .onnx file (onnx) or directory (staged)
    model: str | None = None  # run directory; default the bundled example
    fmt: str = "onnx"
    opset: int = 18
    layout_anchor: bool = True
    data_dir: str | None = None
    check_samples: int = 512
    seed: int = 0
    trial: int | None = None  # a trial of the search result, not its chosen design
    overwrite: bool = False  # replace a previous staged export in ``out``

    def validate(self) -> None:
        if self.fmt not in FORMATS:
            from hapi_dse.errors import unknown_name

            raise unknown_name("export format", self.fmt, FORMATS)
        if self.fmt != "staged" and self.out.suffix != ".onnx":
            raise UsageError(
                f"--out {self.out}: expected a file name ending in .onnx (format {self.fmt})"
            )
        if self.fmt != "staged" and self.out.is_dir():
            raise UsageError(f"--out {self.out}: is a directory; expected a .onnx file name")
        if self.fmt == "staged" and self.out.is_file():
            raise UsageError(f"--out {self.out}: is a file; --format staged writes a directory")
        if self.check_samples < 1:
            raise UsageError(f"--check-samples {self.check_samples}: expected >= 1")
        if not 7 <= self.opset <= 23:
            raise UsageError(f"--opset {self.opset}: expected 18 (tested), at least 7")
        from hapi_dse.provenance import check_out_dir, check_writable

        if self.fmt == "staged":  # before the export and its check, not after
            check_out_dir(self.out, "staged-export", self.overwrite)
        else:
            check_writable(self.out)


def sidecar_for(out: Path, fmt: str) -> Path:
    return out / "export.json" if fmt == "staged" else out.with_suffix(".export.json")


# ------------------------------------------------------------------------------------------
# check samples: real samples that take every exit path


@dataclass
class CheckPlan:
    paths: list[int]  # the exit index each checked sample takes
    samples: list[int]  # index into the validation split, one per path
    forced: list[bool]  # True: sent down its path with thresholds overridden
    thresholds: list[list[float]]  # the thresholds fed with each sample
    path_counts: list[int]  # how many of the scanned samples take each path


def plan_checks(net: Any, design: Any, temps: list[float], x: np.ndarray) -> CheckPlan:
    """One real sample per exit path, from a batched PyTorch pass over ``x``."""
    import torch

    from hapi_dse.deploy.graph import FORCE, build_stages, decide

    stages = build_stages(net, design, layout_anchor=False).eval()
    logits = []
    with torch.no_grad():
        h = torch.from_numpy(x)
        for st in stages:
            h, z = st(h)
            logits.append(z.numpy())
    thr = [e.threshold for e in design.exits]
    path = decide(design.policy, design.patience, logits, thr, temps)
    # prefer samples whose path does not change when the thresholds move by 1e-4: float
    # differences between PyTorch and onnxruntime cannot flip their decisions
    robust = np.ones(len(path), bool)
    for delta in (-1e-4, 1e-4):
        moved = [t + delta for t in thr]
        robust &= decide(design.policy, design.patience, logits, moved, temps) == path
    m = len(design.exits)
    counts = np.bincount(path, minlength=m + 1).tolist()
    paths: list[int] = []
    samples, forced, thresholds = [], [], []
    for i in range(m + 1):
        hits = np.flatnonzero(path == i)
        if hits.size:
            good = hits[robust[hits]]
            paths.append(i)
            samples.append(int(good[0] if good.size else hits[0]))
            forced.append(False)
            thresholds.append(thr)
        elif design.policy in FORCE:
            always, never = FORCE[design.policy]
            paths.append(i)
            samples.append(0)
            forced.append(True)
            thresholds.append([never] * i + [always] * (m - i))
        else:  # patience: no input forces a path; the check reports it uncovered
            continue
    return CheckPlan(paths, samples, forced, thresholds, counts)


# ------------------------------------------------------------------------------------------


def export_design(cfg: ExportConfig) -> dict[str, Any]:
    """Export, check and describe one design; returns the ``export.json`` content."""
    cfg.validate()
    t0 = time.perf_counter()
    dfile = load_design(cfg.source, trial=cfg.trial)
    run = design_run(dfile, cfg.model)
    temps = exit_temperatures(dfile.design, run)
    samples = load_samples(run, "val", data_dir=cfg.data_dir)
    x = samples.x[: cfg.check_samples]

    import torch

    torch.manual_seed(cfg.seed)
    net = run.load_model()
    plan = plan_checks(net, dfile.design, temps, x)
    common = _common_info(cfg, dfile, run, temps)
    common["timings_s"] = {"inputs_and_check_plan": round(time.perf_counter() - t0, 2)}
    if cfg.fmt == "staged":
        info = _export_staged(cfg, dfile, net, temps, x, plan, common)
    else:
        info = _export_single(cfg, dfile, net, temps, x, plan, common)
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
        "schema_version": SCHEMA_VERSION,
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


def _metadata(common: dict[str, Any]) -> dict[str, str]:
    keys = (
        "format",
        "model_id",
        "run",
        "design",
        "design_sha256",
        "device",
        "slos",
        "exits",
        "classes",
        "normalization",
        "input_shape",
    )
    return {META_PREFIX + k: json.dumps(common[k]) for k in keys}


def _export_single(
    cfg: ExportConfig,
    dfile: DesignFile,
    net: Any,
    temps: list[float],
    x: np.ndarray,
    plan: CheckPlan,
    common: dict[str, Any],
) -> dict[str, Any]:
    from hapi_dse.deploy.graph import input_names

    design = dfile.design
    names = input_names(design)

    def feed(i: int) -> tuple[Any, ...]:
        xi = x[plan.samples[i] : plan.samples[i] + 1]
        return (xi,) if len(names) == 1 else (xi, np.asarray(plan.thresholds[i], np.float32))

    timings = dict(common["timings_s"])
    built = write_single_graph(
        net,
        design,
        temps,
        cfg.out,
        example=(x[:1],),
        checks=[feed(i) for i in range(len(plan.samples))],
        opset=cfg.opset,
        layout_anchor=cfg.layout_anchor,
        metadata=_metadata(common),
    )
    timings.update(built.timings)
    out, report = cfg.out, built.report
    info = dict(common)
    info.update(
        {
            "timings_s": timings,
            "file": out.name,
            "sha256": sha256_file(out),
            "opset": report.opset,
            "exporter": report.exporter,
            "inputs": _describe_inputs(names, len(design.exits), common["input_shape"]),
            "outputs": {
                "logits": "float32 (1, classes): raw logits of the exit taken",
                "exit_index": "int64 (1,): index into 'exits' (the last is the final classifier)",
            },
            "layout_anchor": cfg.layout_anchor,
            "relocated_initializers": built.moved,
            "graph": built.census,
            "check": _check_info(
                plan,
                built.diffs,
                "full",
                report.max_abs_diff,
            ),
            "requires": _requirements(cfg),
        }
    )
    return info


@dataclass
class BuiltGraph:
    """What :func:`write_single_graph` did: the exporter's report and the checks."""

    report: Any  # hapi_dse.onnx_tools.ExportReport
    moved: int
    census: dict[str, Any]
    diffs: dict[str, float]
    timings: dict[str, float]


def write_single_graph(
    net: Any,
    design: Any,
    temps: list[float],
    out: Path,
    *,
    example: tuple[np.ndarray, ...],
    checks: list[tuple[np.ndarray, ...]],
    opset: int,
    layout_anchor: bool = True,
    metadata: dict[str, str] | None = None,
) -> BuiltGraph:
    """Export ``design`` as the one-graph deployment (:class:`DesignGraph`) to ``out``.

    ``example`` and each of ``checks`` are ``(image,)`` or ``(image, thresholds)``; the
    temperatures are ``temps``. The searched thresholds and ``temps`` become the defaults of
    the ``thresholds``/``temperatures`` inputs. The graph is checked (``onnx.checker``, and
    onnxruntime against PyTorch on ``example`` and every check input, with and without the
    default inputs) and written atomically. ``hapi export`` and the deployment probes of
    ``hapi profile`` both build their graphs here, so what is profiled is what is exported.
    """
    import onnx
    import torch

    from hapi_dse.deploy import onnx_passes
    from hapi_dse.deploy.graph import DesignGraph, input_names
    from hapi_dse.onnx_tools import export_onnx

    module = DesignGraph(net, design, layout_anchor=layout_anchor).eval()
    names = input_names(design)
    outputs = ["logits", "exit_index"]
    thr0 = torch.tensor([e.threshold for e in design.exits], dtype=torch.float32)
    temp_t = torch.tensor(temps, dtype=torch.float32)

    def as_torch(inp: tuple[np.ndarray, ...]) -> tuple[torch.Tensor, ...]:
        xi = torch.from_numpy(np.ascontiguousarray(inp[0]))
        if len(names) == 1:
            return (xi,)
        thr = torch.from_numpy(np.asarray(inp[1], np.float32)) if len(inp) > 1 else thr0
        return (xi, thr, temp_t)

    example_t = as_torch(example)
    checks_t = [as_torch(c) for c in checks]
    out.parent.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=".hapi-export-", dir=out.parent) as tmpdir:
        raw = Path(tmpdir) / "raw.onnx"
        report = export_onnx(
            module,
            example_t,
            raw,
            input_names=names,
            output_names=outputs,
            opset=opset,
            check_inputs=checks_t,
            atol=ATOL,
        )
        model = onnx.load(str(raw))
    timings["torch_onnx_export_and_check"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    moved = onnx_passes.relocate_initializers(model)
    onnx_passes.strip_node_metadata(model)
    if len(names) > 1:
        onnx_passes.set_input_defaults(
            model, {"thresholds": thr0.numpy(), "temperatures": temp_t.numpy()}
        )
    if metadata:
        onnx_passes.set_metadata(model, metadata)
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as e:
        raise ArtefactError(f"{out}: onnx.checker rejected the rewritten graph: {e}") from None
    census = onnx_passes.op_census(model)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
        from hapi_dse.onnx_tools import compare_with_torch

        diffs = compare_with_torch(module, tmp, names, outputs, [example_t, *checks_t])
        ok = _defaults_match(tmp, example[0], module, example_t) if len(names) > 1 else True
        if any(not d <= ATOL for d in diffs.values()) or not ok:
            from hapi_dse.onnx_tools import ExportMismatchError

            raise ExportMismatchError(out, diffs, ATOL)
    timings["rewrite_and_recheck"] = round(time.perf_counter() - t0, 2)
    return BuiltGraph(report, moved, census, diffs, timings)


def _defaults_match(path: Path, x0: np.ndarray, module: Any, example: tuple[Any, ...]) -> bool:
    """Omitting ``thresholds``/``temperatures`` gives the same result as feeding the defaults."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x0})
    with torch.no_grad():
        ref = module(*example)
    return bool(np.allclose(got[0], ref[0].numpy(), atol=ATOL) and int(got[1][0]) == int(ref[1][0]))


def _describe_inputs(names: list[str], m: int, shape: list[int]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [
        {
            "name": "input",
            "dtype": "float32",
            "shape": shape,
            "note": "normalised image: (pixel/255 - mean) / std",
        }
    ]
    if len(names) > 1:
        out += [
            {
                "name": "thresholds",
                "dtype": "float32",
                "shape": [m],
                "default": "initializer (the searched thresholds)",
                "note": "optional; feed to change the exit thresholds without re-exporting",
            },
            {
                "name": "temperatures",
                "dtype": "float32",
                "shape": [m],
                "default": "initializer (model.json temperatures)",
                "note": "optional; calibration temperature of each exit",
            },
        ]
    return out


def _requirements(cfg: ExportConfig) -> dict[str, Any]:
    import onnxruntime as ort

    return {
        "runtime": f"any ONNX runtime with opset {cfg.opset}: standard ai.onnx operators only "
        "(If for the exits); batch size 1",
        "fast_path": "onnxruntime CPUExecutionProvider at its default ORT_ENABLE_ALL applies "
        "its NCHWc layout inside the If branches: every initializer sits in the "
        "subgraph that uses it"
        + (
            " and each branch starts with an identity 1x1 Conv (layout anchor)"
            if cfg.layout_anchor
            else ""
        ),
        "tested_with": {"onnxruntime": ort.__version__},
    }


def _check_info(
    plan: CheckPlan,
    diffs: dict[str, float],
    checker: str,
    exporter_diffs: dict[str, float] | None = None,
) -> dict[str, Any]:
    return {
        "onnx_checker": checker,
        "passed": True,
        "atol": ATOL,
        "max_abs_diff": diffs,
        "samples_split": "val",
        "paths": [
            {"exit_index": i, "val_sample": s, "thresholds_forced": f}
            for i, s, f in zip(plan.paths, plan.samples, plan.forced, strict=True)
        ],
        "paths_taken_by_real_thresholds": plan.path_counts,
        "paths_unchecked": max(len(plan.path_counts) - len(plan.samples), 0),
    }


# ------------------------------------------------------------------------------------------
# staged


def _export_staged(
    cfg: ExportConfig,
    dfile: DesignFile,
    net: Any,
    temps: list[float],
    x: np.ndarray,
    plan: CheckPlan,
    common: dict[str, Any],
) -> dict[str, Any]:
    import torch

    from hapi_dse.deploy.graph import DesignGraph, StageGraph, build_stages, stage_io
    from hapi_dse.onnx_tools import export_onnx

    design = dfile.design
    m = len(design.exits)
    stages = build_stages(net, design, cfg.layout_anchor).eval()
    # features entering each stage for the check samples (and the example)
    idx = sorted(set(plan.samples) | {0})
    feats = [torch.from_numpy(x[idx])]
    with torch.no_grad():
        for st in stages[:-1]:
            feats.append(st(feats[-1])[0])
    manifest_stages = []
    diffs_all: dict[str, dict[str, float]] = {}
    opset = cfg.opset
    with atomic_dir(cfg.out, kind="staged-export", overwrite=cfg.overwrite) as tmp:
        for i, st in enumerate(stages):
            last = i == m
            module = StageGraph(st, design.policy, last).eval()
            ins, outs = stage_io(design.policy, last)
            xs = [feats[i][j : j + 1] for j in range(len(idx))]
            inputs: list[tuple[torch.Tensor, ...]]
            if len(ins) > 1:
                thr = torch.tensor([design.exits[i].threshold], dtype=torch.float32)
                tmp_t = torch.tensor([temps[i]], dtype=torch.float32)
                inputs = [(xj, thr, tmp_t) for xj in xs]
            else:
                inputs = [(xj,) for xj in xs]
            fname = f"stage_{i}.onnx"
            rep = export_onnx(
                module,
                inputs[0],
                tmp / fname,
                input_names=ins,
                output_names=outs,
                opset=cfg.opset,
                check_inputs=inputs[1:],
                atol=ATOL,
            )
            opset = rep.opset
            diffs_all[fname] = rep.max_abs_diff
            entry: dict[str, Any] = {
                "file": fname,
                "sha256": sha256_file(tmp / fname),
                "inputs": ins,
                "outputs": outs,
                "input_shape": list(xs[0].shape),
            }
            if not last:
                entry.update(
                    {
                        "exit_index": i,
                        "position": design.exits[i].position,
                        "head": design.exits[i].head,
                    }
                )
            manifest_stages.append(entry)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "format": "staged",
            "policy": design.policy,
            "patience": design.patience,
            "thresholds": [e.threshold for e in design.exits],
            "temperatures": temps,
            "stages": manifest_stages,
            **{
                k: common[k]
                for k in (
                    "model_id",
                    "design_sha256",
                    "exits",
                    "classes",
                    "normalization",
                    "input_shape",
                )
            },
        }
        write_json(tmp / MANIFEST, manifest)
        shutil.copyfile(Path(__file__).with_name(RUNTIME_FILE), tmp / RUNTIME_FILE)
        # end-to-end: the shipped runtime against the PyTorch design graph
        whole = DesignGraph(net, design, layout_anchor=cfg.layout_anchor).eval()
        worst = _check_staged(tmp, whole, x, plan, temps)
    info = dict(common)
    info.update(
        {
            "file": MANIFEST,
            "opset": opset,
            "exporter": "dynamo",
            "stages": [s["file"] for s in manifest_stages],
            "layout_anchor": cfg.layout_anchor,
            "thresholds_in": f"{MANIFEST} ('thresholds', 'temperatures'), fed by the runtime "
            "to each stage graph's 'threshold' and 'temperature' inputs",
            "check": {
                **_check_info(plan, {"logits": worst[0], "exit_index": worst[1]}, "full"),
                "per_stage_max_abs_diff": diffs_all,
            },
            "requires": {
                "runtime": f"python with numpy and onnxruntime: {RUNTIME_FILE} (no hapi); "
                f"the stage graphs are standard ai.onnx opset {opset}",
                "usage": f"python {RUNTIME_FILE} input.npy  or  "
                "StagedModel(dir).run(x) -> (logits, exit_index)",
            },
        }
    )
    return info


def _check_staged(
    root: Path, whole: Any, x: np.ndarray, plan: CheckPlan, temps: list[float]
) -> tuple[float, float]:
    import torch

    runtime = load_runtime(root)
    staged = runtime.StagedModel(root, threads=1)
    worst_logits = worst_idx = 0.0
    for s, thr in zip(plan.samples, plan.thresholds, strict=True):
        xi = x[s : s + 1]
        staged.set_thresholds(thr)
        got_z, got_i = staged.run(xi)
        params = (
            ()
            if staged.policy == "patience" or not thr
            else (torch.tensor(thr, dtype=torch.float32), torch.tensor(temps, dtype=torch.float32))
        )
        with torch.no_grad():
            ref_z, ref_i = whole(torch.from_numpy(xi), *params)
        worst_logits = max(worst_logits, float(np.max(np.abs(got_z - ref_z.numpy()))))
        worst_idx = max(worst_idx, float(abs(got_i - int(ref_i[0]))))
    if not (worst_logits <= ATOL and worst_idx == 0):
        from hapi_dse.onnx_tools import ExportMismatchError

        raise ExportMismatchError(root, {"logits": worst_logits, "exit_index": worst_idx}, ATOL)
    return worst_logits, worst_idx


def load_runtime(root: Path) -> Any:
    """Import the ``staged_runtime.py`` shipped in an export directory (not hapi's copy)."""
    import importlib.util

    path = Path(root) / RUNTIME_FILE
    spec = importlib.util.spec_from_file_location(f"_hapi_staged_{abs(hash(path))}", path)
    if spec is None or spec.loader is None:
        raise ArtefactError(f"{path}: cannot load the staged runtime")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
