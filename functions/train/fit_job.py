"""The AWS Batch fit job's entry point (FitCompute fargate or gpu): TrainFunction's own run, in a container.

The TrainingPipeline state machine submits the job with the event the train function would get,
{"exports": {"events": key, "users": key, "items": key}, "config": {...}}, as the FIT_EVENT
environment variable (ContainerOverrides). This calls the same `lambda_handler` with it: the
same loading, fit, evaluation, gate, publication, activation, segments and pruning, so the
artifact and the manifest are those of the Lambda path. A run that failed exits non-zero, which
fails the job and, through submitJob.sync, the pipeline's fit stage.

    docker run -e FIT_EVENT='{"exports": {...}}' -e EVENTS_TABLE=... <image>   # see ./Dockerfile
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAILED = ("failed",)  # a manifest status that is the run's failure; rejected and insufficient_data are outcomes


@dataclass(frozen=True)
class JobContext:
    """What Powertools reads from a Lambda context, for a run outside Lambda."""

    function_name: str = "TrainFunction-batch"
    function_version: str = "$LATEST"
    invoked_function_arn: str = ""
    memory_limit_in_mb: int = 0
    aws_request_id: str = os.environ.get("AWS_BATCH_JOB_ID", "local")

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 4 * 3600 * 1000  # the job definition's AttemptDurationSeconds bounds it


def train_handler() -> Any:
    """app.py beside this file, loaded by path (imported on first use: it reads its settings)."""
    spec = importlib.util.spec_from_file_location("train_app", Path(__file__).with_name("app.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module.lambda_handler


def run(event: dict[str, Any]) -> dict[str, Any]:
    """The train function's handler on `event`: its manifest."""
    return train_handler()(event, JobContext())


def main(environ: dict[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    raw = environ.get("FIT_EVENT")
    if not raw:
        print("fit_job: FIT_EVENT is not set (the state machine sets it with the exports to train from)",
              file=sys.stderr)
        return 2
    try:
        event = json.loads(raw)
    except json.JSONDecodeError as error:
        print(f"fit_job: FIT_EVENT is not JSON: {error}", file=sys.stderr)
        return 2
    manifest = run(event)
    print(json.dumps({"version": manifest.get("version"), "status": manifest.get("status"),
                      "reason": manifest.get("reason")}))
    return 1 if manifest.get("status") in FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
