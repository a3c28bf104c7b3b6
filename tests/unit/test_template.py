"""template.yaml is what gets deployed: it must lint, and every route must reach real code."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.template import PROJECT_ROOT, http_routes, load_template, resources
from devstack.gateway import load_handler

TEMPLATE = load_template()


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


def test_functions_only_get_the_access_they_need():
    policies = {name: [next(iter(p)) for p in function.get("Policies", [])]
                for name, function in resources(TEMPLATE, "AWS::Serverless::Function").items()}
    assert not any("Crud" in p for p in policies["IngestFunction"]), "ingest must not delete"
    assert all("Read" in p for p in policies["RecommendFunction"]), "serving only reads"
    for name, function in resources(TEMPLATE, "AWS::Serverless::Function").items():
        assert '"*"' not in json.dumps(function.get("Policies", [])), name


def test_tables_have_the_keys_the_access_patterns_need():
    tables = resources(TEMPLATE, "AWS::DynamoDB::Table")
    keys = {name: {k["AttributeName"]: k["KeyType"] for k in t["KeySchema"]}
            for name, t in tables.items()}
    assert keys["EventsTable"] == {"user_id": "HASH", "event_id": "RANGE"}
    assert keys["ItemsTable"] == {"item_id": "HASH"}
    assert keys["UsersTable"] == {"user_id": "HASH"}


@pytest.mark.parametrize("sample", api_samples(), ids=lambda p: p.stem)
def test_each_sample_event_gets_a_json_answer_without_a_server_error(moto_tables, sample: Path):
    event = json.loads(sample.read_text())
    route = next(r for r in http_routes(TEMPLATE) if r.route_key == event["routeKey"])
    from devstack.gateway import LambdaContext

    result = load_handler(route)(event, LambdaContext(function_name=route.function))

    assert result["statusCode"] < 500, result
    assert result["statusCode"] not in (401, 403), "the sample's caller must be allowed this route"
    json.loads(result["body"])


@pytest.mark.parametrize("sample", sorted((PROJECT_ROOT / "events" / "train").glob("*.json")), ids=lambda p: p.stem)
def test_the_train_function_handles_its_schedule_and_on_demand_events(moto_tables, sample: Path):
    from devstack.gateway import LambdaContext
    from devstack.template import Route

    train = resources(TEMPLATE, "AWS::Serverless::Function")["TrainFunction"]
    handler = load_handler(Route("", "", "TrainFunction", PROJECT_ROOT / train["CodeUri"], train["Handler"], None))

    event = json.loads(sample.read_text())
    manifest = handler(event, LambdaContext(function_name="TrainFunction"))

    assert manifest["status"] == "insufficient_data"  # the tables are empty
    assert {k: manifest["parameters"][k] for k in event.get("config", {})} == event.get("config", {})
    assert manifest["finished_at"]


def test_every_route_is_on_both_apis_so_customers_get_403_not_404():
    """Customers and the shop's systems call the same paths; shared/auth.py decides, not routing."""
    for route in http_routes(TEMPLATE):
        assert route.authenticated_by == {"jwt", "iam"}, route.route_key


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
