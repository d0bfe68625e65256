"""``hapi profile`` as a library call: one config in, one result out.

The config's mode (:mod:`~hapi_dse.profiling.modes`) says what a run does, and each mode
has its result type:

- ``measure`` (default) and ``modelled``: export the segments (or read them from
  ``onnx_dir``), profile them (onnxruntime here, or a roofline model from a spec), write the
  table atomically; a :class:`~hapi_dse.profiling.modes.ProfiledTable`.
- ``export-only``: export the segments to ``export_dir`` for a board and stop; an
  :class:`~hapi_dse.profiling.modes.ExportedSegments`.
- ``calibrate``: fit a spec for this machine and compare it with this machine's measured
  table if any; a :class:`~hapi_dse.profiling.modes.CalibratedSpec`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hapi_dse.errors import SettingError, UsageError
from hapi_dse.onnx_tools import CHECK_ATOL, check_provider
from hapi_dse.profiling.base import Profiler
from hapi_dse.profiling.manifest import MANIFEST, Manifest, load_manifest
from hapi_dse.profiling.modes import (
    CalibratedSpec,
    ExportedSegments,
    ProfileConfig,
    ProfiledTable,
    ProfileMode,
    ProfileOutcome,
)
from hapi_dse.progress import Progress
from hapi_dse.run import REGISTERED_ONLY, CodeTrust, RunDir, resolve_run
from hapi_dse.training_id import check_same_training, same_training

if TYPE_CHECKING:
    from hapi_dse.profiling.timing import TimingSettings

log = logging.getLogger(__name__)


def _timing_settings(cfg: ProfileConfig) -> TimingSettings:
    from hapi_dse.profiling.timing import TimingSettings

    return TimingSettings(
        provider=cfg.provider,
        threads=cfg.threads,
        runs=cfg.runs,
        warmup=cfg.warmup,
        rounds=cfg.rounds,
        seed=cfg.seed,
    )


def _kept(cfg: ProfileConfig, man: Manifest) -> Manifest:
    """``man`` where its segments are once :func:`_export_dir` has swapped them in as
    ``--export-dir`` (they were written to a scratch directory)."""
    return replace(man, root=Path(cfg.export_dir)) if cfg.export_dir and not cfg.onnx_dir else man


@contextlib.contextmanager
def _export_dir(cfg: ProfileConfig) -> Iterator[Path]:
    if cfg.export_dir:  # a folder output: written whole, replaced only when hapi's own
        from hapi_dse.outdirs import atomic_dir

        with atomic_dir(
            cfg.export_dir,
            kind="segments",
            overwrite=cfg.force,
            label="--export-dir",
            overwrite_flag="--force",
        ) as tmp:
            yield tmp
    else:
        from hapi_dse.tempdirs import temp_dir

        with temp_dir("hapi-segments-") as tmp:  # a killed profile's is swept by the next
            yield tmp


def _export(
    cfg: ProfileConfig,
    out: Path,
    *,
    progress: bool,
    code: CodeTrust,
) -> tuple[Manifest, dict[str, Path]]:
    from hapi_dse.profiling.segments import export_segments

    run = resolve_run(cfg.model)
    total = run.num_blocks * (1 + len(run.model["arch"]["heads"])) + 4  # + the network
    with Progress(total, "export", show=progress) as bar:
        man = export_segments(
            run,
            out,
            batch=cfg.batch,
            opset=cfg.opset,
            dynamo=cfg.exporter == "dynamo",
            seed=cfg.seed,
            on_step=lambda name: bar.update(postfix=name),
            code=code,
        )
    return man, {"model.json": run.path / "model.json", "weights.pt": run.path / "weights.pt"}


def _progress_fn(bar: Progress):  # type: ignore[no-untyped-def]
    def fn(done: int, total: int) -> None:
        bar.total = max(total, 1)
        bar.update(done - bar.n)

    return fn


def make_profiler(cfg: ProfileConfig) -> Profiler:
    """The profiler of mode ``modelled`` (from the spec), else onnxruntime on this machine."""
    from hapi_dse.profiling.specs import load_spec, parse_spec

    if cfg.mode is ProfileMode.MODELLED:
        from hapi_dse.profiling.modelled import ModelledProfiler

        spec = load_spec(cfg.device, cfg.spec, cfg.profiles)
        return ModelledProfiler(spec)
    from hapi_dse.profiling.energy import detect_meter
    from hapi_dse.profiling.measured import OrtProfiler
    from hapi_dse.profiling.specs import spec_paths

    check_provider(cfg.provider)
    power: float | None = None
    power_source = ""
    spec_file = Path(cfg.spec) if cfg.spec else spec_paths(cfg.profiles).get(cfg.device)
    if spec_file is not None:
        power = parse_spec(spec_file).active_power_w
        power_source = f"spec {spec_file}"
        if cfg.device != "host":
            log.info(
                "timing THIS machine as %r (it has a spec: add --modelled to model it instead)",
                cfg.device,
            )
    meter = detect_meter(cfg.energy_cmd)
    settings = _timing_settings(cfg)
    return OrtProfiler(
        settings,
        meter=meter,
        active_power_w=power,
        power_source=power_source,
        energy_window_s=cfg.energy_window_s,
    )


def _refuse_overwrite(cfg: ProfileConfig, model_id: str, source: str, of: str = "") -> None:
    """Refuse (unless ``--force``) to replace a measured table with a modelled one, or a
    file whose sidecar names another model than ``model_id`` (the model to profile, from
    ``of``). ``model_id`` covers the weights, so another training writes its own file."""
    from hapi_dse.errors import HapiError
    from hapi_dse.paths import default_profiles_out
    from hapi_dse.profiling.names import sidecar_path, table_path
    from hapi_dse.readers import read_json

    dest = table_path(default_profiles_out(cfg.profiles), cfg.device, model_id)
    if cfg.force or not dest.is_file():
        return
    try:
        side = read_json(sidecar_path(dest))
        old, theirs = side.get("source"), side.get("model_id")
    except (HapiError, AttributeError):
        return
    if theirs is not None:  # a sidecar that names no model: not another training's
        check_same_training(
            f"{dest}: table",
            theirs,
            model_id,
            holder=of or "the model to profile",
            fix="pass --profiles OTHER_DIR to keep it, or --force to replace it",
        )
    if old == "measured" and source == "modelled":
        raise UsageError(
            f"{dest} holds a measured table; a modelled one would replace it. Pass --profiles "
            "OTHER_DIR to keep both, or --force"
        )


def _check_writable(cfg: ProfileConfig) -> None:
    """Refuse an --export-dir hapi may not replace, or a read-only or full --export-dir or
    --profiles, before the long work."""
    from hapi_dse.outdirs import check_out_dir, check_writable
    from hapi_dse.paths import default_profiles_out

    if cfg.export_dir:
        check_out_dir(
            cfg.export_dir, "segments", cfg.force, label="--export-dir", overwrite_flag="--force"
        )
    if cfg.mode is not ProfileMode.EXPORT_ONLY:
        out = default_profiles_out(cfg.profiles)
        check_writable(out / cfg.device / "table.csv", "--profiles", shown=out)


def _segments(
    cfg: ProfileConfig,
    out: Path,
    *,
    progress: bool,
    code: CodeTrust,
) -> tuple[Manifest, dict[str, Path]]:
    """The segments of ``--onnx-dir``, else the model's exported to ``out``; and the input
    files they come from (for the sidecar's provenance)."""
    if not cfg.onnx_dir:
        return _export(cfg, out, progress=progress, code=code)
    man = load_manifest(cfg.onnx_dir)
    if cfg.batch != 1 and cfg.batch != man.batch:
        raise SettingError(
            "batch",
            f"{cfg.batch}: the segments in {cfg.onnx_dir} were exported for batch {man.batch}; "
            "export them again",
        )
    return man, {"segments.json": Path(cfg.onnx_dir) / MANIFEST}


def run_profile(
    cfg: ProfileConfig,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> ProfileOutcome:
    """Run ``cfg``'s mode; the result's type follows from the mode. See the module doc.
    ``progress``: progress bars on a terminal; ``code``: what code the run's model.json may
    run when it is exported (:class:`~hapi_dse.run.CodeTrust`)."""
    cfg.validate()
    if cfg.mode is ProfileMode.CALIBRATE:
        return run_calibrate(cfg, progress=progress, code=code)
    if cfg.mode is ProfileMode.EXPORT_ONLY:
        _check_writable(cfg)
        with _export_dir(cfg) as out:
            man = _segments(cfg, out, progress=progress, code=code)
        # built in a scratch directory swapped in as --export-dir: name where it now is
        return ExportedSegments(_kept(cfg, man[0]))
    return profile_table(cfg, progress=progress, code=code)


def profile_table(
    cfg: ProfileConfig,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> ProfiledTable:
    """Modes ``measure`` and ``modelled``: export (or read) the segments, profile them, write
    the table. :func:`run_profile` for a table, typed as one (and its keywords)."""
    from hapi_dse.profiling.table import write_table
    from hapi_dse.provenance import provenance

    cfg.validate()
    if cfg.mode not in (ProfileMode.MEASURE, ProfileMode.MODELLED):
        raise UsageError(
            f"profile mode {cfg.mode.value!r} writes no table: call run_profile, or use mode "
            f"{ProfileMode.MEASURE.value!r} or {ProfileMode.MODELLED.value!r}"
        )
    profiler = make_profiler(cfg)  # fail fast on a bad device/spec/provider before exporting
    target: Manifest | RunDir
    if cfg.onnx_dir:
        target = load_manifest(cfg.onnx_dir)
        of = f"the segment export {cfg.onnx_dir}"
    else:
        target = resolve_run(cfg.model)
        of = f"the run {target.path}"
    _refuse_overwrite(cfg, target.model_id, profiler.source, of)
    _check_writable(cfg)  # before exporting and profiling, not after
    with _export_dir(cfg) as out:
        man, inputs = _segments(cfg, out, progress=progress, code=code)
        n = len(man.table_segments())
        with Progress(n, "profile", show=progress) as bar:
            result = profiler.profile(man, _progress_fn(bar))
        worst = max((max(d.values(), default=0.0) for d in man.export_check.values()), default=None)
        sidecar = {
            **result.sidecar,
            "device": cfg.device,
            "model_id": man.model_id,
            "batch": man.batch,
            "seed": cfg.seed,
            "export": {
                "exporter": man.exporter,
                "opset": man.opset,
                "max_abs_diff_vs_torch": worst,
                "tolerance": CHECK_ATOL,
                "provenance": man.provenance,  # the model files the segments came from
            },
            "provenance": provenance(
                seed=cfg.seed,
                inputs=inputs,
                settings=cfg.settings(),
                libraries=("numpy", "onnxruntime", "onnx", "torch"),
            ),
        }
        path = write_table(
            result.rows,
            sidecar,
            device=cfg.device,
            model_id=man.model_id,
            profiles=cfg.profiles or None,
        )
    return ProfiledTable(cfg.device, path, _kept(cfg, man), result)


def run_calibrate(
    cfg: ProfileConfig,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> CalibratedSpec:
    """Fit this machine's spec, write it, and compare it with a measured table if one exists."""
    from hapi_dse.errors import HapiError
    from hapi_dse.profiling.calibrate import calibrate
    from hapi_dse.profiling.specs import DEFAULT_ACTIVE_POWER_W, parse_spec, spec_paths, write_spec

    power = DEFAULT_ACTIVE_POWER_W
    old = spec_paths(cfg.profiles).get(cfg.device)
    if old is not None:
        with contextlib.suppress(HapiError):
            power = parse_spec(old).active_power_w
    settings = _timing_settings(cfg)
    spec, report = calibrate(settings, name=cfg.device, active_power_w=power, seed=cfg.seed)
    header = (
        f"Spec of this machine fitted by 'hapi profile --calibrate' ({report['graphs']} micro-"
        f"benchmark graphs,\nmean abs relative error of the fit "
        f"{report['fit_mean_abs_rel_error']:.3f}); active_power_w: "
        f"{'from the previous spec' if old else 'assumed (no meter, no spec)'}."
    )
    path = write_spec(spec, cfg.profiles, header)
    comparison = None
    with contextlib.suppress(HapiError):
        comparison = compare_with_measured(cfg, spec, progress=progress, code=code)
    return CalibratedSpec(cfg.device, path, spec, report, comparison)


def compare_with_measured(
    cfg: ProfileConfig,
    spec: Any,
    *,
    progress: bool = True,
    code: CodeTrust = REGISTERED_ONLY,
) -> dict[str, Any]:
    """Model this machine's measured table with ``spec``: Spearman rho and MAPE over segments.

    The segments come from ``--onnx-dir``, else from ``--export-dir`` when it holds this
    model's export, else the model is exported again (to a temporary directory) at the
    table's batch size.
    """
    from hapi_dse.profiling.modelled import ModelledProfiler
    from hapi_dse.profiling.table import load_table
    from hapi_dse.tempdirs import temp_dir

    if cfg.onnx_dir:
        man = load_manifest(cfg.onnx_dir)
        table = load_table(cfg.device, man.model_id, cfg.profiles)
        rows = ModelledProfiler(spec).profile(man).rows
        return compare_rows(table.rows.to_dict("records"), rows)
    run = resolve_run(cfg.model)
    table = load_table(cfg.device, run.model_id, cfg.profiles)
    measured = table.rows.to_dict("records")
    if cfg.export_dir and (Path(cfg.export_dir) / MANIFEST).is_file():  # read, never replaced
        man = load_manifest(cfg.export_dir)
        if same_training(man.model_id, run.model_id):
            return compare_rows(measured, ModelledProfiler(spec).profile(man).rows)
    batch = int(table.rows["batch"].iat[0])
    with temp_dir("hapi-segments-") as out:
        man = _export(replace(cfg, batch=batch), out, progress=progress, code=code)[0]
        return compare_rows(measured, ModelledProfiler(spec).profile(man).rows)


def compare_rows(measured: list[dict[str, Any]], modelled: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman rank correlation and mean abs percentage error of modelled vs measured."""
    import numpy as np

    def key(r: dict[str, Any]) -> tuple[str, int, str]:
        return (str(r["segment"]), int(r["position"]), str(r["head"] or ""))

    mod = {key(r): float(r["latency_ms"]) for r in modelled}
    pairs = [(float(r["latency_ms"]), mod[key(r)]) for r in measured if key(r) in mod]
    a = np.array([p[0] for p in pairs])
    b = np.array([p[1] for p in pairs])
    return {
        "segments": len(pairs),
        "spearman": spearman(a, b),
        "mape": float(np.mean(np.abs(b - a) / a)) if len(a) else float("nan"),
    }


def spearman(a: Any, b: Any) -> float:
    """Spearman's rho with average ranks for ties (numpy only)."""
    import numpy as np

    def ranks(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="mergesort")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for v in np.unique(x):
            idx = x == v
            r[idx] = r[idx].mean()
        return r

    if len(a) < 2:
        return float("nan")
    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])
