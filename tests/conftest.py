"""Fixtures shared by every test: fake AWS credentials, tables from template.yaml on moto or
on DynamoDB Local, and the local gateway that calls the functions as API Gateway would."""

from __future__ import annotations

import io
import json
import os
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Set before anything creates a boto3 client, so no test can reach a real AWS account.
os.environ.update({
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "POWERTOOLS_TRACE_DISABLED": "true",
    "POWERTOOLS_METRICS_DISABLED": "true",
    "POWERTOOLS_SERVICE_NAME": "shop-recs-tests",
    "POWERTOOLS_METRICS_NAMESPACE": "ShopRecsTests",
    "OPENBLAS_NUM_THREADS": "1",
    "TRAIN_FUNCTION_NAME": "shop-recs-test-train",  # moto_tables creates it, as the stack does
    "VISITOR_TOKEN_SECRET": "test-visitor-token-key-of-at-least-32-bytes",
})

from devstack.api_client import Credentials, bearer, signed_as_backend, train_and_wait  # noqa: E402
from devstack.dynamodb_local import DynamoDBLocal, create_tables, delete_tables  # noqa: E402
from devstack.gateway import Gateway, HttpResponse  # noqa: E402
from devstack.local_auth import LocalAuth  # noqa: E402
from devstack.template import load_template, table_definitions  # noqa: E402
from shared.config import get_settings  # noqa: E402
from shared.storage import dynamo  # noqa: E402

TEMPLATE = load_template()
MODEL_BUCKET = "test-models"
CAMPAIGN_BUCKET = "test-campaigns"
TABLE_ENV = {"EventsTable": "EVENTS_TABLE", "ItemsTable": "ITEMS_TABLE",
             "UsersTable": "USERS_TABLE", "SegmentsTable": "SEGMENTS_TABLE"}


# The local issuer and trusted key every in-process gateway of the session checks against.
LOCAL_AUTH = LocalAuth.create()


def local_gateway(allowed_origins: list[str] | None = None) -> Gateway:
    return Gateway(TEMPLATE, allowed_origins or [], LOCAL_AUTH)


@dataclass
class Api:
    """The service as a client sees it, through the local gateway, in this process.

    By default it calls as the shop's backend (SigV4-signed); as_customer() and anonymous()
    give the same service as other callers see it.
    """

    gateway: Gateway
    credentials: Credentials | None = signed_as_backend(LOCAL_AUTH)

    def call(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
             headers: dict[str, str] | None = None) -> HttpResponse:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent = {"content-type": "application/json", "host": "local", **(headers or {})}
        if self.credentials:
            sent = self.credentials(method, f"http://local{path}", sent, data)
        return self.gateway.handle(method, path, sent, data)

    def as_customer(self, user_id: str, **token_options: Any) -> Api:
        return Api(self.gateway, bearer(LOCAL_AUTH.issue_token(user_id, **token_options)))

    def anonymous(self) -> Api:
        return Api(self.gateway, None)

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        response = self.call(method, path, body, **kwargs)
        return response.status, json.loads(response.body) if response.body else None

    def train_and_wait(self, config: dict[str, Any] | None = None, timeout: float = 300) -> dict[str, Any]:
        """POST /models/train, followed through GET /models to the run's manifest."""
        return train_and_wait(self.json, config, timeout, every=0.05,
                              still_running=lambda: self.gateway.trainer.running)


def use_tables(monkeypatch: pytest.MonkeyPatch, names: dict[str, str]) -> None:
    """Point the functions at these tables, as template.yaml's environment does on AWS."""
    for logical_id, variable in TABLE_ENV.items():
        monkeypatch.setenv(variable, names[logical_id])
    monkeypatch.setenv("MODEL_BUCKET", MODEL_BUCKET)
    monkeypatch.setenv("CAMPAIGN_BUCKET", CAMPAIGN_BUCKET)
    get_settings.cache_clear()
    dynamo.client.cache_clear()
    dynamo.bulk_client.cache_clear()


@pytest.fixture
def moto_tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    from moto import mock_aws

    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)
    # moto rolls a failed transaction back by restoring a snapshot of every table, which undoes
    # transactions that committed meanwhile on other threads; concurrency is tested on DynamoDB Local.
    monkeypatch.setenv("INGEST_CONCURRENCY", "1")
    with mock_aws(config={"lambda": {"use_docker": False}}):
        client = dynamo.boto3.client("dynamodb")
        names = {}
        for logical_id, spec in table_definitions(TEMPLATE, "test").items():
            client.create_table(**spec)
            names[logical_id] = spec["TableName"]
        dynamo.boto3.client("s3").create_bucket(Bucket=MODEL_BUCKET)
        dynamo.boto3.client("s3").create_bucket(Bucket=CAMPAIGN_BUCKET)
        create_train_function()
        monkeypatch.delenv("LOCAL_MODEL_DIR", raising=False)
        monkeypatch.delenv("LOCAL_CAMPAIGN_DIR", raising=False)
        use_tables(monkeypatch, names)
        yield names
        dynamo.client.cache_clear()
    get_settings.cache_clear()


def create_train_function() -> None:
    """The functions invoked asynchronously on AWS, as stubs (moto runs no code without Docker):
    the train function the admin function starts, and the campaigns function, which starts itself."""
    role = dynamo.boto3.client("iam").create_role(
        RoleName="train", AssumeRolePolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": []}))
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("app.py", "def lambda_handler(event, context):\n    return event\n")
    for name in (os.environ["TRAIN_FUNCTION_NAME"], "CampaignsFunction"):
        dynamo.boto3.client("lambda").create_function(
            FunctionName=name, Runtime="python3.12", Role=role["Role"]["Arn"],
            Handler="app.lambda_handler", Code={"ZipFile": code.getvalue()})


@pytest.fixture(scope="session")
def dynamodb_local() -> Iterator[str]:
    instance = DynamoDBLocal.start()
    yield instance.endpoint
    instance.stop()


@pytest.fixture
def local_tables(dynamodb_local: str, monkeypatch: pytest.MonkeyPatch, tmp_path) -> Iterator[dict[str, str]]:
    """Fresh tables on DynamoDB Local for one test; models in a folder, as on the local stack."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_local)
    monkeypatch.setenv("LOCAL_MODEL_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("LOCAL_CAMPAIGN_DIR", str(tmp_path / "campaigns"))
    names = create_tables(dynamodb_local, f"t{uuid.uuid4().hex[:8]}", TEMPLATE)
    use_tables(monkeypatch, names)
    yield names
    delete_tables(dynamodb_local, names)
    dynamo.client.cache_clear()
    get_settings.cache_clear()


@pytest.fixture
def api(moto_tables: dict[str, str]) -> Iterator[Api]:
    """The functions on moto: fast, for behaviour that does not depend on DynamoDB's details."""
    api = Api(local_gateway(["http://localhost:3000"]))
    yield api
    wait_for_background_work(api)


def wait_for_background_work(api: Api) -> None:
    """A training run or campaign job started in the background never outlives its tables (one that
    did would fail against a mock already gone, and be reported against a later test)."""
    assert api.gateway.trainer.wait(60)
    assert all(jobs.wait(60) for jobs in api.gateway.jobs.values())


@pytest.fixture
def local_api(local_tables: dict[str, str]) -> Iterator[Api]:
    """The functions on DynamoDB Local: transactions and conditions as AWS evaluates them."""
    api = Api(local_gateway(["http://localhost:3000"]))
    yield api
    wait_for_background_work(api)
