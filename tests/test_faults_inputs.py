"""Bad input to every command: one line on stderr, exit status 2, no traceback, disk unchanged.

Each case copies a small world of valid inputs (a synthetic run, its profile table, a search
result, exported segments, a staged export, ONNX files), breaks one thing, runs ``hapi``
in-process through the real entry point, and checks: exit status 2, exactly one non-empty
stderr line that starts with ``hapi: error:`` and names the fault, no traceback, and every
file under the case directory (inputs and would-be outputs) exactly as before.

No case trains or exports a real model: the commands must refuse before that work.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hapi_dse.testing import search_args, train_args
from hapi_dse.testing.files import tree_snapshot as snapshot
from hapi_dse.testing.world import DESIGN, DEVICE, onnx_identity

PY = sys.executable

# -- helpers (each case runs in conftest's case_dir: a copy of hapi_dse.testing.world) ---------


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    data = json.loads(path.read_text())
    new = fn(data)
    path.write_text(json.dumps(data if new is None else new))


def set_key(path: Path, dotted: str, value: Any) -> None:
    def fn(d: dict[str, Any]) -> None:
        *parents, last = dotted.split(".")
        for k in parents:
            d = d[int(k)] if isinstance(d, list) else d[k]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    edit_json(path, fn)


def drop_key(path: Path, key: str) -> None:
    def fn(d: dict[str, Any]) -> None:
        del d[key]

    edit_json(path, fn)


def edit_npz(path: Path, **arrays: Any) -> None:
    with np.load(path, allow_pickle=False) as z:
        data = {k: z[k] for k in z.files}
    for k, v in arrays.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v(data) if callable(v) else v
    with open(path, "wb") as f:
        np.savez(f, **data)


def cell(name: str, i: int, j: int | None, value: Any) -> Callable[[dict], np.ndarray]:
    def fn(d: dict[str, np.ndarray]) -> np.ndarray:
        a = d[name].copy()
        a[(i, j) if j is not None else i] = value
        return a

    return fn


def astype(name: str, dtype: Any) -> Callable[[dict], np.ndarray]:
    return lambda d: d[name].astype(dtype) + (0.5 if np.dtype(dtype).kind == "f" else 0)


def sidecar(w: Path) -> Path:
    return next((w / "profiles" / DEVICE).glob("*.json"))


def table_csv(w: Path) -> Path:
    return next((w / "profiles" / DEVICE).glob("*.csv"))


def run_hapi(capsys: pytest.CaptureFixture[str], argv: list[Any]) -> tuple[int, str, str]:
    from hapi_dse.cli import main

    capsys.readouterr()
    code = 0
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


def assert_refused(code: int, out: str, err: str, needle: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err, err
    assert len(lines) == 1, err
    assert lines[0].startswith("hapi: error: "), lines[0]
    assert needle.lower() in lines[0].lower(), lines[0]


# -- commands ----------------------------------------------------------------------------------


def search_argv(w: Path, *extra: Any) -> list[Any]:
    return search_args(w / "run", w / "profiles", w / "out", *extra, device=DEVICE, trials=5)


def devices_argv(w: Path) -> list[Any]:
    return ["devices", "--check", "--profiles", w / "profiles"]


def profile_argv(w: Path, *extra: Any) -> list[Any]:
    return [
        "profile",
        "--onnx-dir",
        w / "segs",
        "--device",
        "devB",
        "--profiles",
        w / "newprofiles",
        "--runs",
        "50",
        "--warmup",
        "1",
        *extra,
    ]


def export_argv(w: Path, design: str = "design.json", run: str = "run") -> list[Any]:
    return ["export", w / design, "--model", w / run, "--out", w / "x.onnx"]


def eval_argv(w: Path, target: str = "staged") -> list[Any]:
    return ["eval", w / target, "--model", w / "run", "--warmup", "0", "--passes", "1"]


def plot_argv(w: Path) -> list[Any]:
    return ["plot", w / "result", "--out", w / "front.png", "--no-references"]


def train_argv(w: Path, *extra: Any) -> list[Any]:
    return train_args(w / "newrun", *extra)


@dataclass(frozen=True)
class Case:
    argv: Callable[[Path], list[Any]]
    mutate: Callable[[Path], None]
    needle: str


def nothing(w: Path) -> None:
    pass


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def fn(w: Path) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, bytes):
            p.write_bytes(text)
        else:
            p.write_text(text)

    return fn


def with_space(name: str) -> Callable[[Path], list[Any]]:
    return lambda w: search_argv(w, "--space", w / name)


def remove(rel: str) -> Callable[[Path], None]:
    return lambda w: (w / rel).unlink()


def write_sidecar(text: str) -> Callable[[Path], None]:
    def fn(w: Path) -> None:
        sidecar(w).write_text(text)

    return fn


def stats(**arrays: Any) -> Callable[[Path], None]:
    return lambda w: edit_npz(w / "run" / "exits_val.npz", **arrays)


def model_key(dotted: str, value: Any) -> Callable[[Path], None]:
    return lambda w: set_key(w / "run" / "model.json", dotted, value)


def side_key(dotted: str, value: Any) -> Callable[[Path], None]:
    return lambda w: set_key(sidecar(w), dotted, value)


def design_key(dotted: str, value: Any, name: str = "design.json") -> Callable[[Path], None]:
    return lambda w: set_key(w / name, dotted, value)


def npy_renamed(w: Path) -> None:
    p = w / "run" / "exits_val.npz"
    p.unlink()
    with open(p, "wb") as f:
        np.save(f, np.zeros((3, 3), np.float32))


def truncate(rel: str, keep: float) -> Callable[[Path], None]:
    def fn(w: Path) -> None:
        p = w / rel
        data = p.read_bytes()
        p.write_bytes(data[: int(len(data) * keep)])

    return fn


def drop_last_rows(rel: str, n: int) -> Callable[[Path], None]:
    def fn(w: Path) -> None:
        p = w / rel
        lines = p.read_text().splitlines(keepends=True)
        p.write_text("".join(lines[:-n]))

    return fn


def search_json(key: str, value: Any) -> Callable[[Path], None]:
    return lambda w: set_key(w / "result" / DEVICE / "search.json", key, value)


def staged_key(dotted: str, value: Any, name: str = "manifest.json") -> Callable[[Path], None]:
    return lambda w: set_key(w / "staged" / name, dotted, value)


def export_key(dotted: str, value: Any) -> Callable[[Path], None]:
    return staged_key(dotted, value, "export.json")


def chosen_trial(value: Any) -> Callable[[Path], None]:
    return lambda w: set_key(w / "result" / DEVICE / "design.json", "trial", value)


def cut_half(rel: str) -> Callable[[Path], None]:
    return truncate(rel, 0.6)


def drop_rows(rel: str) -> Callable[[Path], None]:
    return drop_last_rows(rel, 3)


def cut_to_header(rel: str) -> Callable[[Path], None]:
    return write(rel, "trial,state\n")


def onnx_meta(design: Any) -> Callable[[Path], None]:
    def fn(w: Path) -> None:
        (w / "model.onnx").unlink()
        text = design if isinstance(design, str) else json.dumps(design)
        onnx_identity(w / "model.onnx", [1, 1, 8, 8], {"hapi.design": text})

    return fn


def seg_manifest(fn: Callable[[Any], Any]) -> Callable[[Path], None]:
    return lambda w: edit_json(w / "segs" / "segments.json", fn)


def energy_cmd(script: str) -> Callable[[Path], list[Any]]:
    def argv(w: Path) -> list[Any]:
        return profile_argv(w, "--energy-cmd", f"{PY} -c {json.dumps(script)}")

    return argv


def trial_exits(text: str) -> Callable[[Path], None]:
    """Replace the exits of every row of trials.csv (the --trial input)."""

    def fn(w: Path) -> None:
        import csv
        import io

        p = w / "result" / DEVICE / "trials.csv"
        rows = list(csv.DictReader(io.StringIO(p.read_text())))
        for r in rows:
            r["exits"], r["policy"], r["patience"] = text, "max_softmax", ""
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        p.write_text(buf.getvalue())

    return fn


BAD_YAML = "exits:\n  count: [0, 2\npolicies:\n  max_softmax:\n    threshold: [0.5, 1.0]\n"
SPEC = (
    "flops_per_s = 1e9\nmem_bandwidth_bytes_per_s = 1e9\nop_overhead_us = 1\n"
    "call_overhead_us = 5\nactive_power_w = 2\n"
)
NAN = float("nan")
INF = float("inf")


def npz_cut(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every per-sample array with no samples left."""
    return {k: d[k][:0] for k in ("labels", "confidence", "entropy", "prediction")}


def other_columns(d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns that are not model.json's: every head 'linear', positions reversed."""
    heads = np.array(["linear"] * (len(d["head"]) - 1) + ["final"])
    return {"position": d["position"][::-1].copy(), "head": heads}


def stats_fn(fn: Callable[[dict], dict]) -> Callable[[Path], None]:
    def mutate(w: Path) -> None:
        p = w / "run" / "exits_val.npz"
        with np.load(p, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        edit_npz(p, **fn(data))

    return mutate


def table_line(w: Path) -> None:
    p = table_csv(w)
    p.write_text(p.read_text().replace("\nblock,0,,1,", "\nblock,0,,1,-", 1))


def cut_table(w: Path) -> None:
    truncate(str(table_csv(w).relative_to(w)), 0.7)(w)


def patience_design(value: Any) -> Callable[[Path], None]:
    def mutate(w: Path) -> None:
        design_key("policy", "patience")(w)
        design_key("policy_params", {"patience": value})(w)

    return mutate


def drop_stages(w: Path) -> None:
    drop_key(w / "staged" / "manifest.json", "stages")


def no_meta_onnx(w: Path) -> None:
    onnx_identity(w / "model.onnx", [1, 1, 8, 8])


def seg_shape_text(d: dict[str, Any]) -> None:
    d["segments"][0]["input_shape"] = "1x1x8x8"


def trun_key(dotted: str, value: Any) -> Callable[[Path], None]:
    return lambda w: set_key(w / "trun" / "model.json", dotted, value)


def result_file(name: str, fn: Callable[[str], Callable[[Path], None]]) -> Callable:
    return lambda w: fn(f"result/{DEVICE}/{name}")(w)


def trial_argv(w: Path) -> list[Any]:
    return ["export", w / "result", "--trial", "0", "--model", w / "run", "--out", w / "x.onnx"]


def trun_export(w: Path) -> list[Any]:
    return export_argv(w, "tdesign.json", "trun")


def trun_profile(w: Path) -> list[Any]:
    out = ["profile", "--model", w / "trun", "--device", "devB"]
    return [*out, "--profiles", w / "newprofiles", "--runs", "50"]


def onnx_eval(w: Path) -> list[Any]:
    return eval_argv(w, "model.onnx")


def with_args(argv: Callable[..., list[Any]], *extra: str) -> Callable[[Path], list[Any]]:
    return lambda w: argv(w, *extra)


CASES: dict[str, Case] = {}


def add(argv: Callable[[Path], list[Any]], rows: list[tuple[str, Callable, str]]) -> None:
    for name, mutate, needle in rows:
        assert name not in CASES, name
        CASES[name] = Case(argv, mutate, needle)


# hapi search: exit statistics (ExitStats.load)
add(
    search_argv,
    [
        ("search-stats-nan-confidence", stats(confidence=cell("confidence", 3, 2, NAN)), "[3, 2]"),
        ("search-stats-inf-entropy", stats(entropy=cell("entropy", 0, 0, INF)), "entropy[0, 0]"),
        (
            "search-stats-negative-confidence",
            stats(confidence=cell("confidence", 5, 1, -0.2)),
            "0..1",
        ),
        (
            "search-stats-confidence-above-1",
            stats(confidence=cell("confidence", 5, 1, 1.5)),
            "0..1",
        ),
        ("search-stats-label-out-of-range", stats(labels=cell("labels", 7, None, 10)), "labels[7]"),
        ("search-stats-negative-label", stats(labels=cell("labels", 2, None, -1)), "labels[2]"),
        (
            "search-stats-prediction-too-big",
            stats(prediction=cell("prediction", 1, 1, 99)),
            "[1, 1]",
        ),
        (
            "search-stats-float-predictions",
            stats(prediction=astype("prediction", np.float32)),
            "integers",
        ),
        ("search-stats-float-labels", stats(labels=astype("labels", np.float64)), "integers"),
        (
            "search-stats-2d-labels",
            stats_fn(lambda d: {"labels": np.stack([d["labels"]] * 2, 1)}),
            "1-D",
        ),
        ("search-stats-zero-samples", stats_fn(npz_cut), "no samples"),
        (
            "search-stats-wrong-shape",
            stats_fn(lambda d: {"entropy": d["entropy"][:, :-1]}),
            "shape",
        ),
        ("search-stats-missing-array", stats(entropy=None), "missing arrays"),
        ("search-stats-int-heads", stats_fn(lambda d: {"head": np.arange(9)}), "must hold strings"),
        (
            "search-stats-final-not-last",
            stats_fn(lambda d: {"head": d["head"][::-1].copy()}),
            "final",
        ),
        ("search-stats-columns-not-model", stats_fn(other_columns), "do not match model.json"),
        ("search-stats-npy-renamed-npz", npy_renamed, "not an .npz"),
        (
            "search-stats-random-bytes",
            write("run/exits_val.npz", os.urandom(500)),
            "not a readable",
        ),
    ],
)
# hapi search: model.json (RunDir.model)
add(
    search_argv,
    [
        ("search-model-json-list", write("run/model.json", "[1, 2]"), "expected a JSON object"),
        ("search-model-id-number", model_key("model_id", 7), "model_id must be"),
        ("search-model-arch-list", model_key("arch", ["resnet20"]), "arch must be an object"),
        ("search-model-num-classes-text", model_key("arch.num_classes", "ten"), "num_classes"),
        ("search-model-exits-string", model_key("exits", "all"), "exits must be"),
        ("search-model-columns-bad", model_key("columns", [{"position": "0"}]), "columns must be"),
        ("search-model-temperatures-nan", model_key("temperatures", [NAN] * 9), "temperatures"),
        ("search-model-not-json", write("run/model.json", "{model_id: x"), "not valid JSON"),
    ],
)
# hapi search: the profile table and its sidecar (read_table)
add(
    search_argv,
    [
        ("search-sidecar-list", write_sidecar("[]"), "expected a JSON object"),
        ("search-sidecar-overhead-negative", side_key("call_overhead_ms", -0.5), "call_overhead"),
        ("search-sidecar-overhead-nan", side_key("call_overhead_ms", NAN), "call_overhead_ms"),
        ("search-sidecar-overhead-text", side_key("call_overhead_ms", "0.05"), "call_overhead"),
        ("search-sidecar-units-list", side_key("units", ["ms"]), "units must be"),
        ("search-sidecar-rows-text", side_key("rows", "13"), "rows must be"),
        ("search-sidecar-source-unknown", side_key("source", "guessed"), "source must be"),
        ("search-sidecar-deployment-list", side_key("deployment", [1, 2]), "'deployment' must"),
        ("search-sidecar-deployment-nan", side_key("deployment", {"stage_entry_ms": NAN}), "stage"),
        ("search-table-truncated", cut_table, "truncated"),
    ],
)
# hapi search: search spaces (parse_space)
_SPACES = [
    ("nan-threshold", "[policies.max_softmax]\nthreshold = [nan, 1.0]\n", "[LOW, HIGH]"),
    ("inf-threshold", "[policies.entropy]\nthreshold = [0.0, inf]\n", "[LOW, HIGH]"),
    ("threshold-above-1", "[policies.max_softmax]\nthreshold = [0.5, 1.5]\n", "within [0, 1]"),
    ("thresholds-scalar", "thresholds = 5\n", "[thresholds] must be a table"),
    ("exits-scalar", 'exits = "all"\n', "[exits] must be a table"),
    ("policy-scalar", "[policies]\nmax_softmax = 5\n", "[policies.max_softmax] must be"),
    ("policies-list", 'policies = ["max_softmax"]\n', "[policies] must name"),
    ("sampler-scalar", "sampler = 50\n", "[sampler] must be a table"),
    ("population-bool", "[sampler]\npopulation = true\n", "sampler.population"),
    ("population-one", "[sampler]\npopulation = 1\n", "sampler.population"),
    ("count-text", '[exits]\ncount = "0-4"\n', "exits.count"),
    ("count-bool", "[exits]\ncount = [true, 3]\n", "exits.count"),
    ("positions-floats", "[exits]\npositions = [1.5, 2]\n", "exits.positions"),
    ("heads-numbers", "[exits]\nheads = [1, 2]\n", "exits.heads"),
    ("levels-float", "[thresholds]\nlevels = 5.5\n", "thresholds.levels"),
    ("description-table", "[description]\nx = 1\n", "description must be a string"),
    ("patience-floats", "[policies.patience]\npatience = [1.5, 2]\n", "patience.patience"),
    ("unknown-key", "[exits]\ncounts = [0, 2]\n", "unknown key"),
    ("patience-above-count", "[exits]\ncount = [0, 2]\n[policies.patience]\n", "never fire"),
    ("toml-syntax", "[exits\ncount = 1\n", "not valid TOML"),
]
_YAML_SPACES = [
    ("yaml-syntax", BAD_YAML, "not valid YAML"),
    ("yaml-scalar", "42\n", "expected a mapping"),
    ("yaml-nan-threshold", "policies:\n  max_softmax:\n    threshold: [.nan, 1.0]\n", "[LOW"),
    ("yaml-exits-list", "exits: [1, 2]\n", "[exits] must be a table"),
]
for _file, _table in (("space.toml", _SPACES), ("space.yaml", _YAML_SPACES)):
    add(
        with_space(_file),
        [(f"search-space-{name}", write(_file, text), needle) for name, text, needle in _table],
    )
# hapi search: options (click ranges, SLO parsing)
for _p in ("0", "1", "-4"):
    add(with_args(search_argv, "--population", _p), [(f"search-population-{_p}", nothing, "range")])
for _t in ("nan", "inf", "0"):
    add(with_args(search_argv, "--timeout", _t), [(f"search-timeout-{_t}", nothing, "--timeout")])
for _slo, _needle in [
    ("latency=1e999", "finite bound"),
    ("size=1e308GB", "finite bound"),
    ("energy=1e400mJ", "finite bound"),
    ("latency=-5ms", "must be >= 0"),
    ("accuracy=120%", "accuracy must be"),
]:
    add(with_args(search_argv, "--slo", _slo), [(f"search-slo-{_slo}", nothing, _needle)])

# hapi devices --check: the same validation of tables as every command that loads one
add(
    devices_argv,
    [
        ("devices-sidecar-list", write_sidecar('["not", "an", "object"]'), "a JSON object"),
        ("devices-sidecar-overhead-nan", side_key("call_overhead_ms", NAN), "call_overhead_ms"),
        ("devices-sidecar-overhead-negative", side_key("call_overhead_ms", -1), "call_overhead"),
        ("devices-deployment-negative", side_key("deployment", {"cold_ms_per_mb": -1.0}), "cold"),
        (
            "devices-deployment-text",
            side_key("deployment", {"decision_ms": {"x": "y"}}),
            "decision",
        ),
        ("devices-sidecar-device-number", side_key("device", 5), "device must be"),
        ("devices-sidecar-batch-zero", side_key("batch", 0), "batch must be"),
        ("devices-sidecar-not-json", write_sidecar("{oops"), "not valid JSON"),
        ("devices-table-negative-latency", table_line, "latency_ms"),
        (
            "devices-spec-nan",
            write("profiles/specs/devA.toml", "x = 1\n" + SPEC.replace("1e9", "nan", 1)),
            "flops_per_s",
        ),
        (
            "devices-spec-threads-text",
            write("profiles/specs/devA.toml", SPEC + 'threads = "two"\n'),
            "threads",
        ),
    ],
)

# hapi profile: --onnx-dir, --energy-cmd, --model
add(
    profile_argv,
    [
        ("profile-corrupt-onnx", write("segs/block0.onnx", os.urandom(300)), "cannot load"),
        ("profile-empty-onnx", write("segs/head0linear.onnx", b""), "onnxruntime cannot load"),
        ("profile-manifest-list", write("segs/segments.json", "[]"), "malformed manifest"),
        ("profile-manifest-shape-text", seg_manifest(seg_shape_text), "malformed manifest"),
        ("profile-manifest-not-json", write("segs/segments.json", "{"), "not valid JSON"),
        ("profile-manifest-missing-file", remove("segs/noop.onnx"), "missing files"),
    ],
)
add(energy_cmd("print(5.0)"), [("profile-energy-constant", nothing, "did not change")])
add(energy_cmd("print('nan')"), [("profile-energy-nan", nothing, "a number of joules (finite")])
add(energy_cmd("print('joules')"), [("profile-energy-text", nothing, "as the last word")])
add(
    trun_profile,
    [
        ("profile-random-weights", nothing, "cannot load weights"),
        ("profile-model-json-types", trun_key("arch.input_shape", "8x8"), "arch.input_shape"),
    ],
)

# hapi export: design files (Design.from_dict), weights, model.json, --trial
add(
    export_argv,
    [
        ("export-design-list", write("design.json", "[]"), "not a design"),
        ("export-design-policy-number", design_key("policy", 3), "policy is 3"),
        ("export-design-policy-unknown", design_key("policy", "greedy"), "unknown exit policy"),
        ("export-design-params-list", design_key("policy_params", [2]), "policy_params is [2]"),
        ("export-design-patience-text", patience_design("2"), "policy_params.patience"),
        ("export-design-patience-zero", patience_design(0), "patience must be >= 1"),
        ("export-design-exits-object", design_key("exits", {"position": 1}), "exits is"),
        ("export-design-exit-text", design_key("exits", ["1:linear@0.9"]), "exits[0] is"),
        ("export-design-position-negative", design_key("exits.0.position", -1), "position"),
        ("export-design-position-text", design_key("exits.0.position", "1"), "position"),
        ("export-design-position-float", design_key("exits.0.position", 1.5), "position"),
        ("export-design-head-number", design_key("exits.0.head", 3), "exits[0].head"),
        ("export-design-threshold-text", design_key("exits.0.threshold", "0.9"), "threshold"),
        ("export-design-threshold-nan", design_key("exits.0.threshold", NAN), "threshold"),
        ("export-design-threshold-above-1", design_key("exits.0.threshold", 1.5), "in 0..1"),
        ("export-design-threshold-negative", design_key("exits.0.threshold", -0.1), "in 0..1"),
        ("export-design-threshold-bool", design_key("exits.0.threshold", True), "threshold"),
        ("export-design-unknown-exit", design_key("exits.0.head", "mlp"), "does not exist"),
        ("export-design-not-json", write("design.json", "{policy"), "not valid JSON"),
    ],
)
add(
    trun_export,
    [
        ("export-random-weights", nothing, "cannot load weights"),
        ("export-model-json-types", trun_key("temperatures", ["hot"] * 9), "temperatures"),
    ],
)
add(
    trial_argv,
    [
        ("export-trial-threshold-above-1", trial_exits("1:linear@1.5"), "0..1"),
        ("export-trial-truncated-csv", result_file("trials.csv", cut_to_header), "trials table"),
    ],
)

# hapi eval: single graphs and staged exports
_DESIGN_META = {"policy": "max_softmax", "exits": [{"position": "1", "head": "linear"}]}
add(
    onnx_eval,
    [
        ("eval-corrupt-onnx", write("model.onnx", os.urandom(256)), "onnxruntime cannot load"),
        ("eval-onnx-design-types", onnx_meta(_DESIGN_META), "exits[0].position"),
        ("eval-onnx-design-text", onnx_meta("not json"), "malformed design"),
        ("eval-onnx-no-design", no_meta_onnx, "no hapi.design"),
    ],
)
_SLO_INF = [{"metric": "latency_ms", "value": INF}]
add(
    eval_argv,
    [
        ("eval-staged-manifest-list", write("staged/manifest.json", "[1]"), "not a valid staged"),
        ("eval-staged-manifest-not-json", write("staged/manifest.json", "{"), "not a valid"),
        ("eval-staged-no-stages", drop_stages, "not a valid staged export ('stages')"),
        ("eval-staged-stage-path", staged_key("stages.1.file", "../model.onnx"), "plain file"),
        ("eval-staged-corrupt-stage", write("staged/stage_1.onnx", os.urandom(100)), "not a valid"),
        ("eval-staged-threshold-nan", staged_key("thresholds", [NAN]), "thresholds is [NaN]"),
        ("eval-staged-threshold-above-1", staged_key("thresholds", [2.0]), "thresholds is"),
        ("eval-staged-temperature-negative", staged_key("temperatures", [-1.0]), "temperatures"),
        ("eval-staged-thresholds-count", staged_key("thresholds", [0.5, 0.6]), "1 thresholds"),
        ("eval-staged-design-types", export_key("design.exits.0.threshold", "high"), "threshold"),
        ("eval-staged-no-design", write("staged/export.json", "{}"), "no design recorded"),
        ("eval-staged-slo-infinite", export_key("slos", _SLO_INF), "slos is"),
    ],
)

# hapi plot: trials.csv, search.json, design.json
_SLO_TEXT = [{"metric": "latency_ms", "value": "50"}]
add(
    plot_argv,
    [
        ("plot-trials-cut-mid-line", result_file("trials.csv", cut_half), "without a newline"),
        ("plot-trials-rows-missing", result_file("trials.csv", drop_rows), "search.json records"),
        ("plot-trials-empty", write(f"result/{DEVICE}/trials.csv", ""), "not a readable CSV"),
        ("plot-search-slos-text", search_json("slos", "latency"), "slos must be a list"),
        ("plot-slo-infinite", search_json("slos", _SLO_INF), "finite value"),
        ("plot-slo-text-value", search_json("slos", _SLO_TEXT), "finite value"),
        ("plot-chosen-trial-text", chosen_trial("two"), "trial is"),
        ("plot-search-json-not-json", write(f"result/{DEVICE}/search.json", "{"), "not valid"),
    ],
)

# hapi train: refused before any data is loaded (the no_training fixture)
for _flag, _value in [
    ("--lr", "nan"),
    ("--lr", "inf"),
    ("--lr", "0"),
    ("--lr", "-0.1"),
    ("--exit-lr", "-0.002"),
    ("--exit-lr", "nan"),
    ("--exit-lr", "0"),
    ("--batch-size", "0"),
    ("--limit", "0"),
    ("--limit", "-5"),
    ("--epochs", "-1"),
    ("--exit-epochs", "0"),
    ("--distill", "inf:0.5"),
    ("--distill", "3:nan"),
]:
    add(with_args(train_argv, _flag, _value), [(f"train{_flag}={_value}", nothing, _flag)])
add(with_args(train_argv, "--heads", "linear,bogus"), [("train-heads-bogus", nothing, "bogus")])
add(with_args(train_argv, "--init", "none.pt"), [("train-init-missing", nothing, "--init")])


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    name: str, case_dir: Path, capsys: pytest.CaptureFixture[str], no_training: None
) -> None:
    case = CASES[name]
    case.mutate(case_dir)
    before = snapshot(case_dir.parent)
    code, out, err = run_hapi(capsys, case.argv(case_dir))
    assert_refused(code, out, err, case.needle)
    assert snapshot(case_dir.parent) == before


# -- the world itself is valid: each fault above is the only one in its case ------------------


def test_the_world_passes_where_the_faults_fail(
    case_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    w = case_dir
    assert run_hapi(capsys, devices_argv(w))[0] == 0
    code, _, err = run_hapi(capsys, search_argv(w, "--space", w / "space.toml"))
    assert code == 0, err
    assert run_hapi(capsys, plot_argv(w))[0] == 0
    # the staged export and the single graph pass their checks: eval stops only at the
    # synthetic run, which records no dataset to evaluate on
    for target in ("staged", "model.onnx"):
        code, _, err = run_hapi(capsys, eval_argv(w, target))
        if target == "model.onnx":
            assert code == 2 and "outputs" in err, err
        else:
            assert code == 2 and "no dataset recorded" in err, err
    # the design file passes: export stops only at the synthetic run, which has no
    # temperatures (nor weights)
    code, _, err = run_hapi(capsys, export_argv(w))
    assert code == 2 and "'temperatures' missing" in err, err


def test_profile_of_the_world_segments_works(
    case_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The segments and a counting energy command are valid: the profile is written."""
    w = case_dir
    counter = w / "joules"
    script = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); "
        "v = float(p.read_text()) + 1.0 if p.exists() else 1.0; p.write_text(str(v)); print(v)"
    )
    code, _, err = run_hapi(capsys, energy_cmd(script)(w))
    assert code == 0, err
    assert next((w / "newprofiles" / "devB").glob("*.csv")).is_file()


@pytest.mark.parametrize(
    "fault",
    [
        ("call_overhead_ms", float("nan")),
        ("call_overhead_ms", -0.1),
        ("deployment", {"nested_factor": -2.0}),
        ("units", {"latency_ms": "s"}),
        ("energy_source", "guess"),
    ],
    ids=lambda f: f"{f[0]}={f[1]}",
)
def test_devices_check_and_search_agree(
    fault: tuple[str, Any], case_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """'hapi devices --check' refuses exactly the tables 'hapi search' refuses."""
    w = case_dir
    side_key(*fault)(w)
    before = snapshot(w)
    checked = run_hapi(capsys, devices_argv(w))
    searched = run_hapi(capsys, search_argv(w))
    assert_refused(*checked, fault[0])
    assert_refused(*searched, fault[0])
    assert checked[2] == searched[2]
    assert snapshot(w) == before


def test_devices_lists_a_table_whose_sidecar_is_a_list(
    case_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --check, a broken sidecar is listed as unknown, not a crash."""
    sidecar(case_dir).write_text("[1, 2, 3]")
    code, out, err = run_hapi(capsys, ["devices", "--profiles", case_dir / "profiles"])
    assert code == 0 and "Traceback" not in err, err
    assert DEVICE in out


def test_design_with_patience_beyond_its_exits_warns(caplog: pytest.LogCaptureFixture) -> None:
    from hapi_dse.cost.design import Design

    doc = {"policy": "patience", "policy_params": {"patience": 3}, "exits": DESIGN["exits"]}
    with caplog.at_level("WARNING"):
        d = Design.from_dict(doc)
    assert d.patience == 3 and "no exit can fire" in caplog.text


def test_yaml_errors_are_one_line(tmp_path: Path) -> None:
    from hapi_dse.errors import UsageError
    from hapi_dse.search.space import load_space

    p = tmp_path / "s.yaml"
    p.write_text(BAD_YAML)
    with pytest.raises(UsageError) as e:
        load_space(p)
    assert "\n" not in str(e.value) and "line 3, column 9" in str(e.value)


def test_many_cases() -> None:
    assert len(CASES) >= 80
    commands = {n.split("-")[0].split("--")[0] for n in CASES}
    assert {"train", "profile", "devices", "search", "export", "eval", "plot"} <= commands
