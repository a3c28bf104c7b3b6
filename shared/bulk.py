"""Helpers for work over millions of objects at once (the nightly run)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collector paused. Bulk work makes millions of long-lived objects and no
    cycles, and the collector would walk them all again and again as they arrive: half the CPU
    of the nightly read (bench/train_export.py) and full collections as long as a segment family's
    computation (shared/segments/batch.py). Nested pauses are fine: only the outermost resumes it."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
