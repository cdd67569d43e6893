"""Every benchmark still runs: each `benchmarks/*.py`, started with `--quick`, exits 0 and prints.

Benchmarks print figures and assert nothing in the test suite, so nothing else notices when one
stops running: an import moves, a helper's signature changes, a spec field is renamed. Each
benchmark therefore has a `--quick` mode that runs its whole code path on small sizes in
seconds, and this test runs it as a user would (`python benchmarks/NAME.py --quick` from the
repository root, in a process of its own) and checks only that it worked: exit status 0 and
some output. The figures themselves are for the full runs to judge.

The files are found with a glob when the tests are collected, so a new benchmark is covered
without touching this file, and it must come with a `--quick` of its own. Modules whose names
start with an underscore are taken as shared helpers, not benchmarks, and are left out.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = sorted(
    path for path in (REPO_ROOT / "benchmarks").glob("*.py") if not path.name.startswith("_")
)
# A quick run takes up to about 25 s on a 2-core machine; the margin is for a loaded one (CI,
# other tests' node processes), not for a benchmark that has grown slow.
TIMEOUT_SECONDS = 300
TAIL_CHARS = 3000  # of each stream, in a failure's message


def _text(stream: str | bytes | None) -> str:
    """A captured stream as text (a TimeoutExpired may carry bytes even in text mode)."""
    if isinstance(stream, bytes):
        return stream.decode(errors="replace")
    return stream or ""


def _tails(stdout: str | bytes | None, stderr: str | bytes | None) -> str:
    """The last part of both streams, where a traceback or a benchmark's last figure is."""
    return (
        f"--- stderr (tail) ---\n{_text(stderr)[-TAIL_CHARS:]}\n"
        f"--- stdout (tail) ---\n{_text(stdout)[-TAIL_CHARS:]}"
    )


def test_benchmarks_are_found() -> None:
    """An empty glob would make the parametrized test below vanish instead of fail."""
    assert BENCHMARKS, f"no benchmarks/*.py under {REPO_ROOT}"


@pytest.mark.parametrize("benchmark", BENCHMARKS, ids=lambda path: path.name)
def test_benchmark_runs_quick(benchmark: Path) -> None:
    """`--quick` from the repository root, as the README runs a benchmark: exit 0, some output."""
    command = [sys.executable, str(benchmark.relative_to(REPO_ROOT)), "--quick"]
    try:
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_SECONDS,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(command)} still running after {TIMEOUT_SECONDS} s\n"
            f"{_tails(exc.stdout, exc.stderr)}"
        )
    # Plain names, so that pytest's report shows the tails below, not the whole CompletedProcess.
    code, stdout, stderr = result.returncode, result.stdout, result.stderr
    assert code == 0, f"{' '.join(command)} exited with {code}\n{_tails(stdout, stderr)}"
    assert stdout.strip(), f"{' '.join(command)} printed nothing\n{_tails(stdout, stderr)}"
