"""Helpers for work over millions of objects at once (the nightly run)."""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


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


def cpus() -> int:
    """The CPUs this process may run on (a Lambda's share of its host, a Batch job's vCPUs)."""
    return len(os.sched_getaffinity(0))


def mapped_on_threads(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """[function(item) for item in items], on one thread per CPU, in order. Worth it for numpy
    and scipy's work on large arrays, which lets go of the GIL in its loops (BLAS stays on one
    thread for implicit's sake, so it is these threads that share the CPUs)."""
    with ThreadPoolExecutor(max_workers=cpus()) as pool:
        return list(pool.map(function, items))
