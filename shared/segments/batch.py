"""Every customer's tags at once, for the nightly run: the request path's answers, computed over arrays.

`segment_everyone` gives each customer exactly the tags and reasons `tags.segment_customer` gives
them on request (tests/unit/test_segments_batch_agreement.py checks it on 100k generated
customers), several times faster (docs/segments.md has the measure). The rules are not written twice: thresholds, tag names,
reason texts and custom-rule comparisons are the request path's own (tags.py, features.py,
rules.py, clv.py), applied here to arrays, or called once per distinct value and indexed.

- Customer fields are pulled into arrays in one pass; histories come as columns
  (shared/history_columns.py: the nightly read hands them over as such, lists are turned into
  them), one array per event field, with the customer each event belongs to.
- Counts per customer (purchases, categories, channels, windows) are bincounts; bincount adds in
  array order, as the request path's loops do, so sums are bit for bit the same.
- Floating point is the request path's: elementwise +, -, *, / and comparisons are IEEE in both;
  logarithms and exponentials (CLV) go through the `math` module, whose results numpy's own may
  differ from in the last bit; Python's `round`, `sum` and formatting are used where it uses them.
- Reason texts whose inputs repeat (lifecycle, likes, visits, engagement, declared data) are
  written once per distinct input and indexed; those with a customer's own amounts (RFM, value,
  CLV) are written per customer with the request path's functions.

Domain code: numpy, no storage. Only the nightly run (which ships numpy) imports it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, repeat
from operator import attrgetter
from typing import Any

import numpy as np

from shared.bulk import cycle_collection_paused
from shared.contact import MIN_SENDS_FOR_RATE, fatigue_edge, sends_while_fatigued
from shared.history import HistoryEvent
from shared.history_columns import Events, HistoryColumns, events_of
from shared.observability import logger
from shared.segments import clv, rules
from shared.segments.families import segment_id_for
from shared.segments.members import SegmentMembers
from shared.segments.features import DAY, SPEND_WINDOW_DAYS, customer_features, main_currency, seconds
from shared.segments.rules import AllOf, AnyOf, Condition, CustomSegment
from shared.segments.tags import (
    ACTIVE_DAYS, CLV_LOWEST, CLV_TIERS, DECLARED_KEYS, DEVICE_CHANNELS, DISCOUNT_PURCHASES, DISCOUNT_SHARE,
    LAPSING_DAYS, LIKES_AT_MOST, LIKES_SHARE, NEW_DAYS, PROSPECT, VALUE_LOWEST, VALUE_TIERS, Tag, _days_ago, _money,
    alive_text, churn_reason, churn_risk, clv_horizon, clv_percentiles, clv_reason, custom_tag, declared_tag,
    declining_edge, declining_reason, device_tag, engagement_tags, geography_tag, interest_tag, likes_tag,
    discount_tag, lifecycle_stage, orders_text, preference_tag, rfm_name, rfm_reason, value_reason,
)
from shared.users import PurchaseSummary, User, may_profile

_NO_SUMMARY = PurchaseSummary()


@dataclass(frozen=True)
class Block:
    """Tags of one family: row k is customer `customers[k]`'s tag `names[k]` with `reasons[k]`
    (a single name or reason stands for every row)."""

    family: str
    customers: np.ndarray
    names: list[str] | str
    reasons: list[str] | str
    defined_id: str | None = None  # a custom segment's: Tag.defined_id

    def __len__(self) -> int:
        return len(self.customers)

    def segment_ids(self) -> dict[str, str]:
        """The segment id of each name in the block."""
        if isinstance(self.names, str):
            return {self.names: Tag(self.family, self.names, "", self.defined_id).segment_id}
        return {name: segment_id_for(self.family, name) for name in set(self.names)}

    def by_segment(self) -> list[tuple[str, str, np.ndarray | None]]:
        """The block's rows by segment: (segment id, the name of its first row, its rows in order,
        None for all of them), the segments in the order of their first row."""
        if not len(self):
            return []
        ids_of = self.segment_ids()
        if len(ids_of) == 1:
            name = self.names if isinstance(self.names, str) else self.names[0]
            return [(ids_of[name], name, None)]
        codes_of = {segment_id: code for code, segment_id in enumerate(set(ids_of.values()))}
        codes = np.fromiter(map(codes_of.__getitem__, map(ids_of.__getitem__, self.names)), np.intp, len(self))
        order = np.argsort(codes, kind="stable")  # stable: each segment's rows stay in block order
        starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
        firsts = order[starts]  # each segment's first row
        spans = sorted(zip(firsts.tolist(), starts.tolist(), [*starts[1:].tolist(), len(order)]))
        return [(ids_of[self.names[first]], self.names[first], order[start:stop]) for first, start, stop in spans]

    def column(self, values: list[str] | str) -> list[str]:
        return [values] * len(self.customers) if isinstance(values, str) else values


@dataclass(frozen=True)
class Segmented:
    """Every customer's tags. Blocks come in the order `tags.segment` lists families, so a
    customer's rows, taken block by block, are their tags in the request path's order."""

    user_ids: list[str]
    personalized: np.ndarray
    blocks: list[Block]

    def by_segment(self) -> list[SegmentMembers]:
        """Each segment's members, in the order the rows of the blocks list them (block by block,
        customer by customer), the segments in the order of their first row: what the store writes."""
        user_ids = np.array(self.user_ids, dtype=object)
        groups: dict[str, SegmentMembers] = {}
        for block in self.blocks:
            split = block.by_segment()
            reasons_of = (None if isinstance(block.reasons, str) or len(split) < 2
                          else np.array(block.reasons, dtype=object))
            for segment_id, name, rows in split:
                ids = user_ids[block.customers if rows is None else block.customers[rows]].tolist()
                reasons = ([block.reasons] * len(ids) if isinstance(block.reasons, str)
                           else list(block.reasons) if reasons_of is None else reasons_of[rows].tolist())
                group = groups.get(segment_id)
                if group is None:
                    groups[segment_id] = SegmentMembers(segment_id, block.family, name, ids, reasons)
                else:
                    group.user_ids.extend(ids)
                    group.reasons.extend(reasons)
        return list(groups.values())

    def tags(self) -> dict[str, list[Tag]]:
        """Each customer's tags (customers without any are left out), in the request path's order."""
        with cycle_collection_paused():
            rows = self._rows(with_ids=True)
        return {user_id: [Tag(*row) for row in tags] for user_id, tags in rows.items()}

    def rows(self) -> dict[str, list[tuple[str, str, str]]]:
        """Each customer's tags as (family, name, reason), in the request path's order."""
        with cycle_collection_paused():
            return self._rows()

    def _rows(self, with_ids: bool = False) -> dict[str, list[tuple[str, ...]]]:
        blocks = [b for b in self.blocks if len(b)]
        if not blocks:
            return {}
        customers = np.concatenate([b.customers for b in blocks])
        tags = [row for b in blocks for row in zip(repeat(b.family, len(b)), b.column(b.names), b.column(b.reasons),
                                                    *([repeat(b.defined_id, len(b))] if with_ids else []))]
        order = np.argsort(customers, kind="stable")
        answer: dict[str, list[tuple[str, ...]]] = {}
        for customer, index in zip(customers[order].tolist(), order.tolist()):
            answer.setdefault(self.user_ids[customer], []).append(tags[index])
        return answer


def segment_everyone(users: Mapping[str, User], histories: Mapping[str, list[HistoryEvent]],
                     categories: Mapping[str, str], statistics: dict[str, Any], now: datetime,
                     definitions: Sequence[CustomSegment] = (), user_ids: Sequence[str] | None = None) -> Segmented:
    """The tags of every customer in `user_ids` (by default everyone in `users` or `histories`),
    as `segment_customer(users.get(id), histories.get(id, []), ...)` gives them one by one."""
    with cycle_collection_paused():
        return _segment_everyone(users, histories, categories, statistics, now, definitions, user_ids)


def _segment_everyone(users: Mapping[str, User], histories: Mapping[str, list[HistoryEvent]],
                      categories: Mapping[str, str], statistics: dict[str, Any], now: datetime,
                      definitions: Sequence[CustomSegment], user_ids: Sequence[str] | None) -> Segmented:
    # By default in the order the histories were read (dicts keep it), then the customers without one:
    # their events lie in memory in about that order, and reading them in it is faster by half than
    # in a set's order.
    ids = list(user_ids) if user_ids is not None else [*histories, *(u for u in users if u not in histories)]
    profiles = [users.get(user_id) for user_id in ids]
    personalized = np.fromiter(map(may_profile, profiles), bool, len(ids))
    declared = _declared_blocks(profiles)
    if not personalized.any():
        return Segmented(ids, personalized, declared)
    chosen = np.flatnonzero(personalized)
    who = _Customers(chosen, [profiles[i] for i in chosen.tolist()],
                     *_history_columns(histories, [ids[i] for i in chosen.tolist()]), categories, now)
    blocks = (_rfm(who, statistics) + _value(who, statistics) + _lifecycle(who, statistics) + _clv(who, statistics)
              + _behaviour(who) + _technographic(who) + _engagement(who, now) + declared)
    if definitions:
        blocks += _custom(who, definitions, blocks, ids, profiles, histories, categories, now)
    return Segmented(ids, personalized, blocks)


# --- the inputs, as arrays ---------------------------------------------------------------------

class _Customers:
    """The customers who may be profiled (`index`: their place among all), their summary figures
    and their histories' events as arrays."""

    def __init__(self, index: np.ndarray, users: list[User | None], lengths: np.ndarray, events: Events,
                 categories: Mapping[str, str], now: datetime) -> None:
        self.index, self.users, self.categories = index, users, categories
        self.n = n = len(users)
        self.now_s = now_s = now.timestamp()
        summaries = [u.summary if u is not None else _NO_SUMMARY for u in users]
        orders, self.lines, self.units, spends, lasts, firsts = _columns(_SUMMARY_FIELDS, summaries, 6)
        self.orders = np.fromiter(orders, np.int64, n)
        # The main currency (a code: 0 for none) and the spend in it, as purchase_figures reads them.
        self.currencies: list[str | None] = [None]
        code = {None: 0}
        currency, monetary = np.zeros(n, np.int64), np.zeros(n)
        for k, spend in enumerate(spends):
            if not spend:
                continue
            if len(spend) == 1:
                [(main, amount)] = spend.items()
                amount = float(amount)
            else:
                floats = {c: float(a) for c, a in spend.items()}
                main = main_currency(floats)
                amount = floats[main]
            if main not in code:
                code[main] = len(self.currencies)
                self.currencies.append(main)
            # features.monetary: none in a currency that is no currency ("" in an old row)
            currency[k], monetary[k] = code[main], amount if main else 0.0
        self.currency, self.monetary, self.currency_code = currency, monetary, code
        self.spent = np.full(n, None, dtype=object)  # _money_texts: each customer's spend as text, once written
        self.recency = _whole_days(lasts, now_s)
        self.tenure = _whole_days(firsts, now_s)
        self._events(lengths, events)

    def _events(self, lengths: np.ndarray, events: Events) -> None:
        self.owner = np.repeat(np.arange(self.n), lengths)
        self.timestamp = events.timestamp
        type_code = {t: k for k, t in enumerate(events.event_types)}
        self.is_purchase = events.event_type == type_code.get("purchase", -1)
        is_return = events.event_type == type_code.get("return", -1)
        # The channels these customers used (the columns may hold others' too).
        self.channel_names = sorted(c for c in (events.channels[k] for k in np.unique(events.channel).tolist()) if c)
        channel_code = {c: k for k, c in enumerate(self.channel_names)}  # codes: index here; -1 none
        self.channel = _recoded(events.channel, [channel_code.get(c, -1) for c in events.channels])
        self.purchase_owner = self.owner[self.is_purchase]
        self.purchase_timestamp = self.timestamp[self.is_purchase]
        money = self.is_purchase | is_return
        self.money_owner = self.owner[money]
        self.money_timestamp = self.timestamp[money]
        self.money_is_purchase = purchase = self.is_purchase[money]
        self.money_sign = np.where(self.money_is_purchase, 1.0, -1.0)
        self.money_price = events.price[money]  # NaN: none
        self.money_quantity = _floats(events.quantity[money])  # what `price * quantity` multiplies
        # The event's currency against its customer's main one (None is a code too, as in `==`).
        self.money_currency = _recoded(events.currency[money], [self.currency_code.get(c, -1)
                                                                for c in events.currencies])
        self.purchase_discount = events.discount[money][purchase]
        self.category_names = category_names = sorted(set(self.categories.values()))
        category_code = {name: k for k, name in enumerate(category_names)}
        self.purchase_category = _recoded(events.item[money], [
            category_code[self.categories[item]] if item in self.categories else -1
            for item in events.item_ids])[purchase]

    def channel_pairs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each (customer, channel) seen: the customer, the channel, the first event on it, the events."""
        if not hasattr(self, "_channel_pairs"):
            events = np.flatnonzero(self.channel >= 0)
            C = max(len(self.channel_names), 1)
            pairs, first, counts = np.unique(self.owner[events] * C + self.channel[events], return_index=True,
                                             return_counts=True)
            self._channel_pairs = pairs // C, pairs % C, events[first], counts
        return self._channel_pairs

    def buyers(self) -> np.ndarray:
        return ~np.isnan(self.recency)


def _history_columns(histories: Mapping[str, list[HistoryEvent]], user_ids: list[str]) -> tuple[np.ndarray, Events]:
    """How many events each customer has, and their events as columns, customer after customer:
    taken from the nightly read's columns, or made from lists."""
    if isinstance(histories, HistoryColumns):
        lengths, rows = histories.rows_of(user_ids)
        return lengths, histories.events.take(rows)
    lists = [histories.get(user_id, ()) for user_id in user_ids]
    return np.fromiter(map(len, lists), np.int64, len(lists)), events_of(list(chain.from_iterable(lists)))


_SUMMARY_FIELDS = attrgetter("orders", "lines", "units", "spend", "last_purchase_at", "first_purchase_at")
_DECLARED_FIELDS = attrgetter("country", "region", "city", "attributes")


def _columns(fields: Callable[[Any], tuple[Any, ...]], objects: list[Any], count: int) -> list[list[Any]]:
    """The `count` attributes `fields` reads, one list each, in one pass over the objects (one
    pass per attribute over 100k summaries cost more)."""
    if not objects:
        return [[] for _ in range(count)]
    return [list(column) for column in zip(*map(fields, objects))]


def _floats(numbers: np.ndarray) -> np.ndarray:
    """Whole numbers as Python's `float * int` takes them: correctly rounded, the int64 column's
    in C, a stored number past int64 (an object column) one by one, past float's range infinite."""
    if numbers.dtype != object:
        return numbers.astype(float)
    return np.array([_float(n) for n in numbers.tolist()], dtype=float)


def _float(number: int) -> float:
    try:
        return float(number)
    except OverflowError:
        return math.copysign(math.inf, number)


def _recoded(codes: np.ndarray, new: list[int]) -> np.ndarray:
    """`new[code]` for each code."""
    return np.array(new, np.int64)[codes] if new else codes


def _whole_days(stamps: list[str | None], now_s: float) -> np.ndarray:
    """Whole days from each time to now, NaN for none: purchase_figures' `(now - t) // DAY`.
    Times as ingest writes them (2026-11-01T03:00:00.000000Z) are parsed by numpy, others by features.seconds."""
    # One pass: the ingest form without its Z, "NaT" for the rest, parsed by numpy in one go.
    texts = [s[:-1] if s and len(s) == 27 and s[-1] == "Z" and s[10] == "T" else "NaT" for s in stamps]
    try:
        micros = np.array(texts, dtype="datetime64[us]")
    except ValueError:  # one of that length that numpy does not read (a week date): each on its own
        micros = np.array([_datetime64(text) for text in texts], dtype="datetime64[us]")
    at = micros.astype(np.int64) / 1e6  # what datetime.timestamp() gives: microseconds / 10**6, rounded once
    unparsed = np.isnat(micros)
    at[unparsed] = math.nan
    for k in np.flatnonzero(unparsed).tolist():
        if stamps[k]:
            at[k] = seconds(stamps[k])
    return np.floor_divide(now_s - at, DAY)


def _datetime64(text: str) -> np.datetime64:
    """numpy's reading of the text, or NaT for features.seconds to read it."""
    try:
        return np.datetime64(text, "us")
    except ValueError:
        return np.datetime64("NaT", "us")


def _by_value(values: list[Any], make: Callable[[Any], Any]) -> tuple[np.ndarray, list[Any]]:
    """Each value's code and `make(value)` once per distinct value."""
    codes = {v: k for k, v in enumerate(dict.fromkeys(values))}
    return np.fromiter(map(codes.__getitem__, values), np.int64, len(values)), [make(v) for v in codes]


def _pick(texts: list[str], codes: np.ndarray) -> list[str]:
    """`texts[code]` for each code, indexed in C."""
    return np.array(texts, dtype=object)[codes].tolist()


def _texts(keys: list[Any], make: Callable[..., str]) -> list[str]:
    """`make(*key)` for each key, written once per distinct key."""
    cache: dict[Any, str] = {}
    return [cache[key] if key in cache else cache.setdefault(key, make(*key)) for key in keys]


# --- RFM, value, lifecycle ---------------------------------------------------------------------

def _scores(values: np.ndarray, edges: list[float], higher_is_better: bool = True) -> np.ndarray:
    """tags.score over an array: 1 + the edges below the value (reversed for recency)."""
    quintile = 1 + (values[:, None] > np.asarray(edges, dtype=float)[None, :]).sum(axis=1)
    return quintile if higher_is_better else 6 - quintile


def _money_texts(who: _Customers, rows: np.ndarray) -> list[str]:
    """`_money` of each customer's spend in their main currency. RFM and value reasons both tell
    it, mostly of the same customers: each is written once and kept."""
    missing = rows[np.equal(who.spent[rows], None)]
    currencies = who.currencies
    who.spent[missing] = np.array([_money(amount, currencies[c]) for amount, c in zip(
        who.monetary[missing].tolist(), who.currency[missing].tolist())], dtype=object)
    return who.spent[rows].tolist()


def _rfm(who: _Customers, stats: dict[str, Any]) -> list[Block]:
    spend_edges = stats.get("spend_quintiles", {})
    if "recency_days_quintiles" not in stats:
        return []
    currency_ok = np.array([bool(spend_edges.get(c or "")) for c in who.currencies])
    rows = np.flatnonzero(who.buyers() & currency_ok[who.currency])
    if not len(rows):
        return []
    recency = who.recency[rows]
    r = _scores(recency, stats["recency_days_quintiles"], higher_is_better=False)
    fr = _scores(who.orders[rows].astype(float), stats["frequency_quintiles"])
    m = np.zeros(len(rows), np.int64)
    for code, currency in enumerate(who.currencies):
        here = who.currency[rows] == code
        if here.any() and spend_edges.get(currency or ""):
            m[here] = _scores(who.monetary[rows][here], spend_edges[currency or ""])
    r_l, f_l, m_l = r.tolist(), fr.tolist(), m.tolist()
    names = _texts(list(zip(r_l, f_l)), rfm_name)
    codes = _texts(list(zip(r_l, f_l, m_l)), lambda a, b, c: f"R{a}F{b}M{c}")
    orders = _texts(list(zip(who.orders[rows].tolist(), [who.lines[k] for k in rows.tolist()],
                             [who.units[k] for k in rows.tolist()])), orders_text)
    days = _texts([(d,) for d in recency.tolist()], _days_ago)
    reasons = [rfm_reason(a, b, c, o, d, s)
               for a, b, c, o, d, s in zip(r_l, f_l, m_l, orders, days, _money_texts(who, rows))]
    customers = who.index[rows]
    return [Block("rfm", customers, names, reasons), Block("rfm", customers, codes, reasons)]


def _value(who: _Customers, stats: dict[str, Any]) -> list[Block]:
    percentiles = stats.get("spend_percentiles", {})
    wheres: list[str] = []
    tiers: list[str] = []
    chosen: list[np.ndarray] = []
    tier_of = np.full(who.n, -1, np.int64)
    spent = (who.monetary != 0) & (who.currency > 0)
    for code, currency in enumerate(who.currencies):
        edges = percentiles.get(currency or "")
        rows = np.flatnonzero(spent & (who.currency == code))
        if not edges or not len(rows):
            continue
        amounts = who.monetary[rows]
        tier = np.full(len(rows), len(VALUE_TIERS), np.int64)
        for k, (_, key, _) in reversed(list(enumerate(VALUE_TIERS))):
            tier[amounts > edges[key]] = k
        tier_of[rows] = tier
        chosen.append(rows)
    if not chosen:
        return []
    rows = np.sort(np.concatenate(chosen))
    options = [*((name, where) for name, _, where in VALUE_TIERS), VALUE_LOWEST]
    tiers = [options[t][0] for t in tier_of[rows].tolist()]
    wheres = [options[t][1] for t in tier_of[rows].tolist()]
    reasons = [value_reason(s, w) for s, w in zip(_money_texts(who, rows), wheres)]
    return [Block("value", who.index[rows], tiers, reasons)]


def _lifecycle(who: _Customers, stats: dict[str, Any]) -> list[Block]:
    buyers = who.buyers()
    has_channel = np.bincount(who.owner[who.channel >= 0], minlength=who.n) > 0
    prospects = np.flatnonzero(~buyers & has_channel)
    rows = np.flatnonzero(buyers)
    recency, tenure = who.recency[rows], who.tenure[rows]
    # One call of lifecycle_stage per distinct (stage, days it tells), which names and explains it.
    stage = np.select([tenure <= NEW_DAYS, recency <= ACTIVE_DAYS, recency <= LAPSING_DAYS], [0, 1, 2], 3)
    told = np.where(stage == 0, tenure, recency)
    keys = list(zip(stage.tolist(), told.tolist()))
    first = dict(zip(keys, zip(recency.tolist(), tenure.tolist())))
    stages = {key: lifecycle_stage(r, None if math.isnan(t) else t) for key, (r, t) in first.items()}
    named = [stages[key] for key in keys]
    # Prospects and buyers: one stage each, so the block needs no order.
    blocks = [Block("lifecycle", np.concatenate([who.index[prospects], who.index[rows]]),
                    [PROSPECT[0]] * len(prospects) + [name for name, _ in named],
                    [PROSPECT[1]] * len(prospects) + [reason for _, reason in named])]
    # Declining: a top-20% spender whose last 90 days' spend is below half of the 90 before.
    recent, previous = _spend_windows(who)
    edge = np.full(len(who.currencies), math.inf)
    has_edge = np.zeros(len(who.currencies), bool)
    for code, currency in enumerate(who.currencies):
        high = declining_edge(stats, currency)
        if high is not None:
            edge[code], has_edge[code] = high, True
    candidates = np.flatnonzero(buyers & has_edge[who.currency] & (who.monetary > edge[who.currency]))
    declining = []
    for k in candidates.tolist():
        last, before = round(recent[k], 2), round(previous[k], 2)
        if last < 0.5 * before:
            declining.append((k, declining_reason(last, before, who.currencies[who.currency[k]])))
    blocks.append(Block("lifecycle", who.index[[k for k, _ in declining]] if declining else np.zeros(0, np.int64),
                        "Declining", [r for _, r in declining]))
    return blocks


def _spend_windows(who: _Customers) -> tuple[list[float], list[float]]:
    """features' spend in the last 90 days and the 90 before, net of returns, in the main currency
    (unrounded: summed in history order, as its loop adds)."""
    main = (who.money_currency == who.currency[who.money_owner]) & (who.currency[who.money_owner] > 0) \
        & ~np.isnan(who.money_price)
    age = (who.now_s - who.money_timestamp) / DAY
    amount = who.money_price * who.money_quantity * who.money_sign
    recent = main & (age <= SPEND_WINDOW_DAYS)
    previous = main & (SPEND_WINDOW_DAYS < age) & (age <= 2 * SPEND_WINDOW_DAYS)
    return (np.bincount(who.money_owner[recent], amount[recent], who.n).tolist(),
            np.bincount(who.money_owner[previous], amount[previous], who.n).tolist())


# --- CLV -----------------------------------------------------------------------------------------

def _math(function: Callable[[float], float], values: np.ndarray) -> np.ndarray:
    """`function` of the math module on each value: numpy's own logarithms and exponentials may
    differ from it in the last bit, and the tiers compare exact values."""
    return np.fromiter(map(function, values.tolist()), float, len(values))


def _log1p_exp(u: np.ndarray) -> np.ndarray:
    return np.array([v + math.log1p(math.exp(-v)) if v > 0 else math.log1p(math.exp(v)) for v in u.tolist()])


def _bracket(model: clv.BgNbd, x: np.ndarray, T: np.ndarray, t: int) -> np.ndarray:
    """clv._bracket over arrays, operation for operation."""
    A, eps = model.a + model.b - 1 - model.r, model.a - 1
    C = model.a + model.b + x - 1
    log_1mz = _math(math.log, model.alpha + T) - _math(math.log, model.alpha + T + t)
    z = t / (model.alpha + T + t)
    first = -_math(math.expm1, eps * log_1mz) / eps if eps != 0 else -log_1mz
    term = A * z / C
    total, largest = term.copy(), np.abs(term)
    live = np.arange(len(x))
    n = 1
    while len(live):
        go = (np.abs(term[live]) > clv.SERIES_TOLERANCE * np.maximum(np.abs(total[live]), 1e-300)) \
            & (n < clv.SERIES_MAX_TERMS)
        live = live[go]
        if not len(live):
            break
        step = term[live] * ((A + n) * (eps + n) / ((C[live] + n) * (n + 1)) * z[live])
        term[live] = step
        total[live] = total[live] + step
        largest[live] = np.maximum(largest[live], np.abs(step))
        n += 1
    scale = _math(math.exp, eps * log_1mz)
    result = first - scale * total
    if eps != 0:
        cancelled = np.flatnonzero(~(largest * scale <= clv.CANCELLATION_LIMIT * np.abs(result)))
        for k in cancelled.tolist():
            result[k] = clv._bracket_positive_terms(model, int(x[k]), float(log_1mz[k]), float(z[k]))
    return result


@dataclass(frozen=True)
class _Predictions:
    rows: np.ndarray  # among the profiled customers
    orders: np.ndarray
    alive: np.ndarray
    order_value: np.ndarray  # NaN: none


def _predict(who: _Customers, stats: dict[str, Any]) -> _Predictions | None:
    """tags.predict_clv (clv.predict) for every buyer at once."""
    model = clv.bg_nbd_from(stats)
    rows = np.flatnonzero((who.orders >= 1) & who.buyers() & ~np.isnan(who.tenure))
    if model is None or not len(rows):
        return None
    horizon = clv_horizon(stats)
    orders = who.orders[rows]
    T = np.maximum(who.tenure[rows], 0.0)
    t_x = np.minimum(np.maximum(T - who.recency[rows], 0.0), T)
    x = (orders - 1).astype(float)
    C = model.a + model.b + x - 1
    usable = C > 0  # expected_orders is NaN otherwise: no prediction
    rows, orders, T, t_x, x = rows[usable], orders[usable], T[usable], t_x[usable], x[usable]
    numerator = (model.a + model.b + x - 1) * _bracket(model, x, T, horizon)
    alive = np.ones(len(rows))
    repeat = np.flatnonzero(x > 0)
    if len(repeat):
        xr = x[repeat]
        log_odds = (math.log(model.a) - _math(math.log, model.b + xr - 1)
                    + (model.r + xr) * (_math(math.log, model.alpha + T[repeat])
                                        - _math(math.log, model.alpha + t_x[repeat])))
        alive[repeat] = _math(math.exp, -_log1p_exp(log_odds))
    expected = numerator.copy()
    expected[repeat] = numerator[repeat] * alive[repeat]
    keep = np.isfinite(expected) & ~(expected < 0)
    rows, orders, x, expected, alive = rows[keep], orders[keep], x[keep], expected[keep], alive[keep]
    order_value = np.full(len(rows), math.nan)
    currency = who.currency[rows]
    for code, name in enumerate(who.currencies):
        gamma = clv.gamma_gamma_from(stats, name) if name is not None else None
        here = np.flatnonzero(currency == code)
        if gamma is None or not len(here):
            continue
        monetary = who.monetary[rows[here]] / orders[here]
        positive = monetary > 0
        xs = x[here]
        value = gamma.p * (gamma.v + xs * monetary) / (gamma.p * xs + gamma.q - 1)
        value = np.where(xs <= 0, gamma.population_mean, value)
        order_value[here] = np.where(positive, value, math.nan)
    return _Predictions(rows, expected, alive, order_value)


def _clv(who: _Customers, stats: dict[str, Any]) -> list[Block]:
    p = _predict(who, stats)
    if p is None:
        return []
    horizon = clv_horizon(stats)
    alive = _texts([(a,) for a in p.alive.tolist()], alive_text)
    blocks = []
    value = p.orders * p.order_value
    # The tier: the first of CLV_TIERS whose percentile the value is above, in the customer's currency.
    options = [*((name, where) for name, _, where in CLV_TIERS), CLV_LOWEST]
    tier = np.full(len(p.rows), -1, np.int64)
    currency = who.currency[p.rows]
    for code, name in enumerate(who.currencies):
        percentiles = clv_percentiles(stats, name)
        here = (currency == code) & ~np.isnan(p.order_value)
        if not percentiles or not here.any():
            continue
        chosen = np.full(int(here.sum()), len(CLV_TIERS), np.int64)
        for k in reversed(range(len(CLV_TIERS))):
            chosen[value[here] > percentiles[CLV_TIERS[k][1]]] = k
        tier[here] = chosen
    tiered = np.flatnonzero(tier >= 0)
    names = who.currencies
    reasons = [clv_reason(expected, _money(v, names[c]), horizon, _money(ov, names[c]), alive[k], options[t][1])
               for k, v, ov, expected, c, t in zip(tiered.tolist(), value[tiered].tolist(),
                                                   p.order_value[tiered].tolist(), p.orders[tiered].tolist(),
                                                   currency[tiered].tolist(), tier[tiered].tolist())]
    blocks.append(Block("value", who.index[p.rows[tiered]], [options[t][0] for t in tier[tiered].tolist()], reasons))
    repeat = np.flatnonzero(who.orders[p.rows] >= 2)
    rows = p.rows[repeat]
    risks = _texts([(a,) for a in p.alive[repeat].tolist()], lambda a: f"Churn risk: {churn_risk(a)}")
    why = [churn_reason(alive[k], o, t, r, e, horizon) for k, o, t, r, e in zip(
        repeat.tolist(), who.orders[rows].tolist(), who.tenure[rows].tolist(), who.recency[rows].tolist(),
        p.orders[repeat].tolist())]
    blocks.append(Block("lifecycle", who.index[rows], risks, why))
    return blocks


# --- behaviour, devices, engagement ------------------------------------------------------------

def _behaviour(who: _Customers) -> list[Block]:
    categorized = who.purchase_category >= 0
    owner, category = who.purchase_owner[categorized], who.purchase_category[categorized]
    K = max(len(who.category_names), 1)
    pairs, counts = np.unique(owner * K + category, return_counts=True)
    pair_owner, pair_category = pairs // K, pairs % K
    total = np.bincount(pair_owner, counts, who.n).astype(np.int64)
    # Ties by name: categories are coded in name order.
    order = np.lexsort((pair_category, -counts, pair_owner))
    pair_owner, pair_category, counts = pair_owner[order], pair_category[order], counts[order]
    starts = np.searchsorted(pair_owner, pair_owner, side="left")
    place = np.arange(len(pair_owner)) - starts
    blocks = []
    for rank in range(LIKES_AT_MOST):
        pick = np.flatnonzero((place == rank) & (counts / total[pair_owner] >= LIKES_SHARE))
        keys = list(zip([who.category_names[c] for c in pair_category[pick].tolist()], counts[pick].tolist(),
                        total[pair_owner[pick]].tolist()))
        tags = _texts(keys, likes_tag)  # type: ignore[arg-type]
        blocks.append(Block("behaviour", who.index[pair_owner[pick]], [t.name for t in tags],
                            [t.reason for t in tags]))
    purchases = np.bincount(who.purchase_owner, minlength=who.n)
    discounted = np.bincount(who.purchase_owner[who.purchase_discount], minlength=who.n)
    with np.errstate(divide="ignore", invalid="ignore"):
        seekers = np.flatnonzero((purchases >= DISCOUNT_PURCHASES) & (discounted / purchases >= DISCOUNT_SHARE))
    tags = _texts(list(zip(discounted[seekers].tolist(), purchases[seekers].tolist())), discount_tag)  # type: ignore
    blocks.append(Block("behaviour", who.index[seekers], [t.name for t in tags], [t.reason for t in tags]))
    return blocks


def _most_used(who: _Customers, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per customer, among the channels `allowed` (a mask over channel codes): the most used
    (the first seen of equals, as max over a Counter gives), its count and the total; -1: none."""
    owner, channel, first_seen, counts = who.channel_pairs()
    keep = allowed[channel] if len(channel) else np.zeros(0, bool)
    owner, channel, first_seen, counts = owner[keep], channel[keep], first_seen[keep], counts[keep]
    order = np.lexsort((first_seen, -counts, owner))
    owner, channel, counts = owner[order], channel[order], counts[order]
    best = np.full(who.n, -1, np.int64)
    best_count = np.zeros(who.n, np.int64)
    heads = np.flatnonzero(np.r_[True, owner[1:] != owner[:-1]]) if len(owner) else np.zeros(0, np.int64)
    best[owner[heads]], best_count[owner[heads]] = channel[heads], counts[heads]
    return best, best_count, np.bincount(owner, counts, who.n).astype(np.int64)


def _technographic(who: _Customers) -> list[Block]:
    devices = np.array([c in DEVICE_CHANNELS for c in who.channel_names] or [False])
    best, count, total = _most_used(who, devices)
    rows = np.flatnonzero(best >= 0)
    keys = list(zip([who.channel_names[c] for c in best[rows].tolist()], count[rows].tolist(), total[rows].tolist()))
    tags = _texts(keys, device_tag)  # type: ignore[arg-type]
    return [Block("technographic", who.index[rows], [t.name for t in tags], [t.reason for t in tags])]  # type: ignore


def _engagement(who: _Customers, now: datetime) -> list[Block]:
    """Only customers with a send recorded can have engagement tags; their tags are written once
    per distinct (sends, responses per channel, fatigue) with the request path's engagement_tags."""
    customers: list[int] = []
    names: list[str] = []
    reasons: list[str] = []
    cache: dict[tuple[Any, ...], list[Tag]] = {}
    edge = fatigue_edge(now)
    ledgers = [None if user is None else user.contacts for user in who.users]
    # With a send recorded, or (an old or hand-written row) recent sends without a count.
    for k in [k for k, ledger in enumerate(ledgers)
              if ledger is not None and (ledger.email.sends or ledger.sms.sends or ledger.push.sends
                                         or ledger.email.recent_sends or ledger.sms.recent_sends
                                         or ledger.push.recent_sends)]:
        ledger = ledgers[k]
        email, sms, push = ledger.email, ledger.sms, ledger.push
        fatigue = {}
        for channel, kept in (("email", email), ("sms", sms), ("push", push)):
            if sent := sends_while_fatigued(kept, edge):
                fatigue[channel] = sent
        if not fatigue and max(email.sends, sms.sends, push.sends) < MIN_SENDS_FOR_RATE:
            continue
        key = (email.sends, email.responses, sms.sends, sms.responses, push.sends, push.responses,
               tuple(sorted(fatigue.items())))
        tags = cache.get(key)
        if tags is None:
            tags = cache[key] = engagement_tags(ledger.channels(), fatigue)
        for tag in tags:
            customers.append(k)
            names.append(tag.name)
            reasons.append(tag.reason)
    return [Block("engagement", who.index[customers] if customers else np.zeros(0, np.int64), names, reasons)]


# --- declared data (every customer, whatever their consent) -----------------------------------

def _declared_blocks(profiles: list[User | None]) -> list[Block]:
    present = [k for k, u in enumerate(profiles) if u is not None]
    users = [profiles[k] for k in present]
    place = np.array(present, np.int64)
    blocks = []
    countries, regions, cities, declared = _columns(_DECLARED_FIELDS, users, 4)
    for kind, values in (("country", countries), ("region", regions), ("city", cities)):
        codes, tags = _by_value(values, lambda v, kind=kind: geography_tag(kind, v) if v else None)
        rows = np.flatnonzero(np.array([t is not None for t in tags] or [False])[codes]) if values else codes
        blocks.append(Block("geography", place[rows], _pick([t.name if t else "" for t in tags], codes[rows]),
                            _pick([t.reason if t else "" for t in tags], codes[rows])))
    attributes = [(k, a) for k, a in zip(present, declared) if a]
    for key, family in DECLARED_KEYS:
        found = [(k, a[key]) for k, a in attributes if isinstance(a.get(key), str)]
        tags = _texts([(key, family, v) for _, v in found], declared_tag)  # type: ignore[arg-type]
        blocks.append(Block(family, np.array([k for k, _ in found], np.int64), [t.name for t in tags],  # type: ignore
                            [t.reason for t in tags]))  # type: ignore[attr-defined]
    interested, interests = [], []
    preferring, preferences = [], []
    for k, a in attributes:
        listed = a.get("interests")
        if isinstance(listed, list):
            interested += [k] * len(listed)
            interests += listed
    # Preferences: only for the profiles that declare any (one pass over the keys, in C, finds them).
    for k, a in [(k, a) for k, a in attributes if "prefers_" in "\0".join(a)]:
        # The keys of a dict are distinct: sorting the chosen keys is sorting the items.
        chosen = sorted(key for key, value in a.items() if value is True and key.startswith("prefers_"))
        preferring += [k] * len(chosen)
        preferences += chosen
    for rows, tags in ((interested, _interest_tags(interests)),
                       (preferring, _texts([(p,) for p in preferences], preference_tag))):  # type: ignore
        blocks.append(Block("psychographic", np.array(rows, np.int64), [t.name for t in tags],  # type: ignore
                            [t.reason for t in tags]))  # type: ignore[attr-defined]
    return blocks


def _interest_tags(interests: list[Any]) -> list[Tag]:
    """interest_tag of each, written once per distinct text. Other values (an old row's) each on
    their own: 1, True and 1.0 are one key but three texts, and a list is no key."""
    texts = [i for i in interests if type(i) is str]
    made = iter(_texts([(i,) for i in texts], interest_tag)) if texts else iter(())
    return [next(made) if type(i) is str else interest_tag(i) for i in interests]


# --- custom rules --------------------------------------------------------------------------------

_ORDERING = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less, "==": np.equal,
             "!=": np.not_equal}


def _custom(who: _Customers, definitions: Sequence[CustomSegment], blocks: list[Block], ids: list[str],
            profiles: list[User | None], histories: Mapping[str, list[HistoryEvent]], categories: Mapping[str, str],
            now: datetime) -> list[Block]:
    """Each definition's members among the profiled customers, with the comparisons of rules.py."""
    context = _Rules(who, blocks, now)
    answer = []
    for definition in definitions:
        try:
            hit = context.matches(definition.rule)
        except Exception:  # noqa: BLE001 - then one by one, with the request path's own fault boundary
            logger.exception("custom segment rule evaluated one customer at a time",
                             extra={"segment_id": definition.segment_id})
            hit = _one_by_one(definition, who, blocks, ids, profiles, histories, categories, now)
        tag = custom_tag(definition)
        answer.append(Block("custom", who.index[np.flatnonzero(hit)], tag.name, tag.reason, tag.defined_id))
    return answer


def _one_by_one(definition: CustomSegment, who: _Customers, blocks: list[Block], ids: list[str],
                profiles: list[User | None], histories: Mapping[str, list[HistoryEvent]],
                categories: Mapping[str, str], now: datetime) -> np.ndarray:
    known: dict[int, set[str]] = {}
    for block in blocks:
        ids_of = block.segment_ids()
        for customer, name in zip(block.customers.tolist(), block.column(block.names)):
            known.setdefault(customer, set()).update((name, ids_of[name]))
    hit = np.zeros(who.n, bool)
    for k, customer in enumerate(who.index.tolist()):
        user, history = profiles[customer], list(histories.get(ids[customer], ()))
        features = customer_features(user, history, dict(categories), now)
        hit[k] = rules.matches(definition.rule, features, history, dict(categories), known.get(customer, set()), now)
    return hit


class _Rules:
    def __init__(self, who: _Customers, blocks: list[Block], now: datetime) -> None:
        self.who, self.blocks, self.now_s = who, blocks, now.timestamp()
        self.values: dict[tuple[str, str | None], _Distinct] = {}
        self._preferred: list[str | None] | None = None
        self._attributes: list[dict[str, Any]] | None = None
        self._holders: dict[str, np.ndarray] = {}
        self._position: np.ndarray | None = None
        self._names: list[tuple[Block, dict[str, str]]] = []

    def matches(self, rule: Any) -> np.ndarray:
        if isinstance(rule, AllOf):
            hit = np.ones(self.who.n, bool)
            for part in rule.all:
                hit &= self.matches(part)
            return hit
        if isinstance(rule, AnyOf):
            hit = np.zeros(self.who.n, bool)
            for part in rule.any:
                hit |= self.matches(part)
            return hit
        return self._condition(rule)

    def _condition(self, c: Condition) -> np.ndarray:
        who = self.who
        if c.field == "tag":
            return self._tags(c)
        if c.field in ("recency_days", "orders_total", "monetary", "purchases_in_category", "spend_in_days",
                       "events_in_days"):
            values, missing = self._number(c)
            return _compare_numbers(values, missing, c.op, c.value)
        key = (c.field, c.attribute)
        if key not in self.values:
            if c.field in ("country", "region", "city"):
                values = [None if u is None else getattr(u, c.field) for u in who.users]
            elif c.field == "preferred_channel":
                values = self.preferred()
            else:  # attribute
                name = c.attribute or ""
                values = [attributes.get(name) for attributes in self.attributes()]
            self.values[key] = _Distinct(values)
        return self.values[key].compare(c.op, c.value)

    def _number(self, c: Condition) -> tuple[np.ndarray, np.ndarray | None]:
        who = self.who
        if c.field == "recency_days":
            return who.recency, np.isnan(who.recency)
        if c.field == "orders_total":
            return who.orders, None
        if c.field == "monetary":
            return who.monetary, None
        since = self.now_s - (c.days or 0) * DAY
        if c.field == "events_in_days":
            return np.bincount(who.owner[who.timestamp >= since], minlength=who.n), None
        if c.field == "purchases_in_category":
            code = who.category_names.index(c.category) if c.category in who.category_names else -2
            chosen = (who.purchase_timestamp >= since) & (who.purchase_category == code)
            return np.bincount(who.purchase_owner[chosen], minlength=who.n), None
        # spend_in_days: Python's sum over the customer's matching purchases, in history order.
        chosen = np.flatnonzero((who.money_timestamp >= since) & who.money_is_purchase & ~np.isnan(who.money_price)
                                & (who.money_currency == who.currency[who.money_owner]))
        amounts = (who.money_price[chosen] * who.money_quantity[chosen]).tolist()
        owners = who.money_owner[chosen]
        values = np.zeros(who.n)
        if len(chosen):
            heads = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
            ends = np.r_[heads[1:], len(owners)]
            values[owners[heads]] = [sum(amounts[s:e]) for s, e in zip(heads.tolist(), ends.tolist())]
        return values, None

    def attributes(self) -> list[dict[str, Any]]:
        """Each customer's declared attributes, read once for every rule on them."""
        if self._attributes is None:
            self._attributes = [{} if u is None else u.attributes for u in self.who.users]
        return self._attributes

    def preferred(self) -> list[str | None]:
        if self._preferred is None:
            best, _, _ = _most_used(self.who, np.ones(max(len(self.who.channel_names), 1), bool))
            names = [*self.who.channel_names, None]
            self._preferred = [names[b] for b in best.tolist()]
        return self._preferred

    def _tags(self, c: Condition) -> np.ndarray:
        """rules._compare on the set of the customer's tag names and segment ids."""
        wanted = set(c.value) if isinstance(c.value, list) else {c.value}
        has = np.zeros(self.who.n, bool)
        for text in wanted:
            if isinstance(text, str):
                has |= self.holders(text)
        found = rules._compare({"x"}, c.op, "x")  # what a match gives for this operator
        return has if found else ~has

    def holders(self, text: str) -> np.ndarray:
        """The profiled customers with a tag named `text` or with that segment id."""
        if text not in self._holders:
            if self._position is None:
                self._position = np.full(int(self.who.index.max()) + 1 if self.who.n else 0, -1, np.int64)
                self._position[self.who.index] = np.arange(self.who.n)
                self._names = [(b, b.segment_ids()) for b in self.blocks if len(b)]
            has = np.zeros(self.who.n, bool)
            for block, segment_ids in self._names:
                matching = {name for name, segment_id in segment_ids.items() if text in (name, segment_id)}
                if not matching:
                    continue
                rows = block.customers if isinstance(block.names, str) else \
                    block.customers[np.array([name in matching for name in block.names], bool)]
                rows = rows[rows < len(self._position)]
                at = self._position[rows]
                has[at[at >= 0]] = True
            self._holders[text] = has
        return self._holders[text]


def _compare_numbers(values: np.ndarray, missing: np.ndarray | None, op: str, expected: Any) -> np.ndarray:
    """rules._compare of each number with `expected`: in numpy when that is exact (a finite float,
    or an int a float holds exactly), else once per distinct value. `missing`: None values."""
    exact = (type(expected) is float or (type(expected) is int and abs(expected) <= 2 ** 53)) and op in _ORDERING
    if not exact:
        listed = values.tolist()
        if missing is not None:
            listed = [None if m else v for v, m in zip(listed, missing.tolist())]
        return _Distinct(listed).compare(op, expected)
    with np.errstate(invalid="ignore"):
        hit = _ORDERING[op](values, expected)
    if missing is not None:
        hit[missing] = op == "!="
    return hit


_TEXT_OR_NONE = {str, type(None)}


class _Distinct:
    """Values coded by their distinct (type, value), so that rules._compare runs once per distinct value;
    `codes` is None when some value cannot be hashed (a list attribute): then each is compared."""

    def __init__(self, values: list[Any]) -> None:
        self.values = values
        if set(map(type, values)) <= _TEXT_OR_NONE:
            # Texts and None (places, channels, most attributes): no two of different types are
            # equal, so the values alone tell them apart, and a dict codes them in C.
            self.codes, self.distinct = _by_value(values, lambda value: value)
            return
        seen: dict[tuple[type, Any], int] = {}
        try:
            self.codes = np.array([seen.setdefault((type(v), v), len(seen)) for v in values], np.int64)
        except TypeError:
            self.codes = None
        self.distinct = [v for _, v in seen]

    def compare(self, op: str, expected: Any) -> np.ndarray:
        if self.codes is None:
            return _compare_each(self.values, op, expected)
        return np.array([rules._compare(v, op, expected) for v in self.distinct] or [False], bool)[self.codes]


def _compare_each(values: list[Any], op: str, expected: Any) -> np.ndarray:
    """rules._compare once per distinct (hashable) value; unhashable values one by one."""
    codes: dict[tuple[type, Any], int] = {}
    try:
        index = np.fromiter((codes.setdefault((type(v), v), len(codes)) for v in values), np.int64, len(values))
    except TypeError:
        pass
    else:
        return np.array([rules._compare(v, op, expected) for _, v in codes] or [False], bool)[index]
    cache: dict[tuple[type, Any], bool] = {}
    hit = np.zeros(len(values), bool)
    for k, value in enumerate(values):
        try:
            key = (type(value), value)
            answer = cache.get(key)
            if answer is None:
                answer = cache[key] = rules._compare(value, op, expected)
        except TypeError:  # unhashable: a list attribute
            answer = rules._compare(value, op, expected)
        hit[k] = answer
    return hit
