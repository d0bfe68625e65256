"""Generated files are the same bytes each time: provenance's date follows
$SOURCE_DATE_EPOCH when it is set (``make docs`` sets it; #23.7)."""

from __future__ import annotations

import pytest

from hapi_dse.provenance import provenance, utc_now


def test_source_date_epoch_fixes_the_created_date(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert utc_now() == "2023-11-14T22:13:20+00:00"
    assert provenance(seed=0)["created"] == "2023-11-14T22:13:20+00:00"
    for bad in ("", "soon", "-5", "9" * 40):  # ignored: the real time
        monkeypatch.setenv("SOURCE_DATE_EPOCH", bad)
        assert utc_now().startswith("20") and utc_now() != "2023-11-14T22:13:20+00:00"
