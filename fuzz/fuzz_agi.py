"""atheris harness for the FastAGI codec (acd/agi/codec.py): `make fuzz`, see fuzz/README.md.

An input is the byte stream Asterisk (or anyone reaching the FastAGI port) sends, plus two
control bytes at its end: the first picks the limits and whether a well-formed request
header is put in front (so the fuzzer reaches the reply parser at once), the second how
the stream is cut into reads. Every input is checked with `fuzz.invariants.check_agi`:
only AgiProtocolError, the same events however the stream is cut, a bounded buffer,
nothing after Closed.

    .venv/bin/python -m fuzz.fuzz_agi CORPUS_DIR [SEED_DIR...] -max_total_time=SECONDS
"""

from __future__ import annotations

import sys

import atheris

# Only the codec under test gives coverage feedback (atheris instruments the whole top-level
# package of an include, less the modules excluded by their exact names).
_OTHERS = ["acd.ami", "acd.ami.codec", "acd.ami.client", "acd.agi.server"]
with atheris.instrument_imports(include=["acd.agi.codec"], exclude=_OTHERS):
    from fuzz.invariants import AGI_HEADER, AGI_LIMITS, check_agi, seeded_cuts

_DEFAULT_MAX_LEN = "-max_len=4096"


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    stream, control, seed = data[:-2], data[-2], data[-1]
    limits = AGI_LIMITS[control % len(AGI_LIMITS)]
    if control & 0x04:
        stream = AGI_HEADER + stream
    check_agi(stream, seeded_cuts(seed, len(stream)), limits=limits)


def main() -> None:
    argv = list(sys.argv)
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.append(_DEFAULT_MAX_LEN)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
