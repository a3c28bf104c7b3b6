"""What warm functions keep from the model bucket, looked at again at most every N seconds."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from shared.errors import StorageUnavailable

# After a read that storage refused: how soon it is tried again (the Retry-After of the 503s meanwhile).
FAULT_RETRY_SECONDS = 2


class Every:
    """Calls `refresh` when at least `seconds` have passed since it last did, one thread at a time.

    A warm function keeps the active model (or what it needs of it) in memory and checks the
    active-version pointer this often, so a new version rolls out without a redeploy.

    A `refresh` that raises StorageUnavailable (S3 throttled or down) leaves what is `held` (read
    before) serving. When nothing is held (`held()` is None) the call raises it, so that the request
    is a 503 rather than an answer made as if nothing had ever been published, and the read is
    tried again after FAULT_RETRY_SECONDS, not after `seconds`.
    """

    def __init__(self, seconds: float, refresh: Callable[[], None], held: Callable[[], object]) -> None:
        self.seconds = seconds
        self.refresh = refresh
        self.held = held
        self._fault: StorageUnavailable | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            if time.monotonic() - self._checked_at >= self.seconds:
                self._checked_at = time.monotonic()
                try:
                    self.refresh()
                    self._fault = None
                except StorageUnavailable as fault:
                    self._fault = fault
                    if self.held() is None:
                        self._checked_at -= max(0.0, self.seconds - FAULT_RETRY_SECONDS)
            if self._fault is not None and self.held() is None:
                raise StorageUnavailable(self._fault.message, retry_after_seconds=max(1, math.ceil(FAULT_RETRY_SECONDS)))
