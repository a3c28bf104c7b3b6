"""What warm functions keep from the model bucket, looked at again at most every N seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Every:
    """Calls `refresh` when at least `seconds` have passed since it last did, one thread at a time.

    A warm function keeps the active model (or what it needs of it) in memory and checks the
    active-version pointer this often, so a new version rolls out without a redeploy.
    """

    def __init__(self, seconds: float, refresh: Callable[[], None]) -> None:
        self.seconds = seconds
        self.refresh = refresh
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.seconds:
                self._checked_at = time.monotonic()
                self.refresh()
