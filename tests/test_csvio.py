"""The one CSV writer (:func:`hapi_dse.csvio.csv_text`) that every table goes through."""

from __future__ import annotations

import csv
import doctest
import io

import pytest

import hapi_dse.csvio
from hapi_dse.csvio import csv_text


def test_doctest() -> None:
    assert doctest.testmod(hapi_dse.csvio).failed == 0


def test_header_defaults_to_first_row_and_round_trips() -> None:
    rows = [
        {"segment": "block", "position": 0, "head": "", "flops": 10},
        {"segment": "head", "position": 0, "head": "a,b", "flops": 3},
    ]
    text = csv_text(rows)
    assert text.splitlines()[0] == "segment,position,head,flops"
    assert "\r" not in text and text.endswith("\n")
    back = list(csv.DictReader(io.StringIO(text)))
    assert back == [{k: str(v) for k, v in r.items()} for r in rows]  # quoting kept "a,b"


def test_explicit_header_orders_columns_and_allows_no_rows() -> None:
    assert csv_text([], ["a", "b"]) == "a,b\n"
    assert csv_text([{"b": 2, "a": 1}], ["a", "b"]) == "a,b\n1,2\n"
    with pytest.raises(ValueError, match="columns are unknown"):
        csv_text([])
