"""The export path's state machine, run: statemachines/training.asl.json with template.yaml's substitutions.

Step Functions, DynamoDB's export and AWS Batch cannot run here, so the definition runs on
devstack/step_functions.py's interpreter, each task on a stand-in that speaks the service's
format: the export writes a real export of the moto table into the (moto) export bucket in
DynamoDB's own layout, and the fit is TrainFunction's real handler, called as lambda:invoke calls
it or through the Batch job's entry point (functions/train/fit_job.py). The IAM side is read from
template.yaml: every call a run makes must be granted to the state machine's role.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.gateway import LambdaContext
from devstack.step_functions import (Execution, Interpreter, LocalStepFunctions, StatesError, TaskFailed, evaluate_intrinsic,
                                     load_definition, payload, read_path, write_path)
from devstack.template import PROJECT_ROOT, resolve_conditions, resources
from shared.config import get_settings
from shared.errors import Conflict, StorageUnavailable
from shared.storage import pipeline as pipeline_store
from shared.storage.blobs import S3Blobs
from shared.storage.exports import Export, table_items, write_export
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore
from shared.storage.training_start import TrainingStarts
from shared.storage.training_data import read_nightly
from shared.training.config import TrainingConfig
from tests.conftest import MODEL_BUCKET, TEMPLATE
from tests.export_files import incremental_changes, write_changes
from tests.training_data import END, store_events
from tests.unit.test_export_training import seeded  # noqa: F401 - the fixture
from tests.unit.test_training_reads_once import train_handler

DEFINITION = PROJECT_ROOT / "statemachines" / "training.asl.json"
EXPORT_BUCKET = "test-exports"
REGION, ACCOUNT, STACK = "us-east-1", "123456789012", "shop-recs"
EXPORT_PATH = {"TrainingPath": "export"}
TABLE_KEYS = {"EventsTable": ("user_id", "event_id"), "UsersTable": ("user_id",), "ItemsTable": ("item_id",)}


def deployed(parameters: dict[str, str]) -> dict[str, Any]:
    return resolve_conditions(TEMPLATE, parameters)


def pipeline_resource(parameters: dict[str, str]) -> dict[str, Any]:
    return resources(deployed(parameters), "AWS::Serverless::StateMachine")["TrainingPipeline"]


class Arns:
    """What the template's intrinsics give on AWS, for the moto tables of one test."""

    def __init__(self, tables: dict[str, str], parameters: dict[str, str]) -> None:
        self.parameters = parameters
        self.names = {**tables, "ExportBucket": EXPORT_BUCKET, "ModelBucket": MODEL_BUCKET,
                      "ExportQueryWorkGroup": f"{STACK}-training", "ExportQueryDatabase": "shoprecs_exports",
                      "TrainFunction": "shop-recs-TrainFunction", "TrainingPipeline": f"{STACK}-training",
                      "VisitorTokenSecret": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:visitor-key"}
        prefix = f"arn:aws:{{}}:{REGION}:{ACCOUNT}:"
        self.arns = {**{logical: prefix.format("dynamodb") + f"table/{name}" for logical, name in tables.items()},
                     "ExportBucket": f"arn:aws:s3:::{EXPORT_BUCKET}", "ModelBucket": f"arn:aws:s3:::{MODEL_BUCKET}",
                     "TrainFunction": prefix.format("lambda") + "function:shop-recs-TrainFunction",
                     "TrainingPipeline": prefix.format("states") + f"stateMachine:{STACK}-training",
                     "FitJobQueue": prefix.format("batch") + "job-queue/fit",
                     "FitFargateJobDefinition": prefix.format("batch") + "job-definition/fit-fargate:1",
                     "FitGpuJobDefinition": prefix.format("batch") + "job-definition/fit-gpu:1",
                     "ShopEventsBus": prefix.format("events") + f"event-bus/{STACK}-events"}
        self.pseudo = {"AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
                       "AWS::StackName": STACK}

    def render(self, value: Any) -> str:
        if isinstance(value, str):
            return value
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            assert attribute == "Arn", value
            return self.arns[logical_id]
        if "Ref" in value:
            name = value["Ref"]
            if name in self.pseudo:
                return self.pseudo[name]
            if name in self.arns and name.startswith(("Fit", "TrainingPipeline")):  # Ref gives their ARN
                return self.arns[name]
            if name in self.names:
                return self.names[name]
            return self.parameters.get(name) or str(TEMPLATE["Parameters"][name]["Default"])
        if "Fn::Sub" in value:
            def one(match: re.Match[str]) -> str:
                name = match.group(1)
                if name.endswith(".Arn"):
                    return self.arns[name[:-4]]
                return self.render({"Ref": name})
            return re.sub(r"\$\{([\w:.]+)\}", one, value["Fn::Sub"])
        raise AssertionError(f"an intrinsic this test cannot render: {value}")


class DynamoDBExports:
    """ExportTableToPointInTime and DescribeExport: a full export of the moto table, written in
    DynamoDB's layout under the requested prefix (<prefix>/AWSDynamoDB/<id>/...), reported
    IN_PROGRESS on the first DescribeExport and COMPLETED (its summary written last) after."""

    def __init__(self, workdir: Path, names: dict[str, str]) -> None:
        self.workdir = workdir
        self.tables = {name: logical for logical, name in names.items()}
        self.exports: dict[str, dict[str, Any]] = {}
        self.fail: dict[str, str] = {}  # table logical id -> FailureMessage
        self.throttle: dict[str, int] = {}  # table logical id -> requests refused before one is taken
        self.on_first_describe: list[Any] = []
        self.snapshots: dict[str, dict[str, dict[str, Any]]] = {}  # each table's items at its last export
        self.requests: list[dict[str, Any]] = []

    def incremental(self, local: Export, logical: str, items: dict[str, dict[str, Any]],
                    period: dict[str, Any]) -> Export:
        """The changes since the table's last export, written over `local` as an incremental export:
        a NewImage for each new or changed item, Keys alone for a deleted one."""
        assert period["ExportViewType"] == "NEW_IMAGE", period
        lines = incremental_changes(self.snapshots[logical], items, TABLE_KEYS[logical])
        data = local.data_files()[0]
        write_changes(data, lines)
        for extra in local.data_files()[1:]:
            extra.unlink()
        listing = local.root / local.summary["manifestFilesS3Key"]
        listing.write_text(json.dumps({"itemCount": len(lines), "dataFileS3Key": str(data.relative_to(local.root))}) + "\n")
        summary = {**local.summary, "exportType": "INCREMENTAL_EXPORT", "itemCount": len(lines),
                   "exportFromTime": period["ExportFromTime"], "exportToTime": period["ExportToTime"]}
        del summary["exportTime"]
        return Export(local.root, summary)

    def export(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        assert request["ExportFormat"] == "DYNAMODB_JSON" and request["S3Bucket"] == EXPORT_BUCKET, request
        table = request["TableArn"].rsplit("/", 1)[-1]
        logical = self.tables[table]
        if self.throttle.get(logical, 0) > 0:
            self.throttle[logical] -= 1
            raise TaskFailed("DynamoDb.LimitExceededException", "Too many exports are running")
        local = write_export(table, self.workdir / table / str(len(self.exports)))
        items = {json.dumps([item[k] for k in TABLE_KEYS[logical]]): item for item in table_items([local], TABLE_KEYS[logical])}
        if request.get("ExportType") == "INCREMENTAL_EXPORT":
            local = self.incremental(local, logical, items, request["IncrementalExportSpecification"])
        self.snapshots[logical] = items
        folder = Path(request["S3Prefix"]) / "AWSDynamoDB" / local.summary["exportArn"].rsplit("/", 1)[-1]
        # A full export's data files are in its own folder; an incremental one's in its prefix's shared one.
        data = folder.parent / "data" if request.get("ExportType") == "INCREMENTAL_EXPORT" else folder / "data"
        s3 = boto3.client("s3")
        files = []
        for line in (local.root / local.summary["manifestFilesS3Key"]).read_text().splitlines():
            entry = json.loads(line)
            key = str(data / Path(entry["dataFileS3Key"]).name)
            s3.upload_file(str(local.root / entry["dataFileS3Key"]), EXPORT_BUCKET, key)
            etag = s3.head_object(Bucket=EXPORT_BUCKET, Key=key)["ETag"].strip('"')  # as S3 answered DynamoDB's upload
            files.append({**entry, "etag": etag, "dataFileS3Key": key})
        listing = str(folder / "manifest-files.json")  # DynamoDB's manifests name full keys
        s3.put_object(Bucket=EXPORT_BUCKET, Key=listing, Body="".join(json.dumps(f) + "\n" for f in files).encode())
        arn = f"{request['TableArn']}/export/{folder.name}"
        summary = {**local.summary, "exportArn": arn, "tableArn": request["TableArn"], "s3Bucket": EXPORT_BUCKET,
                   "s3Prefix": request["S3Prefix"], "manifestFilesS3Key": listing}
        self.exports[arn] = {"logical": logical, "summary": summary, "key": str(folder / "manifest-summary.json"),
                             "described": 0}
        return {"ExportDescription": {"ExportArn": arn, "ExportStatus": "IN_PROGRESS", "TableArn": request["TableArn"],
                                      "S3Bucket": EXPORT_BUCKET, "S3Prefix": request["S3Prefix"]}}

    def describe(self, request: dict[str, Any]) -> dict[str, Any]:
        export = self.exports[request["ExportArn"]]
        export["described"] += 1
        description = {"ExportArn": request["ExportArn"], "ExportStatus": "IN_PROGRESS"}
        if export["described"] == 1:
            for hook in self.on_first_describe:
                hook()
            return {"ExportDescription": description}
        if export["logical"] in self.fail:
            return {"ExportDescription": {**description, "ExportStatus": "FAILED", "FailureCode": "S3AccessDenied",
                                          "FailureMessage": self.fail[export["logical"]]}}
        boto3.client("s3").put_object(Bucket=EXPORT_BUCKET, Key=export["key"],
                                      Body=json.dumps(export["summary"]).encode())
        return {"ExportDescription": {**description, "ExportStatus": "COMPLETED", "ExportManifest": export["key"],
                                      "ItemCount": export["summary"]["itemCount"]}}


class AthenaOnDuckDB:
    """athena:startQueryExecution.sync: each statement run on DuckDB (shared/storage/duckdb_athena.py,
    one database standing in for Athena and the Glue catalog) over a copy of the export bucket, and
    what it wrote put back, as Athena reads and writes S3."""

    def __init__(self, workdir: Path, workgroup: str) -> None:
        self.mirror, self.workgroup = workdir, workgroup
        self.statements: list[str] = []
        self.engine: Any = None

    def start_query_execution_sync(self, request: dict[str, Any]) -> dict[str, Any]:
        from shared.storage.duckdb_athena import DuckDBAthena

        assert request["WorkGroup"] == self.workgroup, request
        self.statements.append(request["QueryString"])
        s3 = boto3.client("s3")
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=EXPORT_BUCKET):
            for entry in page.get("Contents", []):
                (self.mirror / entry["Key"]).parent.mkdir(parents=True, exist_ok=True)
                s3.download_file(EXPORT_BUCKET, entry["Key"], str(self.mirror / entry["Key"]))
        before = {path for path in self.mirror.rglob("*") if path.is_file()}
        self.engine = self.engine or DuckDBAthena(lambda location: self.mirror / location.removeprefix(
            f"s3://{EXPORT_BUCKET}/"))
        try:
            self.engine.run(request["QueryString"])
        except Exception as error:  # noqa: BLE001 - a failed query, as .sync reports it
            raise TaskFailed("States.TaskFailed", json.dumps({"Status": {"State": "FAILED",
                                                                          "StateChangeReason": str(error)}})) from error
        for path in {path for path in self.mirror.rglob("*") if path.is_file()} - before:
            s3.upload_file(str(path), EXPORT_BUCKET, str(path.relative_to(self.mirror)))
        return {"QueryExecution": {"QueryExecutionId": f"q-{len(self.statements)}",
                                   "Status": {"State": "SUCCEEDED"}, "WorkGroup": self.workgroup}}


def load_fit_job() -> Any:
    spec = importlib.util.spec_from_file_location("fit_job", PROJECT_ROOT / "functions" / "train" / "fit_job.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as `python fit_job.py` has it (dataclasses look it up)
    spec.loader.exec_module(module)
    return module


class Fit:
    """lambda:invoke of TrainFunction and batch:submitJob.sync of the fit job, both running the real handler."""

    def __init__(self, function_arn: str) -> None:
        self.function_arn = function_arn
        self.handler = train_handler()
        self.throttle = 0
        self.gate: threading.Event | None = None  # set: the fit may go on
        self.events: list[dict[str, Any]] = []
        self.manifests: list[dict[str, Any]] = []

    def invoke(self, request: dict[str, Any]) -> dict[str, Any]:
        assert request["FunctionName"] == self.function_arn, request
        if request["Payload"].get("task") in ("start_check", "export_plan", "export_queries"):  # no fit
            return {"StatusCode": 200, "Payload": self.handler(request["Payload"], LambdaContext(function_name="TrainFunction"))}
        if self.throttle > 0:
            self.throttle -= 1
            raise TaskFailed("Lambda.TooManyRequestsException", "Rate Exceeded.")
        if self.gate is not None:
            assert self.gate.wait(60)
        self.events.append(request["Payload"])
        manifest = self.handler(request["Payload"], LambdaContext(function_name="TrainFunction"))
        self.manifests.append(manifest)
        return {"StatusCode": 200, "ExecutedVersion": "$LATEST", "Payload": manifest}

    def submit_job_sync(self, request: dict[str, Any]) -> dict[str, Any]:
        """The container's command, `python fit_job.py`, with the job's environment overrides."""
        environment = {entry["Name"]: entry["Value"] for entry in request["ContainerOverrides"]["Environment"]}
        self.events.append(json.loads(environment["FIT_EVENT"]))
        fit_job = load_fit_job()
        manifests: list[dict[str, Any]] = []
        original = fit_job.run
        fit_job.run = lambda event: manifests.append(original(event)) or manifests[-1]
        code = fit_job.main(environment)
        self.manifests += manifests
        job = {"JobId": "job-1", "JobName": request["JobName"], "JobQueue": request["JobQueue"],
               "JobDefinition": request["JobDefinition"]}
        if code != 0:
            raise TaskFailed("States.TaskFailed", json.dumps({**job, "Status": "FAILED", "StatusReason":
                                                              "Essential container in task exited",
                                                              "Container": {"ExitCode": code}}))
        return {**job, "Status": "SUCCEEDED", "Container": {"ExitCode": 0}}


@pytest.fixture
def stack(seeded, tmp_path, monkeypatch):  # noqa: F811 - the fixture imported above
    """The export path as deployed: env vars from template.yaml's wiring, the export bucket on
    moto, the stand-ins, and the admin function reading Step Functions through the stand-in."""
    boto3.client("s3").create_bucket(Bucket=EXPORT_BUCKET)
    monkeypatch.setenv("TRAINING_PATH", "export")
    monkeypatch.setenv("EXPORT_BUCKET", EXPORT_BUCKET)
    monkeypatch.setenv("TRAINING_CONFIG", json.dumps({"min_gain_over_popularity": 0}))
    monkeypatch.delenv("LOCAL_EXPORT_DIR", raising=False)
    get_settings.cache_clear()
    return Stack(seeded, tmp_path, monkeypatch)


class Stack:
    def __init__(self, tables: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tables, self.tmp_path, self.monkeypatch = tables, tmp_path, monkeypatch
        self.step_functions = LocalStepFunctions(REGION, ACCOUNT)
        self.exports = DynamoDBExports(tmp_path / "exports", tables)
        self.fit: Fit | None = None
        self.arn = ""

    def deploy(self, fit_compute: str = "lambda", background: bool = False) -> str:
        parameters = {**EXPORT_PATH, "FitCompute": fit_compute}
        arns = Arns(self.tables, parameters)
        self.parameters, self.arns = parameters, arns
        substitutions = {name: arns.render(value)
                         for name, value in pipeline_resource(parameters)["DefinitionSubstitutions"].items()}
        self.fit = Fit(arns.arns["TrainFunction"])
        self.athena = AthenaOnDuckDB(self.tmp_path / "athena", arns.names["ExportQueryWorkGroup"])
        self.step_functions.background = background
        self.arn = self.step_functions.create_state_machine(f"{STACK}-training", load_definition(DEFINITION, substitutions), {
            "arn:aws:states:::aws-sdk:dynamodb:exportTableToPointInTime": self.exports.export,
            "arn:aws:states:::aws-sdk:dynamodb:describeExport": self.exports.describe,
            "arn:aws:states:::lambda:invoke": self.fit.invoke,
            "arn:aws:states:::batch:submitJob.sync": self.fit.submit_job_sync,
            "arn:aws:states:::athena:startQueryExecution.sync": self.athena.start_query_execution_sync,
        })
        # The admin function as template.yaml configures it on this path, its Step Functions
        # client answered by the stand-in (botocore still validates every request).
        self.monkeypatch.setenv("TRAINING_PIPELINE_ARN", self.arn)
        get_settings.cache_clear()
        client = boto3.client("stepfunctions")
        client.meta.events.register("before-call.sfn", self.step_functions.botocore_handler)
        self.monkeypatch.setattr(pipeline_store, "client", lambda: client)
        return self.arn

    def nightly_input(self) -> dict[str, Any]:
        """What the TrainingPipeline's Nightly schedule sends."""
        return json.loads(pipeline_resource(self.parameters)["Events"]["Nightly"]["Properties"]["Input"])

    def run(self, execution_input: dict[str, Any] | None = None, name: str = "nightly-1") -> Any:
        return self.step_functions.start_execution(self.arn, self.nightly_input() if execution_input is None
                                                   else execution_input, name)


def models_status(api) -> dict[str, Any]:
    status, body = api.json("GET", "/models")
    assert status == 200, body
    return body


def iam_requests(resource: str, request: dict[str, Any]) -> list[tuple[str, str]]:
    """What IAM checks for one task of the definition, as (action, resource ARN)."""
    if resource.endswith(":exportTableToPointInTime"):
        objects = f"arn:aws:s3:::{request['S3Bucket']}/{request['S3Prefix']}/AWSDynamoDB/x/data/y.json.gz"
        return [("dynamodb:ExportTableToPointInTime", request["TableArn"]), ("s3:PutObject", objects),
                ("s3:AbortMultipartUpload", objects)]
    if resource.endswith(":describeExport"):
        return [("dynamodb:DescribeExport", request["ExportArn"])]
    if resource == "arn:aws:states:::athena:startQueryExecution.sync":
        return athena_iam_requests(request)
    if resource == "arn:aws:states:::lambda:invoke":
        return [("lambda:InvokeFunction", request["FunctionName"])]
    if resource == "arn:aws:states:::batch:submitJob.sync":
        rule = f"arn:aws:events:{REGION}:{ACCOUNT}:rule/StepFunctionsGetEventsForBatchJobsRule"
        return [("batch:SubmitJob", request["JobQueue"]), ("batch:SubmitJob", request["JobDefinition"]),
                ("batch:DescribeJobs", "*"), ("batch:TerminateJob", f"arn:aws:batch:{REGION}:{ACCOUNT}:job/x"),
                ("events:PutRule", rule), ("events:PutTargets", rule), ("events:DescribeRule", rule)]
    raise AssertionError(f"{resource}: teach iam_requests which IAM actions it needs")


def athena_iam_requests(request: dict[str, Any]) -> list[tuple[str, str]]:
    """A query as .sync runs it, and the catalog and S3 calls Athena makes with the caller's rights."""
    workgroup = f"arn:aws:athena:{REGION}:{ACCOUNT}:workgroup/{request['WorkGroup']}"
    glue = f"arn:aws:glue:{REGION}:{ACCOUNT}:"
    statement = request["QueryString"]
    table = re.search(r"(?:TABLE(?: IF EXISTS)?|FROM) (\w+)\.(\w+)", statement)
    assert table, statement
    database, name = table.groups()
    catalog = [(action, arn) for action in ("glue:GetDatabase",) for arn in (f"{glue}catalog", f"{glue}database/{database}")]
    table_arn = f"{glue}table/{database}/{name}"
    bucket = f"arn:aws:s3:::{EXPORT_BUCKET}"
    requests = [(action, workgroup) for action in ("athena:StartQueryExecution", "athena:GetQueryExecution",
                                                   "athena:StopQueryExecution")]
    requests += [("s3:PutObject", f"{bucket}/athena-results/q.csv"), ("s3:GetBucketLocation", bucket)]
    if statement.startswith("CREATE"):
        return requests + catalog + [("glue:CreateTable", table_arn), ("glue:CreateTable", f"{glue}database/{database}")]
    if statement.startswith("ALTER"):
        return requests + catalog + [("glue:GetTable", table_arn), ("glue:BatchCreatePartition", table_arn)]
    if statement.startswith("DROP"):
        return requests + catalog + [("glue:DeleteTable", table_arn), ("glue:GetTable", table_arn),
                                     ("glue:GetPartitions", table_arn), ("glue:BatchDeletePartition", table_arn)]
    target = re.search(r"TO 's3://[^/]+/([^']+)'", statement)[1]
    return requests + catalog + [("glue:GetTable", table_arn), ("glue:GetPartitions", table_arn),
                                 ("s3:ListBucket", bucket),
                                 ("s3:GetObject", f"{bucket}/exports/x/AWSDynamoDB/y/data/z.json.gz"),
                                 ("s3:PutObject", f"{bucket}/{target}part-0.gz"),
                                 ("s3:AbortMultipartUpload", f"{bucket}/{target}part-0.gz")]


def role_grants(arns: Arns) -> list[tuple[str, str]]:
    """The state machine's role as SAM builds it from its Policies (statements only)."""
    grants = []
    for policy in pipeline_resource(arns.parameters)["Policies"]:
        for statement in policy["Statement"]:
            assert statement["Effect"] == "Allow"
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            targets = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            grants += [(action, arns.render(target)) for action in actions for target in targets]
    return grants


def assert_every_call_granted(stack: Stack, execution: Any) -> None:
    held = role_grants(stack.arns)
    asked = {request for resource, params in execution.calls for request in iam_requests(resource, params)}
    assert asked
    missing = {(action, target) for action, target in asked
               if not any(fnmatchcase(action.lower(), a.lower()) and fnmatchcase(target, t) for a, t in held)}
    assert missing == set(), f"the TrainingPipeline's role lacks {missing}"


# --- a night on the export path ----------------------------------------------------------


def test_a_nightly_run_exports_the_tables_and_activates_a_model_trained_from_the_exports(stack, api):
    stack.deploy("lambda", background=True)
    now = datetime.now(timezone.utc)
    at_export = len(read_nightly(stack.tables["EventsTable"], stack.tables["UsersTable"], stack.tables["ItemsTable"],
                                 TrainingConfig(), now).training_data().interactions)
    # Bought while the export runs: not in the point-in-time export, so not trained on.
    stack.exports.on_first_describe.append(lambda: store_events(stack.tables["EventsTable"], [
        {"event_id": f"late-{n}", "user_id": "u-late", "item_id": "late-item", "event_type": "purchase", "price": 5,
         "currency": "EUR", "channel": "web", "timestamp": END.isoformat()} for n in range(3)]))
    stack.fit.gate = threading.Event()

    execution = stack.run()
    try:  # while the fit runs, GET /models says so, and a second start is refused
        deadline = time.monotonic() + 60
        while not any((e.get("stateEnteredEventDetails") or {}).get("name") == "Fit in Lambda"
                      for e in list(execution.events)):
            assert time.monotonic() < deadline, (execution.status, execution.error, execution.cause)
            time.sleep(0.05)
        running = models_status(api)["pipeline"]
        assert (running["name"], running["status"], running["stage"]) == ("nightly-1", "RUNNING", "fit")
        with pytest.raises(Conflict):
            pipeline_store.TrainingPipeline(stack.arn).start({})
    finally:
        stack.fit.gate.set()
        assert stack.step_functions.wait(120)

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    manifest, = stack.fit.manifests
    assert (manifest["status"], manifest["active"]) == ("accepted", True), manifest["reason"]
    assert ModelStore(S3Blobs(MODEL_BUCKET)).active().version == manifest["version"]
    assert manifest["counts"]["interactions"] == at_export  # from the exports, not the table
    # The segments read the downloaded users export again after training: it is still there.
    index = SegmentStore(get_settings().segments_table).index()
    assert index is not None and index["segments"], "the night's segments were not written"
    # The handler got each table's manifest-summary.json, in DynamoDB's layout under the run's prefix.
    event, = stack.fit.events
    sample = json.loads((PROJECT_ROOT / "events" / "train" / "from_exports.json").read_text())
    assert event.keys() == sample.keys() and event["exports"].keys() == sample["exports"].keys()
    for table in ("events", "users", "items"):
        assert re.fullmatch(rf"exports/nightly-1/{table}/AWSDynamoDB/[^/]+/manifest-summary\.json",
                            event["exports"][table]), event
    assert 60.0 in execution.waited  # the exports were polled, a minute apart
    # Athena's part: the run's table made over the events export (its one partition), queried into the
    # run's folders (the interactions, the ids with events), dropped.
    assert [statement.split(" ")[0] for statement in stack.athena.statements] == [
        "CREATE", "ALTER", "UNLOAD", "UNLOAD", "DROP"]
    assert (event["interactions"], event["ids"]) == ("queries/nightly-1/interactions/", "queries/nightly-1/ids/")
    assert S3Blobs(EXPORT_BUCKET).keys(event["interactions"]) and S3Blobs(EXPORT_BUCKET).keys(event["ids"])
    done = models_status(api)["pipeline"]
    assert (done["status"], done["stage"], done["version"], done["error"]) == ("SUCCEEDED", "done",
                                                                             manifest["version"], None)
    assert_every_call_granted(stack, execution)


def test_the_next_night_exports_the_events_incrementally_and_trains_on_the_table_as_it_stands(stack, api):
    """Night 1 takes a full export; by night 2 events were added and one deleted (an erasure): the
    events export is incremental from night 1's, and Athena's SQL folds the chain."""
    stack.deploy("lambda")
    assert stack.run(name="night-1").status == "SUCCEEDED"
    full_key = stack.fit.events[-1]["exports"]["events"]
    # Night 1 was two hours ago: an incremental period must be 15 minutes to 24 hours long.
    earlier = (datetime.now(timezone.utc) - timedelta(hours=2)).isoformat()
    summary = json.loads(S3Blobs(EXPORT_BUCKET).get(full_key))
    S3Blobs(EXPORT_BUCKET).put(full_key, json.dumps({**summary, "exportTime": earlier}).encode())
    events = stack.tables["EventsTable"]
    gone = boto3.client("dynamodb").scan(TableName=events, Limit=1)["Items"][0]
    boto3.client("dynamodb").delete_item(TableName=events, Key={"user_id": gone["user_id"], "event_id": gone["event_id"]})
    store_events(events, [{"event_id": f"night-2-{n}", "user_id": "u-00003", "item_id": "i-night-2",
                           "event_type": "purchase", "price": 5, "currency": "EUR", "channel": "web",
                           "timestamp": END.isoformat()} for n in range(2)])
    now = datetime.now(timezone.utc)
    expected = read_nightly(events, stack.tables["UsersTable"], stack.tables["ItemsTable"], TrainingConfig(),
                            now).training_data().interactions

    execution = stack.run(name="night-2")

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    tonight = [r for r in stack.exports.requests if r["TableArn"].endswith(events)][-1]
    assert tonight["ExportType"] == "INCREMENTAL_EXPORT"
    assert tonight["IncrementalExportSpecification"]["ExportFromTime"] == earlier
    fit_event = stack.fit.events[-1]
    assert fit_event["events_chain"] == [full_key]
    partitions = [q for q in stack.athena.statements if q.startswith("ALTER TABLE")][-1]
    assert partitions.count("PARTITION (export_number") == 2
    manifest = stack.fit.manifests[-1]
    assert manifest["counts"]["interactions"] == len(expected)
    assert manifest["counts"]["users"] == len(set(expected.users.tolist()))
    assert_every_call_granted(stack, execution)


def test_post_models_train_starts_the_pipeline_with_the_runs_overrides(stack, api):
    stack.deploy("lambda")
    admin_route = next(r for r in api.gateway.routes if r.route_key == "GET /models")
    admin = sys.modules[api.gateway.handler(admin_route).__module__]
    # With TRAINING_PIPELINE_ARN set, a start is a run of the pipeline (the local gateway's
    # in-process trainer is the scan path's, and stays unused).
    assert isinstance(admin.pipeline, pipeline_store.TrainingPipeline) and admin.pipeline.state_machine_arn == stack.arn

    status, body = api.json("POST", "/models/train", {"config": {"factors": 16}})

    assert status == 202, body
    execution, = stack.step_functions.executions.values()
    assert execution.input == {"config": {"factors": 16}}
    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    assert stack.fit.events[0]["config"] == {"factors": 16}
    assert stack.fit.manifests[0]["parameters"]["factors"] == 16
    # The run the start claimed is over (Step Functions says so): the next start need not wait.
    assert api.json("POST", "/models/train")[0] == 202
    assert len(stack.step_functions.executions) == 2


def test_a_scheduled_run_gives_way_to_a_run_in_progress_which_get_models_goes_on_showing(stack, api):
    """POST /models/train's run is still exporting when the Nightly schedule starts one: the
    scheduled run ends at once, trains nothing, and says why; the first runs on to its end."""
    stack.deploy("lambda", background=True)
    exporting, go_on = threading.Event(), threading.Event()
    stack.exports.on_first_describe.append(lambda: exporting.set() or go_on.wait(60))
    manual = stack.run({"config": {}}, name="manual-1")  # as POST /models/train starts it
    try:
        assert exporting.wait(60), (manual.status, manual.error, manual.cause)

        nightly = stack.run(name="nightly-1")
        deadline = time.monotonic() + 60
        while nightly.status == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)

        assert nightly.status == "SUCCEEDED", (nightly.error, nightly.cause)
        assert "manual-1 is in progress" in nightly.output["start"]["skipped"]
        assert not any(resource.endswith(":exportTableToPointInTime") for resource, _ in nightly.calls)
        shown = models_status(api)["pipeline"]  # the run in progress, not the newer one that gave way
        assert (shown["name"], shown["status"], shown["stage"]) == ("manual-1", "RUNNING", "export")
        assert api.json("POST", "/models/train")[0] == 409
    finally:
        go_on.set()
        assert stack.step_functions.wait(120)
    assert manual.status == "SUCCEEDED", (manual.error, manual.cause)
    assert len(stack.fit.manifests) == 1  # one night's model, not two racing to activate
    shown = models_status(api)["pipeline"]
    assert (shown["name"], shown["stage"]) == ("nightly-1", "skipped") and "manual-1" in shown["skipped"]
    assert_every_call_granted(stack, nightly)


def test_a_scheduled_run_gives_way_to_a_start_that_holds_the_claim_and_runs_once_it_is_given_back(stack, api):
    """A start a moment ago (its execution not listed yet) holds the claim: the scheduled run
    skips. With the claim given back, the next scheduled run trains, and holds the claim itself."""
    stack.deploy("lambda")
    starts = TrainingStarts(ModelStore(S3Blobs(MODEL_BUCKET)).blobs)
    claim = starts.claim(datetime.now(timezone.utc), lambda run: False)

    skipped = stack.run(name="nightly-1")

    assert skipped.status == "SUCCEEDED" and "was started" in skipped.output["start"]["skipped"]
    assert stack.fit.manifests == []
    starts.release(claim)

    trained = stack.run(name="nightly-2")

    assert trained.status == "SUCCEEDED", (trained.error, trained.cause)
    assert len(stack.fit.manifests) == 1
    # The claim names the run: a start in the minute after it is refused until Step Functions says it ended.
    with pytest.raises(Conflict):
        starts.claim(datetime.now(timezone.utc), lambda run: run != trained.arn)


def test_two_scheduled_runs_started_together_train_once(stack, monkeypatch):
    """The schedule's event delivered twice: run b's check takes the claim before run a's, which
    started first. a meets the claim and gives way; b must not give way to a, still in its check
    (before, each gave way to the other and nothing trained)."""
    stack.deploy("lambda", background=True)
    b_claimed, a_refused, b_listed = threading.Event(), threading.Event(), threading.Event()
    claim, others_in_progress = TrainingStarts.claim, pipeline_store.TrainingPipeline.others_in_progress

    def claim_in_order(self, now, over):  # a's check meets b's claim, and is still running as b lists the runs
        if threading.current_thread().name != "execution-nightly-a":
            got = claim(self, now, over)
            b_claimed.set()
            return got
        assert b_claimed.wait(30)
        try:
            return claim(self, now, over)
        except Conflict:
            a_refused.set()
            assert b_listed.wait(30)
            raise

    def listed_after_a_refused(self, execution):
        assert a_refused.wait(30)
        try:
            return others_in_progress(self, execution)
        finally:
            b_listed.set()

    monkeypatch.setattr(TrainingStarts, "claim", claim_in_order)
    monkeypatch.setattr(pipeline_store.TrainingPipeline, "others_in_progress", listed_after_a_refused)
    a = stack.run(name="nightly-a")
    b = stack.run(name="nightly-b")
    assert stack.step_functions.wait(120)

    assert (a.status, b.status) == ("SUCCEEDED", "SUCCEEDED"), (a.cause, b.cause)
    assert "was started" in a.output["start"]["skipped"]
    assert len(stack.fit.manifests) == 1 and stack.fit.manifests[0]["status"] == "accepted"


def test_a_start_during_a_scheduled_runs_check_goes_through_and_the_scheduled_run_gives_way(stack, api, monkeypatch):
    """POST /models/train takes the claim while a scheduled run is in its check: the scheduled run
    gives way, and the start is not refused because of it (before, both were)."""
    stack.deploy("lambda", background=True)
    admin_claimed, scheduled_refused, posted = threading.Event(), threading.Event(), threading.Event()
    claim = TrainingStarts.claim

    def claim_in_order(self, now, over):
        if threading.current_thread().name != "execution-nightly-s":  # the admin function's
            got = claim(self, now, over)
            admin_claimed.set()
            assert scheduled_refused.wait(30)
            return got
        assert admin_claimed.wait(30)
        try:
            return claim(self, now, over)
        except Conflict:
            scheduled_refused.set()
            assert posted.wait(30)  # still in its check while the start looks for a run in progress
            raise

    monkeypatch.setattr(TrainingStarts, "claim", claim_in_order)
    scheduled = stack.run(name="nightly-s")
    try:
        status, body = api.json("POST", "/models/train")
    finally:
        posted.set()
    assert stack.step_functions.wait(120)

    assert status == 202, body
    assert scheduled.status == "SUCCEEDED" and scheduled.output["start"]["skipped"]
    started, = [e for e in stack.step_functions.executions.values() if e is not scheduled]
    assert started.status == "SUCCEEDED", (started.error, started.cause)
    assert len(stack.fit.manifests) == 1


def test_a_scheduled_run_whose_check_comes_late_gives_way_to_a_run_started_after_it(stack, monkeypatch):
    """Lambda throttled the scheduled run's check past the start claim's minute, and a start got
    through meanwhile: it started after the scheduled run, and is exporting by the time the check
    runs. The scheduled run gives way to it all the same."""
    stack.deploy("lambda", background=True)
    exporting, go_on, may_check = threading.Event(), threading.Event(), threading.Event()
    stack.exports.on_first_describe.append(lambda: exporting.set() or go_on.wait(60))
    claim = TrainingStarts.claim

    def claim_late(self, now, over):
        if threading.current_thread().name == "execution-nightly-1":
            assert may_check.wait(60)
        return claim(self, now, over)

    monkeypatch.setattr(TrainingStarts, "claim", claim_late)
    nightly = stack.run(name="nightly-1")
    manual = stack.run({"config": {}}, name="manual-1")
    try:
        assert exporting.wait(60), (manual.status, manual.error, manual.cause)
        may_check.set()
        deadline = time.monotonic() + 60
        while nightly.status == "RUNNING":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert nightly.status == "SUCCEEDED" and "manual-1 is in progress" in nightly.output["start"]["skipped"]
    finally:
        may_check.set()
        go_on.set()
        assert stack.step_functions.wait(120)
    assert manual.status == "SUCCEEDED", (manual.error, manual.cause)
    assert len(stack.fit.manifests) == 1


def test_a_start_is_refused_beside_a_run_exporting_though_a_newer_one_is_in_its_check(stack, api, monkeypatch):
    """A run exports; a scheduled run started since is in its check. The newest run in progress is
    the one in its check, and must not hide the one exporting: a start is refused."""
    stack.deploy("lambda", background=True)
    exporting, go_on, checking, may_check = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    stack.exports.on_first_describe.append(lambda: exporting.set() or go_on.wait(60))
    claim = TrainingStarts.claim

    def claim_later(self, now, over):
        if threading.current_thread().name == "execution-nightly-1":
            checking.set()
            assert may_check.wait(60)
        return claim(self, now, over)

    monkeypatch.setattr(TrainingStarts, "claim", claim_later)
    manual = stack.run({"config": {}}, name="manual-1")
    try:
        assert exporting.wait(60), (manual.status, manual.error, manual.cause)
        stack.run(name="nightly-1")
        assert checking.wait(60)

        status, body = api.json("POST", "/models/train")

        assert status == 409 and "manual-1" in body["error"]["message"], body
    finally:
        may_check.set()
        go_on.set()
        assert stack.step_functions.wait(120)
    assert manual.status == "SUCCEEDED" and len(stack.fit.manifests) == 1


def test_a_retried_check_does_not_skip_its_own_run(stack):
    """Lambda may fail the check's answer after the check ran (Lambda.ServiceException), and the
    task is retried: the claim then names this very run, which is no reason to give way."""
    stack.deploy("lambda", background=True)
    exporting, go_on = threading.Event(), threading.Event()
    stack.exports.on_first_describe.append(lambda: exporting.set() or go_on.wait(60))
    run = stack.run(name="nightly-1")
    try:
        assert exporting.wait(60), (run.status, run.error, run.cause)
        retried = stack.fit.handler({"task": "start_check", "execution": run.arn, "state_machine": stack.arn},
                                    LambdaContext(function_name="TrainFunction"))
        assert retried == {"skipped": None}
        # Another run's check still meets the claim, which names the first.
        other = stack.fit.handler({"task": "start_check", "execution": run.arn + "-other", "state_machine": stack.arn},
                                  LambdaContext(function_name="TrainFunction"))
        assert "nightly-1 was started" in other["skipped"]
    finally:
        go_on.set()
        assert stack.step_functions.wait(120)
    assert run.status == "SUCCEEDED", (run.error, run.cause)


def test_a_failed_export_fails_the_run_and_get_models_says_which_stage_and_why(stack, api):
    stack.deploy("lambda")
    stack.exports.fail["UsersTable"] = "Access Denied to bucket test-exports"

    execution = stack.run()

    assert execution.status == "FAILED"
    assert stack.fit.events == []  # nothing was trained from a partial export
    assert ModelStore(S3Blobs(MODEL_BUCKET)).active() is None
    failed = models_status(api)["pipeline"]
    assert (failed["status"], failed["stage"], failed["error"]) == ("FAILED", "export", "ExportFailed")
    assert failed["cause"] == "users: Access Denied to bucket test-exports"
    assert failed["stopped_at"] is not None


def test_an_events_export_altered_in_the_bucket_fails_the_run_at_the_query_stage_before_any_fit(stack, api):
    """Athena reads the export's data folder whole, not the manifest's list: a file replaced there
    (by hand, a copy cut short) would be trained on as it stands. The query stage refuses it first."""
    stack.deploy("lambda")
    original = stack.exports.describe

    def describe_then_alter(request: dict[str, Any]) -> dict[str, Any]:
        answer = original(request)
        export = stack.exports.exports[request["ExportArn"]]
        if answer["ExportDescription"]["ExportStatus"] == "COMPLETED" and export["logical"] == "EventsTable":
            s3 = boto3.client("s3")
            listing = s3.get_object(Bucket=EXPORT_BUCKET, Key=export["summary"]["manifestFilesS3Key"])["Body"].read()
            altered["key"] = json.loads(listing.splitlines()[0])["dataFileS3Key"]
            whole = gzip.decompress(s3.get_object(Bucket=EXPORT_BUCKET, Key=altered["key"])["Body"].read())
            s3.put_object(Bucket=EXPORT_BUCKET, Key=altered["key"], Body=gzip.compress(whole[:whole.index(b"\n") + 1]))
        return answer

    altered: dict[str, str] = {}
    stack.step_functions.machines[stack.arn].tasks["arn:aws:states:::aws-sdk:dynamodb:describeExport"] = describe_then_alter

    execution = stack.run()

    assert execution.status == "FAILED" and altered
    assert stack.fit.events == [] and not any("UNLOAD" in statement for statement in stack.athena.statements)
    assert ModelStore(S3Blobs(MODEL_BUCKET)).active() is None
    failed = models_status(api)["pipeline"]
    assert (failed["status"], failed["stage"], failed["error"]) == ("FAILED", "query", "DamagedExport")
    assert f"s3://{EXPORT_BUCKET}/{altered['key']} is not the file its manifest lists (ETag " in failed["cause"]


def test_an_events_export_altered_while_athena_reads_it_fails_the_fit_before_it_trains(stack, api):
    """The query stage checked the folder; a file replaced after that, while Athena read it, is
    found by the fit stage's second look, before it reads what Athena wrote."""
    stack.deploy("lambda")
    query = stack.athena.start_query_execution_sync
    altered: dict[str, str] = {}

    def altering_then_querying(request: dict[str, Any]) -> dict[str, Any]:
        if request["QueryString"].startswith("UNLOAD") and not altered:
            s3 = boto3.client("s3")
            key = next(entry["Key"] for entry in s3.list_objects_v2(Bucket=EXPORT_BUCKET)["Contents"]
                       if "/events/" in entry["Key"] and entry["Key"].endswith(".json.gz"))
            whole = gzip.decompress(s3.get_object(Bucket=EXPORT_BUCKET, Key=key)["Body"].read())
            s3.put_object(Bucket=EXPORT_BUCKET, Key=key, Body=gzip.compress(whole[:whole.index(b"\n") + 1]))
            altered["key"] = key
        return query(request)

    stack.step_functions.machines[stack.arn].tasks["arn:aws:states:::athena:startQueryExecution.sync"] = (
        altering_then_querying)

    stack.run()

    assert altered and any("UNLOAD" in statement for statement in stack.athena.statements)  # Athena read it
    manifest, = stack.fit.manifests
    assert manifest["status"] == "failed" and manifest["artifact"] is None
    assert f"s3://{EXPORT_BUCKET}/{altered['key']} is not the file its manifest lists (ETag " in manifest["reason"]
    assert ModelStore(S3Blobs(MODEL_BUCKET)).active() is None


def test_throttled_tasks_are_retried_with_backoff_and_the_run_goes_on(stack, api):
    stack.deploy("lambda")
    stack.exports.throttle["EventsTable"] = 2
    stack.fit.throttle = 1

    execution = stack.run()

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    exports = [params["TableArn"].rsplit("/", 1)[-1] for resource, params in execution.calls
               if resource.endswith("exportTableToPointInTime")]
    assert exports.count(stack.tables["EventsTable"]) == 3
    invokes = [resource for resource, request in execution.calls  # the fit's, not the query stage's plan
               if resource.endswith("lambda:invoke") and "task" not in request["Payload"]]
    assert len(invokes) == 2 and len(stack.fit.manifests) == 1
    # Backoff: 30 s, then 60 s before the events export's retries; 30 s before the invoke's. And
    # each table's export polled twice, a minute apart.
    assert sorted(execution.waited) == [30.0, 30.0] + [60.0] * 7
    assert stack.fit.manifests[0]["status"] == "accepted"


def test_a_fault_in_the_scheduled_runs_check_is_retried_and_the_night_trains(stack, monkeypatch):
    """S3 throttled as the check took the claim (after botocore's own retries): the task is tried
    again after a backoff, not the night failed at its start."""
    stack.deploy("lambda")
    claim, faults = TrainingStarts.claim, [StorageUnavailable("model bucket throttled")]

    def throttled_once(self, now, over):
        if faults:
            raise faults.pop()
        return claim(self, now, over)

    monkeypatch.setattr(TrainingStarts, "claim", throttled_once)

    execution = stack.run()

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    checks = [r for resource, r in execution.calls if r.get("Payload", {}).get("task") == "start_check"]
    assert len(checks) == 2 and 30.0 in execution.waited
    assert len(stack.fit.manifests) == 1


def test_a_throttle_that_outlasts_the_retries_fails_the_run_at_its_stage(stack, api):
    stack.deploy("lambda")
    stack.exports.throttle["ItemsTable"] = 100

    execution = stack.run()

    assert execution.status == "FAILED"
    attempts = [p for r, p in execution.calls if r.endswith("exportTableToPointInTime")
                and p["TableArn"].endswith(stack.tables["ItemsTable"])]
    # The first and 6 retries: once its retrier is spent, the error does not fall through to the next.
    assert len(attempts) == 1 + 6
    failed = models_status(api)["pipeline"]
    assert (failed["stage"], failed["error"]) == ("export", "DynamoDb.LimitExceededException")


# --- the fit as an AWS Batch job --------------------------------------------------------


def test_the_batch_fit_runs_the_train_handler_from_the_jobs_event_and_activates(stack, api):
    stack.deploy("fargate")

    execution = stack.run()

    assert execution.status == "SUCCEEDED", (execution.error, execution.cause)
    submitted, = [p for r, p in execution.calls if r.endswith("submitJob.sync")]
    assert submitted["JobQueue"] == stack.arns.arns["FitJobQueue"]
    assert submitted["JobDefinition"] == stack.arns.arns["FitFargateJobDefinition"]
    manifest, = stack.fit.manifests
    assert (manifest["status"], manifest["active"]) == ("accepted", True), manifest["reason"]
    assert set(stack.fit.events[0]["exports"]) == {"events", "users", "items"}
    assert_every_call_granted(stack, execution)


def test_a_batch_fit_that_fails_exits_non_zero_and_fails_the_run_at_the_fit_stage(stack, api):
    stack.deploy("fargate")
    # The users export is gone before the job reads it (ExportRetentionDays too short, say).
    original = stack.exports.describe

    def describe_then_lose(request: dict[str, Any]) -> dict[str, Any]:
        answer = original(request)
        if (answer["ExportDescription"]["ExportStatus"] == "COMPLETED"
                and stack.exports.exports[request["ExportArn"]]["logical"] == "UsersTable"):
            answer["ExportDescription"]["ExportManifest"] += ".gone"
        return answer

    stack.step_functions.machines[stack.arn].tasks["arn:aws:states:::aws-sdk:dynamodb:describeExport"] = describe_then_lose

    execution = stack.run()

    assert execution.status == "FAILED", execution.output
    assert [m["status"] for m in stack.fit.manifests] == ["failed", "failed"], (execution.error, execution.cause)  # tried, retried once
    failed = models_status(api)["pipeline"]
    assert (failed["status"], failed["stage"], failed["error"]) == ("FAILED", "fit", "States.TaskFailed")
    assert json.loads(failed["cause"])["Container"]["ExitCode"] == 1


def test_the_fit_job_refuses_to_start_without_its_event():
    fit_job = load_fit_job()
    assert fit_job.main({}) == 2
    assert fit_job.main({"FIT_EVENT": "{not json"}) == 2


# --- the definition and the template -----------------------------------------------------


def states_of(machine: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = dict(machine["States"])
    for state in machine["States"].values():
        for branch in state.get("Branches", []):
            found |= states_of(branch)
    return found


def test_every_state_belongs_to_a_stage_get_models_can_name():
    assert set(states_of(json.loads(DEFINITION.read_text()))) <= pipeline_store.STAGE_OF_STATE.keys()


def test_every_task_retries_with_backoff_and_every_stage_is_caught():
    definition = json.loads(DEFINITION.read_text())
    for name, state in states_of(definition).items():
        if state["Type"] == "Task":
            assert state.get("Retry"), name
            assert all(rule.get("BackoffRate", 2) > 1 for rule in state["Retry"]), name
            assert not any("States.ALL" in rule["ErrorEquals"] for rule in state["Retry"]), name
    for name, state in definition["States"].items():  # the top level: each stage
        if state["Type"] in ("Task", "Parallel"):
            assert [c["Next"] for c in state["Catch"] if "States.ALL" in c["ErrorEquals"]], name
            recorder = definition["States"][state["Catch"][0]["Next"]]
            assert recorder["Type"] == "Pass" and definition["States"][recorder["Next"]]["Type"] == "Fail", name


def test_the_definition_is_valid_states_language(tmp_path):
    """cfn-lint checks a state machine's inline definition against the States Language schema."""
    template = {"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Pipeline": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"RoleArn": f"arn:aws:iam::{ACCOUNT}:role/pipeline",
                       "Definition": load_definition(DEFINITION, {name: f"arn:aws:states:{REGION}:{ACCOUNT}:x:{name}"
                                                                  for name in re.findall(r"\$\{(\w+)\}",
                                                                                         DEFINITION.read_text())})}}}}
    path = tmp_path / "pipeline.json"
    path.write_text(json.dumps(template))
    result = subprocess.run([str(Path(sys.executable).parent / "cfn-lint"), str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_template_wires_the_export_path_only_when_it_is_chosen():
    scan = deployed({})
    assert not {"ExportBucket", "TrainingPipeline", "FitJobQueue"} & scan["Resources"].keys()
    train = resources(scan, "AWS::Serverless::Function")["TrainFunction"]
    assert train["Events"]["Nightly"]["Properties"]["State"] == "ENABLED"

    export = deployed({"TrainingPath": "export", "FitCompute": "gpu"})
    functions = resources(export, "AWS::Serverless::Function")
    train, admin = functions["TrainFunction"], functions["AdminFunction"]
    # One nightly run: the state machine's; the first-model check stays on the train function.
    assert train["Events"]["Nightly"]["Properties"]["State"] == "DISABLED"
    assert "State" not in train["Events"]["FirstModel"]["Properties"]
    nightly = pipeline_resource({"TrainingPath": "export"})["Events"]["Nightly"]
    assert (nightly["Type"], nightly["Properties"]["ScheduleExpression"]) == ("ScheduleV2", {"Ref": "TrainingSchedule"})
    assert train["Environment"]["Variables"]["TRAINING_PATH"] == {"Ref": "TrainingPath"}
    # The exports are downloaded to /tmp: more than Lambda's default 512 MB, on this path only.
    assert train["EphemeralStorage"]["Size"] >= 4096
    assert "EphemeralStorage" not in resources(scan, "AWS::Serverless::Function")["TrainFunction"]
    assert train["Environment"]["Variables"]["EXPORT_BUCKET"] == {"Ref": "ExportBucket"}
    assert admin["Environment"]["Variables"]["TRAINING_PIPELINE_ARN"] == {"Ref": "TrainingPipeline"}
    # Exports need point-in-time recovery on every table they take.
    for table in ("EventsTable", "UsersTable", "ItemsTable"):
        assert export["Resources"][table]["Properties"]["PointInTimeRecoverySpecification"] == {
            "PointInTimeRecoveryEnabled": True}
    assert {"FitGpuEnvironment", "FitGpuJobDefinition", "FitJobQueue"} <= export["Resources"].keys()
    assert "FitFargateEnvironment" not in export["Resources"]
    gpu = export["Resources"]["FitGpuEnvironment"]["Properties"]["ComputeResources"]
    assert all(kind.startswith(("g4dn.", "g5.")) for kind in gpu["InstanceTypes"])
    bucket = export["Resources"]["ExportBucket"]["Properties"]
    assert bucket["LifecycleConfiguration"]["Rules"][0]["ExpirationInDays"] == {"Ref": "ExportRetentionDays"}
    assert all(bucket["PublicAccessBlockConfiguration"].values())


def test_the_roles_that_read_the_exports_and_the_pipeline_hold_what_the_code_calls():
    """The train function and the Batch job read the exports; the admin function reads the runs."""
    export = deployed({"TrainingPath": "export", "FitCompute": "fargate"})
    arns = Arns({"EventsTable": "e", "UsersTable": "u", "ItemsTable": "i", "SegmentsTable": "s"},
                {"TrainingPath": "export", "FitCompute": "fargate"})

    def held(statements: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(action, arns.render(target)) for s in statements
                for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                for target in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])]

    def allows(grants: list[tuple[str, str]], action: str, target: str) -> bool:
        return any(fnmatchcase(action.lower(), a.lower()) and fnmatchcase(target, t) for a, t in grants)

    functions = resources(export, "AWS::Serverless::Function")
    train = held([s for p in functions["TrainFunction"]["Policies"] for s in p.get("Statement", [])])
    job = held(export["Resources"]["FitJobRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"])
    summary = f"arn:aws:s3:::{EXPORT_BUCKET}/exports/run/events/AWSDynamoDB/x/manifest-summary.json"
    queried = f"arn:aws:s3:::{EXPORT_BUCKET}/queries/run/interactions/part-0.gz"
    for grants in (train, job):
        assert allows(grants, "s3:GetObject", summary) and allows(grants, "s3:ListBucket", f"arn:aws:s3:::{EXPORT_BUCKET}")
        assert allows(grants, "s3:GetObject", queried)
    admin = held([s for p in functions["AdminFunction"]["Policies"] for s in p.get("Statement", [])])
    machine = arns.arns["TrainingPipeline"]
    execution = machine.replace(":stateMachine:", ":execution:") + ":nightly-1"
    for action, target in [("states:StartExecution", machine), ("states:ListExecutions", machine),
                           ("states:DescribeExecution", execution), ("states:GetExecutionHistory", execution)]:
        assert allows(admin, action, target), action
    # A scheduled run's check for one in progress, and whether the run a start claim names has ended.
    assert allows(train, "states:ListExecutions", machine) and allows(train, "states:DescribeExecution", execution)
    # And the job's container gets the train function's settings, on the export path.
    environment = {e["Name"]: e["Value"] for e in
                   export["Resources"]["FitFargateJobDefinition"]["Properties"]["ContainerProperties"]["Environment"]}
    assert environment["TRAINING_PATH"] == "export" and environment["EXPORT_BUCKET"] == {"Ref": "ExportBucket"}
    own = functions["TrainFunction"]["Environment"]["Variables"]
    assert {k for k in own if k != "OPENBLAS_NUM_THREADS"} <= environment.keys()


# --- the interpreter itself ----------------------------------------------------------------


def test_paths_and_intrinsic_functions_read_as_step_functions_reads_them():
    data = {"run": "r-1", "a": {"b": [1, {"c": "x"}]}}
    context = {"Execution": {"Name": "n"}}
    assert read_path("$.a.b[1].c", data, context) == "x" and read_path("$$.Execution.Name", data, context) == "n"
    assert evaluate_intrinsic("States.Format('exports/{}/{}', $.run, 'events')", data, context) == "exports/r-1/events"
    assert evaluate_intrinsic("States.JsonToString($.a)", data, context) == '{"b":[1,{"c":"x"}]}'
    assert payload({"k.$": "$.run", "fixed": {"n.$": "$.a.b[0]"}}, data, context) == {"k": "r-1", "fixed": {"n": 1}}
    assert write_path("$.x.y", data, 5)["x"] == {"y": 5} and write_path(None, data, 5) == data
    with pytest.raises(StatesError) as missing:
        read_path("$.nope", data, context)
    assert missing.value.error == "States.Runtime"


def test_a_runtime_error_is_neither_retried_nor_caught():
    machine = Interpreter({"StartAt": "T", "States": {
        "T": {"Type": "Task", "Resource": "r", "Parameters": {"x.$": "$.missing"}, "Retry": [
            {"ErrorEquals": ["States.ALL"], "MaxAttempts": 3}], "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "S"}],
              "End": True},
        "S": {"Type": "Succeed"}}}, {"r": lambda request: {}})
    execution = machine.run(Execution("arn:x", "x", "arn:m", {}))
    assert (execution.status, execution.error) == ("FAILED", "States.Runtime") and execution.calls == []


def test_the_pipeline_store_speaks_the_step_functions_api_as_moto_answers_it(moto_tables, request):
    """The same calls against moto's Step Functions (which runs no definition): the start sends the
    run's overrides, a running execution reads as RUNNING, and a second start is refused."""
    pipeline_store.client.cache_clear()
    request.addfinalizer(pipeline_store.client.cache_clear)  # its client is moto's, for this test only
    arn = boto3.client("stepfunctions").create_state_machine(
        name=f"{STACK}-training", definition=DEFINITION.read_text(),
        roleArn=f"arn:aws:iam::{ACCOUNT}:role/pipeline")["stateMachineArn"]
    pipeline = pipeline_store.TrainingPipeline(arn)
    assert pipeline.latest() is None

    execution_arn = pipeline.start({"factors": 8})

    described = boto3.client("stepfunctions").describe_execution(executionArn=execution_arn)
    assert json.loads(described["input"]) == {"config": {"factors": 8}}
    latest = pipeline.latest()
    assert (latest.name, latest.status) == (described["name"], "RUNNING") and latest.name.startswith("train-")
    with pytest.raises(Conflict):
        pipeline.start({})
