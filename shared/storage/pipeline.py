"""The TrainingPipeline state machine (the export path, docs/operations.md): start a run, read the latest.

On the export path the nightly run and POST /models/train are executions of the state machine
(template.yaml TrainingPipeline, statemachines/training.asl.json): export the tables, turn the
events export into the window's interactions with Athena, then fit. GET /models shows the latest execution with the stage it is in or failed in,
read from Step Functions itself (ListExecutions, DescribeExecution, GetExecutionHistory), so the
status is there even when the run died before any model manifest was written.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, Field

from shared.errors import Conflict, StorageUnavailable
from shared.storage.dynamo import CLIENT_CONFIG

# Every state of statemachines/training.asl.json by the stage it belongs to
# (tests/unit/test_training_pipeline_state_machine.py checks that none is missing).
TABLES = ("events", "users", "items")
CHECK = "check"
STAGE_OF_STATE: dict[str, str | None] = {
    # A scheduled run's check: until it is through, it is no run to give way to (it gives way itself).
    "Scheduled?": CHECK, "Check for another run": CHECK, "Another run?": CHECK,
    "Record the start failure": "start", "Skipped": "skipped",
    "Read the run's settings": "start", "No overrides": "start", "Start the run": "start",
    "Plan the exports": "export", "Export the tables": "export", "Record the export failure": "export",
    "Full or incremental events export?": "export", "Export events since the last export": "export",
    **{name: "export" for table in TABLES for name in (
        f"Export {table}", f"Wait for the {table} export", f"Check the {table} export",
        f"Is the {table} export done?", f"{table.capitalize()} exported", f"{table.capitalize()} export failed")},
    "Plan the query": "query", "Create the events table": "query", "Add the exports to the table": "query",
    "Query the interactions": "query", "Query the ids with events": "query",
    "Drop the events table": "query", "Record the query failure": "query",
    "Fit where FitCompute says": "fit", "Fit in Lambda": "fit", "Prepare the fit job": "fit",
    "Fit on AWS Batch": "fit", "Did the run finish?": "fit", "The run failed": "fit", "Record the fit failure": "fit",
    "Trained": "done",
    "Failed": None,  # where every recorded failure ends: the state before it names the stage
}
HISTORY_EVENTS_READ = 100  # newest first: the stage is among the last few states entered
# Step Functions' and Lambda's faults worth a 503 (the caller tries again), after botocore's retries.
TRANSIENT = {"ThrottlingException", "TooManyRequestsException", "ServiceUnavailable", "InternalServerError",
             "ServiceException", "EC2ThrottledException", "ResourceNotReadyException"}


class PipelineRun(BaseModel):
    """The latest execution of the TrainingPipeline state machine."""

    name: str = Field(description="The execution's name (the Batch job and the export folder carry it too)")
    status: str = Field(description="RUNNING, SUCCEEDED, FAILED, TIMED_OUT or ABORTED, as Step Functions says")
    stage: str | None = Field(
        default=None, description="start, export (the tables to S3), query (Athena: the events export into the "
                                  "window's interactions), fit (fit, evaluation, gate, publish and activation: "
                                  "the train function's run), done; for a scheduled run, check (whether another "
                                  "run goes first) and skipped (one did: `skipped` says which): where a running "
                                  "run is, or where a failed one failed")
    started_at: datetime
    stopped_at: datetime | None = None
    error: str | None = Field(default=None, description="A failed run's error, e.g. ExportFailed, TrainingFailed")
    cause: str | None = Field(default=None, description="Why, in the failing service's words")
    version: str | None = Field(default=None, description="The model version a finished Lambda fit trained")
    skipped: str | None = Field(default=None, description="Why a scheduled run trained nothing: the run it found "
                                                          "starting or in progress")


@lru_cache(maxsize=1)
def client() -> Any:
    """Created on first use (stand-ins and moto start first in tests), reused while warm."""
    return boto3.client("stepfunctions", config=CLIENT_CONFIG)


class TrainingPipeline:
    """Starts runs of the state machine (the admin function's trainer on the export path)."""

    def __init__(self, state_machine_arn: str) -> None:
        self.state_machine_arn = state_machine_arn

    def start(self, overrides: dict[str, Any]) -> str:
        """Starts a run with these training overrides; a 409 while one is running (a second would
        export the tables again and race the first to activate). A scheduled run still in its
        check is none: the start claim the caller holds makes it give way. Every run in progress
        is looked at: a newer one in its check must not hide an older one exporting."""
        running = self._in_progress(waiting={CHECK})
        if running:
            execution, stage = running[0]
            raise Conflict(f"training pipeline run {execution['name']} is in its {stage or 'first'} stage "
                           f"(started {execution['startDate']:%Y-%m-%d %H:%M:%S} UTC); follow it with GET /models")
        name = f"train-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        with service_faults("Step Functions", "start the training pipeline"):
            return client().start_execution(stateMachineArn=self.state_machine_arn, name=name,
                                            input=json.dumps({"config": overrides}))["executionArn"]

    def latest(self) -> PipelineRun | None:
        """The run in progress, else the newest: a scheduled run that skipped itself beside a
        running one ends first, and must not hide it (nor let a start through)."""
        with service_faults("Step Functions", "read the training pipeline's runs"):
            found = self._running(1) or client().list_executions(stateMachineArn=self.state_machine_arn,
                                                                 maxResults=1)["executions"]
            if not found:
                return None
            execution = client().describe_execution(executionArn=found[0]["executionArn"])
            history = self._history(execution["executionArn"])
        output = _output(execution.get("output"))
        return PipelineRun(name=execution["name"], status=execution["status"], stage=_stage(history),
                           started_at=execution["startDate"], stopped_at=execution.get("stopDate"),
                           error=execution.get("error"), cause=execution.get("cause"),
                           version=_text(output.get("fit"), "version"), skipped=_text(output.get("start"), "skipped"))

    def others_in_progress(self, execution_arn: str) -> list[str]:
        """The names of the other runs in progress that are past a scheduled run's check: those a
        scheduled run holding the start claim gives way to, whenever they started (a start
        let through while its own check waited out Lambda's throttling is one). One still in
        its check (or in no state yet) is not: it meets the claim and gives way itself; two
        waiting on each other would train nothing."""
        return [execution["name"] for execution, _ in self._in_progress({None, CHECK}, execution_arn)]

    def _in_progress(self, waiting: set[str | None],
                     other_than: str | None = None) -> list[tuple[dict[str, Any], str | None]]:
        """The runs in progress (but `other_than`), newest first, each with its stage, less those
        whose stage is in `waiting`."""
        with service_faults("Step Functions", "read the training pipeline's runs in progress"):
            running = [e for e in self._running(100) if e["executionArn"] != other_than]
            staged = [(e, _stage(self._history(e["executionArn"]))) for e in running]
        return [(execution, stage) for execution, stage in staged if stage not in waiting]

    def _history(self, execution_arn: str) -> list[dict[str, Any]]:
        """The newest events of a run, newest first."""
        return client().get_execution_history(executionArn=execution_arn, reverseOrder=True,
                                              maxResults=HISTORY_EVENTS_READ)["events"]

    def _running(self, most: int) -> list[dict[str, Any]]:
        return client().list_executions(stateMachineArn=self.state_machine_arn, statusFilter="RUNNING",
                                        maxResults=most)["executions"]


def execution_finished(execution_arn: str) -> bool:
    """Whether a run of the pipeline is known to be over. Step Functions describes a new execution
    eventually: one not found yet is not over."""
    try:
        with service_faults("Step Functions", "read a training pipeline run"):
            return client().describe_execution(executionArn=execution_arn)["status"] != "RUNNING"
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") == "ExecutionDoesNotExist":
            return False
        raise


def _stage(history: list[dict[str, Any]]) -> str | None:
    """The stage of the newest state entered (newest first): for a failed run, its record state's."""
    for event in history:
        stage = STAGE_OF_STATE.get((event.get("stateEnteredEventDetails") or {}).get("name"))
        if stage is not None:
            return stage
    return None


def _output(output: str | None) -> dict[str, Any]:
    try:
        read = json.loads(output or "{}")
    except ValueError:
        return {}
    return read if isinstance(read, dict) else {}


def _text(part: Any, key: str) -> str | None:
    """part[key] when the output's part is an object and that is a text; None otherwise."""
    value = part.get(key) if isinstance(part, dict) else None
    return value if isinstance(value, str) else None


@contextmanager
def service_faults(service: str, action: str) -> Iterator[None]:
    """Throttling or an unreachable endpoint after botocore's retries: a 503, as for DynamoDB."""
    try:
        yield
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in TRANSIENT:
            raise StorageUnavailable(f"{action}: {service} is throttling or unavailable") from error
        raise
    except BotoCoreError as error:
        raise StorageUnavailable(f"{action}: {service} is unreachable") from error
