"""The demo pages in headless Chromium, clicked through as a person would, on a local stack
holding a small demo shop that was sent through the API as the shop's backend sends it."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime, timezone
from urllib.parse import urlsplit

import pytest

from shared.segments.families import segment_id_for
from shared.segments.rules import CustomSegmentIn, stored_text
from shared.storage import dynamo
from shared.storage.segments import CUSTOM_PARTITION, INDEX_KEY, SegmentStore
from tests.factories import members_by_segment
from tests.browser.conftest import CHROMIUM

pytest.importorskip("playwright")
from playwright.sync_api import expect  # noqa: E402

RFM_CELL = re.compile(r"^R(\d)F(\d)M\d$")
pytestmark = [
    pytest.mark.browser, pytest.mark.e2e,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium"),
]


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    page = context.new_page()
    crashes: list[str] = []
    page.on("pageerror", lambda error: crashes.append(str(error)))
    yield page
    context.close()
    assert not crashes, crashes


def api_calls(page) -> list[tuple[str, str, str | None]]:
    """(method, path, authorization header) of every request the page sends to the API from now on."""
    calls: list[tuple[str, str, str | None]] = []
    page.on("request", lambda request: calls.append(
        (request.method, urlsplit(request.url).path, request.headers.get("authorization"))))
    return calls


def item_ids(page, selector: str) -> list[str]:
    return page.locator(selector).evaluate_all("nodes => nodes.map(n => n.dataset.item)")


def test_a_customer_sees_their_history_recommendations_and_tags_and_buys(shop_stack, page):
    url, api, _ = shop_stack
    calls = api_calls(page)
    page.goto(f"{url}/shop")

    customer = page.locator('#customer optgroup[label^="Champions"] option').first.get_attribute("value")
    page.select_option("#customer", customer)
    expect(page.locator("#who")).to_contain_text(f"Signed in as {customer}")

    held = api.request("GET", f"/users/{customer}/export").body
    purchases = [e for e in held["events"] if e["event_type"] == "purchase"]
    expect(page.locator("#history-meta")).to_contain_text(f"{len(purchases)} purchases")
    expect(page.locator("#history tbody tr")).to_have_count(min(20, len(purchases)))
    newest = max(purchases, key=lambda e: e["ts"])["item_id"]
    assert item_ids(page, "#history tbody tr")[0] == newest

    recommendations = page.locator("#recommendations li")
    expect(recommendations.first).to_be_visible()
    assert all(reason.strip() for reason in page.locator("#recommendations .shop-recs-reason").all_inner_texts())

    tags = api.request("GET", f"/users/{customer}/segments").body["tags"]
    shown = page.locator("#tags li").evaluate_all("nodes => nodes.map(n => n.dataset.segment)")
    assert sorted(shown) == sorted(t["segment_id"] for t in tags) and "rfm:champions" in shown

    first = recommendations.first
    chosen, title = first.get_attribute("data-item"), first.locator(".shop-recs-title").inner_text()
    first.locator(".shop-recs-title").click()
    expect(page.locator("#product-title")).to_have_text(title)
    expect(page.locator("#similar li[data-item]").first).to_be_visible()
    before = item_ids(page, "#recommendations li")

    page.click("#buy")
    expect(page.locator("#buy-status")).to_contain_text(f"Bought {title}")
    expect(page.locator("#recs-meta")).to_contain_text(f"Updated after buying {title}")
    after = item_ids(page, "#recommendations li")
    assert after != before and chosen not in after and after
    expect(page.locator("#history-meta")).to_contain_text(f"{len(purchases) + 1} purchases")
    assert item_ids(page, "#history tbody tr")[0] == chosen
    expect(page.locator("#errors")).to_have_text("")

    # The customer's own routes carried their bearer token, the visitor's routes its own; the catalog
    # and popular items went without (public, cacheable); only the shop's backend work was trusted.
    personal = [(m, p, auth) for m, p, auth in calls if p.startswith(("/users/", "/visitors/"))]
    assert personal and all(auth and auth.startswith("Bearer ") for _, _, auth in personal)
    assert ("POST", f"/users/{customer}/visitors") in {(m, p) for m, p, _ in personal}  # the device, linked
    public = [auth for m, p, auth in calls if p.startswith(("/items/", "/popular"))]
    assert public and not any(public)
    trusted = {(m, p) for m, p, _ in calls if p.startswith("/dev/trusted/")}
    assert ("POST", "/dev/trusted/events") in trusted
    assert all(p.startswith(("/dev/trusted/segments", "/dev/trusted/events")) for _, p in trusted)


def test_the_marketer_sees_segments_the_rfm_grid_members_and_model_quality(shop_stack, page):
    url, api, _ = shop_stack
    whole = api.request("GET", "/segments").body
    listing = whole["segments"]
    assert whole["next_cursor"] is None  # the demo's run is listed in one page
    page.goto(f"{url}/marketing")

    groups = [s for s in listing if not (s["family"] == "rfm" and RFM_CELL.match(s["name"]))]
    rows = page.locator("#segments tr[data-segment]")
    expect(rows).to_have_count(len(groups))
    sizes = dict(zip(rows.evaluate_all("nodes => nodes.map(n => n.dataset.segment)"),
                     map(int, page.locator("#segments tr[data-segment] td.num").all_inner_texts())))
    assert sizes == {s["segment_id"]: s["members"] for s in groups}

    cells = Counter()
    for s in listing:
        if s["family"] == "rfm" and (score := RFM_CELL.match(s["name"])):
            cells[f"{score[1]}{score[2]}"] += s["members"]
    grid = page.locator("#rfm-grid td[data-count]")
    expect(grid).to_have_count(25)
    shown = {f"{r}{f}": int(n) for r, f, n in grid.evaluate_all(
        "nodes => nodes.map(n => [n.dataset.r, n.dataset.f, n.dataset.count])")}
    rfm_customers = sum(s["members"] for s in groups if s["family"] == "rfm")
    assert sum(shown.values()) == sum(cells.values()) == rfm_customers > 0
    assert {k: v for k, v in shown.items() if v} == dict(cells)
    expect(page.locator("#rfm-total")).to_have_text(f"{rfm_customers} customers with RFM tags.")

    largest = max((s for s in groups if s["family"] == "rfm"), key=lambda s: s["members"])
    page.locator(f'#segments tr[data-segment="{largest["segment_id"]}"] button').click()
    expect(page.locator("#members-title")).to_have_text(f"Members of {largest['name']}")
    first_page = api.request("GET", f"/segments/{largest['segment_id']}/members", query={"limit": 20}).body
    members = page.locator("#members li")
    expect(members).to_have_count(len(first_page["members"]))
    assert members.evaluate_all("nodes => nodes.map(n => n.dataset.user)") == [
        m["user_id"] for m in first_page["members"]]
    assert largest["members"] > 20 and first_page["next_cursor"]
    page.click("#next-page")
    expect(page.locator("#members-meta")).to_contain_text("page 2, members 21 to")
    second = members.evaluate_all("nodes => nodes.map(n => n.dataset.user)")
    assert len(second) == min(20, largest["members"] - 20)
    assert not set(second) & {m["user_id"] for m in first_page["members"]}

    manifest = api.request("GET", "/models").body["versions"][0]
    bars = page.locator(f'#model-chart g[data-version="{manifest["version"]}"]')
    for series in ("model", "popularity"):
        value = manifest["metrics"][series]["ndcg"]
        assert float(bars.locator(f'rect[data-series="{series}"]').get_attribute("data-value")) == value
        expect(bars.locator(f'text[data-series="{series}"]')).to_have_text(f"{value:.3f}")
    expect(page.locator(f'#models tr[data-version="{manifest["version"]}"]')).to_contain_text("accepted")
    expect(page.locator("#errors")).to_have_text("")


def test_a_shop_with_a_segment_for_each_of_many_cities_shows_the_largest_and_says_how_many_more(
        shop_stack_state, page, monkeypatch):
    """A run with 70 cities: the page lists the 50 largest of them, says 20 more are left out, and
    still sums every RFM cell; the demo's own run is put back after."""
    state, api, _ = shop_stack_state
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", state.dynamodb_endpoint)
    dynamo.client.cache_clear()
    table = state.tables["SegmentsTable"]
    demo_run = dynamo.client().get_item(TableName=table, Key=dynamo.serialize(INDEX_KEY), ConsistentRead=True)["Item"]
    rows = [("rfm:champions", "rfm", "Champions", f"r{k}", "bought often") for k in range(3)]
    rows += [("rfm:r5f5m5", "rfm", "R5F5M5", f"r{k}", "scores 5 5 5") for k in range(3)]
    for n in range(70):
        rows += [(segment_id_for("geography", f"City: Town {n:02d}"), "geography", f"City: Town {n:02d}",
                  f"c{n}-{k}", "city in the profile") for k in range(n + 1)]
    try:
        SegmentStore(table).write_run("many-cities", "2026-12-04T00:00:00+00:00", members_by_segment(rows))
        page.goto(f"{state.url}/marketing")

        cities = page.locator('#segments tbody[data-family="geography"] tr[data-segment]')
        expect(cities).to_have_count(50)
        assert cities.first.locator("td.num").inner_text() == "70" and cities.last.locator("td.num").inner_text() == "21"
        expect(page.locator('#segments tbody[data-family="geography"] tr.more')).to_contain_text(
            "and 20 smaller geography segments")
        expect(page.locator("#rfm-total")).to_have_text("3 customers with RFM tags.")
        expect(page.locator('#campaign-segment optgroup[label="geography (the 50 largest of 70)"] option')).to_have_count(50)
    finally:
        dynamo.client().put_item(TableName=table, Item=demo_run)
        written = [item for scanned in dynamo.client().get_paginator("scan").paginate(TableName=table)
                   for item in scanned["Items"] if "many-cities" in item["sk"]["S"]]
        dynamo.batch_delete(table, [dynamo.deserialize({k: item[k] for k in ("segment_id", "sk")}) for item in written])
        dynamo.client.cache_clear()
    assert api.request("GET", "/segments").body["run"] == dynamo.deserialize(demo_run)["run"]


def test_definitions_the_listing_names_by_id_alone_are_shown_and_can_be_deleted(shop_stack_state, page, monkeypatch):
    """One that does not read, and one stored before the size limit too large to list (it still
    applies): each is named with what to do, and its button deletes it."""
    state, api, _ = shop_stack_state
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", state.dynamodb_endpoint)
    dynamo.client.cache_clear()
    table = state.tables["SegmentsTable"]
    large = CustomSegmentIn.model_validate({"name": "Far away", "rule": {
        "field": "city", "op": "in", "value": ["\U0001F600" * 20] * 340}}).stored(datetime.now(timezone.utc))
    stored = {"custom:garbled": "{not json", large.segment_id: stored_text(large)}
    try:
        for segment_id, text in stored.items():
            dynamo.client().put_item(TableName=table, Item={"segment_id": {"S": CUSTOM_PARTITION},
                                                            "sk": {"S": segment_id}, "definition": {"S": text}})
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto(f"{state.url}/marketing")

        expect(page.locator('#custom-segments li[data-segment="custom:garbled"]')).to_contain_text(
            "cannot be read: delete it and define it again")
        unlisted = page.locator(f'#custom-segments li[data-segment="{large.segment_id}"]')
        expect(unlisted).to_contain_text("too large to list (still applied): delete it and define it again, smaller")
        unlisted.get_by_role("button", name=f"Delete {large.segment_id}").click()
        expect(page.locator("#segment-status")).to_contain_text(f"Deleted {large.segment_id}.")
        expect(unlisted).to_have_count(0)
        assert api.request("GET", "/segments").body["unlisted"] == []
        expect(page.locator("#errors")).to_have_text("")
    finally:
        dynamo.batch_delete(table, [{"segment_id": CUSTOM_PARTITION, "sk": segment_id} for segment_id in stored])
        dynamo.client.cache_clear()


def test_an_api_error_is_shown_on_the_page(shop_stack, page):
    url, _, _ = shop_stack
    page.route("**/dev/trusted/models*", lambda route: route.fulfill(
        status=503, content_type="application/json", headers={"retry-after": "1"},
        body='{"error": {"code": "unavailable", "message": "storage is busy, try again"}}'))
    page.goto(f"{url}/marketing")

    expect(page.locator("#errors .error")).to_contain_text(
        "GET /dev/trusted/models answered 503 unavailable: storage is busy, try again")
