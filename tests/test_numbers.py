"""Callers' numbers: normalised to E.164, hostile input is an unknown caller."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from acd.numbers import normalise_number


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("030 1234567", "+49301234567"),
        ("+49 30 1234567", "+49301234567"),
        ("0049301234567", "+49301234567"),
        ("+1 (416) 555-0199", "+14165550199"),
        ("", None),
        ("anonymous", None),
        ("Anonymous", None),
        ('"; DROP TABLE tickets; --', None),
        ("0301234567\n", "+49301234567"),
        ("030\n1234567", None),
        ("9" * 200, None),
        ("201", None),  # an internal extension is no E.164 number
        ("10000000000000", None),  # "possible" in DE, but +49 and 14 digits exceed E.164
    ],
)
def test_normalise(raw: str, expected: str | None) -> None:
    assert normalise_number(raw, "DE") == expected


@given(st.text(max_size=300))
def test_any_input_gives_e164_or_none(raw: str) -> None:
    result = normalise_number(raw, "DE")
    assert result is None or (result.startswith("+") and result[1:].isdigit() and len(result) <= 16)
