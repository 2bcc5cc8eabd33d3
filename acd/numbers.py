"""Callers' numbers in E.164, the one form the store and routing compare.

Pure. A calling number is caller-controlled input: anything that is not a plausible phone
number (empty, "anonymous", quotes, control characters, absurd length) is an unknown caller,
never an error and never passed on as it came.
"""

from __future__ import annotations

import functools

import phonenumbers

__all__ = ["normalise_number", "spoken_digits"]

_MAX_RAW = 40  # longer than any dialable number, with room for separators
_E164_MAX_LENGTH = 16  # '+' and at most 15 digits
_MIN_NATIONAL = 6  # shorter national numbers are internal extensions or service codes


# A call asks for its caller's number several times (routing, records, callback offer), and
# phonenumbers' parse is the dearest step of a route: bounded, so odd numbers cannot grow it.
@functools.lru_cache(maxsize=1024)
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
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    # "Possible" allows some national lengths that exceed E.164's 15 digits with the
    # country code ('10000000000000' in DE reads as +49 and 14 digits): not a number.
    return e164 if len(e164) <= _E164_MAX_LENGTH else None


def spoken_digits(e164: str, region: str) -> str:
    """The digits to read a caller their own number back: as dialled at home in `region`
    (national form, e.g. '030123456'), else with the international prefix ('0044...')."""
    try:
        parsed = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return "".join(c for c in e164 if c.isdigit())
    if phonenumbers.region_code_for_number(parsed) == region.upper():
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return "".join(c for c in national if c.isdigit())
    return "00" + "".join(c for c in e164 if c.isdigit())
