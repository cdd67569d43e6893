"""A test hook: hold a node inside a chain append, so that a test can kill it right there.

A crash test that kills a node at a moment chosen by a timer lands in the middle of an append
only by luck: the append takes a millisecond. With `NodeConfig.hold_append` set, the store calls
`hold` inside the append's SQLite transaction, after the block's rows are written and before the
commit. If the marker file is missing, `hold` writes it (the height being appended, so the test
knows what must not be in the store after the kill) and sleeps; the test waits for the file,
kills the node and checks that the half-written block is gone. A marker that exists leaves
appends alone, so each deletion arms the hook for one append.

The node's loop is blocked while it holds (the store is the loop's): that is the point, nothing
else may happen to the chain in between. Only the node's configuration sets the hook.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

HOLD_SECONDS = 60.0  # long enough for a test to see the marker and kill; then the append goes on


def hold_inside_append(marker: Path, seconds: float = HOLD_SECONDS) -> Callable[[int], None]:
    """What ChainStore.inside_append calls with the height it is appending."""
    log.warning("test hook: an append will hold whenever %s is missing", marker)

    def hold(height: int) -> None:
        if marker.exists():
            return
        log.warning("test hook: holding inside the append of block %d for %.0f s", height, seconds)
        part = marker.with_name(marker.name + ".part")
        part.write_text(f"{height}\n")
        os.replace(part, marker)  # whole or absent: the test reads the height as soon as it exists
        time.sleep(seconds)

    return hold
