"""The longest and strangest ids the API accepts, through every part of the service, over HTTP.

Multi-byte characters, a space, '/', '#', '+', '%' and '?' in customer and item ids, percent-encoded
in paths as any HTTP client sends them: ingest, recommendations, training, the nightly segments,
export and erasure must all work for them, exactly as for 'u-00001'.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from devstack.api_client import ApiClient
from shared.limits import MAX_ID_BYTES, utf8_length
from tests.e2e.test_local_stack import running_stack  # noqa: F401 - the module's stack
from tests.training_data import A_MODEL_SERVES, shop

pytestmark = pytest.mark.e2e

STRANGE = "josé/ü €+%#? 𝄞"


def longest(pattern: str) -> str:
    """The pattern repeated to exactly MAX_ID_BYTES bytes of UTF-8 (the longest id accepted)."""
    text = ""
    while True:
        for character in pattern:
            if utf8_length(text + character) > MAX_ID_BYTES:
                return text
            text += character


LONGEST = longest("𝄞/#+%? é")
STRANGE_ITEM = "sku/€ 12#+%?"


def path(*parts: str) -> str:
    return "/" + "/".join(quote(part, safe="") for part in parts)


@pytest.fixture(scope="module")
def strange_shop(running_stack):  # noqa: F811 - the fixture imported above
    _, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    demo = shop(60, 40, seed=6)
    buyers = sorted({e["user_id"] for e in demo.events if e["event_type"] == "purchase"})
    bought = sorted({e["item_id"] for e in demo.events if e["event_type"] == "purchase"})
    users = {buyers[0]: STRANGE, buyers[1]: LONGEST}
    items = {bought[0]: STRANGE_ITEM}
    rename = lambda row: {**row, "user_id": users.get(row.get("user_id"), row.get("user_id")),  # noqa: E731
                          "item_id": items.get(row.get("item_id"), row.get("item_id"))}
    assert api.put_items([{k: v for k, v in rename(i).items() if k != "user_id"} for i in demo.items]).rejected == []
    api.put_users([{k: v for k, v in rename(u).items() if k != "item_id"} for u in demo.users])
    sent = api.send_events([rename(e) for e in demo.events])
    assert sent.rejected == []
    trained = api.train_and_wait(A_MODEL_SERVES, timeout=300)
    assert trained["status"] == "accepted", trained
    return api


@pytest.mark.parametrize("user_id", [STRANGE, LONGEST], ids=["strange", "longest"])
def test_a_customer_with_a_strange_id_is_served_segmented_exported_and_erased(strange_shop, user_id):
    api = strange_shop
    assert utf8_length(LONGEST) == MAX_ID_BYTES
    customer = api.as_customer(user_id)

    profile = customer.request("GET", path("users", user_id))
    recommendations = customer.request("GET", path("users", user_id, "recommendations"))
    tags = customer.request("GET", path("users", user_id, "segments"))
    export = customer.request("GET", path("users", user_id, "export"))

    assert profile.status == 200 and profile.body["user_id"] == user_id
    assert profile.body["summary"]["purchase_count"] > 0
    assert recommendations.status == 200 and recommendations.body["personalized"] is True
    assert tags.status == 200 and any(t["family"] == "rfm" for t in tags.body["tags"])
    assert export.status == 200 and export.body["events"] and export.body["segment_memberships"]
    rfm = next(m["segment_id"] for m in export.body["segment_memberships"] if m["segment_id"].startswith("rfm:"))
    members = api.request("GET", path("segments", rfm, "members"), query={"limit": 1000}).body["members"]
    assert user_id in {m["user_id"] for m in members}  # the nightly run wrote them under their own id

    erased = customer.request("DELETE", path("users", user_id))

    assert erased.status == 200 and erased.body["status"] == "complete" and erased.body["erased"]["events"] > 0
    after = api.request("GET", path("users", user_id, "export")).body
    assert after["events"] == [] and after["segment_memberships"] == []


def test_an_item_with_a_strange_id_is_read_and_known_to_the_model(strange_shop):
    api = strange_shop
    assert api.request("GET", path("items", STRANGE_ITEM)).body["item_id"] == STRANGE_ITEM
    similar = api.request("GET", path("items", STRANGE_ITEM, "similar"))
    # als_similar: the trained model knows the item under its strange id.
    assert similar.status == 200 and similar.body["strategy"] == "als_similar" and similar.body["items"]
