"""The local stack's train function: TrainFunction's own handler, run in a background thread.

On AWS the admin function invokes the train function asynchronously and answers 202 at once;
the gateway gives the admin function this trainer instead, so POST /models/train behaves the
same here: the run goes on after the answer and GET /models follows it. The event is the one
the admin function sends on AWS, {"config": {...overrides}, "version": the version it listed}.

One run at a time, as TrainFunction's ReservedConcurrentExecutions: 1 makes it on AWS. The admin
function already refuses a start while a manifest says "training" or another start is on its way
(shared/storage/training_start.py); this also refuses one after the run has its outcome while the
segments are written (on AWS, Lambda would queue such a second run behind the first): a 409.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable
from typing import Any

from shared.errors import Conflict

Handler = Callable[[dict[str, Any], Any], Any]


class LocalTrainer:
    def __init__(self, function_name: str, load: Callable[[], Handler], context: Callable[[], Any]) -> None:
        self.function_name = function_name
        self._load = load  # called in the run's thread: importing the ML stack takes seconds
        self._context = context  # a fresh Lambda context per run, with the function's own timeout
        self._handler: Handler | None = None
        self._lock = threading.Lock()
        self._run: threading.Thread | None = None

    @property
    def running(self) -> bool:
        run = self._run
        return run is not None and run.is_alive()

    def start(self, overrides: dict[str, Any], version: str) -> None:
        with self._lock:
            if self.running:
                # Before its manifest exists, or after it has its outcome and the segments are written.
                raise Conflict("a training run is starting or finishing; follow it with GET /models "
                               "and start another when it has finished")
            self._run = threading.Thread(target=self._train, args=({"config": overrides, "version": version},),
                                         name=f"{self.function_name}-run", daemon=True)
            self._run.start()

    def wait(self, timeout: float | None = None) -> bool:
        """True once no run is going on (tests wait so a run never outlives their tables)."""
        run = self._run
        if run is not None:
            run.join(timeout)
        return not self.running

    def _train(self, event: dict[str, Any]) -> None:
        try:
            if self._handler is None:
                self._handler = self._load()
            self._handler(event, self._context())
        except BaseException:  # noqa: BLE001 - a run that dies leaves its manifest "training", as on AWS
            traceback.print_exc()
