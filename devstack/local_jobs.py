"""The local stack's asynchronous self-invocation: a function's background job, run in a thread.

On AWS the Campaigns function answers POST /campaigns and invokes itself asynchronously with
{"campaign_id": ...}; the gateway gives it this runner instead, which runs the module's own job
function (`run`) in a thread, so GET /campaigns/{id} follows it here as it does there.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class LocalJobs:
    def __init__(self, run: Callable[[str], Any]) -> None:
        self._run = run
        self._threads: list[threading.Thread] = []

    def start(self, job_id: str) -> None:
        thread = threading.Thread(target=self._run, args=(job_id,), name=f"job-{job_id}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once no job is running (tests wait so a job never outlives their tables)."""
        for thread in list(self._threads):
            thread.join(timeout)
        return not any(thread.is_alive() for thread in self._threads)
