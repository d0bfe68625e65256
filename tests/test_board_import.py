"""``hapi import-profile``: a table measured on a board comes home in one command, checked
(format, the device its sidecar names, the model id) and installed into
``--profiles DIR/DEVICE/`` atomically; an installed table is replaced only with
``--overwrite``, and a bad file is one error line that leaves nothing behind (#12)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from hapi_dse.profiling.table import load_table, write_table

MODEL_ID = "tinynet-0123abcd"
DEVICE = "my-pi4"


def board_table(out: Path, *, latency: float = 0.05, model_id: str = MODEL_ID) -> Path:
    """What 'hapi profile --onnx-dir SEG --device my-pi4 --profiles OUT' leaves on a board:
    OUT/my-pi4/MODEL_ID.csv and its sidecar (2 blocks, a linear head after each, a final)."""
    rows = [
        {"segment": seg, "position": pos, "head": head, "batch": 1, "latency_ms": latency,
         "latency_p90_ms": latency * 1.2, "energy_mj": 0.1, "flops": 1000, "params": 10,
         "runs": 50, "source": "measured", "energy_source": "modelled"}
        for seg, pos, head in [("block", 0, ""), ("block", 1, ""), ("head", 0, "linear"),
                               ("head", 1, "linear"), ("final", 1, "final")]
    ]  # fmt: skip
    return write_table(
        rows, {"call_overhead_ms": 0.01}, device=DEVICE, model_id=model_id, profiles=out
    )


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_a_board_table_is_installed_as_it_was_measured(tmp_path, run_cli):
    src = board_table(tmp_path / "board")
    home = tmp_path / "home"
    res = run_cli("import-profile", src, "--profiles", home)
    assert res.exit_code == 0, res.stderr
    dest = home / DEVICE / f"{MODEL_ID}.csv"
    assert res.stdout.strip() == f"measured table of {MODEL_ID} on {DEVICE} -> {dest}"
    assert dest.read_bytes() == src.read_bytes()
    side = json.loads(dest.with_suffix(".json").read_text())
    board_side = json.loads(src.with_suffix(".json").read_text())
    assert {k: v for k, v in side.items() if k != "imported"} == board_side
    inputs = side["imported"]["inputs"]
    assert inputs["table"]["sha256"] == _sha(src)
    assert inputs["sidecar"]["sha256"] == _sha(src.with_suffix(".json"))
    assert side["imported"]["settings"] == {"profiles": str(home), "overwrite": False}
    table = load_table(DEVICE, MODEL_ID, home)  # what a search reads
    assert table.source == "measured" and table.num_blocks == 2
    assert run_cli("devices", "--check", "--profiles", home).exit_code == 0


def test_the_device_comes_from_the_sidecar_and_a_directory_stands_for_its_tables(tmp_path, run_cli):
    src = board_table(tmp_path / "board")
    other = board_table(tmp_path / "board", model_id="othernet-4567")
    copied = tmp_path / "scp-ed"  # copied home under another folder name
    copied.mkdir()
    for p in (src, src.with_suffix(".json"), other, other.with_suffix(".json")):
        (copied / p.name).write_bytes(p.read_bytes())
    res = run_cli("import-profile", copied, "--profiles", tmp_path / "home")
    assert res.exit_code == 0, res.stderr
    assert sorted(p.name for p in (tmp_path / "home" / DEVICE).iterdir()) == sorted(
        [f"{MODEL_ID}.csv", f"{MODEL_ID}.json", "othernet-4567.csv", "othernet-4567.json"]
    )


def _truncate(csv: Path) -> None:
    csv.write_text(csv.read_text()[:-40])


def _rename(csv: Path) -> None:  # the file says one model, its sidecar another
    for p in (csv, csv.with_suffix(".json")):
        p.rename(p.with_name("resnet99-deadbeef" + p.suffix))


def _edit_sidecar(**changes: object):
    def edit(csv: Path) -> None:
        side = csv.with_suffix(".json")
        doc = json.loads(side.read_text())
        doc.update(changes)
        doc = {k: v for k, v in doc.items() if v is not None}
        side.write_text(json.dumps(doc))

    return edit


def _no_sidecar(csv: Path) -> None:
    csv.with_suffix(".json").unlink()


BAD = {
    "truncated csv": (_truncate, "truncated"),
    "model id of another file": (_rename, "table is for model 'tinynet-0123abcd'"),
    "sidecar device not a plain name": (_edit_sidecar(device="../etc"), "not a plain name"),
    "sidecar names no device": (_edit_sidecar(device=None), "names no device"),
    "sidecar says modelled": (_edit_sidecar(source="modelled"), "sidecar says modelled"),
    "row count": (_edit_sidecar(rows=9), "sidecar says 9"),
    "no sidecar": (_no_sidecar, "sidecar tinynet-0123abcd.json is missing"),
}


@pytest.mark.parametrize("how", list(BAD))
def test_a_bad_table_is_one_line_and_nothing_is_installed(tmp_path, run_cli, how):
    good = board_table(tmp_path / "good", model_id="goodnet-89ab")
    bad = board_table(tmp_path / "board")
    breaker, needle = BAD[how]
    breaker(bad)
    bad = next((tmp_path / "board" / DEVICE).glob("*.csv"))
    home = tmp_path / "home"
    res = run_cli("import-profile", good, bad, "--profiles", home)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hapi: error:"), res.stderr
    assert needle in lines[0] and str(bad.with_suffix("")) in lines[0]
    assert not home.exists()  # not even the good table: all are checked first


def test_an_installed_table_is_replaced_only_with_overwrite(tmp_path, run_cli):
    home = tmp_path / "home"
    first = board_table(tmp_path / "first", latency=0.05)
    assert run_cli("import-profile", first, "--profiles", home).exit_code == 0
    dest = home / DEVICE / f"{MODEL_ID}.csv"
    before = {p.name: p.read_bytes() for p in dest.parent.iterdir()}
    again = board_table(tmp_path / "again", latency=0.07)  # the board measured again
    res = run_cli("import-profile", again, "--profiles", home)
    assert res.exit_code == 2
    assert res.stderr.strip() == (
        f"hapi: error: {dest} exists (a table of {MODEL_ID} on {DEVICE}); pass --overwrite "
        "to replace it, or --profiles OTHER_DIR to keep it"
    )
    assert {p.name: p.read_bytes() for p in dest.parent.iterdir()} == before
    res = run_cli("import-profile", again, "--profiles", home, "--overwrite")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.strip().endswith(", replacing the previous one")
    assert dest.read_bytes() == again.read_bytes() != before[dest.name]
    assert sorted(p.name for p in dest.parent.iterdir()) == sorted(before)  # no scratch left
    assert load_table(DEVICE, MODEL_ID, home).rows["latency_ms"].iat[0] == pytest.approx(0.07)


def test_a_table_cannot_be_imported_onto_itself(tmp_path, run_cli):
    src = board_table(tmp_path / "profiles")
    res = run_cli("import-profile", src, "--profiles", tmp_path / "profiles", "--overwrite")
    assert res.exit_code == 2 and "is already installed there" in res.stderr
    assert load_table(DEVICE, MODEL_ID, tmp_path / "profiles").num_blocks == 2
