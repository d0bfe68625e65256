"""Quoting a library's exception in a one-line message (hapi_dse.errors.first_line)."""

from __future__ import annotations

from hapi_dse.errors import first_line


def test_first_line_takes_the_first_non_empty_line() -> None:
    assert first_line(ValueError("\n  shape mismatch  \nsecond line")) == "shape mismatch"


def test_first_line_of_an_empty_message_is_the_type_name() -> None:
    # the inlined idiom it replaces raised IndexError on RuntimeError("") in trainer.py
    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(KeyError()) == "KeyError"


def test_first_line_is_cut_to_the_limit() -> None:
    text = first_line(OSError("x" * 500), limit=50)
    assert len(text) == 50 and text.endswith("...")
