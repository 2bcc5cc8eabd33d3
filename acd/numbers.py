"""Callers' numbers in E.164, the one form the store and routing compare.

Pure. A calling number is caller-controlled input: anything that is not a plausible phone
number (empty, "anonymous", quotes, control characters, absurd length) is an unknown caller,
never an error and never passed on as it came.
"""

from __future__ import annotations

import phonenumbers

__all__ = ["normalise_number"]

_MAX_RAW = 40  # longer than any dialable number, with room for separators
_MIN_NATIONAL = 6  # shorter national numbers are internal extensions or service codes


def normalise_number(raw: str, region: str) -> str | None:
    """``raw`` as E.164 (``+4930...``), or None when it is no usable number.

    Numbers without a country code are read in ``region`` (ISO 3166-1 alpha-2); a leading
    "00" is read as an international prefix. Short internal extensions are not E.164 and
    give None.
    """
    text = raw.strip()
    if not text or len(text) > _MAX_RAW or not text.isascii():
        return None
    if any(not (c.isdigit() or c in "+-() ./") for c in text):
        return None
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        parsed = phonenumbers.parse(text, region.upper())
    except phonenumbers.NumberParseException:
        return None
    if (
        not phonenumbers.is_possible_number(parsed)
        or len(str(parsed.national_number)) < _MIN_NATIONAL
    ):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
