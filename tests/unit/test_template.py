"""template.yaml is what gets deployed: it must lint, and every route must reach real code."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import boto3
import pytest

from devstack.template import (PROJECT_ROOT, api_authentication, function_environment, http_routes, load_template,
                               resolve_conditions, resources)
from devstack.gateway import load_handler
from shared.auth import CLIENT_ROUTES, Access
from shared.errors import Conflict
from tests.factories import members_by_segment

TEMPLATE = load_template()
FUNCTIONS = resources(TEMPLATE, "AWS::Serverless::Function")


def test_cfn_lint_passes():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(cfn_lint), str(PROJECT_ROOT / "template.yaml")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def api_samples() -> list[Path]:
    return sorted(p for p in (PROJECT_ROOT / "events").rglob("*.json") if "routeKey" in json.loads(p.read_text()))


def test_every_route_has_a_handler_and_a_sample_event(moto_tables):
    samples = {json.loads(p.read_text())["routeKey"] for p in api_samples()}
    for route in http_routes(TEMPLATE):
        assert callable(load_handler(route)), route.route_key
        assert route.route_key in samples, f"no sample event in events/ for {route.route_key}"


# Actions that delete, and the SAM policy templates that grant some of them.
DELETING_ACTIONS = ("dynamodb:DeleteItem", "dynamodb:BatchWriteItem", "dynamodb:DeleteTable",
                    "dynamodb:PartiQLDelete", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:DeleteBucket")
DELETING_SAM_POLICIES = re.compile(r".*CrudPolicy$|^DynamoDBWritePolicy$")
# The SAM policy templates functions may use, as SAM expands them: none of them deletes.
READ_ONLY_SAM_POLICIES = {
    "S3ReadPolicy": ("BucketName", ("", "/*"), ("s3:GetObject", "s3:ListBucket", "s3:GetBucketLocation",
                                                "s3:GetObjectVersion", "s3:GetLifecycleConfiguration")),
    "DynamoDBReadPolicy": ("TableName", ("", "/index/*"), ("dynamodb:GetItem", "dynamodb:Scan", "dynamodb:Query",
                                                          "dynamodb:BatchGetItem", "dynamodb:DescribeTable")),
    "LambdaInvokePolicy": ("FunctionName", ("*",), ("lambda:InvokeFunction",)),
}
# Every delete right a function holds, and why it needs it. Nothing else may delete.
MAY_DELETE = {
    "PrivacyFunction": {
        ("dynamodb:BatchWriteItem", "EventsTable"): "erasure deletes the customer's events",
        ("dynamodb:BatchWriteItem", "SegmentsTable"): "erasure and an objection delete a customer's own item of "
                                                       "a segment run written before the buckets of customers",
        ("dynamodb:DeleteItem", "UsersTable"): "erasure deletes the customer's already-bought and orders sets "
                                                "and consent history",
    },
    "SegmentsFunction": {
        ("dynamodb:DeleteItem", "SegmentsTable"): "DELETE /segments/{segment_id} deletes a custom definition",
    },
    "TrainFunction": {
        ("dynamodb:BatchWriteItem", "SegmentsTable"): "writes each run's segment members with batch_put",
        ("s3:DeleteObject", "ModelBucket/models/*"): "prunes model versions past ModelVersionsKept or "
                                                       "ModelMaxAgeDays",
        ("s3:DeleteObject", "ModelBucket/experiments-running/*"): "unnames experiments that ended without it",
    },
    "AdminFunction": {
        ("s3:DeleteObject", "ModelBucket/experiments-running/*"): "unnames an experiment it stops or promotes",
        ("s3:DeleteObject", "ModelBucket/models/*/manifest.json"):
            "forgets the run it listed when the train function cannot be started",
    },
}


@dataclass(frozen=True)
class Grant:
    action: str  # as IAM reads it: wildcards allowed, case does not matter
    resource: str  # a logical id, then what the ARN adds: EventsTable/index/by_time, ModelBucket/*


def resource_name(resource: Any) -> str:
    """!GetAtt X.Arn -> "X"; !Sub "${X.Arn}/index/by_time" -> "X/index/by_time"; "*" stays."""
    if isinstance(resource, str):
        return resource
    if "Ref" in resource:  # a secret's ARN
        return resource["Ref"]
    if "Fn::GetAtt" in resource:
        logical_id, attribute = resource["Fn::GetAtt"]
        assert attribute == "Arn", resource
        return logical_id
    if "Fn::Sub" in resource and isinstance(resource["Fn::Sub"], str):
        return re.sub(r"\$\{(\w+)\.Arn\}", r"\1", resource["Fn::Sub"])
    raise AssertionError(f"a policy resource this test cannot read: {resource}")


def grants(function: str) -> list[Grant]:
    found = []
    for policy in FUNCTIONS[function].get("Policies", []):
        assert isinstance(policy, dict), f"{function}: managed policy {policy}: use statements"
        if "Statement" in policy:
            for statement in policy["Statement"]:
                assert statement["Effect"] == "Allow" and "NotAction" not in statement, (function, statement)
                actions, targets = statement["Action"], statement["Resource"]
                found += [Grant(action, resource_name(target))
                          for action in (actions if isinstance(actions, list) else [actions])
                          for target in (targets if isinstance(targets, list) else [targets])]
            continue
        (name, parameters), = policy.items()
        assert name in READ_ONLY_SAM_POLICIES, (
            f"{function}: SAM policy {name}: add it to READ_ONLY_SAM_POLICIES once sure it cannot delete, "
            "or write the statements it needs")
        parameter, suffixes, actions = READ_ONLY_SAM_POLICIES[name]
        target = parameters[parameter]["Ref"]
        found += [Grant(action, target + suffix) for action in actions for suffix in suffixes]
    return found


def deletes(action: str) -> bool:
    return any(fnmatchcase(deleting.lower(), action.lower()) for deleting in DELETING_ACTIONS)


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_a_function_holds_only_the_delete_rights_it_has_a_reason_for(function: str):
    policies = FUNCTIONS[function].get("Policies", [])
    templates = [name for policy in policies if isinstance(policy, dict) for name in policy if name != "Statement"]
    deleting = [name for name in templates if DELETING_SAM_POLICIES.match(name)]
    assert not deleting, f"{function}: {deleting} can delete; write statements with the actions it needs"
    held = {(grant.action, grant.resource) for grant in grants(function) if deletes(grant.action)}
    assert held == MAY_DELETE.get(function, {}).keys()


def test_no_policy_grants_everything_on_everything():
    for function in FUNCTIONS:
        for grant in grants(function):
            assert "*" not in (grant.action.split(":")[-1], grant.resource), (function, grant)


def test_tables_have_the_keys_the_access_patterns_need():
    tables = resources(TEMPLATE, "AWS::DynamoDB::Table")
    keys = {name: {k["AttributeName"]: k["KeyType"] for k in t["KeySchema"]}
            for name, t in tables.items()}
    assert keys["EventsTable"] == {"user_id": "HASH", "event_id": "RANGE"}
    assert keys["ItemsTable"] == {"item_id": "HASH"}
    assert keys["UsersTable"] == {"user_id": "HASH"}


def with_visitor_token(event: dict[str, Any]) -> dict[str, Any]:
    """A visitor route's sample names its token ${VISITOR_TOKEN}: tokens expire, samples do not."""
    import time

    from shared.config import get_settings
    from shared.visitors import VisitorTokens

    headers = event.get("headers") or {}
    if "${VISITOR_TOKEN}" in headers.get("authorization", ""):
        visitor_id = event["pathParameters"]["visitor_id"]
        token = VisitorTokens(get_settings().visitor_token_secret.encode()).issue(visitor_id, time.time()).token
        event = {**event, "headers": {**headers, "authorization": f"Bearer {token}"}}
    return event


@pytest.mark.parametrize("sample", api_samples(), ids=lambda p: p.stem)
def test_each_sample_event_gets_a_json_answer_without_a_server_error(moto_tables, sample: Path):
    event = with_visitor_token(json.loads(sample.read_text()))
    route = next(r for r in http_routes(TEMPLATE) if r.route_key == event["routeKey"])
    from devstack.gateway import LambdaContext

    result = load_handler(route)(event, LambdaContext(function_name=route.function))

    assert result["statusCode"] < 500, result
    assert result["statusCode"] not in (401, 403), "the sample's caller must be allowed this route"
    json.loads(result["body"])


@pytest.mark.parametrize("sample", sorted((PROJECT_ROOT / "events" / "train").glob("*.json")), ids=lambda p: p.stem)
def test_the_train_function_handles_its_schedule_and_on_demand_events(moto_tables, sample: Path, monkeypatch):
    from devstack.gateway import LambdaContext
    from devstack.template import Route
    from shared.config import get_settings

    boto3.client("s3").create_bucket(Bucket="sample-exports")  # the export path's bucket, still empty
    monkeypatch.setenv("EXPORT_BUCKET", "sample-exports")
    get_settings.cache_clear()
    train = resources(TEMPLATE, "AWS::Serverless::Function")["TrainFunction"]
    handler = load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))

    event = json.loads(sample.read_text())
    if event.get("task") == "export_queries":  # the events export the query reads is checked first
        put_export("sample-exports", event["exports"]["events"])
    manifest = handler(event, LambdaContext(function_name="TrainFunction"))

    if event.get("task") == "export_plan":  # the TrainingPipeline asks which events export to take
        assert manifest == {"events": {"type": "FULL_EXPORT"}, "chain": []}  # no export yet: a full one
        return
    if event.get("task") == "export_queries":  # the TrainingPipeline's query stage asks for its statements
        assert manifest["interactions"] == f"queries/{event['run']}/interactions/"
        assert manifest["ids"] == f"queries/{event['run']}/ids/"
        assert [manifest[k].split(" ")[0] for k in ("create", "partitions", "unload", "unload_ids", "drop")] == [
            "CREATE", "ALTER", "UNLOAD", "UNLOAD", "DROP"]
        assert f"s3://sample-exports/{manifest['interactions']}'" in manifest["unload"]
        assert f"s3://sample-exports/{manifest['ids']}'" in manifest["unload_ids"]
        return
    assert manifest["status"] == "insufficient_data"  # the tables are empty
    assert {k: manifest["parameters"][k] for k in event.get("config", {})} == event.get("config", {})
    assert manifest["finished_at"]


def put_export(bucket: str, summary_key: str) -> None:
    """A full export of one event in `bucket`, its manifest-summary.json at `summary_key`."""
    s3, folder = boto3.client("s3"), summary_key.rsplit("/", 1)[0]
    data = gzip.compress(b'{"Item":{"user_id":{"S":"u1"},"event_id":{"S":"e1"},"item_id":{"S":"i1"},'
                         b'"event_type":{"S":"view"},"ts":{"S":"2026-12-01T10:00:00.000000Z"}}}\n')
    s3.put_object(Bucket=bucket, Key=f"{folder}/data/part-0.json.gz", Body=data)
    s3.put_object(Bucket=bucket, Key=f"{folder}/manifest-files.json", Body=json.dumps(
        {"itemCount": 1, "md5Checksum": base64.b64encode(hashlib.md5(data).digest()).decode(),
         "etag": hashlib.md5(data).hexdigest(), "dataFileS3Key": f"{folder}/data/part-0.json.gz"}))
    s3.put_object(Bucket=bucket, Key=summary_key, Body=json.dumps(
        {"exportType": "FULL_EXPORT", "exportTime": "2026-12-02T03:00:00+00:00", "itemCount": 1,
         "manifestFilesS3Key": f"{folder}/manifest-files.json"}))


def routes_by_api() -> dict[str, set[str]]:
    """Each HttpApi's logical id -> the route keys its events put on it, read from the template."""
    on: dict[str, set[str]] = {}
    for function in FUNCTIONS.values():
        for event in (function.get("Events") or {}).values():
            if event["Type"] == "HttpApi":
                route = event["Properties"]
                on.setdefault(route["ApiId"]["Ref"], set()).add(f"{route['Method'].upper()} {route['Path']}")
    return on


def test_the_public_api_carries_only_the_client_routes_and_the_trusted_api_every_shop_route():
    """A shop-only route is not on the browsers' API at all: no token can reach it there. Only
    public and visitor routes go without the JWT authorizer (visitor tokens are checked by
    shared/auth.py); the trusted API has every route but those of a visitor's own token."""
    assert api_authentication(TEMPLATE) == {"PublicApi": "jwt", "TrustedApi": "iam"}
    on = routes_by_api()
    assert on.keys() == {"PublicApi", "TrustedApi"}
    assert on["PublicApi"] == CLIENT_ROUTES.keys()
    visitors_own = {key for key, access in CLIENT_ROUTES.items() if access in (Access.VISITOR, Access.RENEWAL)}
    assert on["TrustedApi"] == {route.route_key for route in http_routes(TEMPLATE)} - visitors_own
    unauthenticated = {f"{e['Properties']['Method']} {e['Properties']['Path']}" for f in FUNCTIONS.values()
                       for e in (f.get("Events") or {}).values()
                       if e["Type"] == "HttpApi" and (e["Properties"].get("Auth") or {}).get("Authorizer") == "NONE"}
    assert unauthenticated == {key for key, access in CLIENT_ROUTES.items() if access is not Access.CUSTOMER}


def test_alarms_notify_the_topic_and_watch_metrics_the_code_emits():
    emitted = set()
    for source in [*(PROJECT_ROOT / "functions").rglob("*.py"), *(PROJECT_ROOT / "shared").rglob("*.py")]:
        emitted |= set(re.findall(r'add_metric\(\s*"(\w+)"', source.read_text()))
    alarms = resources(TEMPLATE, "AWS::CloudWatch::Alarm")
    assert alarms
    for name, alarm in alarms.items():
        assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}], name
        if alarm["Namespace"] == "ShopRecs":
            assert alarm["MetricName"] in emitted, f"{name} watches a metric nothing emits"


# What CloudWatch Logs accepts as RetentionInDays.
CLOUDWATCH_RETENTION_DAYS = [1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192,
                             2557, 2922, 3288, 3653]


def test_every_function_logs_to_a_group_kept_log_retention_days():
    parameter = TEMPLATE["Parameters"]["LogRetentionDays"]
    assert (parameter["Type"], parameter["Default"]) == ("Number", 30)
    assert parameter["AllowedValues"] == CLOUDWATCH_RETENTION_DAYS
    groups = resources(TEMPLATE, "AWS::Logs::LogGroup").values()
    # The name Lambda writes to: a group of another name would be left empty, and Lambda would
    # create its own, kept forever.
    assert sorted(group["LogGroupName"]["Fn::Sub"] for group in groups) == sorted(
        f"/aws/lambda/${{{function}}}" for function in FUNCTIONS)
    assert all(group["RetentionInDays"] == {"Ref": "LogRetentionDays"} for group in groups)


def test_the_train_function_gets_the_model_retention_parameters():
    parameters = TEMPLATE["Parameters"]
    assert parameters["ModelVersionsKept"] | {"Description": ""} == {
        "Type": "Number", "Default": 10, "MinValue": 2, "Description": ""}
    assert parameters["ModelMaxAgeDays"] | {"Description": ""} == {
        "Type": "Number", "Default": 90, "MinValue": 7, "Description": ""}
    own = FUNCTIONS["TrainFunction"]["Environment"]["Variables"]
    assert own["MODEL_VERSIONS_KEPT"] == {"Ref": "ModelVersionsKept"}
    assert own["MODEL_MAX_AGE_DAYS"] == {"Ref": "ModelMaxAgeDays"}
    local = function_environment(TEMPLATE, "TrainFunction", {name: name for name in TEMPLATE["Resources"]}, {})
    assert (local["MODEL_VERSIONS_KEPT"], local["MODEL_MAX_AGE_DAYS"]) == ("10", "90")


def test_a_campaign_is_shown_failed_only_once_its_job_can_no_longer_run_on_aws():
    from shared.campaigns.spec import JOB_SECONDS, START_WITHIN_SECONDS

    function = FUNCTIONS["CampaignsFunction"]
    assert function["Timeout"] == JOB_SECONDS
    assert function["EventInvokeConfig"] == {"MaximumRetryAttempts": 0, "MaximumEventAgeInSeconds": START_WITHIN_SECONDS}


def test_the_model_bucket_expires_replaced_versions_but_never_a_current_object():
    bucket = resources(TEMPLATE, "AWS::S3::Bucket")["ModelBucket"]
    assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}
    rules = [rule for rule in bucket["LifecycleConfiguration"]["Rules"] if rule["Status"] == "Enabled"]
    assert any(1 <= rule.get("NoncurrentVersionExpiration", {}).get("NoncurrentDays", 0) <= 14 for rule in rules)
    assert any(rule.get("AbortIncompleteMultipartUpload", {}).get("DaysAfterInitiation") for rule in rules)
    # The active model must outlive a training pause of any length: nothing expires or archives
    # current objects (an archived one cannot be read without a restore).
    for rule in bucket["LifecycleConfiguration"]["Rules"]:
        assert not rule.keys() & {"ExpirationInDays", "ExpirationDate", "Transition", "Transitions"}, rule


def iam_requests(service: str, operation: str, params: dict[str, Any], names: dict[str, str]) -> list[Grant]:
    """What IAM checks for one AWS call: each action and resource, named as grants() names them."""
    if service == "dynamodb":
        if operation in ("BatchGetItem", "BatchWriteItem"):
            return [Grant(f"dynamodb:{operation}", names[table]) for table in params["RequestItems"]]
        if operation in ("TransactWriteItems", "TransactGetItems"):
            # IAM has no transaction action: it checks each action inside the transaction.
            actions = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem",
                       "ConditionCheck": "ConditionCheckItem", "Get": "GetItem"}
            return [Grant(f"dynamodb:{actions[kind]}", names[action["TableName"]])
                    for entry in params["TransactItems"] for kind, action in entry.items()]
        index = f"/index/{params['IndexName']}" if "IndexName" in params else ""
        return [Grant(f"dynamodb:{operation}", names[params["TableName"]] + index)]
    if service == "s3":
        bucket = names[params["Bucket"]]
        if operation in ("ListObjectsV2", "ListObjects", "ListObjectVersions"):
            return [Grant("s3:ListBucket", bucket)]
        if operation == "DeleteObjects":
            return [Grant("s3:DeleteObject", f"{bucket}/{entry['Key']}") for entry in params["Delete"]["Objects"]]
        action = {"HeadObject": "GetObject"}.get(operation, operation)
        return [Grant(f"s3:{action}", f"{bucket}/{params['Key']}")]
    if (service, operation) == ("secretsmanager", "GetSecretValue"):
        return [Grant("secretsmanager:GetSecretValue", names[params["SecretId"]])]
    if (service, operation) == ("lambda", "Invoke"):
        return [Grant("lambda:InvokeFunction", names[params["FunctionName"]])]
    if (service, operation) == ("events", "PutEvents"):
        return [Grant("events:PutEvents", names[entry["EventBusName"]]) for entry in params["Entries"]]
    raise AssertionError(f"{service}.{operation}: teach iam_requests which IAM actions it needs")


def allowed(request: Grant, held: list[Grant]) -> bool:
    return any(fnmatchcase(request.action.lower(), grant.action.lower()) and fnmatchcase(request.resource, grant.resource)
               for grant in held)


@dataclass
class CallLog:
    """The AWS calls each function makes, as (function, service, operation, parameters).

    Calls are the doing of the function whose thread makes them; a thread a function starts (a
    pool's worker, a background refresh) is that function's too, whenever it makes its calls:
    a background Scan must not be put down to whichever function happens to run meanwhile."""

    calls: list[tuple[str, str, str, dict[str, Any]]] = field(default_factory=list)
    local: threading.local = field(default_factory=threading.local)

    @property
    def function(self) -> str | None:
        return getattr(self.local, "function", None)

    def record(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from botocore.client import BaseClient

        original = BaseClient._make_api_call
        original_start = threading.Thread.start
        log = self

        def make_api_call(client: Any, operation: str, params: dict[str, Any]) -> Any:
            if log.function:  # seeding the tables is not a function's doing
                log.calls.append((log.function, client.meta.service_model.service_name, operation, params))
            return original(client, operation, params)

        def start(thread: threading.Thread) -> None:
            owner, run = log.function, thread.run

            def run_as_owner() -> None:
                log.local.function = owner
                run()

            thread.run = run_as_owner  # type: ignore[method-assign]
            original_start(thread)

        monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
        monkeypatch.setattr(threading.Thread, "start", start)

    def as_function(self, function: str, handler: Any) -> Any:
        def call(event: dict[str, Any], context: Any) -> Any:
            before = self.function
            self.local.function = function
            try:
                return handler(event, context)
            finally:
                self.local.function = before
        return call


def test_every_aws_call_the_functions_make_is_granted_by_their_policies(api, moto_tables, monkeypatch):
    """Least privilege must not cost a working function: a call its role lacks fails only on AWS."""
    from devstack.demo_data import generate_shop
    from devstack.gateway import LambdaContext
    from devstack.template import Route
    from shared.storage.blobs import S3Blobs
    from shared.storage.models import Manifest, ModelStore
    from devstack.api_client import bearer
    from tests.conftest import CAMPAIGN_BUCKET, MODEL_BUCKET, Api
    from tests.factories import item, purchase, event as view
    from tests.training_data import END, store_events

    import boto3

    from shared.config import get_settings

    # The AWS way to the visitor token key: a secret, not the key in the environment.
    secret = boto3.client("secretsmanager").create_secret(Name="visitor-key", SecretString="k" * 64)["ARN"]
    monkeypatch.setenv("VISITOR_TOKEN_SECRET_ARN", secret)
    monkeypatch.delenv("VISITOR_TOKEN_SECRET")
    # Triggers go to EventBridge, as on AWS (docs/triggers.md).
    bus = boto3.client("events").create_event_bus(Name="test-events")["EventBusArn"].rsplit("/", 1)[-1]
    monkeypatch.setenv("EVENT_BUS_NAME", bus)
    monkeypatch.delenv("LOCAL_BUS_FILE", raising=False)
    get_settings.cache_clear()
    log = CallLog()
    log.record(monkeypatch)
    gateway_handler = api.gateway.handler
    monkeypatch.setattr(api.gateway, "handler", lambda route: log.as_function(route.function, gateway_handler(route)))
    train = FUNCTIONS["TrainFunction"]
    train_handler = log.as_function("TrainFunction", load_handler(
        Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None)))

    shop = generate_shop(seed=2, n_users=40, n_items=30, end=END)
    store_events(moto_tables["EventsTable"], shop.events)
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    for age in range(100, 111):  # more than ModelVersionsKept, all past ModelMaxAgeDays: training prunes some
        models.save(Manifest(version=f"v-old-{age}", status="rejected",
                             started_at=datetime.now(timezone.utc) - timedelta(days=age)))
    assert api.json("POST", "/items", {"items": [item("sku-1"), item("sku-2")]})[0] == 200
    assert api.json("PUT", "/items/sku-3", {k: v for k, v in item("sku-3", in_stock=False).items()
                                            if k != "item_id"})[0] == 200
    # Back in stock: ingest publishes at once and marks the row.
    assert api.json("PUT", "/items/sku-3", {k: v for k, v in item("sku-3").items() if k != "item_id"})[0] == 200
    # A previous run with a member who is not declining now: the nightly run publishes Segment Left.
    from shared.storage import dynamo
    from shared.storage.segments import SegmentStore
    SegmentStore(moto_tables["SegmentsTable"]).write_run(
        "20000101T000000", (datetime.now(timezone.utc) - timedelta(days=1)).isoformat(),
        members_by_segment([("lifecycle:declining", "lifecycle", "Declining", "u-2", "was declining")]))
    assert api.json("PUT", "/users/u-1", {"country": "DE", "consent": {"personalization": True}})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1"), view("v-1", user_id="u-2")]})[0] == 200
    assert api.json("GET", "/items/sku-1")[0] == 200
    # A running experiment's name an interrupted stop left: the nightly run removes it.
    boto3.client("s3").put_object(Bucket=MODEL_BUCKET, Key="experiments-running/exp-20200101-gone00", Body=b"")
    manifest = train_handler({"config": {"min_gain_over_popularity": 0}}, LambdaContext(function_name="TrainFunction"))
    assert manifest["status"] == "accepted", manifest["reason"]
    assert api.json("GET", "/models")[0] == 200
    assert api.json("POST", f"/models/{manifest['version']}/activate")[0] == 200
    # A start whose train function cannot be started forgets the run it listed.
    def cannot_start(overrides: dict, version: str) -> None:
        raise Conflict("the train function is busy")

    api.gateway.trainer.start = cannot_start  # type: ignore[method-assign]
    assert api.json("POST", "/models/train")[0] == 409
    del api.gateway.trainer.start
    status, experiment = api.json("POST", "/experiments", json.loads(json.loads(
        (PROJECT_ROOT / "events" / "admin" / "post_experiments.json").read_text())["body"]))
    assert status == 201, experiment
    assert api.json("GET", "/experiments")[0] == 200
    assert api.json("POST", f"/experiments/{experiment['experiment_id']}/stop")[0] == 200
    shopper = next(iter(shop.archetypes))
    for path in (f"/users/{shopper}/recommendations", "/items/sku-1/similar", "/popular", f"/users/{shopper}/segments",
                 "/segments"):
        assert api.json("GET", path)[0] in (200, 404), path
    status, created = api.json("POST", "/segments", json.loads(json.loads(
        (PROJECT_ROOT / "events" / "segments" / "post_segments.json").read_text())["body"]))
    assert status == 201, created
    segments = api.json("GET", "/segments")[1]["segments"]
    assert api.json("GET", f"/segments/{segments[0]['segment_id']}/members")[0] == 200
    assert api.json("DELETE", f"/segments/{created['segment_id']}")[0] == 204
    status, visitor = api.anonymous().json("POST", "/visitors")
    assert status == 201, visitor
    as_visitor = Api(api.gateway, bearer(visitor["token"]))
    assert as_visitor.json("POST", f"/visitors/{visitor['visitor_id']}/events",
                           {"events": [{k: v for k, v in view("v-9").items() if k != "user_id"}]})[0] == 200
    assert as_visitor.json("GET", f"/visitors/{visitor['visitor_id']}/recommendations")[0] == 200
    assert as_visitor.json("POST", f"/visitors/{visitor['visitor_id']}/token")[0] == 200
    assert api.as_customer(shopper).json("POST", f"/users/{shopper}/visitors",
                                         {"visitor_token": visitor["token"]})[0] == 200
    # A run written before the buckets of customers named the shopper in an item of their own.
    dynamo.batch_put(moto_tables["SegmentsTable"], [{"segment_id": f"#customer#{shopper}", "sk": "19991231T000000",
                                                     "pages": {"lifecycle:declining": 1}}])
    assert api.json("GET", f"/users/{shopper}/export")[0] == 200
    assert api.json("PUT", f"/users/{shopper}/consent", {"personalization": False})[0] == 200
    assert api.json("GET", f"/users/{shopper}/consent")[0] == 200
    assert api.json("DELETE", f"/users/{shopper}")[0] == 200
    # A campaign: the API calls, then its job as the function's asynchronous invocation runs it on AWS.
    assert api.json("PUT", "/users/u-1/consent", {"email": {"granted": True}, "source": "newsletter-form"})[0] == 200
    status, campaign = api.json("POST", "/campaigns", {"name": "grants", "channel": "email", "num_results": 3,
                                                       "segment_id": segments[0]["segment_id"]})
    assert status == 202, campaign
    assert all(jobs.wait(60) for jobs in api.gateway.jobs.values())
    campaigns = FUNCTIONS["CampaignsFunction"]
    campaigns_handler = log.as_function("CampaignsFunction", load_handler(
        Route("", "", "CampaignsFunction", PROJECT_ROOT / campaigns["CodeUri"], campaigns["Handler"], None)))
    job = campaigns_handler({"campaign_id": campaign["campaign_id"]}, LambdaContext(function_name="CampaignsFunction"))
    assert job["status"] == "ACTIVE", job
    counts = api.json("GET", f"/campaigns/{campaign['campaign_id']}")[1]["counts"]
    assert counts["written"] == counts["reachable"] <= 1
    assert api.json("GET", "/campaigns")[0] == 200
    # Both publishers reached the bus, so their grant is checked below.
    assert {function for function, _, operation, _ in log.calls if operation == "PutEvents"} == {
        "IngestFunction", "TrainFunction"}

    names = {physical: logical for logical, physical in moto_tables.items()} | {MODEL_BUCKET: "ModelBucket",
                                                                                CAMPAIGN_BUCKET: "CampaignBucket",
                                                                                secret: "VisitorTokenSecret", bus: "ShopEventsBus"}
    requests = {(function, request) for function, service, operation, params in log.calls
                for request in iam_requests(service, operation, params, names)}
    assert {function for function, _ in requests} == FUNCTIONS.keys()
    assert {(function, request) for function, request in requests if not allowed(request, grants(function))} == set()
    # And each delete right is used: a right that nothing uses any more is one to take away.
    used = {(function, right) for function, rights in MAY_DELETE.items() for right in rights
            for caller, request in requests if caller == function and allowed(request, [Grant(*right)])}
    assert used == {(function, right) for function, rights in MAY_DELETE.items() for right in rights}


def test_a_schedule_finishes_erasures_with_the_sample_events_payload():
    sweep = FUNCTIONS["PrivacyFunction"]["Events"]["FinishErasures"]
    assert sweep["Type"] == "ScheduleV2"
    assert sweep["Properties"]["ScheduleExpression"] == {"Ref": "ErasureSweepSchedule"}
    sample = json.loads((PROJECT_ROOT / "events" / "privacy" / "finish_erasures.json").read_text())
    assert json.loads(sweep["Properties"]["Input"]) == sample


def test_the_export_paths_roles_delete_only_what_the_train_function_has_a_reason_for():
    """TrainingPath=export adds the TrainingPipeline's role and, for a Batch fit, the job's: the
    job runs the train function's code and may delete what it may; the state machine nothing."""
    for fit_compute in ("lambda", "fargate", "gpu"):
        deployed = resolve_conditions(TEMPLATE, {"TrainingPath": "export", "FitCompute": fit_compute})
        statements = {"TrainingPipeline": [s for policy in resources(deployed, "AWS::Serverless::StateMachine")
                                           ["TrainingPipeline"]["Policies"] for s in policy["Statement"]]}
        if fit_compute != "lambda":
            statements["FitJobRole"] = [s for policy in deployed["Resources"]["FitJobRole"]["Properties"]["Policies"]
                                        for s in policy["PolicyDocument"]["Statement"]]
        functions = resources(deployed, "AWS::Serverless::Function")
        statements["TrainFunction"] = [s for policy in functions["TrainFunction"]["Policies"] for s in policy["Statement"]]
        for role, found in statements.items():
            held = {(action, resource_name(target)) for s in found
                    for action in (s["Action"] if isinstance(s["Action"], list) else [s["Action"]])
                    for target in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
                    if deletes(action)}
            may = set(MAY_DELETE["TrainFunction"]) if role != "TrainingPipeline" else set()
            assert held == may, (fit_compute, role, held)
