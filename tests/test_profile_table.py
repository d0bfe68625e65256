"""Profile tables: the fake profiler drives the writer; loading validates and says where."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from hapi_dse.errors import ArtefactError, UsageError
from hapi_dse.profiling.base import ProfileResult
from hapi_dse.profiling.fake import FakeProfiler
from hapi_dse.profiling.manifest import Manifest, Segment
from hapi_dse.profiling.table import load_table, read_table, write_table
from hapi_dse.profiling.table_format import TABLE_COLUMNS, UNITS

MODEL_ID = "tinynet-0123abcd"
HEADS = ("linear", "conv")


def fake_manifest(num_blocks: int = 4) -> Manifest:
    def seg(kind: str, i: int, head: str, file: str, flops: int, params: int) -> Segment:
        return Segment(kind, i, head, file, "x", (1, 8, 4, 4), "y", flops=flops, params=params)

    segs = [
        seg("block", i, "", f"block_{i}.onnx", 1000 * (i + 1), 10 * (i + 1))
        for i in range(num_blocks)
    ]
    segs += [
        seg("head", i, h, f"head_{i}_{h}.onnx", 100 * (j + 1), 5 * (j + 1))
        for i in range(num_blocks)
        for j, h in enumerate(HEADS)
    ]
    segs.append(seg("final", num_blocks - 1, "final", "final.onnx", 50, 7))
    return Manifest(root=Path("."), model_id=MODEL_ID, batch=1, segments=segs)


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, FakeProfiler, ProfileResult]:
    fake = FakeProfiler(call_overhead_ms=0.004, ms_per_flop=1e-6, ms_per_param=1e-4)
    res = fake.profile(fake_manifest())
    path = write_table(
        res.rows, {**res.sidecar, "seed": 3}, device="fakedev", model_id=MODEL_ID, profiles=tmp_path
    )
    return path, fake, res


def test_fake_profiler_round_trip(written, tmp_path):
    path, fake, _ = written
    assert path == tmp_path / "fakedev" / f"{MODEL_ID}.csv"
    header = path.read_text().splitlines()[0].split(",")
    assert tuple(header[: len(TABLE_COLUMNS)]) == TABLE_COLUMNS
    t = load_table("fakedev", MODEL_ID, tmp_path)
    assert len(t.rows) == 4 + 4 * 2 + 1
    expect = [fake.latency_ms(1000 * (i + 1), 10 * (i + 1)) for i in range(4)]
    np.testing.assert_allclose(t.block_latency_ms(), expect, rtol=1e-5)
    assert t.block_latency_ms().shape == (4,)
    assert t.head_latency_ms(2, "conv") == pytest.approx(fake.latency_ms(200, 10), rel=1e-5)
    assert t.head_latency_ms(3, "final") == pytest.approx(fake.latency_ms(50, 7), rel=1e-5)
    np.testing.assert_allclose(t.block_energy_mj(), 2.0 * np.array(expect), rtol=1e-5)
    assert t.head_energy_mj(0, "linear") == pytest.approx(2.0 * fake.latency_ms(100, 5), rel=1e-5)
    assert t.params("head", 1, "conv") == 10 and t.params("final", 3, "final") == 7
    assert t.call_overhead_ms == pytest.approx(0.004)
    assert t.source == "measured"
    side = json.loads(path.with_suffix(".json").read_text())
    assert (side["device"], side["model_id"], side["source"]) == ("fakedev", MODEL_ID, "measured")
    assert (side["provider"], side["threads"], side["rows"]) == ("fake", 1, len(t.rows))
    assert side["units"] == UNITS and side["call_overhead_ms"] == pytest.approx(0.004)
    assert datetime.fromisoformat(side["date"]).tzinfo is not None
    assert side["provenance"]["seed"] == 3
    assert side["segments_sum_ms"] == pytest.approx(sum(expect))
    with pytest.raises(ArtefactError, match="no row"):
        t.head_latency_ms(9, "conv")


def test_unknown_device_and_missing_model(written, tmp_path):
    with pytest.raises(UsageError, match="did you mean 'fakedev'"):
        load_table("fakedex", MODEL_ID, tmp_path)
    with pytest.raises(ArtefactError, match=rf"{MODEL_ID}.*hapi profile --device fakedev"):
        load_table("fakedev", "othernet-99999999", tmp_path)


def _break(path: Path, how: str) -> None:
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    if how == "missing column":
        cols = lines[0].rstrip("\n").split(",")
        i = cols.index("latency_p90_ms")
        path.write_text(
            "".join(
                ",".join(c for k, c in enumerate(ln.rstrip("\n").split(",")) if k != i) + "\n"
                for ln in lines
            )
        )
    elif how == "negative latency":
        cells = lines[3].split(",")
        cells[4] = "-0.5"
        lines[3] = ",".join(cells)
        path.write_text("".join(lines))
    elif how == "foreign model_id":
        side = path.with_suffix(".json")
        data = json.loads(side.read_text())
        data["model_id"] = "resnet99-deadbeef"
        side.write_text(json.dumps(data))
    elif how == "truncated":
        path.write_text(text[: len(text) * 2 // 3])
    elif how == "truncated at a line end":
        path.write_text("".join(lines[:-3]))


BAD = {
    "missing column": "latency_p90_ms",
    "negative latency": "line 4: latency_ms",
    "foreign model_id": "resnet99-deadbeef",
    "truncated": "line",
    "truncated at a line end": "sidecar says",
}


@pytest.mark.parametrize("how", list(BAD))
def test_bad_tables_are_refused_by_the_loader(written, tmp_path, how):
    path, _, _ = written
    _break(path, how)
    with pytest.raises(ArtefactError) as info:
        read_table(path, model_id=MODEL_ID)
    assert str(path) in str(info.value) and BAD[how] in str(info.value)


@pytest.mark.parametrize(
    "how", ["missing column", "negative latency", "foreign model_id", "truncated"]
)
def test_bad_tables_exit_2_with_one_line(written, tmp_path, run_cli, how):
    path, _, _ = written
    _break(path, how)
    res = run_cli("devices", "--check", "--profiles", tmp_path)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hapi: error:") and str(path) in lines[0]
    assert "Traceback" not in res.stderr


def test_writer_refuses_bad_rows_and_writes_nothing(tmp_path):
    res = FakeProfiler().profile(fake_manifest())
    res.rows[2]["latency_ms"] = -1.0
    with pytest.raises(ArtefactError, match="latency_ms"):
        write_table(res.rows, res.sidecar, device="d", model_id=MODEL_ID, profiles=tmp_path)
    assert not (tmp_path / "d").exists() or not list((tmp_path / "d").iterdir())


def test_devices_lists_tables_and_specs(written, tmp_path, run_cli):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "board.toml").write_text(
        "flops_per_s = 1e9\nmem_bandwidth_bytes_per_s = 1e9\nop_overhead_us = 1\n"
        "call_overhead_us = 2\nactive_power_w = 3\n"
    )
    res = run_cli("devices", "--profiles", tmp_path)
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["DEVICE", "SOURCE", "MODEL", "DATE", "ERROR", "FILE"]
    rows = {(c[0], c[1]): c for c in (line.split() for line in lines[1:])}
    path, _, _ = written
    date = json.loads(path.with_suffix(".json").read_text())["date"][:19]
    assert rows["fakedev", "measured"] == ["fakedev", "measured", MODEL_ID, date, "-", str(path)]
    assert rows["board", "spec"] == [
        "board", "spec", "-", "-", "datasheet", str(specs / "board.toml")
    ]  # fmt: skip
    # a shipped spec, found through the search path after --profiles
    assert Path(rows["pixel6", "spec"][5]).name == "pixel6.toml"
    assert [c[0] for c in rows.values()] == sorted(c[0] for c in rows.values())
    # the listing is the library's (the CLI only prints it)
    from hapi_dse.profiling.devices import device_rows, format_devices

    assert res.stdout == format_devices(device_rows(tmp_path)) + "\n"


def test_table_module_imports_neither_torch_nor_onnxruntime():
    code = (
        "import sys, hapi_dse.profiling.table, hapi_dse.profiling; "
        "bad = [m for m in ('torch', 'onnxruntime', 'onnx', 'pandas') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# -- hapi profile's modes ----------------------------------------------------------------------
#: what a table's sidecar records as settings, in order (as before there was a mode)
SETTINGS_KEYS = [
    "device", "model", "profiles", "onnx_dir", "export_dir", "export_only", "modelled", "spec",
    "calibrate", "provider", "threads", "runs", "warmup", "rounds", "batch", "energy_cmd",
    "energy_window_s", "exporter", "opset", "seed", "force",
]  # fmt: skip


@pytest.mark.parametrize(
    "flags, mode",
    [
        ({}, "measure"),
        ({"modelled": True}, "modelled"),
        ({"export_only": True, "modelled": True}, "export-only"),
        ({"calibrate": True, "export_only": True, "modelled": True}, "calibrate"),
    ],
)
def test_profile_mode_is_recorded_as_the_flags_that_select_it(flags, mode):
    from hapi_dse.profiling.modes import ProfileConfig, ProfileMode

    cfg = ProfileConfig(mode=ProfileMode.from_flags(**flags))
    assert cfg.mode is ProfileMode(mode) and ProfileConfig(mode=mode).mode is cfg.mode
    settings = cfg.settings()
    assert list(settings) == SETTINGS_KEYS
    for flag in ("export_only", "modelled", "calibrate"):  # the mode's own flag only
        assert settings[flag] is (flag == mode.replace("-", "_"))


def test_profile_modes_are_checked_in_one_place():
    from hapi_dse.profiling.modes import ProfileConfig
    from hapi_dse.profiling.runner import profile_table

    with pytest.raises(UsageError, match="did you mean 'modelled'"):
        ProfileConfig(mode="modeled")
    with pytest.raises(UsageError, match="^export_only needs export_dir"):
        ProfileConfig(mode="export-only").validate()
    with pytest.raises(UsageError, match="^energy_cmd measures energy"):
        ProfileConfig(mode="modelled", energy_cmd="meter").validate()
    with pytest.raises(UsageError, match="writes no table"):
        profile_table(ProfileConfig(mode="calibrate"))
