"""The web kit (clients/js/shop-recs.js) in headless Chromium, against a local stack holding a
small demo shop and a trained model: a visitor's token, lists with reasons, events sent once
whatever is retried, the page-hide flush, signing in and out, refused events dropped; its size;
and the storefront built on it, browsed by a visitor."""

from __future__ import annotations

import gzip
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from devstack.api_client import ApiClient
from tests.browser.conftest import CHROMIUM

KIT = Path(__file__).parents[2] / "clients" / "js" / "shop-recs.js"
KIT_BUDGET = 5 * 1024  # bytes, gzipped at level 9
# A page of the stack's origin that loads the kit as a shop's page would (served by the test).
TEST_PAGE = """<!doctype html><meta charset="utf-8"><title>kit</title>
<ol id="list"></ol>
<script type="module">
  import * as shopRecs from "/clients/js/shop-recs.js";
  window.shopRecs = shopRecs;
  window.kit = shopRecs.createClient({ baseUrl: location.origin });
</script>"""
PICTURE = '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="3"><rect width="4" height="3"/></svg>'


def browser_test(test):
    for mark in (pytest.mark.browser, pytest.mark.e2e,
                 pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium: apt-get install chromium")):
        test = mark(test)
    return test


def test_the_kit_is_under_5_kb_gzipped():
    size = len(gzip.compress(KIT.read_bytes(), compresslevel=9))
    print(f"\nclients/js/shop-recs.js: {KIT.stat().st_size} bytes, {size} gzipped (level 9)")
    assert size < KIT_BUDGET


class Traffic:
    """Every request the page sends to the stack, and the answers to them."""

    def __init__(self, page, base_url: str) -> None:
        self.requests: list[dict] = []
        origin = urlsplit(base_url).netloc

        sent: dict = {}

        def seen(request) -> None:
            url = urlsplit(request.url)
            if url.netloc == origin:
                sent[request] = {"method": request.method, "path": url.path, "query": url.query,
                                 "auth": request.headers.get("authorization"), "body": request.post_data,
                                 "at": time.monotonic(), "status": None}
                self.requests.append(sent[request])

        def answered(response) -> None:
            if response.request in sent:
                sent[response.request]["status"] = response.status

        page.on("request", seen)
        page.on("response", answered)

    def to(self, method: str, path_start: str, path_end: str = "") -> list[dict]:
        return [r for r in self.requests
                if r["method"] == method and r["path"].startswith(path_start) and r["path"].endswith(path_end)]

    def exactly(self, method: str, path: str) -> list[dict]:
        return [r for r in self.requests if r["method"] == method and r["path"] == path]

    def event_batches(self) -> list[list[dict]]:
        return [json.loads(r["body"])["events"] for r in self.to("POST", "/", "/events")]


@pytest.fixture
def context(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    context.set_default_timeout(15_000)
    # The demo catalog's pictures live on a made-up host: answer them here.
    context.route("https://demo.shop-recs.example/**", lambda route: route.fulfill(
        status=200, content_type="image/svg+xml", body=PICTURE))
    yield context
    context.close()


@pytest.fixture
def page(context):
    page = context.new_page()
    crashes: list[str] = []
    page.on("pageerror", lambda error: crashes.append(str(error)))
    yield page
    assert not crashes, crashes


def open_kit(page, url: str) -> Traffic:
    """The test page on the stack's origin (so the kit is loaded as the shop's own script)."""
    page.route(f"{url}/kit-test", lambda route: route.fulfill(status=200, content_type="text/html", body=TEST_PAGE))
    page.goto(f"{url}/kit-test")
    page.wait_for_function("window.kit !== undefined")
    return Traffic(page, url)  # from here: what the kit sends


def stored(page, key: str):
    return page.evaluate("key => JSON.parse(localStorage.getItem('shop-recs:' + key))", key)


def export_events(api: ApiClient, user_id: str) -> list[dict]:
    response = api.request("GET", f"/users/{user_id}/export")
    assert response.status == 200, response.body
    return response.body["events"]


def wait_for(condition, timeout: float = 15, every: float = 0.25):
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every)


def viewed_items(shop, n: int, category: str | None = None) -> list[str]:
    items = [i for i in shop.items if i["in_stock"] and not i.get("retired")
             and (category is None or i["category"] == category)]
    return [i["item_id"] for i in items[:n]]


@browser_test
def test_a_fresh_visitor_gets_a_token_and_sees_popular_items_and_their_recommendations_with_reasons(shop_stack, page):
    url, api, _ = shop_stack
    traffic = open_kit(page, url)

    visitor_id = page.evaluate("kit.visitorId()")
    kept = stored(page, "visitor")
    assert visitor_id.startswith("v_") and kept["visitor_id"] == visitor_id and kept["token"]
    assert 3000 < (kept["expiry"] / 1000 - time.time()) <= 3600
    assert [(r["method"], r["path"], r["auth"]) for r in traffic.requests] == [("POST", "/visitors", None)]

    cacheable = []
    page.on("response", lambda r: cacheable.append(r.headers) if urlsplit(r.url).path == "/popular" else None)
    popular = page.evaluate("""async () => {
        const answer = await kit.renderRecommendations(document.getElementById('list'), kit.popular({limit: 5}));
        return answer; }""")
    expected = api.request("GET", "/popular", query={"limit": 5}).body
    assert [i["item_id"] for i in popular["items"]] == [i["item_id"] for i in expected["items"]]
    cards = page.locator("#list li.shop-recs-card")
    assert cards.evaluate_all("nodes => nodes.map(n => n.dataset.item)") == [i["item_id"] for i in popular["items"]]
    assert all(text.strip() for text in page.locator("#list .shop-recs-reason").all_inner_texts())
    first = popular["items"][0]
    assert page.locator("#list .shop-recs-title").first.inner_text() == first["title"]
    # The demo catalog's display fields: the title links to the item's page, with its picture.
    assert first["url"] and first["image_url"]
    assert page.locator("#list li").first.locator("a.shop-recs-title").get_attribute("href") == first["url"]
    assert page.locator("#list li").first.locator("img.shop-recs-image").get_attribute("src") == first["image_url"]

    answer = page.evaluate("""async () => {
        const answer = await kit.renderRecommendations(document.getElementById('list'), kit.recommendations({limit: 6}));
        return answer; }""")
    assert answer["user_id"] == visitor_id and answer["items"]
    assert all(i["reason"]["text"] for i in answer["items"])
    assert page.locator("#list li.shop-recs-card").count() == len(answer["items"])

    # Public lists go without credentials, so a CDN can cache them; the visitor's own with its token.
    assert all(r["auth"] is None for r in traffic.to("GET", "/popular"))
    assert cacheable and "public" in cacheable[0].get("cache-control", "") and cacheable[0].get("etag")
    personal = traffic.to("GET", f"/visitors/{visitor_id}/recommendations")
    assert personal and all(r["auth"] == f"Bearer {kept['token']}" for r in personal)
    assert len(traffic.exactly("POST", "/visitors")) == 1  # one visitor, whatever was asked


@browser_test
def test_the_widget_shows_text_as_text_links_only_to_the_web_and_tracks_clicks(shop_stack, page):
    url, _, _ = shop_stack
    open_kit(page, url)
    hostile = {"strategy": "als", "model_version": None, "items": [
        {"item_id": "x-1", "title": '<img src=x onerror="window.owned=1">Mug', "category": "kitchen", "price": "9.5",
         "currency": "EUR", "score": None, "image_url": "javascript:window.owned=2", "url": "javascript:window.owned=3",
         "reason": {"text": "<b>because</b>", "items": []}},
        {"item_id": "x-2", "title": "Bowl", "category": "kitchen", "price": None, "currency": None, "score": None,
         "image_url": None, "url": None, "reason": {"text": "popular right now", "items": []}}]}
    page.evaluate("""answer => kit.renderRecommendations(document.getElementById('list'), answer,
        {onClick: (item, event) => { window.clicked = item.item_id; event.preventDefault(); }})""", hostile)

    first = page.locator("#list li").first
    assert first.locator(".shop-recs-title").inner_text() == hostile["items"][0]["title"]
    assert first.locator(".shop-recs-reason").inner_text() == "<b>because</b>"
    assert page.locator("#list img, #list b").count() == 0  # nothing parsed as HTML, no javascript: picture
    assert first.locator("button.shop-recs-title").count() == 1  # no javascript: link either
    assert page.locator("#list li").nth(1).locator(".shop-recs-price").count() == 0

    first.locator(".shop-recs-title").click()
    assert page.evaluate("[window.clicked, window.owned]") == ["x-1", None]
    queued = stored(page, "queue")
    assert [(q["e"]["event_type"], q["e"]["item_id"], q["e"]["properties"]) for q in queued] == [
        ("click", "x-1", {"position": 0, "strategy": "als"})]


@browser_test
def test_the_widget_reports_what_it_showed_and_which_item_was_clicked_with_the_answers_id(shop_stack, page):
    url, api, shop = shop_stack
    open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    items = viewed_items(shop, 2)
    rid = "r1.eyJzdXJmYWNlIjoicmVjcyJ9.c2lnbmF0dXJl"
    answer = {"strategy": "popular", "model_version": None, "recommendation_id": rid, "items": [
        {"item_id": item, "title": item, "category": "c", "price": None, "currency": None, "score": None,
         "image_url": None, "url": None, "reason": {"text": "popular right now", "items": []}} for item in items]}
    page.evaluate("""answer => kit.renderRecommendations(document.getElementById('list'), answer,
        {onClick: (item, event) => event.preventDefault()})""", answer)
    page.locator("#list li").nth(1).locator(".shop-recs-title").click()

    queued = [q["e"] for q in stored(page, "queue")]
    assert [(e["event_type"], e.get("item_id"), e.get("items"), e["recommendation_id"]) for e in queued] == [
        ("impression", None, items, rid), ("click", items[1], None, rid)]
    assert wait_for(lambda: page.evaluate("kit.queued()") == 0), "the queue did not empty"
    held = {e["event_id"]: e for e in export_events(api, visitor_id)}
    assert [held[e["event_id"]]["event_type"] for e in queued] == ["impression", "click"]  # both stored

    # An answer without an id (an older service) sends no impression.
    page.evaluate("""answer => kit.renderRecommendations(document.getElementById('list'), answer)""",
                  {**answer, "recommendation_id": None})
    assert page.evaluate("kit.queued()") == 0


@browser_test
def test_a_refused_refresh_or_an_expiring_token_is_handled_by_the_kit(shop_stack, page):
    url, _, _ = shop_stack
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    first = stored(page, "visitor")

    # Close to its expiry: refreshed before use, for the same visitor.
    page.evaluate("""() => { const v = JSON.parse(localStorage.getItem('shop-recs:visitor'));
        v.expiry = Date.now() + 30000; localStorage.setItem('shop-recs:visitor', JSON.stringify(v)); }""")
    page.evaluate("kit.recommendations({limit: 3})")
    refreshes = traffic.to("POST", f"/visitors/{visitor_id}/token")
    assert len(refreshes) == 1 and refreshes[0]["auth"] == f"Bearer {first['token']}"
    refreshed = stored(page, "visitor")
    assert refreshed["visitor_id"] == visitor_id and refreshed["expiry"] / 1000 - time.time() > 3000

    # A 401 on a visitor route: the token is refreshed once and the request sent again.
    refused = []

    def refuse_once(route):
        if refused:
            route.continue_()
        else:
            refused.append(route.request.url)
            route.fulfill(status=401, content_type="application/json", body='{"message": "Unauthorized"}')

    page.route(f"**/visitors/{visitor_id}/recommendations*", refuse_once)
    answer = page.evaluate("kit.recommendations({limit: 3})")
    assert answer["user_id"] == visitor_id
    assert len(traffic.to("POST", f"/visitors/{visitor_id}/token")) == 2
    assert len(traffic.to("GET", f"/visitors/{visitor_id}/recommendations")) == 3

    # A token the service refuses to refresh: a new visitor.
    page.evaluate("""() => { const v = JSON.parse(localStorage.getItem('shop-recs:visitor'));
        v.token = 'not-a-token'; v.expiry = Date.now(); localStorage.setItem('shop-recs:visitor', JSON.stringify(v)); }""")
    new_id = page.evaluate("kit.visitorId()")
    assert new_id != visitor_id and new_id.startswith("v_")
    assert len(traffic.exactly("POST", "/visitors")) == 2


@browser_test
def test_tracked_views_are_stored_once_even_when_an_answer_is_lost_and_the_batch_sent_again(shop_stack, page):
    url, api, shop = shop_stack
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    lost = []

    def lose_first_answer(route):
        if lost:
            route.continue_()
            return
        stored_answer = route.fetch()  # the service stores the events; the page never hears it
        lost.append(stored_answer.json())
        route.fulfill(status=503, content_type="application/json", headers={"retry-after": "1"},
                      body='{"error": {"code": "unavailable", "message": "try again"}}')

    page.route(f"**/visitors/{visitor_id}/events", lose_first_answer)
    items = viewed_items(shop, 3)
    ids = page.evaluate("items => items.map(item => kit.track('view', item))", items)
    assert stored(page, "queue") and page.evaluate("kit.queued()") == 3  # persisted before it is sent

    assert wait_for(lambda: page.evaluate("kit.queued()") == 0), "the queue did not empty"
    batches = traffic.event_batches()
    assert len(batches) == 2 and [e["event_id"] for e in batches[0]] == [e["event_id"] for e in batches[1]] == ids
    first, retry = traffic.to("POST", f"/visitors/{visitor_id}/events")
    assert retry["at"] - first["at"] >= 0.9  # after Retry-After: 1
    assert [(a["accepted"], a["duplicates"], a["rejected"]) for a in lost] == [(3, 0, [])]
    sent = batches[0]
    assert all(e["channel"] == "web" and e["event_type"] == "view" and e["timestamp"].endswith("Z") for e in sent)
    assert [e["item_id"] for e in sent] == items and "user_id" not in sent[0]

    held = [e for e in export_events(api, visitor_id) if e.get("event_id") in ids]
    assert sorted(e["event_id"] for e in held) == sorted(ids)  # each once


@browser_test
def test_twenty_events_go_at_once_and_at_most_100_in_a_request(shop_stack, page):
    url, api, shop = shop_stack
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    items = viewed_items(shop, 20)
    started = time.monotonic()
    page.evaluate("items => items.forEach(item => kit.track('view', item))", items)
    assert wait_for(lambda: page.evaluate("kit.queued()") == 0, timeout=1.5), "20 events should not wait 2 s"
    assert time.monotonic() - started < 1.9

    # Offline for a while: 230 events wait, then go in requests of at most 100.
    page.route(f"**/visitors/{visitor_id}/events", lambda route: route.abort())
    page.evaluate("items => { for (let i = 0; i < 230; i++) kit.track('view', items[i % items.length]); }", items)
    assert page.evaluate("kit.flush().then(() => 'sent', () => 'failed')") == "failed"
    assert page.evaluate("kit.queued()") == 230
    page.unroute(f"**/visitors/{visitor_id}/events")
    assert wait_for(lambda: page.evaluate("kit.queued()") == 0, timeout=20), "the retry did not send them"
    sizes = [len(b) for b in traffic.event_batches()[-3:]]
    assert sizes == [100, 100, 30]
    assert len([e for e in export_events(api, visitor_id) if e["event_type"] == "view"]) == 250


@browser_test
def test_events_still_queued_when_the_page_is_left_are_delivered(shop_stack, page):
    url, api, shop = shop_stack
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    items = viewed_items(shop, 2)
    ids = page.evaluate("""items => [kit.track('view', items[0]), kit.track('add_to_cart', items[1], {quantity: 2})]""",
                        items)
    assert not traffic.to("POST", f"/visitors/{visitor_id}/events")  # waiting for the 2 s timer
    page.goto("about:blank")  # the page is left first: pagehide sends them

    # Only the left page could have sent them, and with the visitor's token (the route takes no
    # other), which navigator.sendBeacon could not have carried: fetch with keepalive did.
    held = wait_for(lambda: [e for e in export_events(api, visitor_id) if e.get("event_id") in ids])
    assert sorted(e["event_id"] for e in held) == sorted(ids)
    assert {e["event_type"]: e["quantity"] for e in held} == {"view": 1, "add_to_cart": 2}


@browser_test
def test_signing_in_links_the_visitor_and_the_customer_is_served_then_signing_out_starts_a_new_visitor(shop_stack, page):
    url, api, shop = shop_stack
    customer = "u-web-kit-1"  # a new customer: what they did as a visitor is all the service knows
    token = api.auth.issue_token(customer, 3600)
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    category = shop.items[0]["category"]
    viewed = viewed_items(shop, 4, category)
    views = page.evaluate("items => items.map(item => kit.track('view', item))", viewed)

    page.evaluate("([id, token]) => kit.signIn(id, async () => token)", [customer, token])
    # The visitor's queued events were sent as the visitor, then the device linked once.
    assert traffic.to("POST", f"/visitors/{visitor_id}/events")
    assert {e["event_id"] for e in export_events(api, visitor_id)} >= set(views)
    links = traffic.to("POST", f"/users/{customer}/visitors")
    assert len(links) == 1 and links[0]["auth"] == f"Bearer {token}"
    assert json.loads(links[0]["body"]) == {"visitor_token": stored(page, "visitor")["token"]}
    assert links[0]["status"] == 200, links[0]
    assert page.evaluate("kit.userId()") == customer

    answer = page.evaluate("kit.recommendations({limit: 5})")
    assert answer["user_id"] == customer and answer["items"]
    assert all(i["reason"]["text"] for i in answer["items"])
    # Linked: the new customer's answer comes from what they viewed as a visitor.
    assert answer["personalized"] and {i for r in answer["items"] for i in r["reason"]["items"]} & set(viewed), answer
    assert answer["items"] == api.request("GET", f"/users/{customer}/recommendations", query={"limit": 5}).body["items"]
    asked = traffic.to("GET", f"/users/{customer}/recommendations")
    assert asked and asked[0]["auth"] == f"Bearer {token}"

    # Events now belong to the customer; a second sign-in does not link again.
    cart_event = page.evaluate("item => kit.track('add_to_cart', item)", viewed_items(shop, 1)[0])
    page.evaluate("kit.flush()")
    sent = traffic.to("POST", f"/users/{customer}/events")
    assert sent and sent[-1]["auth"] == f"Bearer {token}"
    assert cart_event in {e["event_id"] for e in export_events(api, customer)}
    page.evaluate("([id, token]) => kit.signIn(id, async () => token)", [customer, token])
    assert len(traffic.to("POST", f"/users/{customer}/visitors")) == 1

    basket = page.evaluate("items => kit.basket(items, {limit: 3})", viewed_items(shop, 2))
    assert basket["user_id"] == customer

    page.evaluate("kit.signOut()")
    assert page.evaluate("kit.userId()") is None and stored(page, "visitor") is None
    assert page.evaluate("kit.visitorId()") not in (visitor_id, None)


@browser_test
def test_a_purchase_from_the_browser_is_refused_and_dropped_not_sent_again(shop_stack, page):
    url, api, shop = shop_stack
    traffic = open_kit(page, url)
    visitor_id = page.evaluate("kit.visitorId()")
    answers = []
    page.on("response", lambda r: answers.append((r.status, r.json())) if r.url.endswith("/events") else None)
    item = viewed_items(shop, 1)[0]
    purchase = {"price": 10.5, "currency": "EUR", "quantity": 1}

    # With a valid event: 207, the view stored and the purchase dropped.
    view, bought = page.evaluate("""([item, extra]) => [kit.track('view', item), kit.track('purchase', item, extra)]""",
                                 [item, purchase])
    page.evaluate("kit.flush()")
    # Alone: 422, dropped too.
    page.evaluate("([item, extra]) => kit.track('purchase', item, extra)", [item, purchase])
    page.evaluate("kit.flush()")
    time.sleep(3)  # longer than the batching delay and the first retry

    assert page.evaluate("kit.queued()") == 0
    assert len(traffic.to("POST", f"/visitors/{visitor_id}/events")) == 2
    assert [status for status, _ in answers] == [207, 422]
    refused = answers[0][1]["rejected"]
    assert answers[0][1]["accepted"] == 1 and [r["event_id"] for r in refused] == [bought]
    assert [e["field"] for r in refused + answers[1][1]["rejected"] for e in r["errors"]] == ["event_type"] * 2
    held = {e.get("event_id"): e["event_type"] for e in export_events(api, visitor_id)}
    assert held.get(view) == "view" and "purchase" not in held.values()


@browser_test
def test_a_purchase_from_the_browser_is_refused_naming_the_event_type(shop_stack, page):
    """Purchases come from the shop's backend: the refusal names event_type and says so."""
    url, _, shop = shop_stack
    open_kit(page, url)
    page.evaluate("kit.visitorId()")
    page.evaluate("item => kit.track('purchase', item, {price: 3, currency: 'EUR'})", viewed_items(shop, 1)[0])
    with page.expect_response(lambda r: r.url.endswith("/events")) as sent:
        page.evaluate("kit.flush()")

    answer = sent.value.json()
    error = answer["rejected"][0]["errors"][0]
    assert sent.value.status == 422 and error["field"] == "event_type" and "backend" in error["message"], answer


@browser_test
def test_the_storefront_serves_a_visitor_popular_items_bought_together_and_their_own_recommendations(shop_stack, page):
    from playwright.sync_api import expect

    url, api, _ = shop_stack
    traffic = Traffic(page, url)
    page.goto(f"{url}/shop")
    expect(page.locator("#who")).to_contain_text("browse as visitor v_")
    expect(page.locator("#popular li.shop-recs-card").first).to_be_visible()
    expect(page.locator("#recommendations li.shop-recs-card").first).to_be_visible()
    expect(page.locator("#recs-meta")).to_contain_text("for this visitor")
    expect(page.locator("#history-panel")).to_be_hidden()
    visitor_id = stored(page, "visitor")["visitor_id"]

    opened = []
    for n in range(3):  # a few product pages: a popular item, then what was bought with it
        together = page.locator("#bought-together li.shop-recs-card")
        card = together.first if n and together.count() else page.locator("#popular li.shop-recs-card").nth(n)
        item, title = card.get_attribute("data-item"), card.locator(".shop-recs-title").inner_text()
        card.locator(".shop-recs-title").click()
        expect(page.locator("#product-title")).to_have_text(title)
        expect(page.locator("#product-meta")).to_contain_text(item)  # titles repeat: the item's own page
        expect(page.locator("#bought-together li").first).to_be_visible()
        opened.append(item)
    page.click("#add-to-cart")
    expect(page.locator("#buy-status")).to_contain_text("is in your cart")
    expect(page.locator("#buy")).to_be_hidden()

    held = wait_for(lambda: {e["event_type"] for e in export_events(api, visitor_id)} >= {"view", "add_to_cart"})
    assert held and {e["item_id"] for e in export_events(api, visitor_id) if e["event_type"] == "view"} >= set(opened)

    # The visitor's recommendations, asked after the cart event was sent, are shown.
    def shown_is_the_visitors_answer() -> bool:
        shown = page.locator("#recommendations li.shop-recs-card").evaluate_all("nodes => nodes.map(n => n.dataset.item)")
        answer = api.request("GET", f"/users/{visitor_id}/recommendations", query={"limit": 8}).body
        return shown == [i["item_id"] for i in answer["items"]]

    assert wait_for(shown_is_the_visitors_answer)
    expect(page.locator("#recs-meta")).to_contain_text("for this visitor")
    assert traffic.to("GET", f"/visitors/{visitor_id}/recommendations")
    assert all(r["auth"] is None for r in traffic.to("GET", "/items/"))  # public and cacheable
    expect(page.locator("#errors")).to_have_text("")
