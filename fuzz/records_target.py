"""Atheris (libFuzzer) target: every record decoder, validator and engine handler, one buffer.

Run by hand from the repository (nothing here runs in CI; tests/fuzz is the CI fuzzing):

    .venv/bin/pip install -e '.[fuzz]'     # or: .venv/bin/pip install atheris
    mkdir -p ../fuzz-run && cd ../fuzz-run      # crash files stay out of the checkout
    "$OLDPWD/.venv/bin/python" "$OLDPWD/fuzz/records_target.py" \
        -max_total_time=600 -timeout=10 -artifact_prefix=./

Byte 0 of an input picks the target (tests/fuzz/targets.py TARGETS, in order; the environment
variable DFL_FUZZ_TARGETS="name,name" restricts them). Byte 1 says how the rest is read: as the
input itself (0), or as a mutation program (tests/fuzz/programs.py) over the target's valid seeds:
byte edits (1), field edits on the wire (2) or a splice with another record (3). Starting from
valid records, libFuzzer gets past the parser and the digests without a corpus of its own.

The oracle is the pytest fuzz tests' (targets.py): a refusal must be RecordRejected, a refused
record must leave the engine as it was, and what an engine accepts must pass the full audit. Any
other exception, an AssertionError included, is a finding: libFuzzer stops and writes the input
to a crash-* file under -artifact_prefix. Only node/ and proto/ are instrumented, so coverage
counts the code under test, not the harness.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with atheris.instrument_imports(include=["node", "proto"]):
    from tests.fuzz import programs
    from tests.fuzz.targets import ALL_SEEDS, TARGETS, Target


def _selected() -> tuple[Target, ...]:
    names = [name for name in os.environ.get("DFL_FUZZ_TARGETS", "").split(",") if name]
    if not names:
        return TARGETS
    by_name = {target.name: target for target in TARGETS}
    unknown = sorted(set(names) - set(by_name))
    if unknown:
        raise SystemExit(f"unknown DFL_FUZZ_TARGETS {unknown}; known: {sorted(by_name)}")
    return tuple(by_name[name] for name in names)


SELECTED = _selected()
MODES: tuple[Callable[[tuple[bytes, ...], bytes], bytes], ...] = (
    lambda seeds, rest: rest,
    programs.byte_edits,
    programs.field_edits,
    lambda seeds, rest: programs.splice(seeds, ALL_SEEDS, rest),
)


def test_one_input(data: bytes) -> None:
    """One input through one target; the target raises on anything that is a finding."""
    target = SELECTED[data[0] % len(SELECTED)] if data else SELECTED[0]
    mode = MODES[data[1] % len(MODES)] if len(data) > 1 else MODES[0]
    target.run(mode(target.seeds, data[2:]))


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
