"""The mobile apps' flow, replayed from its documentation over HTTP, so the two cannot drift.

Every ```http block of the "## Mobile apps" section is replayed in document order against a
local stack with a trained model, as a phone would send it: a request block (request line,
headers, a blank line, a JSON body) is sent once per answer block that follows it, and each
answer must match the one shown: its status, the headers shown (Cache-Control and Content-Type
exactly), the keys of its JSON at every level, and for event batches the counts and the refused
events. Placeholders are filled as the app fills them: {visitor_id} and {token} from the latest
answer that carries them, {etag} from the latest ETag, {user_id} and {customer_token} from the
identity provider (here the stack's issuer), {now} with the time. A request signed with SigV4
in the doc is signed here as the shop's backend. ```text blocks are illustrations, not replayed.
"""

from __future__ import annotations

import json
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from devstack import stack
from devstack.api_client import ApiClient, ApiResponse
from devstack.demo_data import generate_shop
from devstack.dynamodb_local import free_port
from devstack.template import PROJECT_ROOT
from tests.factories import iso
from tests.training_data import A_MODEL_SERVES

pytestmark = pytest.mark.e2e

DOC = PROJECT_ROOT / "docs" / "clients.md"
SECTION = re.compile(r"^## Mobile apps\n(.*?)(?=^## |\Z)", re.M | re.S)
FENCE = re.compile(r"^```http\n(.*?)^```$", re.M | re.S)
REQUEST_LINE = re.compile(r"(GET|POST|PUT|DELETE) (/\S*)(?: HTTP/1\.1)?")
STATUS_LINE = re.compile(r"HTTP/1\.1 (\d{3}) .+")
PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")
EXACT_HEADERS = {"cache-control", "content-type"}
CUSTOMER = "c-mobile-1"


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    line: int


@dataclass
class Call:
    method: str
    target: str
    headers: dict[str, str]
    body: str | None
    line: int
    answers: list[Answer] = field(default_factory=list)

    @property
    def route(self) -> str:
        return f"{self.method} {self.target.partition('?')[0]}"


@dataclass
class Sent:
    call: Call
    values: dict[str, str]  # the placeholders as they were when it was sent
    body: Any
    responses: list[ApiResponse]


def parse(text: str) -> list[Call]:
    """The section's requests, each with the answers shown after it."""
    section = SECTION.search(text)
    assert section, f"{DOC}: no '## Mobile apps' section"
    calls: list[Call] = []
    for block in FENCE.finditer(section.group(1)):
        line = text.count("\n", 0, section.start(1) + block.start()) + 1
        head, _, body = block.group(1).partition("\n\n")
        first, *header_lines = head.splitlines()
        assert all(": " in h for h in header_lines), f"{DOC}:{line}: a header line without 'Name: value'"
        headers = dict(h.split(": ", 1) for h in header_lines)
        if request := REQUEST_LINE.fullmatch(first):
            calls.append(Call(request[1], request[2], headers, body.strip() or None, line))
        elif status := STATUS_LINE.fullmatch(first):
            assert calls, f"{DOC}:{line}: an answer before any request"
            try:
                shown = json.loads(body) if body.strip() else None
            except json.JSONDecodeError as error:
                raise AssertionError(f"{DOC}:{line}: the answer's body is not JSON: {error}") from None
            calls[-1].answers.append(Answer(int(status[1]), headers, shown, line))
        else:
            raise AssertionError(f"{DOC}:{line}: neither a request nor an answer: {first!r}")
    for call in calls:
        assert call.answers, f"{DOC}:{call.line}: {call.route} shows no answer"
    return calls


class Phone:
    """What the app keeps between calls, and how it sends a documented call."""

    def __init__(self, anonymous: ApiClient, backend: ApiClient, customer_token: str) -> None:
        self.anonymous, self.backend = anonymous, backend
        self.values = {"user_id": CUSTOMER, "customer_token": customer_token}

    def fill(self, text: str, line: int) -> str:
        def value(found: re.Match) -> str:
            name = found[1]
            if name == "now":
                return iso(datetime.now(timezone.utc))
            assert name in self.values, f"{DOC}:{line}: {{{name}}} is used before any answer gave it"
            return self.values[name]

        return PLACEHOLDER.sub(value, text)

    def send(self, call: Call) -> Sent:
        values = dict(self.values)
        target = self.fill(call.target, call.line)
        headers = {name.lower(): self.fill(value, call.line) for name, value in call.headers.items()}
        body = self.fill(call.body, call.line) if call.body else None
        client = self.anonymous
        if headers.get("authorization", "").startswith("AWS4-HMAC-SHA256"):  # the shop's backend signs
            client = self.backend
            headers = {k: v for k, v in headers.items() if k != "authorization" and not k.startswith("x-amz-")}
        responses = []
        for number, answer in enumerate(call.answers):
            response = client.request(call.method, target, raw=body.encode() if body else None, headers=headers)
            check(answer, response, f"{DOC}:{answer.line} ({call.route}, sent {number + 1}x)")
            self.learn(response)
            responses.append(response)
        return Sent(call, values, json.loads(body) if body else None, responses)

    def learn(self, response: ApiResponse) -> None:
        if isinstance(response.body, dict) and {"visitor_id", "token"} <= response.body.keys():
            self.values.update(visitor_id=response.body["visitor_id"], token=response.body["token"])
        if "etag" in response.headers:
            self.values["etag"] = response.headers["etag"]


def check(answer: Answer, response: ApiResponse, where: str) -> None:
    assert response.status == answer.status, (
        f"{where}: the doc shows {answer.status}, the service answered {response.status}: {response.body}")
    for name, shown in answer.headers.items():
        actual = response.headers.get(name.lower())
        assert actual is not None, f"{where}: the doc shows a {name} header, the answer has none"
        if name.lower() in EXACT_HEADERS:
            assert actual == shown, f"{where}: {name}: the doc shows {shown!r}, the service sent {actual!r}"
    if answer.body is not None:
        same_shape(answer.body, response.body, where, "body")
    if isinstance(answer.body, dict) and "accepted" in answer.body:
        actual, shown = batch_outcome(response.body), batch_outcome(answer.body)
        assert actual == shown, f"{where}: the doc shows (accepted, duplicates, rejected) {shown}, got {actual}"


def same_shape(shown: Any, actual: Any, where: str, path: str) -> None:
    """The keys the doc shows are the keys the service answers with, at every level."""
    if isinstance(shown, dict):
        assert isinstance(actual, dict), f"{where}: {path} is {actual!r}, the doc shows an object"
        assert set(actual) == set(shown), (
            f"{where}: {path} has keys {sorted(actual)}, the doc shows {sorted(shown)}")
        for key, value in shown.items():
            same_shape(value, actual[key], where, f"{path}.{key}")
    elif isinstance(shown, list) and shown:
        assert isinstance(actual, list) and actual, f"{where}: {path} is {actual!r}, the doc shows entries"
        same_shape(shown[0], actual[0], where, f"{path}[0]")


def batch_outcome(body: dict[str, Any]) -> tuple[int, int, list[tuple[int, str, list[str]]]]:
    return body["accepted"], body["duplicates"], [
        (r["index"], r["event_id"], [e["field"] for e in r["errors"]]) for r in body["rejected"]]


def sent_to(replayed: list[Sent], route: str) -> list[Sent]:
    found = [s for s in replayed if s.call.route == route]
    assert found, f"{DOC}: the flow has no {route}"
    return found


def exported_events(backend: ApiClient, user_id: str) -> list[dict[str, Any]]:
    """Every event the service holds for user_id (its linked visitors' too), over the export's pages."""
    events, cursor = [], None
    while True:
        page = backend.request("GET", f"/users/{quote(user_id, safe='')}/export",
                               query={"cursor": cursor} if cursor else None)
        assert page.status == 200, page.body
        events += page.body["events"]
        cursor = page.body["next_cursor"]
        if cursor is None:
            return events


@pytest.fixture(scope="module")
def mobile_stack(tmp_path_factory):
    """A local stack with the demo shop's catalog and history, and a trained model."""
    state_dir = tmp_path_factory.mktemp("mobile-stack")
    state, started = stack.up(free_port(), state_dir)
    assert started
    try:
        backend = ApiClient.for_stack(state_dir)
        shop = generate_shop(seed=5, n_users=150, n_items=60)
        assert not backend.put_items(shop.items).rejected
        assert not backend.send_events(shop.events).rejected
        model = backend.train_and_wait(A_MODEL_SERVES)  # the flow shows a model's answers
        assert (model["status"], model["active"]) == ("accepted", True), model
        yield state, backend
    finally:
        stack.down(state_dir)


def new_visitor(state: stack.StackState) -> tuple[str, str]:
    anonymous = ApiClient(state.url)
    answer = anonymous.request("POST", "/visitors")
    assert answer.status == 201
    return answer.body["visitor_id"], answer.body["token"]


def views(count: int, **fields: Any) -> list[dict[str, Any]]:
    return [{"event_id": str(uuid.uuid4()), "item_id": "sku-00023", "event_type": "view",
             "timestamp": iso(datetime.now(timezone.utc)), "channel": "android", **fields} for _ in range(count)]


def test_the_documented_mobile_flow_works_as_written(mobile_stack):
    state, backend = mobile_stack
    phone = Phone(ApiClient(state.url), backend, backend.auth.issue_token(CUSTOMER))

    replayed = [phone.send(call) for call in parse(DOC.read_text())]

    # First launch: an anonymous id and an hour's token.
    first_launch, *_, after_sign_out = sent_to(replayed, "POST /visitors")
    visitor_id = first_launch.responses[0].body["visitor_id"]
    assert visitor_id.startswith("v_") and first_launch.responses[0].body["expires_in"] == 3600
    # A refresh keeps the visitor (and so their history).
    assert [s.responses[0].body["visitor_id"] for s in sent_to(replayed, "POST /visitors/{visitor_id}/token")] == [
        visitor_id]

    # The queue's batch, sent again after a lost answer, is stored once; the purchase alone is refused.
    batch, with_purchase = sent_to(replayed, "POST /visitors/{visitor_id}/events")
    batch_ids = [e["event_id"] for e in batch.body["events"]]
    assert [r.body["accepted"] for r in batch.responses] == [len(batch_ids), 0]
    assert batch.responses[1].body["duplicates"] == len(batch_ids)
    purchase = next(e for e in with_purchase.body["events"] if e["event_type"] == "purchase")
    refused = with_purchase.responses[0]
    assert refused.status == 207
    assert [(r["event_id"], [e["field"] for e in r["errors"]]) for r in refused.body["rejected"]] == [
        (purchase["event_id"], ["event_type"])]
    sent_ids = batch_ids + [e["event_id"] for e in with_purchase.body["events"]]
    stored = Counter(e["event_id"] for e in exported_events(backend, visitor_id))
    assert stored == Counter(i for i in sent_ids if i != purchase["event_id"])

    # The visitor's own views count at once.
    (visitor_recs,) = sent_to(replayed, "GET /visitors/{visitor_id}/recommendations")
    assert visitor_recs.responses[0].body["user_id"] == visitor_id
    assert visitor_recs.responses[0].body["personalized"] is True

    # A public read asked again with its ETag is a 304.
    first_read, reread = sent_to(replayed, "GET /popular")
    assert reread.values["etag"] == first_read.responses[0].headers["etag"]
    assert reread.responses[0].status == 304 and not reread.responses[0].body

    # Signed in, the customer has the visitor's history as their own.
    (link,) = sent_to(replayed, "POST /users/{user_id}/visitors")
    assert (link.responses[0].body["user_id"], link.responses[0].body["visitor_id"]) == (CUSTOMER, visitor_id)
    customers = {(e["user_id"], e["event_id"]) for e in exported_events(backend, CUSTOMER)}
    (customer_batch,) = sent_to(replayed, "POST /users/{user_id}/events")
    (order,) = sent_to(replayed, "POST /events")
    own = [e["event_id"] for e in customer_batch.body["events"] + order.body["events"]]
    assert customers == {(visitor_id, i) for i in stored} | {(CUSTOMER, i) for i in own}
    (customer_recs,) = sent_to(replayed, "GET /users/{user_id}/recommendations")
    assert customer_recs.responses[0].body["personalized"] is True

    # Signed out: a new person on this phone.
    assert after_sign_out.responses[0].body["visitor_id"] not in (visitor_id, None)

    # The backend's purchase, sent twice, counts once for the customer.
    assert {e["user_id"] for e in order.body["events"]} == {CUSTOMER}
    summary = backend.request("GET", f"/users/{CUSTOMER}").body["summary"]
    assert (summary["orders"], summary["lines"], summary["units"]) == (1, 1, 2)


def test_an_event_that_waited_more_than_7_days_is_refused_alone(mobile_stack):
    state, backend = mobile_stack
    visitor_id, token = new_visitor(state)
    old, fresh = views(1, timestamp=iso(datetime.now(timezone.utc) - timedelta(days=7, minutes=5))), views(1)

    answer = ApiClient(state.url).request("POST", f"/visitors/{visitor_id}/events", {"events": old + fresh},
                                          headers={"Authorization": f"Bearer {token}"})

    assert answer.status == 207
    assert [(r["event_id"], r["errors"][0]["field"]) for r in answer.body["rejected"]] == [
        (old[0]["event_id"], "timestamp")]
    assert [e["event_id"] for e in exported_events(backend, visitor_id)] == [fresh[0]["event_id"]]


def test_a_phone_sending_too_much_is_told_when_to_come_back_and_nothing_of_that_batch_is_kept(mobile_stack):
    state, backend = mobile_stack
    visitor_id, token = new_visitor(state)
    phone = ApiClient(state.url)

    def send(batch: list[dict[str, Any]], bearer: str) -> ApiResponse:
        return phone.request("POST", f"/visitors/{visitor_id}/events", {"events": batch},
                             headers={"Authorization": f"Bearer {bearer}"})

    accepted: list[str] = []
    # 600 events per 10-minute window: a 429 comes by the 7th batch of 100, or the 13th if a
    # window starts meanwhile.
    for _ in range(13):
        batch = views(100)
        answer = send(batch, token)
        if answer.status != 200:
            break
        accepted += [e["event_id"] for e in batch]
    assert answer.status == 429, answer.body
    assert answer.body["error"]["code"] == "too_many_requests"
    wait = int(answer.headers["retry-after"])
    assert 1 <= wait <= 600
    assert Counter(e["event_id"] for e in exported_events(backend, visitor_id)) == Counter(accepted)

    # The budget is the visitor's: a fresh token does not reset it.
    renewed = phone.request("POST", f"/visitors/{visitor_id}/token", headers={"Authorization": f"Bearer {token}"})
    assert renewed.status == 200
    if wait > 5:  # still the same window
        assert send(batch, renewed.body["token"]).status == 429
