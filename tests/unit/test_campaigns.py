"""Campaign exports: POST /campaigns writes one line per reachable customer (consent for the
channel, under its cap) with their top items and reasons, as JSON Lines and CSV; GET follows it.
On moto: the exports land in the campaign bucket as on AWS."""

from __future__ import annotations

import csv
import io
import json

import boto3
import pytest

from devstack.demo_data import generate_shop
from tests.conftest import CAMPAIGN_BUCKET
from tests.factories import ago, item, purchase
from tests.training_data import A_MODEL_SERVES, END, store_events

EMAIL = {"email": {"granted": True}, "source": "newsletter-form", "text_version": "2026-01"}


@pytest.fixture
def shop_api(api, moto_tables, monkeypatch):
    """A trained shop of 60 customers; 30 of them agreed to email."""
    monkeypatch.setenv("NEW_ITEMS_SHARE", "0")  # online answers then have no new-item slots, as campaign lines
    from shared.config import get_settings
    get_settings.cache_clear()
    shop = generate_shop(seed=3, n_users=60, n_items=40, end=END)
    assert api.json("POST", "/items", {"items": shop.items})[0] == 200
    for user in shop.users:
        profile = {k: v for k, v in user.items() if k not in ("user_id", "consent")}  # the test decides who opted in
        assert api.json("PUT", f"/users/{user['user_id']}", profile)[0] == 200
    store_events(moto_tables["EventsTable"], shop.events)
    manifest = api.train_and_wait(A_MODEL_SERVES)
    assert manifest["status"] == "accepted", manifest["reason"]
    opted_in = sorted(u["user_id"] for u in shop.users)[:30]
    for user_id in opted_in:
        assert api.json("PUT", f"/users/{user_id}/consent", EMAIL)[0] == 200
    return api, shop, opted_in


def run(api, body):
    status, started = api.json("POST", "/campaigns", body)
    assert status == 202, started
    assert started["status"] == "CREATE PENDING"
    assert all(jobs.wait(120) for jobs in api.gateway.jobs.values())
    status, campaign = api.json("GET", f"/campaigns/{started['campaign_id']}")
    assert status == 200
    return campaign


def exported(address: str) -> bytes:
    bucket, key = address.removeprefix("s3://").split("/", 1)
    assert bucket == CAMPAIGN_BUCKET
    return boto3.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read()


def test_an_export_has_one_line_per_reachable_customer_with_their_own_recommendations(shop_api):
    api, shop, opted_in = shop_api
    campaign = run(api, {"name": "December newsletter", "channel": "email", "num_results": 5})

    assert campaign["status"] == "ACTIVE", campaign["failure_reason"]
    assert campaign["counts"]["reachable"] == campaign["counts"]["written"] == len(opted_in)
    assert campaign["counts"]["left_out"] == {"no email consent": len(shop.users) - len(opted_in)}
    assert campaign["progress"] == {"customers_total": len(opted_in), "customers_done": len(opted_in), "percent": 100.0}
    lines = [json.loads(line) for line in exported(campaign["output"]["jsonl"]).decode().splitlines()]
    assert sorted(line["input"]["userId"] for line in lines) == opted_in
    catalog = {i["item_id"]: i for i in shop.items}
    for line in lines:
        online = api.json("GET", f"/users/{line['input']['userId']}/recommendations?limit=5")[1]
        # The same list the shop's website would show this customer now, in the same order.
        assert line["output"]["recommendedItems"] == [i["item_id"] for i in online["items"]]
        assert line["output"]["strategy"] == online["strategy"]
        assert all(catalog[i]["in_stock"] for i in line["output"]["recommendedItems"])
        assert all(reason for reason in line["output"]["reasons"])
        assert line["output"]["channel"] == "email"
    rows = list(csv.DictReader(io.StringIO(exported(campaign["output"]["csv"]).decode())))
    assert [r["user_id"] for r in rows] == [line["input"]["userId"] for line in lines]
    assert rows[0]["item_1_title"] == catalog[lines[0]["output"]["recommendedItems"][0]]["title"]


def test_reasons_name_the_same_history_item_as_online(shop_api):
    api, _, _ = shop_api
    campaign = run(api, {"name": "reasons", "channel": "email", "num_results": 5})
    ours, theirs = [], []
    for line in map(json.loads, exported(campaign["output"]["jsonl"]).decode().splitlines()):
        online = api.json("GET", f"/users/{line['input']['userId']}/recommendations?limit=5")[1]
        ours += line["output"]["reasons"]
        theirs += [i["reason"]["text"] for i in online["items"]]
    # An email says what the website says, "because you bought X" naming the same X.
    assert len(ours) > 50 and ours == theirs
    assert sum(text.startswith("because you") for text in ours) > len(ours) / 3


def test_the_contact_cap_and_withdrawn_consent_leave_customers_out_and_say_why(shop_api, moto_tables):
    api, _, opted_in = shop_api
    capped, withdrawn = opted_in[0], opted_in[1]
    sends = [{"event_id": f"send-{n}", "user_id": capped, "event_type": "message_sent", "channel": "email",
              "campaign_id": f"weekly-{n}", "timestamp": ago(days=n + 1)} for n in range(2)]
    assert api.json("POST", "/events", {"events": sends})[1]["accepted"] == 2
    assert api.json("PUT", f"/users/{withdrawn}/consent", {"email": {"granted": False}, "source": "unsubscribe-link"})[0] == 200

    campaign = run(api, {"name": "capped", "channel": "email"})

    users = {json.loads(line)["input"]["userId"] for line in exported(campaign["output"]["jsonl"]).decode().splitlines()}
    assert capped not in users and withdrawn not in users
    assert campaign["counts"]["left_out"]["cap reached"] == 1
    assert campaign["counts"]["reachable"] == len(opted_in) - 2


@pytest.mark.parametrize("change", ["erased", "unsubscribed", "objected to personalization"])
def test_a_customer_who_is_erased_or_objects_while_the_job_runs_gets_no_line(shop_api, monkeypatch, change):
    """The job reads the shop once, and may run for minutes: each block is read again before it
    is written, so a change made after the read still keeps the customer out."""
    from shared.campaigns import job

    api, shop, opted_in = shop_api
    leaving = opted_in[3]
    catalog_snapshot = job.catalog_snapshot  # read_shop's last read: the customers are read by then

    def read_then_change(*args):
        data = catalog_snapshot(*args)
        if change == "erased":
            assert api.json("DELETE", f"/users/{leaving}")[0] == 200
        else:
            purpose = "email" if change == "unsubscribed" else "personalization"
            assert api.json("PUT", f"/users/{leaving}/consent", {purpose: {"granted": False},
                                                                  "source": "app-settings"})[0] == 200
        return data

    monkeypatch.setattr(job, "catalog_snapshot", read_then_change)
    campaign = run(api, {"name": "while it runs", "channel": "email"})

    users = {json.loads(line)["input"]["userId"] for line in exported(campaign["output"]["jsonl"]).decode().splitlines()}
    assert users == set(opted_in) - {leaving}
    reason = {"erased": "erased", "unsubscribed": "no email consent"}.get(change, change)
    before = len(shop.users) - len(opted_in) if reason == "no email consent" else 0  # those who never opted in
    assert campaign["counts"]["left_out"][reason] == before + 1
    assert campaign["counts"]["reachable"] == campaign["counts"]["written"] == len(opted_in) - 1


def test_a_segment_limits_the_audience_to_its_members_computed_now_and_a_dry_run_counts_them(shop_api):
    api, shop, opted_in = shop_api
    countries = {u["user_id"]: u.get("country") for u in shop.users}
    country = countries[opted_in[0]]
    status, segment = api.json("POST", "/segments", {"name": f"Lives in {country}",
                                                     "rule": {"field": "country", "op": "==", "value": country}})
    assert status == 201, segment

    # The marketer page's preview: a dry run counts the audience and writes nothing.
    preview = run(api, {"name": "local", "channel": "email", "segment_id": segment["segment_id"], "dry_run": True})
    assert preview["status"] == "ACTIVE" and preview["output"] == {} and preview["counts"]["written"] == 0

    campaign = run(api, {"name": "local", "channel": "email", "segment_id": segment["segment_id"]})

    users = {json.loads(line)["input"]["userId"] for line in exported(campaign["output"]["jsonl"]).decode().splitlines()}
    assert users == {u for u in opted_in if countries[u] == country}
    assert campaign["counts"]["in_segment"] == sum(1 for c in countries.values() if c == country)
    assert preview["counts"] == {**campaign["counts"], "written": 0}


def test_an_item_audience_ranks_likely_customers_and_leaves_out_buyers_and_the_unreachable(shop_api):
    api, shop, opted_in = shop_api
    bought = {}
    for event in shop.events:
        if event["event_type"] == "purchase":
            bought.setdefault(event["item_id"], set()).add(event["user_id"])
    item_id = max(bought, key=lambda i: len(bought[i] & set(opted_in)))

    campaign = run(api, {"name": "restock", "channel": "email", "item_id": item_id, "max_customers": 10})

    assert campaign["kind"] == "item_audience" and campaign["status"] == "ACTIVE", campaign
    lines = [json.loads(line) for line in exported(campaign["output"]["jsonl"]).decode().splitlines()]
    assert 0 < len(lines) <= 10
    users = [line["output"]["userId"] for line in lines]
    assert set(users) <= set(opted_in) - bought[item_id]
    model = [line["output"]["score"] for line in lines if line["output"]["evidence"] == "model"]
    assert model == sorted(model, reverse=True)
    assert all(line["input"]["itemId"] == item_id and line["output"]["reason"] for line in lines)


def test_an_item_audience_leaves_out_a_customer_erased_while_the_job_runs(shop_api, monkeypatch):
    from shared.campaigns import job

    api, shop, opted_in = shop_api
    item_id = shop.items[0]["item_id"]
    body = {"name": "restock", "channel": "email", "item_id": item_id, "max_customers": 10}
    first = [json.loads(line)["output"]["userId"] for line in exported(run(api, body)["output"]["jsonl"]).decode().splitlines()]
    catalog_snapshot = job.catalog_snapshot

    def read_then_erase(*args):
        data = catalog_snapshot(*args)
        assert api.json("DELETE", f"/users/{first[0]}")[0] == 200
        return data

    monkeypatch.setattr(job, "catalog_snapshot", read_then_erase)
    campaign = run(api, body)

    users = [json.loads(line)["output"]["userId"] for line in exported(campaign["output"]["jsonl"]).decode().splitlines()]
    assert users == first[1:] and campaign["counts"]["left_out"]["erased"] == 1


def test_a_new_item_reaches_customers_who_buy_its_category(shop_api):
    api, shop, opted_in = shop_api
    categories = {i["item_id"]: i["category"] for i in shop.items}
    buyers = {}
    for event in shop.events:
        if event["event_type"] == "purchase" and event["user_id"] in opted_in:
            buyers.setdefault(categories[event["item_id"]], set()).add(event["user_id"])
    category = max(buyers, key=lambda c: len(buyers[c]))
    assert api.json("PUT", "/items/brand-new", {k: v for k, v in item("brand-new", category=category).items()
                                                if k != "item_id"})[0] == 200

    campaign = run(api, {"name": "new in", "channel": "email", "item_id": "brand-new"})

    lines = [json.loads(line) for line in exported(campaign["output"]["jsonl"]).decode().splitlines()]
    assert {line["output"]["userId"] for line in lines} >= buyers[category]
    assert all(line["output"]["evidence"] == "category" for line in lines)
    assert f"new in {category}" in lines[0]["output"]["reason"]


def test_a_csv_cell_a_spreadsheet_would_run_is_written_as_text(api, moto_tables):
    assert api.json("PUT", "/items/sku-1", {k: v for k, v in item("sku-1", title='=HYPERLINK("https://evil.example")')
                                            .items() if k != "item_id"})[0] == 200
    assert api.json("PUT", "/users/u-1", {"consent": EMAIL})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1", item_id="sku-2"), purchase("p-2", user_id="u-2")]})[0] == 200
    assert api.train_and_wait(A_MODEL_SERVES)["status"] in ("accepted", "insufficient_data")

    campaign = run(api, {"name": "injection", "channel": "email", "num_results": 1})

    assert campaign["status"] == "ACTIVE", campaign
    rows = list(csv.DictReader(io.StringIO(exported(campaign["output"]["csv"]).decode())))
    assert rows[0]["item_1_title"] == "'" + '=HYPERLINK("https://evil.example")'


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "channel": "web"}, "channel"),
    ({"name": "", "channel": "email"}, "name"),
    ({"name": "x", "channel": "email", "num_results": 0}, "num_results"),
    ({"name": "x", "channel": "email", "num_results": 51}, "num_results"),
    ({"name": "x", "channel": "email", "max_customers": "10"}, "max_customers"),
    ({"name": "x", "channel": "email", "surprise": 1}, "surprise"),
    ({"name": "x", "channel": "email", "dry_run": "n"}, "dry_run"),  # once read as false: a real export
    ({"name": "x", "channel": "email", "dry_run": 0}, "dry_run"),
])
def test_a_bad_request_is_a_422_naming_the_field(api, body, field):
    status, answer = api.json("POST", "/campaigns", body)
    assert status == 422
    assert field in json.dumps(answer)


def test_an_unknown_item_or_segment_is_a_404_naming_it(api):
    status, answer = api.json("POST", "/campaigns", {"name": "x", "channel": "email", "item_id": "nope"})
    assert status == 404 and answer["error"]["fields"][0]["field"] == "item_id"
    status, answer = api.json("POST", "/campaigns", {"name": "x", "channel": "email", "segment_id": "nope"})
    assert status == 404 and answer["error"]["fields"][0]["field"] == "segment_id"
    assert api.json("GET", "/campaigns/c-20260101T000000-00000000")[0] == 404
    assert api.json("GET", "/campaigns/..%2Fmodels")[0] in (404, 422)


def test_campaigns_are_for_the_shops_systems_only(api):
    assert api.as_customer("u-1").json("POST", "/campaigns", {"name": "x", "channel": "email"})[0] in (401, 403, 404)
    assert api.anonymous().json("GET", "/campaigns")[0] in (401, 403, 404)


@pytest.fixture
def campaign_saves_refused(monkeypatch):
    """The campaign bucket refuses the PutObject calls whose numbers (1: the POST's) or whose keys'
    endings are in the set."""
    from botocore.client import BaseClient
    from botocore.exceptions import ClientError

    original, refused, puts = BaseClient._make_api_call, set(), []

    def make_api_call(client, operation, params):
        if operation == "PutObject" and params.get("Bucket") == CAMPAIGN_BUCKET:
            puts.append(params["Key"])
            if len(puts) in refused or any(params["Key"].endswith(end) for end in refused if isinstance(end, str)):
                raise ClientError({"Error": {"Code": "SlowDown", "Message": "Please reduce your request rate."}},
                                  operation)
        return original(client, operation, params)

    monkeypatch.setattr(BaseClient, "_make_api_call", make_api_call)
    return refused


def test_a_job_that_cannot_save_its_start_ends_failed_with_the_reason_not_pending_for_ever(api, campaign_saves_refused):
    campaign_saves_refused.add(2)  # the job's first save: CREATE IN_PROGRESS

    campaign = run(api, {"name": "spring", "channel": "email"})

    assert campaign["status"] == "CREATE FAILED" and "unavailable" in campaign["failure_reason"]


def test_a_job_whose_export_s3_refuses_says_so_as_its_reason(api, campaign_saves_refused):
    campaign_saves_refused.add(".jsonl")

    campaign = run(api, {"name": "spring", "channel": "email"})

    # Before: "an internal error stopped the job" (boto3's upload wraps the error S3 gave).
    assert campaign["status"] == "CREATE FAILED" and "S3 is throttling or unavailable" in campaign["failure_reason"]


def stored_campaign(api, status: str, created_minutes_ago: float, updated_minutes_ago: float) -> str:
    from datetime import datetime, timedelta, timezone

    from shared.campaigns.spec import Campaign, CampaignRequest, Status
    from shared.config import get_settings
    from shared.storage.campaigns import CampaignStore

    now = datetime.now(timezone.utc)
    campaign = Campaign.new(CampaignRequest(name="spring", channel="email"), now - timedelta(minutes=created_minutes_ago))
    store = CampaignStore.from_settings(get_settings().campaign_bucket, None)
    store.save(campaign.model_copy(update={"status": Status(status), "updated_at": now - timedelta(minutes=updated_minutes_ago)}))
    return campaign.campaign_id


@pytest.mark.parametrize("status, created, updated, shown", [
    ("CREATE PENDING", 5, 5, "CREATE PENDING"),  # its invocation may still be queued
    ("CREATE PENDING", 12, 12, "CREATE FAILED"),  # Lambda drops an invocation not started within 10 minutes
    ("CREATE IN_PROGRESS", 30, 2, "CREATE IN_PROGRESS"),  # saved its progress two minutes ago
    ("CREATE IN_PROGRESS", 30, 17, "CREATE FAILED"),  # past the function's 15 minutes
    ("ACTIVE", 600, 600, "ACTIVE"),
], ids=["pending", "never started", "in progress", "stopped", "done"])
def test_a_campaign_whose_job_can_no_longer_be_running_is_shown_failed_with_why(api, status, created, updated, shown):
    campaign_id = stored_campaign(api, status, created, updated)

    _, campaign = api.json("GET", f"/campaigns/{campaign_id}")
    _, listed = api.json("GET", "/campaigns")

    assert campaign["status"] == listed["campaigns"][0]["status"] == shown
    assert (campaign["failure_reason"] is not None) == (shown == "CREATE FAILED" != status)


def test_a_job_leaves_a_campaign_alone_that_is_no_longer_pending(api):
    from shared.campaigns.job import run_campaign
    from shared.config import get_settings
    from shared.storage.campaigns import CampaignStore

    # Its POST answered 503 (the invocation seemed to fail) and marked it failed, but the job started.
    campaign_id = stored_campaign(api, "CREATE FAILED", 1, 1)
    settings = get_settings()

    reads = []

    ran = run_campaign(campaign_id, CampaignStore.from_settings(settings.campaign_bucket, None), settings,
                       lambda: reads.append("the shop"))

    assert reads == [] and ran.status == "CREATE FAILED"
    assert api.json("GET", f"/campaigns/{campaign_id}")[1]["status"] == "CREATE FAILED"


@pytest.mark.parametrize("damage", [
    {"created_at": "2026-01-02T00:00:00"},  # no zone: neither before nor after a time with one
    {"progress": {"customers_total": 1, "customers_done": int("9" * 400)}},  # no float holds its percent
    {"counts": {"written": -1}},
], ids=["time without a zone", "count past a float", "negative count"])
def test_a_status_written_by_hand_that_does_not_read_is_a_409_alone_and_left_out_of_the_list(api, damage):
    from shared.config import get_settings

    kept = [stored_campaign(api, "ACTIVE", minutes, minutes) for minutes in (30, 20, 10)]
    newest = stored_campaign(api, "CREATE IN_PROGRESS", 1, 1)
    key = f"campaigns/{newest}/status.json"
    s3, bucket = boto3.client("s3"), get_settings().campaign_bucket
    status = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps({**status, **damage}).encode())

    status, refused = api.json("GET", f"/campaigns/{newest}")
    assert status == 409 and refused["error"]["fields"][0]["field"] == "campaign_id"
    status, listed = api.json("GET", "/campaigns?limit=2")
    assert status == 200 and [c["campaign_id"] for c in listed["campaigns"]] == [kept[2], kept[1]]  # still two
