"""The nightly batch (shared/segments/batch.py) on the customers a marketer would look at twice:
each case checks that every customer gets exactly the request path's tags and reasons, in order,
and what those are, so that no case passes by giving nobody anything."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from shared.consent import Consent, PurposeConsent
from shared.contact import ChannelLedger, ContactLedger
from shared.events import format_timestamp
from shared.history import HistoryEvent
from shared.segments import batch, clv
from shared.segments.batch import segment_everyone
from shared.segments.rules import CustomSegment
from shared.segments.tags import segment_customer
from shared.training.customers import customer_statistics
from shared.users import PurchaseSummary, User

NOW = datetime(2026, 11, 1, 3, 0, tzinfo=timezone.utc)
STATS: dict[str, Any] = {
    "recency_days_quintiles": [10.0, 30.0, 90.0, 180.0],
    "frequency_quintiles": [1.0, 2.0, 4.0, 8.0],
    "spend_quintiles": {"EUR": [20.0, 50.0, 100.0, 300.0]},
    "spend_percentiles": {"EUR": {"50": 60.0, "80": 250.0, "95": 1000.0}},
    "clv": {"horizon_days": 90, "bg_nbd": {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426},
            "gamma_gamma": {"EUR": {"p": 6.25, "q": 3.74, "v": 15.44}},
            "value_percentiles": {"EUR": {"40": 5.0, "70": 20.0, "90": 60.0}}},
}
CATEGORIES = {"k1": "kitchen", "k2": "kitchen", "g1": "garden", "t1": "toys", "b1": "books"}
OBJECTED = Consent(profiling=PurposeConsent(granted=False, at="2026-01-01T00:00:00.000000Z", source="web"))


def ago(days: float) -> str:
    return format_timestamp(NOW - timedelta(days=days))


def event(item: str, kind: str = "purchase", days: float = 1.0, price: float | None = 10.0, quantity: int = 1,
          channel: str | None = "web", currency: str | None = "EUR", discount: bool = False) -> HistoryEvent:
    return HistoryEvent(item, kind, quantity, (NOW - timedelta(days=days)).timestamp(), channel, price,
                        currency if price is not None else None, None, discount)


def buyer(user_id: str, orders: int, last: float, first: float, spend: float | dict[str, float],
          **profile: Any) -> User:
    spent = spend if isinstance(spend, dict) else {"EUR": spend}
    return User(user_id=user_id, summary=PurchaseSummary(
        orders=orders, lines=orders, units=orders, spend={c: Decimal(str(a)) for c, a in spent.items()},
        last_purchase_at=ago(last), first_purchase_at=ago(first)), **profile)


@pytest.fixture(autouse=True)
def vectorized_rules_only(monkeypatch):
    """Custom rules are checked as the batch evaluates them over arrays, not through its fallback."""
    def refuse(*_: Any) -> Any:
        raise AssertionError("a custom rule fell back to one customer at a time")

    monkeypatch.setattr(batch, "_one_by_one", refuse)


def agree(users: list[User], histories: dict[str, list[HistoryEvent]] | None = None, stats: dict | None = None,
          definitions: list[CustomSegment] = (), categories: dict[str, str] = CATEGORIES
          ) -> dict[str, list[tuple[str, str, str]]]:
    """Both paths on these customers; the request path's answers, once checked to be the batch's."""
    stats = STATS if stats is None else stats
    histories = histories or {}
    by_id = {u.user_id: u for u in users}
    ids = sorted(by_id.keys() | histories.keys())
    everyone = segment_everyone(by_id, histories, categories, stats, NOW, definitions, user_ids=ids).tags()
    expected = {}
    for user_id in ids:
        user = by_id.get(user_id)
        history = histories.get(user_id, []) if user is None or user.consent.profiling.granted else []
        _, _, tags = segment_customer(user, history, categories, stats, NOW, definitions)
        expected[user_id] = [(t.family, t.name, t.reason) for t in tags]
        assert [(t.family, t.name, t.reason) for t in everyone.get(user_id, [])] == expected[user_id], user_id
    return expected


def names(tags: list[tuple[str, str, str]], family: str | None = None) -> list[str]:
    return [name for f, name, _ in tags if family is None or f == family]


def test_no_customers_no_tags():
    everyone = segment_everyone({}, {}, {}, STATS, NOW)
    assert everyone.tags() == {} and everyone.by_segment() == []
    assert agree([]) == {}


def test_customers_who_never_bought():
    tags = agree([User(user_id="browser", country="DE"), User(user_id="silent")],
                 {"browser": [event("k1", "view", channel="ios"), event("g1", "add_to_cart", channel="ios")]})
    assert names(tags["browser"]) == ["Prospect", "Prefers ios", "Country: DE"]
    assert tags["silent"] == []


def test_customers_with_only_returns_or_nothing_left_after_them():
    returner = User(user_id="returner", summary=PurchaseSummary(spend={"EUR": Decimal("-25.50")}, returns=1))
    refunded = buyer("refunded", 1, 40, 40, 0.0)
    tags = agree([returner, refunded], {"returner": [event("k1", "return", days=3, price=25.5)],
                                        "refunded": [event("k1", days=40), event("k1", "return", days=39)]})
    assert names(tags["returner"]) == ["Low value", "Prospect", "Prefers web"]
    assert "spent -25.50 EUR" in tags["returner"][0][2]
    assert "Low value" not in names(tags["refunded"]) and "Active" in names(tags["refunded"])


def test_objected_and_erased_customers_keep_only_what_they_declared():
    objector = buyer("objector", 9, 2, 300, 2000.0, country="FR", attributes={"age_band": "25-34",
                                                                             "interests": ["jazz"]})
    objector = objector.model_copy(update={"consent": OBJECTED})
    erased = User(user_id="erased", consent=OBJECTED, erased_at=NOW)
    everyone_rule = CustomSegment(segment_id="custom:all", name="All", description="", created_at=NOW,
                                  rule={"field": "orders_total", "op": ">=", "value": 0})
    tags = agree([objector, erased], {"objector": [event("k1", days=2)] * 4, "erased": [event("k1")]},
                 definitions=[everyone_rule])
    assert names(tags["objector"]) == ["Country: FR", "Age Band: 25-34", "Interested in jazz"]
    assert tags["erased"] == []


def test_customers_known_only_by_their_events():
    tags = agree([], {"visitor": [event("k1", "view", channel="android"), event("k2", channel="android"),
                                  event("k1", channel="web")]})
    assert names(tags["visitor"]) == ["Prospect", "Likes kitchen", "Prefers android"]


def test_declared_data_in_every_shape():
    odd = User(user_id="odd", region="Bavaria", city="Munich", attributes={
        "company_type": 3, "household": "family", "interests": "not a list", "prefers_eco": True,
        "prefers_fast_delivery": False, "prefers_big_boxes": True, "loyalty_points": 10})
    tags = agree([odd, User(user_id="plain", attributes={"interests": ["a", "b", "a"]})])
    assert names(tags["odd"]) == ["Region: Bavaria", "City: Munich", "Household: family",
                                  "Cares about big boxes", "Cares about eco"]
    assert names(tags["plain"]) == ["Interested in a", "Interested in b", "Interested in a"]


@pytest.mark.parametrize(("last", "first", "orders", "spend", "expected"), [
    (10, 400, 1, 20.0, ["New", "R5F1M1"]),  # on every lower edge: the quintile below
    (11, 400, 2, 20.01, ["Potential Loyalist", "R4F2M2"]),  # days are whole: 10.5 days ago is 10
    (30, 400, 8, 300.0, ["Loyal", "R4F4M4"]),
    (180, 400, 9, 300.5, ["Can't Lose Them", "R2F5M5"]),
    (181, 400, 4, 100.0, ["At Risk", "R1F3M3"]),
])
def test_rfm_on_the_quintile_edges(last, first, orders, spend, expected):
    tags = agree([buyer("u", orders, last, first, spend)])
    assert names(tags["u"], "rfm") == expected


@pytest.mark.parametrize(("spend", "tier"), [(60.0, "Low value"), (60.01, "Medium value"), (250.0, "Medium value"),
                                             (250.01, "High value"), (1000.0, "High value"), (1000.01, "VIP")])
def test_value_tiers_on_the_percentile_edges(spend, tier):
    assert names(agree([buyer("u", 3, 5, 200, spend)])["u"], "value")[0] == tier


@pytest.mark.parametrize(("last", "first", "stage"), [
    (0, 30, "New"), (0, 31, "Active"), (90, 120, "Active"), (91, 120, "Lapsing"), (180, 400, "Lapsing"),
    (181, 400, "Churned"), (0, 0, "New"),
])
def test_lifecycle_stages_on_their_edges(last, first, stage):
    assert names(agree([buyer("u", 1, last, first, 30.0)])["u"], "lifecycle")[0] == stage


def test_declining_on_the_window_edges_and_at_exactly_half():
    # 100 in the last 90 days (one purchase exactly 90 days ago), 200 in the 90 before (one exactly 180 days ago).
    half = [event("k1", days=90, price=100.0), event("k1", days=180, price=150.0), event("k1", days=120, price=50.0)]
    below = [*half[:2], event("k1", days=120, price=50.02)]
    outside = [*below, event("k1", days=180.0001, price=500.0), event("k1", days=10, price=10.0, currency="GBP")]
    users = [buyer(u, 5, 30, 300, 2000.0) for u in ("half", "below", "outside")]
    tags = agree(users, {"half": half, "below": below, "outside": outside})
    assert "Declining" not in names(tags["half"])  # 100 is not below half of 200
    assert "Declining" in names(tags["below"]) and "Declining" in names(tags["outside"])


def test_likes_and_discount_seeker_on_their_edges():
    quarter = [event("k1"), event("g1"), event("t1"), event("b1")]  # 25% each: ties by name, two at most
    seeker = [event("k1", discount=True), event("k1", discount=True), event("g1"), event("g1")]
    two = [event("k1", discount=True), event("k2")]
    tags = agree([], {"quarter": quarter, "seeker": seeker, "two": two, "unknown": [event("x9"), event("x8")]})
    assert names(tags["quarter"], "behaviour") == ["Likes books", "Likes garden"]
    assert names(tags["seeker"], "behaviour") == ["Likes garden", "Likes kitchen", "Discount seeker"]
    assert names(tags["two"], "behaviour") == ["Likes kitchen"]
    assert names(tags["unknown"], "behaviour") == []


def test_device_ties_go_to_the_first_seen():
    tags = agree([], {"tie": [event("k1", "view", channel="store"), event("k1", "view", channel="ios"),
                              event("k1", "view", channel="ios"), event("k1", "view", channel="store"),
                              event("k1", "view", channel="email"), event("k1", "view", channel="email"),
                              event("k1", "view", channel="email"), event("k1", "view", channel=None)]})
    assert tags["tie"][1] == ("technographic", "Prefers store", "2 of 4 visits on store")


def ledger(sends: int, responses: int, days: list[float], answered: float | None = None) -> ChannelLedger:
    recent = [ago(d) for d in sorted(days)]
    return ChannelLedger(sends=sends, responses=responses, recent_sends=recent,
                         recent_campaigns=[f"c{k}" for k in range(len(recent))],
                         last_response_at=ago(answered) if answered is not None else None)


def test_engagement_on_its_edges():
    users = [
        # 3 sends and one response: a rate of 0.33; 5 unanswered sends within 30 days: fatigued.
        User(user_id="a", contacts=ContactLedger(email=ledger(3, 1, [1, 2, 3], 2.5),
                                                 sms=ledger(5, 0, [1, 5, 10, 20, 29.99]))),
        # A rate of exactly 0.2, and the fifth send just outside the window.
        User(user_id="b", contacts=ContactLedger(push=ledger(5, 1, [1, 2, 3, 4, 30.01], 40),
                                                 email=ledger(2, 2, [1, 2], 1))),
        # Fatigue ends with a response after the first of the sends.
        User(user_id="c", contacts=ContactLedger(sms=ledger(6, 0, [1, 2, 3, 4, 5, 6]),
                                                 email=ledger(6, 1, [1, 2, 3, 4, 5, 6], 5.5))),
    ]
    tags = agree(users)
    assert names(tags["a"]) == ["Responds to email", "Prefers email", "Fatigued on sms"]
    assert names(tags["b"]) == ["Responds to push", "Prefers push"]
    assert names(tags["c"]) == ["Prefers email", "Fatigued on sms"]


def test_custom_rules_over_every_field():
    rules = {
        "Kitchen in Germany": {"all": [{"field": "country", "op": "==", "value": "DE"},
                                       {"field": "purchases_in_category", "category": "kitchen", "days": 30,
                                        "op": ">=", "value": 2}]},
        "Champions or VIP": {"any": [{"field": "tag", "op": "==", "value": "Champions"},
                                     {"field": "tag", "op": "in", "value": ["value:vip", "Nothing"]}]},
        "Not churned": {"field": "tag", "op": "!=", "value": "lifecycle:churned"},
        "Spent in a month": {"field": "spend_in_days", "days": 30, "op": ">=", "value": 30.3},
        "Busy": {"field": "events_in_days", "days": 7, "op": ">", "value": 2},
        "App": {"field": "preferred_channel", "op": "in", "value": ["ios"]},
        "Jazz": {"field": "attribute", "attribute": "interests", "op": "contains", "value": "jazz"},
        "No recency": {"field": "recency_days", "op": "!=", "value": 3},
        "Huge": {"field": "monetary", "op": "<", "value": 10 ** 30},
        "Odd compare": {"field": "attribute", "attribute": "interests", "op": ">", "value": 3},
    }
    definitions = [CustomSegment(segment_id=f"custom:{k}", name=name, description="why" if k % 2 else "",
                                 rule=rule, created_at=NOW) for k, (name, rule) in enumerate(rules.items())]
    champion = buyer("champion", 14, 3, 400, 2340.0, country="DE", attributes={"interests": ["jazz"]})
    # 10.1 x 3 summed in order is 30.299999999999997: below 30.3, as the request path's sum finds.
    history = {"champion": [event("k1", days=2, price=10.1, channel="ios") for _ in range(3)]
               + [event("k2", days=40, channel="ios")],
               "visitor": [event("k1", "view", days=1, channel="web")]}
    tags = agree([champion, buyer("lapsed", 1, 300, 300, 10.0)], history, definitions=definitions)
    assert names(tags["champion"], "custom") == ["Kitchen in Germany", "Champions or VIP", "Not churned", "Busy",
                                                 "App", "Jazz", "Huge"]  # bought 3 days ago
    assert names(tags["lapsed"], "custom") == ["No recency", "Huge"]
    assert names(tags["visitor"], "custom") == ["Not churned", "No recency", "Huge"]


def test_clv_tiers_and_churn_risk_on_a_tier_edge():
    model, gamma = clv.bg_nbd_from(STATS), clv.gamma_gamma_from(STATS, "EUR")
    exact = clv.predict(model, gamma, 4, 12.0, 200.0, 400.0)
    stats = {**STATS, "clv": {**STATS["clv"], "value_percentiles": {"EUR": {"40": 1.0, "70": exact.value,
                                                                             "90": 1000.0}}}}
    users = [buyer("edge", 4, 12, 200, 400.0), buyer("one", 1, 5, 5, 50.0), buyer("gone", 9, 350, 700, 900.0),
             buyer("none", 2, 10, 100, {"GBP": 80.0})]
    tags = agree(users, stats=stats)
    assert names(tags["edge"], "value")[-1] == "CLV: medium"  # exactly on the 70th percentile: the tier below
    assert "Churn risk: high" in names(tags["gone"])
    assert not [n for n in names(tags["one"]) if n.startswith("Churn")]
    assert not [n for n in names(tags["none"]) if n.startswith("CLV")]  # no Gamma-Gamma in GBP


def test_clv_left_out_when_too_few_customers_to_fit():
    users = [buyer(f"u{k}", 1 + k % 4, 3 + k, 100 + 7 * k, 20.0 + k) for k in range(12)]
    stats = customer_statistics([u.summary for u in users], NOW)
    assert "gamma_gamma" not in stats["clv"]  # too few buyers: the BG/NBD fit is refused
    tags = agree(users, stats=stats)
    assert not any(n.startswith(("CLV", "Churn")) for t in tags.values() for n in names(t))
    assert all(names(t, "rfm") for t in tags.values())


def test_summaries_in_other_time_formats_and_currencies():
    legacy = User(user_id="legacy", summary=PurchaseSummary(
        orders=3, lines=5, units=9, spend={"GBP": Decimal("40"), "EUR": Decimal("40")},
        last_purchase_at=(NOW - timedelta(days=3)).isoformat(), first_purchase_at="2026-01-01T00:00:00Z"))
    tags = agree([legacy])
    assert tags["legacy"][0][1] != "Prospect"


def test_a_rule_the_batch_cannot_evaluate_is_evaluated_one_customer_at_a_time(monkeypatch):
    def broken(*_: Any) -> Any:
        raise ValueError("not over arrays")

    monkeypatch.undo()  # the fallback itself, this once
    monkeypatch.setattr(batch._Rules, "_condition", broken)
    definitions = [CustomSegment(segment_id="custom:de", name="DE", description="", created_at=NOW,
                                 rule={"any": [{"field": "country", "op": "==", "value": "DE"},
                                               {"field": "tag", "op": "==", "value": "Champions"}]})]
    tags = agree([buyer("a", 14, 3, 400, 2340.0), User(user_id="b", country="DE"), User(user_id="c")],
                 definitions=definitions)
    assert names(tags["a"], "custom") == names(tags["b"], "custom") == ["DE"] and tags["c"] == []


def test_values_only_an_old_or_hand_written_row_holds_get_the_request_paths_tags_and_fail_no_one_else():
    """Each of these once failed the whole night's segments, or gave a customer other tags than
    GET /users/{id}/segments: a quantity past int64 (its whole column became objects), a purchase
    time that is valid ISO 8601 but not ingest's form, a spend under no currency, interests that
    are not texts, sends remembered without being counted."""
    odd_stamp = PurchaseSummary(orders=2, lines=2, units=2, spend={"EUR": Decimal("80")},
                                last_purchase_at="2026-W43-7T03:00:00.000000Z", first_purchase_at=ago(200))
    recent = [ago(day) for day in range(1, 7)]
    users = [buyer("ordinary", 3, 5, 300, 400.0),
             User(user_id="week-date", summary=odd_stamp),
             User(user_id="no-currency", summary=PurchaseSummary(orders=2, lines=2, units=2, spend={"": Decimal("120")},
                                                                 last_purchase_at=ago(5), first_purchase_at=ago(100))),
             User(user_id="odd-interests", attributes={"interests": [1, True, 1.0, ["x"], "tea"]}),
             User(user_id="uncounted", contacts=ContactLedger(email=ChannelLedger(
                 sends=0, recent_sends=recent, recent_campaigns=["c"] * len(recent))))]
    histories = {"huge": [event("k1", "view", quantity=2**63)], "ordinary": [event("k1", days=5)]}

    spenders = CustomSegment(segment_id="custom:spenders", name="Spenders", description="", created_at=NOW,
                             rule={"field": "monetary", "op": ">", "value": 0})

    answers = agree(users, histories, definitions=[spenders])

    assert [name for family, name, _ in answers["ordinary"] if family in ("value", "custom")] == [
        "High value", "CLV: high", "Spenders"]
    assert answers["week-date"][0][2].endswith("the last one 7 days ago, spent 80.00 EUR")  # 2026-10-25
    assert [name for family, name, _ in answers["odd-interests"]] == [
        "Interested in 1", "Interested in True", "Interested in 1.0", "Interested in ['x']", "Interested in tea"]
    assert [name for family, name, _ in answers["uncounted"] if family == "engagement"] == ["Fatigued on email"]
    assert not [name for family, name, _ in answers["no-currency"] if family in ("value", "custom")]


def test_a_stored_count_past_what_a_float_holds_reads_without_the_summary_on_both_paths():
    """A count of orders no shop reaches (a row written by hand): the nightly batch compares counts
    as floats, so such a summary is left out when the row is read, as any part that does not read."""
    from shared.storage.users import user_from_row

    user = user_from_row({"user_id": "u", "purchase_count": 2**63, "country": "DE"}, logged=False)

    assert user.summary == PurchaseSummary() and user.country == "DE"
    assert agree([user])["u"] == [("geography", "Country: DE", "country DE in the profile")]
