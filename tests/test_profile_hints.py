"""A missing table's message says how to make one that describes the device: 'hapi profile'
times the machine it runs on, so only host is measured here (#12)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hapi_dse.errors import ArtefactError
from hapi_dse.profiling.devices import find_table, how_to_profile


def test_host_is_measured_here() -> None:
    assert how_to_profile("host", has_spec=False) == (
        "measure this machine with 'hapi profile --device host --model RUN'"
    )


def test_a_device_with_a_spec_is_modelled_or_measured_on_itself() -> None:
    text = how_to_profile("pixel6", has_spec=True)
    assert text.startswith("model it from pixel6's spec with 'hapi profile --device pixel6 --mo")
    assert "--onnx-dir SEG' there" in text
    assert "'hapi profile --device pixel6 --model RUN'" not in text  # would time this machine


def test_a_device_without_a_spec_is_measured_on_itself(tmp_path: Path) -> None:
    (tmp_path / "board7").mkdir()
    with pytest.raises(ArtefactError) as e:
        find_table("board7", "resnet20-00000000", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "no profile table for model resnet20-00000000" in msg
    assert "measure it on the board7 itself" in msg and "--modelled" in msg
    assert "--device board7 --model RUN" not in msg


def test_shipped_spec_devices_suggest_modelling(tmp_path: Path) -> None:
    with pytest.raises(ArtefactError, match="model it from pixel6's spec"):
        find_table("pixel6", "resnet20-00000000", tmp_path)
