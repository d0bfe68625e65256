"""A real profile of a tiny trained run with onnxruntime (few runs; nothing is timed here)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hapi_dse.cost.costs import SegmentCosts
from hapi_dse.profiling.manifest import load_manifest
from hapi_dse.profiling.modelled import ModelledProfiler
from hapi_dse.profiling.modes import ProfileConfig, ProfileMode
from hapi_dse.profiling.runner import compare_rows, run_profile
from hapi_dse.profiling.specs import find_spec, parse_spec
from hapi_dse.profiling.table import load_table
from hapi_dse.run import RunDir

pytest.importorskip("onnxruntime")
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def exported(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny run's segments, exported once (legacy exporter: the fast path for tests)."""
    out = tmp_path_factory.mktemp("segments")
    run_profile(
        ProfileConfig(
            model=str(tiny_run),
            export_dir=str(out),
            mode=ProfileMode.EXPORT_ONLY,
            exporter="legacy",
        )
    )
    return out


def profile_segments(exported: Path, profiles: Path, **options: Any) -> Any:
    """``run_profile`` of the exported segments into ``profiles`` (``options``: the rest of
    its ProfileConfig)."""
    return run_profile(ProfileConfig(onnx_dir=str(exported), profiles=str(profiles), **options))


def test_export_writes_every_segment_and_a_manifest(exported, tiny_run):
    run = RunDir(tiny_run)
    man = json.loads((exported / "segments.json").read_text())
    kinds = [s["kind"] for s in man["segments"]]
    heads = len(run.model["arch"]["heads"])
    assert kinds.count("block") == run.num_blocks
    assert kinds.count("head") == run.num_blocks * heads
    assert kinds.count("final") == kinds.count("backbone") == kinds.count("noop") == 1
    assert man["model_id"] == run.model_id
    assert all(max(d.values()) <= 1e-4 for d in man["export_check"].values())
    assert all((exported / s["file"]).is_file() for s in man["segments"])


def test_measured_profile_has_one_row_per_segment(exported, tiny_run, tmp_path):
    out = profile_segments(exported, tmp_path, device="host", runs=10, warmup=2, rounds=2)
    run = RunDir(tiny_run)
    t = load_table("host", run.model_id, tmp_path)
    assert t.path == out.path
    heads = run.model["arch"]["heads"]
    assert len(t.rows) == run.num_blocks * (1 + len(heads)) + 1
    assert set(t.rows["source"]) == {"measured"} and set(t.rows["runs"]) == {10}
    assert (t.rows["latency_ms"] > 0).all()
    assert (t.rows["latency_p90_ms"] >= t.rows["latency_ms"]).all()
    assert t.block_latency_ms().shape == (run.num_blocks,)
    side = t.sidecar
    assert side["call_overhead_ms"] > 0 and side["monolithic_backbone_ms"] > 0
    assert side["segments_sum_ms"] == pytest.approx(float(t.block_latency_ms().sum()))
    assert side["threads"] == 1 and side["provider"] == "CPUExecutionProvider"
    assert side["energy_source"] == "modelled" and set(t.rows["energy_source"]) == {"modelled"}
    import onnxruntime as ort

    from hapi_dse.provenance import sha256_file

    assert side["onnxruntime_version"] == ort.__version__
    manifest_input = side["provenance"]["inputs"]["segments.json"]
    assert manifest_input["sha256"] == sha256_file(exported / "segments.json")
    # the deployment terms, fitted on the probes (real one-graph exports) of the manifest
    dep = side["deployment"]
    assert dep["source"] == "measured" and dep["fit"]["groups"] >= 6
    assert set(dep["decision_ms"]) == {"max_softmax", "entropy", "patience"}
    assert len(dep["fit"]["probes"]) == 5 and "probe_backbone" in dep["fit"]["probes"]
    assert dep["fit"]["block_offset_from"] == "probe_backbone"
    # the probes took a round after each of the segments' rounds, not a burst of their own
    assert dep["fit"]["probe_rounds"] == 2
    assert SegmentCosts.from_table(t, run.stats("val")).terms.source == "measured"
    # flops come from the run's flops.csv
    flops = {(r["segment"], r["position"]): r["flops"] for r in run.flops()}
    blocks = t.rows[t.rows["segment"] == "block"]
    assert list(blocks["flops"]) == [flops[("block", i)] for i in range(run.num_blocks)]


def test_energy_command_is_used_and_labelled(exported, tmp_path):
    counter = tmp_path / "counter"
    # Each reading adds one joule: every window then costs exactly 1 J.
    script = tmp_path / "meter.sh"
    script.write_text(
        f'n=$(cat "{counter}" 2>/dev/null || echo 0); n=$((n + 1)); echo $n > "{counter}"; '
        'echo "$n"\n'
    )
    out = profile_segments(
        exported, tmp_path, device="metered", runs=4, warmup=1, rounds=1,
        energy_cmd=f"sh {script}", energy_window_s=0.001,
    )  # fmt: skip
    rows = out.result.rows
    assert {r["energy_source"] for r in rows} == {"command"}
    assert all(0 < r["energy_mj"] <= 1000.0 for r in rows)
    assert out.result.sidecar["energy_source"] == "command"


def test_cli_modelled_profile_and_refusals(exported, tmp_path, run_cli):
    res = run_cli(
        "profile",
        "--onnx-dir",
        exported,
        "--device",
        "pixel6",
        "--modelled",
        "--profiles",
        tmp_path,
    )
    assert res.exit_code == 0, res.stderr
    man = json.loads((exported / "segments.json").read_text())
    table = load_table("pixel6", man["model_id"], tmp_path)
    rows = table.rows
    assert len(rows) == sum(s["kind"] in ("block", "head", "final") for s in man["segments"])
    assert set(rows["source"]) == {"modelled"} and set(rows["energy_source"]) == {"modelled"}
    spec = find_spec("pixel6")
    # energy is the spec's active power times the modelled latency
    np.testing.assert_allclose(rows["energy_mj"], spec.active_power_w * rows["latency_ms"], 1e-4)
    # the deployment terms come from the spec, labelled as modelled
    dep = table.sidecar["deployment"]
    assert dep["source"] == "modelled"
    assert dep["decision_ms"]["entropy"] > dep["decision_ms"]["max_softmax"] > 0
    assert dep["decision_ms"]["max_softmax"] == pytest.approx(9 * spec.op_overhead_us * 1e-3)
    assert dep["cold_ms_per_mb"] == pytest.approx(1e9 / spec.mem_bandwidth_bytes_per_s)
    for args, needle in [
        (("--device", "pixel7", "--modelled"), "did you mean 'pixel6'"),
        (("--provider", "NoSuchProvider"), "NoSuchProvider"),
        (("--runs", "10"), "--runs"),
    ]:
        r = run_cli("profile", "--onnx-dir", exported, "--profiles", tmp_path, *args)
        assert r.exit_code == 2, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_board_path_needs_no_torch(exported, tmp_path):
    """``--onnx-dir`` profiles with onnxruntime and numpy only: torch and onnx are blocked."""
    code = (
        "import sys\n"
        "for m in ('torch', 'onnx', 'onnxscript'):\n"
        "    sys.modules[m] = None\n"
        "from hapi_dse.cli import main\n"
        f"main(['profile', '--onnx-dir', {str(exported)!r}, '--device', 'board', "
        f"'--profiles', {str(tmp_path)!r}, '--runs', '50', '--warmup', '1'])\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"HAPI_NO_PROGRESS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert res.returncode == 0, res.stderr[-2000:]
    man = json.loads((exported / "segments.json").read_text())
    table = load_table("board", man["model_id"], tmp_path)
    assert len(table.rows) == sum(s["kind"] in ("block", "head", "final") for s in man["segments"])
    assert set(table.rows["source"]) == {"measured"} and set(table.rows["runs"]) == {50}
    assert (table.rows["latency_ms"] > 0).all()


def test_calibrate_writes_a_spec_and_compares_with_the_measured_table(exported, tmp_path, run_cli):
    profile_segments(exported, tmp_path, runs=6, warmup=1, rounds=2)
    res = run_cli(
        "profile", "--calibrate", "--onnx-dir", exported, "--profiles", tmp_path, "--runs", "50"
    )
    assert res.exit_code == 0, res.stderr
    spec_line, compare_line = res.stdout.splitlines()
    m = re.fullmatch(
        r"spec for host written to (\S+) \((\d+) graphs, fit error ([\d.]+)%, call overhead "
        r"([\d.]+) us\)",
        spec_line,
    )
    assert m, spec_line
    spec = parse_spec(m[1])
    assert Path(m[1]) == tmp_path / "specs" / "host.toml" and int(m[2]) >= 50
    assert spec.call_overhead_us == pytest.approx(float(m[4]), abs=0.06)
    # the printed comparison is the fitted spec's model of the measured table
    m = re.fullmatch(
        r"model vs measured table over (\d+) segments: spearman (-?[\d.]+), MAPE ([\d.]+)%",
        compare_line,
    )
    assert m, compare_line
    man = load_manifest(exported)
    table = load_table("host", man.model_id, tmp_path)
    cmp = compare_rows(table.rows.to_dict("records"), ModelledProfiler(spec).profile(man).rows)
    assert int(m[1]) == cmp["segments"] == len(table.rows)
    assert float(m[2]) == pytest.approx(cmp["spearman"], abs=6e-4)
    assert float(m[3]) == pytest.approx(100 * cmp["mape"], abs=0.06)
    # the fitted spec models this machine: a modelled table can be made from it elsewhere
    res = run_cli(
        "profile",
        "--onnx-dir",
        exported,
        "--modelled",
        "--spec",
        tmp_path / "specs" / "host.toml",
        "--device",
        "host-modelled",
        "--profiles",
        tmp_path,
    )
    assert res.exit_code == 0, res.stderr
    # and a modelled table never silently replaces a measured one
    res = run_cli(
        "profile",
        "--onnx-dir",
        exported,
        "--modelled",
        "--profiles",
        tmp_path,
        "--spec",
        tmp_path / "specs" / "host.toml",
    )
    assert res.exit_code == 2 and "holds a measured table" in res.stderr


def _profilers():
    from hapi_dse.profiling.fake import FakeProfiler
    from hapi_dse.profiling.measured import OrtProfiler
    from hapi_dse.profiling.timing import TimingSettings

    return {
        "fake": lambda: FakeProfiler(),
        "onnxruntime": lambda: OrtProfiler(TimingSettings(runs=3, warmup=1, rounds=1)),
        "modelled": lambda: ModelledProfiler(find_spec("raspberry-pi-4")),
    }


@pytest.mark.parametrize("name", list(_profilers()))
def test_every_profiler_fills_a_valid_table(exported, tmp_path, name):
    """Contract test: any profiler's rows cover every segment and pass the table checks."""
    from hapi_dse.profiling.table import write_table

    man = load_manifest(exported)
    profiler = _profilers()[name]()
    calls: list[tuple[int, int]] = []
    res = profiler.profile(man, lambda done, total: calls.append((done, total)))
    keys = {(r["segment"], r["position"], r["head"]) for r in res.rows}
    want = {(s.kind, s.position, "" if s.kind == "block" else s.head) for s in man.table_segments()}
    assert keys == want
    assert {r["source"] for r in res.rows} == {profiler.source}
    assert calls and calls[-1][0] == calls[-1][1]
    write_table(res.rows, res.sidecar, device=name, model_id=man.model_id, profiles=tmp_path)
    t = load_table(name, man.model_id, tmp_path)
    assert t.source == profiler.source and len(t.rows) == len(want)


def test_batch_2_profile_times_batch_2_graphs(tiny_run, tmp_path, run_cli):
    """``--batch 2``: every graph takes two samples, and the table says so in every row."""
    import onnxruntime as ort

    export = tmp_path / "segments"
    res = run_cli(
        "profile", "--model", tiny_run, "--batch", "2", "--exporter", "legacy",
        "--export-dir", export, "--device", "b2", "--profiles", tmp_path,
        "--runs", "50", "--warmup", "2",
    )  # fmt: skip
    assert res.exit_code == 0, res.stderr
    run = RunDir(tiny_run)
    table = load_table("b2", run.model_id, tmp_path)
    rows, side = table.rows, table.sidecar
    assert len(rows) == run.num_blocks * (1 + len(run.model["arch"]["heads"])) + 1
    assert set(rows["batch"]) == {2} and side["batch"] == 2 and set(rows["runs"]) == {50}
    # the graphs really take a batch of 2 ...
    man = load_manifest(export)
    assert man.batch == 2 and all(s.input_shape[0] == 2 for s in man.segments)
    sess = ort.InferenceSession(str(man.path(man.segments[0])), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[0] == 2
    assert man.probes == []  # deployment probes are batch-1 graphs: none at batch 2
    # ... and their FLOPs are the batch-1 figures of flops.csv, twice
    per_sample = {(r["segment"], r["position"], r["head"]): r["flops"] for r in run.flops()}
    for r in rows.itertuples():
        assert r.flops == 2 * per_sample[r.segment, r.position, r.head], r
    # sensible latencies: positive, p90 >= median, below a second, and a block (two
    # convolutions on two samples) costs more than an empty session.run
    assert (rows["latency_ms"] > 0).all() and (rows["latency_ms"] < 1000).all()
    assert (rows["latency_p90_ms"] >= rows["latency_ms"]).all()
    blocks = table.block_latency_ms()
    assert side["segments_sum_ms"] == pytest.approx(blocks.sum())
    assert 0 < side["call_overhead_ms"] < blocks.mean()
    assert side["monolithic_backbone_ms"] > 0 and "deployment" not in side
    # the console line reports the same table
    m = re.search(r"blocks ([\d.]+) ms, call overhead ([\d.]+) ms", res.stdout)
    assert m and float(m[1]) == pytest.approx(blocks.sum(), abs=6e-4)


def test_a_run_without_flops_csv_is_refused_in_one_line(tiny_run, tmp_path, run_cli):
    """Profiling reads segment FLOPs from the run's flops.csv (it never imports training)."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "flops.csv").unlink()
    export = tmp_path / "segments"
    res = run_cli(
        "profile", "--model", run, "--export-dir", export, "--export-only",
        "--exporter", "legacy",
    )  # fmt: skip
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{run / 'flops.csv'}: not found" in lines[0]
    assert "hapi train" in lines[0]
    assert not (export / "segments.json").exists()


def test_a_busy_machine_is_warned_about_and_recorded(
    exported, tiny_run, tmp_path, monkeypatch, caplog
):
    """hapi profile on a loaded machine (an injected load of 3.8 on 2 cores) warns as hapi
    eval does and records the readings in the table's sidecar; a quiet one stays silent."""
    from hapi_dse import busy as readings

    monkeypatch.setattr(readings, "BUSY_CPU_SHARE", 0.0)  # this test's own CPU share aside
    for load, busy in ((3.8, True), (0.0, False)):
        monkeypatch.setattr(readings, "machine_load", lambda load=load: (load, 2))
        caplog.clear()
        with caplog.at_level("WARNING"):
            profile_segments(
                exported, tmp_path / str(load), device="host", runs=3, warmup=1, rounds=1
            )
        warned = [r for r in caplog.records if "busy" in r.getMessage()]
        assert len(warned) == (1 if busy else 0)
        t = load_table("host", RunDir(tiny_run).model_id, tmp_path / str(load))
        assert t.sidecar["load"]["busy"] is busy and t.sidecar["load"]["load_before"] == load


def test_calibrate_compares_with_the_segments_kept_in_export_dir(
    exported, tiny_run, tmp_path, monkeypatch
) -> None:
    """'hapi profile --calibrate --export-dir DIR' models the segments DIR already holds: it
    reads them where they are (no export again, and no refusal to replace hapi's own
    segments without --force, which the comparison swallowed)."""
    from hapi_dse.profiling import runner
    from hapi_dse.profiling.specs import parse_spec, spec_paths

    profile_segments(exported, tmp_path, device="host", runs=50, warmup=1, rounds=2)

    def no_export(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("exported the model again")

    monkeypatch.setattr(runner, "_export", no_export)
    cfg = ProfileConfig(
        device="host", model=str(tiny_run), export_dir=str(exported), profiles=str(tmp_path)
    )
    got = runner.compare_with_measured(cfg, parse_spec(spec_paths(None)["pixel6"]))
    assert got["segments"] == len(load_manifest(exported).table_segments())
    assert -1.0 <= got["spearman"] <= 1.0 and got["mape"] > 0
