"""Logged-out visitors and signed-in customers calling from a browser or app: a visitor token in
one call, their own events and recommendations, public cacheable answers, and linking a device's
anonymous history to the customer who signs in on it."""

from __future__ import annotations

import base64
import json
import sys
import time

import pytest

from devstack.api_client import bearer
from shared.config import get_settings
from shared.visitors import REFRESH_SECONDS, TOKEN_SECONDS, VisitorTokens
from tests.conftest import Api, local_gateway
from tests.factories import ago, event, item, purchase


def new_visitor(api: Api) -> tuple[str, Api]:
    status, body = api.anonymous().json("POST", "/visitors")
    assert status == 201, body
    assert body["token_type"] == "Bearer" and body["expires_in"] == TOKEN_SECONDS
    return body["visitor_id"], Api(api.gateway, bearer(body["token"]))


def view(event_id: str, item_id: str = "sku-1", **fields) -> dict:
    entry = event(event_id, item_id=item_id, **fields)
    del entry["user_id"]  # a client may leave its own id out
    return entry


def test_a_visitor_gets_an_id_and_a_token_without_credentials_and_sends_their_own_events(api):
    visitor_id, visitor = new_visitor(api)

    status, body = visitor.json("POST", f"/visitors/{visitor_id}/events",
                                {"events": [view("e-1"), view("e-2", event_type="add_to_cart"),
                                            view("e-3", event_type="click"),
                                            {**view("e-4", event_type="search"), "properties": {"query": "oak"}}]})

    assert (status, body["accepted"]) == (200, 4), body
    stored = api.json("GET", f"/users/{visitor_id}/export")[1]["events"]
    assert {e["event_id"] for e in stored} == {"e-1", "e-2", "e-3", "e-4"}
    assert {e["user_id"] for e in stored} == {visitor_id}
    again = visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view("e-1")]})[1]
    assert (again["accepted"], again["duplicates"]) == (0, 1)  # the kit's retries are idempotent


def test_two_visitors_get_different_ids(api):
    assert new_visitor(api)[0] != new_visitor(api)[0]


def test_a_visitor_token_opens_only_its_own_id(api):
    visitor_id, visitor = new_visitor(api)
    other_id, _ = new_visitor(api)

    status, body = visitor.json("POST", f"/visitors/{other_id}/events", {"events": [view("e-1")]})
    assert (status, body["error"]["code"]) == (403, "forbidden")
    assert visitor.json("GET", f"/visitors/{other_id}/recommendations")[0] == 403
    # nor a customer's data, nor the shop's routes: a visitor token is no customer token
    assert visitor.json("GET", f"/users/{visitor_id}/recommendations")[0] == 401
    assert visitor.json("POST", "/events", {"events": [event("e-1", user_id=visitor_id)]})[0] == 401


def test_a_client_batch_refuses_each_event_it_may_not_send_and_keeps_the_rest(api):
    visitor_id, visitor = new_visitor(api)
    sent = [view("ok-1"),
            {**view("buy-1", event_type="purchase"), "price": 10, "currency": "EUR"},
            {**view("ret-1", event_type="return"), "price": 10, "currency": "EUR"},
            {**view("other-1"), "user_id": "u-someone-else"},
            view("old-1", timestamp=ago(days=8)),
            view("ok-2", event_type="remove_from_cart")]

    status, body = visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": sent})

    assert status == 207 and body["accepted"] == 2
    refused = {r["event_id"]: r["errors"][0] for r in body["rejected"]}
    assert refused["buy-1"]["field"] == "event_type" and "backend" in refused["buy-1"]["message"]
    assert refused["ret-1"]["field"] == "event_type"
    assert refused["other-1"]["field"] == "user_id"
    assert refused["old-1"]["field"] == "timestamp"
    summary = api.json("GET", f"/users/{visitor_id}")[1]["summary"]
    assert summary["orders"] == 0 and summary["spend"] == {}  # a page's claim is never revenue


def test_a_client_batch_holds_at_most_100_events(api):
    visitor_id, visitor = new_visitor(api)
    status, body = visitor.json("POST", f"/visitors/{visitor_id}/events",
                                {"events": [view(f"e-{n}") for n in range(101)]})
    assert status == 422 and body["error"]["fields"][0]["field"] == "events"


def test_a_token_that_sends_too_many_events_waits(moto_tables, monkeypatch):
    monkeypatch.setenv("CLIENT_EVENTS_PER_WINDOW", "5")
    get_settings.cache_clear()
    api = Api(local_gateway())
    visitor_id, visitor = new_visitor(api)

    assert visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view(f"a-{n}") for n in range(4)]})[0] == 200
    response = visitor.call("POST", f"/visitors/{visitor_id}/events", {"events": [view("b-1"), view("b-2")]})

    assert response.status == 429
    assert 1 <= int(response.headers["retry-after"]) <= 600
    assert len(api.json("GET", f"/users/{visitor_id}/export")[1]["events"]) == 4
    other_id, other = new_visitor(api)  # the budget is per token's id
    assert other.json("POST", f"/visitors/{other_id}/events", {"events": [view("c-1")]})[0] == 200
    get_settings.cache_clear()


def test_a_customer_sends_their_own_events_with_their_token(api):
    customer = api.as_customer("u-1")

    assert customer.json("POST", "/users/u-1/events", {"events": [view("e-1")]})[1]["accepted"] == 1
    assert customer.json("POST", "/users/u-2/events", {"events": [view("e-2")]})[0] == 403
    status, body = customer.json("POST", "/users/u-1/events", {"events": [purchase("p-1")]})
    assert status == 422 and "backend" in body["rejected"][0]["errors"][0]["message"]
    assert api.json("GET", "/users/u-1")[1]["summary"]["orders"] == 0


def test_an_expired_visitor_token_is_refused_but_renews_for_the_same_id(api):
    keys = VisitorTokens(get_settings().visitor_token_secret.encode())
    yesterday = keys.issue("v_returning", time.time() - 86_400)
    visitor = Api(api.gateway, bearer(yesterday.token))

    status, body = visitor.json("GET", "/visitors/v_returning/recommendations")
    assert status == 401 and "expired" in body["error"]["message"]
    status, renewed = visitor.json("POST", "/visitors/v_returning/token")
    assert status == 200 and renewed["visitor_id"] == "v_returning"
    assert Api(api.gateway, bearer(renewed["token"])).json("GET", "/visitors/v_returning/recommendations")[0] == 200

    too_old = keys.issue("v_returning", time.time() - TOKEN_SECONDS - REFRESH_SECONDS - 60)
    assert Api(api.gateway, bearer(too_old.token)).json("POST", "/visitors/v_returning/token")[0] == 401


def test_a_visitor_token_signed_with_another_key_is_refused(api):
    forged = VisitorTokens(b"someone-elses-key-of-at-least-32-bytes!").issue("v_x", time.time())
    assert Api(api.gateway, bearer(forged.token)).json("POST", "/visitors/v_x/events",
                                                       {"events": [view("e-1")]})[0] == 401


PUBLIC_PATHS = ["/popular", "/items/sku-1", "/items/sku-1/similar", "/items/sku-1/bought-together"]


@pytest.mark.parametrize("path", PUBLIC_PATHS)
def test_public_answers_need_no_credentials_and_are_cacheable(api, path):
    api.json("PUT", "/items/sku-1", {k: v for k, v in item("sku-1").items() if k != "item_id"})

    response = api.anonymous().call("GET", path)

    assert response.status == 200, response.body
    assert response.headers["cache-control"] == "public, max-age=300"
    etag = response.headers["etag"]
    again = api.anonymous().call("GET", path, headers={"if-none-match": etag})
    assert (again.status, again.body) == (304, b"")
    assert again.headers["etag"] == etag


def test_personal_answers_are_never_cached(api):
    response = api.as_customer("u-1").call("GET", "/users/u-1/recommendations")
    assert response.status == 200
    assert response.headers["cache-control"] == "no-store"


def test_a_changed_item_gets_a_new_etag(api):
    api.json("PUT", "/items/sku-1", {k: v for k, v in item("sku-1").items() if k != "item_id"})
    before = api.anonymous().call("GET", "/items/sku-1").headers["etag"]
    api.json("PUT", "/items/sku-1", {k: v for k, v in item("sku-1", price=9.5).items() if k != "item_id"})

    response = api.anonymous().call("GET", "/items/sku-1", headers={"if-none-match": before})

    assert response.status == 200 and response.headers["etag"] != before


def test_signing_in_links_the_visitor_and_needs_proof_of_both_ids(api):
    visitor_id, visitor = new_visitor(api)
    token = visitor.credentials("GET", "http://local/", {}, b"")["authorization"].split(" ", 1)[1]
    customer = api.as_customer("u-1")

    status, link = customer.json("POST", "/users/u-1/visitors", {"visitor_token": token})
    assert status == 200, link
    assert (link["visitor_id"], link["linked_visitors"]) == (visitor_id, [visitor_id])
    assert api.json("GET", "/users/u-1")[1]["linked_visitors"] == [visitor_id]
    assert customer.json("POST", "/users/u-1/visitors", {"visitor_token": token})[1]["linked_visitors"] == [visitor_id]

    assert customer.json("POST", "/users/u-1/visitors", {"visitor_token": token[:-4] + "AAAA"})[0] == 403
    assert customer.json("POST", "/users/u-1/visitors", {"visitor_id": visitor_id})[0] == 400  # no proof
    # one device's anonymous trail never joins a second customer's history
    status, body = api.as_customer("u-2").json("POST", "/users/u-2/visitors", {"visitor_token": token})
    assert (status, body["error"]["code"]) == (409, "conflict")
    # the shop's backend vouches for the link itself
    assert api.json("POST", "/users/u-3/visitors", {"visitor_id": "v_from_backend"})[0] == 200


def linked_customer(api: Api) -> tuple[str, Api]:
    """u-1, with a purchase of their own and a linked visitor's two views."""
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1")]})
    return linked_visitor_of(api, "u-1", ["anon-1", "anon-2"])


def linked_visitor_of(api: Api, user_id: str, event_ids: list[str]) -> tuple[str, Api]:
    """A new visitor with these events, linked to `user_id` from the device."""
    visitor_id, visitor = new_visitor(api)
    assert visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view(e) for e in event_ids]})[0] == 200
    token = visitor.credentials("GET", "http://local/", {}, b"")["authorization"].split(" ", 1)[1]
    assert api.as_customer(user_id).json("POST", f"/users/{user_id}/visitors", {"visitor_token": token})[0] == 200
    return visitor_id, visitor


def test_a_customers_export_covers_their_linked_visitor_ids(api):
    visitor_id, _ = linked_customer(api)
    customer = api.as_customer("u-1")

    pages, cursor = [], None
    while True:
        status, page = customer.json("GET", "/users/u-1/export" + (f"?cursor={cursor}" if cursor else ""))
        assert status == 200, page
        pages.append(page)
        cursor = page["next_cursor"]
        if not cursor:
            break

    held = {(e["user_id"], e["event_id"]) for page in pages for e in page["events"]}
    assert held == {("u-1", "p-1"), (visitor_id, "anon-1"), (visitor_id, "anon-2")}
    assert pages[0]["profile"]["linked_visitors"] == [visitor_id]


def test_a_visitor_linked_while_the_export_is_read_is_in_it_once_and_none_is_skipped_or_read_twice(api):
    """The cursor named a linked id by its place, newest first: a link made between two pages
    moved the places, so one linked id's events were read twice and the new one's never."""
    api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-1")]})
    first, _ = linked_visitor_of(api, "u-1", ["first-1", "first-2"])
    second, _ = linked_visitor_of(api, "u-1", ["second-1"])
    customer = api.as_customer("u-1")

    held, cursor, pages = [], None, 0
    while True:
        status, page = customer.json("GET", "/users/u-1/export" + (f"?cursor={cursor}" if cursor else ""))
        assert status == 200, page
        held += [(e["user_id"], e["event_id"]) for e in page["events"]]
        cursor, pages = page["next_cursor"], pages + 1
        if pages == 2:  # the customer's own events and one linked id's are read: a phone signs in
            third, _ = linked_visitor_of(api, "u-1", ["third-1"])
        if not cursor:
            break

    assert sorted(held) == sorted([("u-1", "p-1"), (first, "first-1"), (first, "first-2"), (second, "second-1"),
                                   (third, "third-1")])


def test_erasing_a_customer_erases_their_linked_visitor_ids(api):
    visitor_id, visitor = linked_customer(api)

    status, erased = api.as_customer("u-1").json("DELETE", "/users/u-1")

    assert status == 200, erased
    assert erased["linked_visitors"] == [visitor_id]
    assert erased["erased"]["events"] == 3
    assert api.json("GET", f"/users/{visitor_id}/export")[1]["events"] == []
    assert api.json("GET", f"/users/{visitor_id}")[1]["erased_at"]
    # the device's trail is gone for good: its events from before the erasure are refused
    late = visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view("anon-3", timestamp=ago(hours=2))]})
    assert late[0] == 422 and "erased" in late[1]["rejected"][0]["errors"][0]["message"]


def test_every_linked_visitor_id_is_kept_for_export_and_erasure_though_history_reads_the_newest(api):
    customer = api.as_customer("u-1")
    visitors = []
    for n in range(7):  # a phone that signs out and in again: a new visitor each time
        visitor_id, visitor = new_visitor(api)
        visitor.json("POST", f"/visitors/{visitor_id}/events", {"events": [view(f"anon-{n}")]})
        token = visitor.credentials("GET", "http://local/", {}, b"")["authorization"].split(" ", 1)[1]
        assert customer.json("POST", "/users/u-1/visitors", {"visitor_token": token})[0] == 200
        visitors.append(visitor_id)

    assert api.json("GET", "/users/u-1")[1]["linked_visitors"] == visitors[::-1]
    erased = customer.json("DELETE", "/users/u-1")[1]
    assert sorted(erased["linked_visitors"]) == sorted(visitors) and erased["erased"]["events"] == 7
    assert all(api.json("GET", f"/users/{v}/export")[1]["events"] == [] for v in visitors)


def test_a_visitor_token_whose_header_is_nested_past_parsing_is_refused_not_a_crash(api):
    """JSON nested deeper than Python parses (RecursionError, not a ValueError), before any signature."""
    issued = api.anonymous().json("POST", "/visitors")[1]
    visitor_id, (_, claims, signature) = issued["visitor_id"], issued["token"].split(".")
    deep = base64.urlsafe_b64encode(b"[" * 1100).rstrip(b"=").decode()
    token = f"{deep}.{claims}.{signature}"
    assert Api(api.gateway, bearer(token)).json("GET", f"/visitors/{visitor_id}/recommendations")[0] == 401
    status, body = api.as_customer("u-1").json("POST", "/users/u-1/visitors", {"visitor_token": token})
    assert status == 403 and body["error"]["fields"][0]["field"] == "visitor_token"


@pytest.mark.parametrize("cursor", [base64.urlsafe_b64encode(b"[" * 1100).decode(),  # nested past parsing
                                    base64.urlsafe_b64encode(b'""').decode(),  # an empty event id
                                    # a linked id's place that is a digit int() refuses: 500 before
                                    base64.urlsafe_b64encode(json.dumps("\x00\u00b2\x00").encode()).decode()])
def test_an_export_cursor_not_given_out_is_a_clear_400(api, cursor):
    linked_customer(api)
    status, body = api.as_customer("u-1").json("GET", f"/users/u-1/export?cursor={cursor}")
    assert status == 400 and body["error"]["fields"][0]["field"] == "cursor"


def test_links_are_one_level_deep_so_erasing_one_customer_never_reaches_another(api):
    """The shop's backend links by id: a customer with linked ids of its own is no visitor, and a
    linked visitor no customer to link to. Before, a cycle could be stored, and erasing one
    customer erased the other's profile and events."""
    assert api.json("PUT", "/users/u-2", {"country": "DE"})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-2", "u-2", "sku-2")]})[0] == 200
    assert api.json("POST", "/users/u-2/visitors", {"visitor_id": "v_phone"})[0] == 200

    status, body = api.json("POST", "/users/u-1/visitors", {"visitor_id": "u-2"})
    assert status == 409 and body["error"]["fields"][0]["field"] == "visitor_token", body
    status, body = api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})
    assert status == 409, body  # linked to u-2 already
    status, body = api.json("POST", "/users/v_phone/visitors", {"visitor_id": "v_other"})
    assert status == 400 and body["error"]["fields"][0]["field"] == "user_id", body

    assert api.as_customer("u-1").json("DELETE", "/users/u-1")[0] == 200
    assert api.json("GET", "/users/u-2")[1]["country"] == "DE"
    assert len(api.json("GET", "/users/u-2/export")[1]["events"]) == 1


def test_a_link_refused_for_the_limit_leaves_the_visitor_free(api, monkeypatch):
    """Before, the visitor was marked as linked before the limit was checked: held by a customer
    that did not list it, it could never be linked again, and that customer's erasure missed it."""
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_1"})[0] == 200  # the function is loaded
    monkeypatch.setattr(sys.modules["lambda_IngestFunction_app"], "MAX_LINKED_VISITORS", 2)
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_2"})[0] == 200

    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_3"})[0] == 409

    assert api.json("POST", "/users/u-2/visitors", {"visitor_id": "v_3"})[0] == 200  # not held by u-1
    assert api.as_customer("u-1").json("DELETE", "/users/u-1")[1]["linked_visitors"] == ["v_2", "v_1"]


@pytest.mark.parametrize("stored", [{"S": "v_9"}, {"N": "7"}, {"SS": ["v_9"]}, {"L": [{"N": "1"}, {"S": "v_8"}]}])
def test_linked_ids_stored_as_something_else_are_replaced_never_read_as_characters(api, stored):
    """A text read item by item is its characters: erasure took them for ids, and erased the
    events of a customer named "9". A number failed the link with 500, a set on every retry."""
    from shared.storage import dynamo

    assert api.json("POST", "/events", {"events": [purchase("p-9", "9", "sku-9")]})[0] == 200
    dynamo.client().put_item(TableName=get_settings().users_table,
                             Item={"user_id": {"S": "u-1"}, "linked_visitors": stored})

    status, body = api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_new"})

    assert status == 200 and body["linked_visitors"][0] == "v_new", body
    erased = api.as_customer("u-1").json("DELETE", "/users/u-1")[1]
    assert "9" not in erased["linked_visitors"]
    assert len(api.json("GET", "/users/9/export")[1]["events"]) == 1


def test_a_visitor_id_erased_on_its_own_stays_its_customers_and_is_no_other_customers_to_link(api):
    """Its customer still lists it: linked to another customer afterwards, that one's events
    were in the first customer's export and recommendations."""
    assert api.json("POST", "/users/u-a/visitors", {"visitor_id": "v_shared"})[0] == 200
    assert api.json("DELETE", "/users/v_shared")[0] == 200

    status, body = api.json("POST", "/users/u-b/visitors", {"visitor_id": "v_shared"})

    assert status == 409, body
    assert api.json("GET", "/users/u-a")[1]["linked_visitors"] == ["v_shared"]
    assert "v_shared" not in (api.json("GET", "/users/u-b")[1].get("linked_visitors") or [])


def test_an_export_says_what_is_kept_from_the_events_to_serve_fast_and_erasure_leaves_none(api):
    """The bought set and the recent-activity item are data held about the customer: the export
    left them out."""
    assert api.json("POST", "/events", {"events": [purchase("p-1", "u-1", "sku-1", order_id="o-1"),
                                                   purchase("p-2", "u-1", "sku-2", order_id="o-1"),
                                                   event("e-1", "u-1", "sku-3")]})[0] == 200
    customer = api.as_customer("u-1")

    derived = customer.json("GET", "/users/u-1/export")[1]["derived"]

    assert derived == {"bought_set": {"items": 2, "orders": 1, "items_truncated": False, "orders_truncated": False},
                       "recent_activity": {"events": 3, "unreadable": False}}
    assert customer.json("DELETE", "/users/u-1")[0] == 200
    assert customer.json("GET", "/users/u-1/export")[1]["derived"] == {"bought_set": None, "recent_activity": None}


def test_an_export_says_what_is_kept_from_each_linked_visitor_ids_events(api):
    """A linked visitor's recent activity is data held about the customer, as their events are:
    the export listed only the customer's own."""
    visitor_id, _ = linked_customer(api)
    customer = api.as_customer("u-1")

    export = customer.json("GET", "/users/u-1/export")[1]

    assert export["linked_derived"] == [{"user_id": visitor_id, "bought_set": None,
                                         "recent_activity": {"events": 2, "unreadable": False}}]
    assert export["derived"]["recent_activity"] == {"events": 1, "unreadable": False}
    assert customer.json("DELETE", "/users/u-1")[0] == 200
    assert customer.json("GET", "/users/u-1/export")[1]["linked_derived"] == []


def test_a_link_while_the_customers_erasure_runs_is_refused_and_made_once_it_is_complete(api):
    """Linked then, the visitor's trail (and its events from before the erasure) joined a customer
    whose erasure had already named the ids it erases: it survived it."""
    from shared.storage.privacy import PrivacyStore

    settings = get_settings()
    store = PrivacyStore(settings.events_table, settings.users_table, settings.segments_table)
    linked_customer(api)
    assert store.erase("u-1", lambda: 0.0).status == "in_progress"  # out of time: the sweep finishes it

    status, body = api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})
    assert (status, body["error"]["fields"][0]["field"]) == (409, "user_id"), body
    assert "erased" in body["error"]["message"]
    assert "linked_to" not in (api.json("GET", "/users/v_phone")[1] or {})  # not touched: linkable later

    assert store.finish("u-1", lambda: 60.0).status == "complete"
    assert api.json("POST", "/users/u-1/visitors", {"visitor_id": "v_phone"})[0] == 200  # the customer came back


def test_a_link_made_as_the_erasure_starts_is_named_by_its_record_and_erased_with_it(api, monkeypatch):
    """The erasure read the linked ids, then replaced the row by its record naming them: a link
    made in between was dropped from the record, and the visitor's events survived the erasure."""
    from shared.storage.users import UserStore

    linked_customer(api)
    assert api.json("POST", "/events", {"events": [event("late-1", "v_late", "sku-3", "view")]})[0] == 200
    real_row, raced = UserStore.row, []

    def row(self, user_id):  # noqa: ANN001, ANN202 - the phone signs in just after the erasure's read
        found = real_row(self, user_id)
        if user_id == "u-1" and not raced:
            raced.append("v_late")
            self.link_visitor("u-1", "v_late", "2026-12-06T10:00:00.000000Z", 100)
        return found

    monkeypatch.setattr(UserStore, "row", row)
    status, erased = api.as_customer("u-1").json("DELETE", "/users/u-1")

    assert raced and status == 200, erased
    assert "v_late" in erased["linked_visitors"]
    assert api.json("GET", "/users/v_late/export")[1]["events"] == []


def test_a_customers_objection_covers_the_visitor_ids_linked_to_them(api):
    """A device's trail is the customer's once they sign in on it: before, a customer who objected
    still had their linked visitor id served personalized answers, profiled into segments and
    trained on."""
    from datetime import datetime, timezone

    from shared.storage.training_data import TrainingCustomers
    from shared.storage.users import UsersRead, all_user_rows

    visitor_id, visitor = linked_customer(api)
    assert not visitor.json("GET", f"/visitors/{visitor_id}/recommendations")[1]["strategy"].startswith("no_consent")

    customer = api.as_customer("u-1")
    assert customer.json("PUT", "/users/u-1/consent", {"personalization": False, "source": "app-settings"})[0] == 200

    answer = visitor.json("GET", f"/visitors/{visitor_id}/recommendations")[1]
    assert answer["strategy"].startswith("no_consent") and not answer["personalized"]
    assert api.json("GET", f"/users/{visitor_id}/segments")[1]["personalized"] is False  # profiling withdrawn too
    customers = TrainingCustomers.of(UsersRead.of_rows(all_user_rows(get_settings().users_table, 1)),
                                     datetime.now(timezone.utc))
    assert {"u-1", visitor_id} <= customers.excluded
