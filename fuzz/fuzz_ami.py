"""atheris harness for the AMI codec (acd/ami/codec.py): `make fuzz`, see fuzz/README.md.

An input is the byte stream a peer sends, plus two control bytes at its end: the first
picks the message limit, whether a banner is expected and whether one is put in front (so
the fuzzer need not find it), the second how the stream is cut into reads. Every input is
checked with `fuzz.invariants.check_ami`: only AmiProtocolError, the same messages however
the stream is cut and by either parse path, a bounded buffer, nothing after Closed.

    .venv/bin/python -m fuzz.fuzz_ami CORPUS_DIR [SEED_DIR...] -max_total_time=SECONDS
"""

from __future__ import annotations

import sys

import atheris

# Only the codec under test gives coverage feedback (atheris instruments the whole top-level
# package of an include, less the modules excluded by their exact names).
_OTHERS = ["acd.agi", "acd.agi.codec", "acd.agi.server", "acd.ami.client"]
with atheris.instrument_imports(include=["acd.ami.codec"], exclude=_OTHERS):
    from fuzz.invariants import AMI_BANNER, AMI_LIMITS, check_ami, seeded_cuts

_DEFAULT_MAX_LEN = "-max_len=4096"


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    stream, control, seed = data[:-2], data[-2], data[-1]
    limit = AMI_LIMITS[control % len(AMI_LIMITS)]
    expect_banner = bool(control & 0x04)
    if expect_banner and control & 0x08 and not stream.startswith(AMI_BANNER[:22]):
        stream = AMI_BANNER + stream
    check_ami(stream, seeded_cuts(seed, len(stream)), limit=limit, expect_banner=expect_banner)


def main() -> None:
    argv = list(sys.argv)
    if not any(arg.startswith("-max_len=") for arg in argv):
        argv.append(_DEFAULT_MAX_LEN)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
