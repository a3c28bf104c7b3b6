"""Every customer's history as columns: one array per field of HistoryEvent, customer after customer.

The nightly run holds the newest 500 events of every customer for the segments, the triggers and
the campaigns: millions of events. As HistoryEvent objects they were most of the run's peak
memory and most of its read time; as columns they are a few dozen bytes an event, and the
vectorized segments (shared/segments/batch.py) read them without building an object. Code that
wants one customer's list still gets it: HistoryColumns is a read-only mapping, user id -> list
of HistoryEvent, built when asked for and equal to what the objects were.

Domain code: numpy, no storage. Imported where numpy is shipped: the nightly run, and training's
InteractionLog, which codes its ids with Codes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

import numpy as np

from shared.history import HistoryEvent


class Codes(dict):
    """Codes 0, 1, 2... for values in the order they first come; the value of each code in `values`.
    Texts and None (nearly every value) are coded in C, by the dict itself; other values are told
    apart by type as well (True, 1 and 1.0 are equal in a dict), and one that cannot be a dict key
    (a list or map stored where a text belongs) gets a code of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[Any] = []

    def __missing__(self, key: Any) -> int:
        self[key] = code = len(self.values)
        self.values.append(key if type(key) in _PLAIN else key[1])
        return code

    def code(self, value: Any) -> int:
        if type(value) in _PLAIN:
            return self[value]
        try:
            return self[(type(value), value)]
        except TypeError:  # unhashable
            self.values.append(value)
            return len(self.values) - 1

    def of(self, values: Sequence[Any], texts_or_none: bool = False) -> np.ndarray:
        """The code of each value. `texts_or_none`: the caller has checked that every value is a
        text or None (the nightly read checks each column once; a second pass over ten million
        values was 2.6 s of its 40)."""
        if texts_or_none or set(map(type, values)) <= _PLAIN:
            return np.fromiter(map(self.__getitem__, values), np.int32, len(values))
        return np.fromiter(map(self.code, values), np.int32, len(values))


# Values a dict tells apart by themselves: texts, and None (an optional text left out).
_PLAIN = frozenset({str, type(None)})


@dataclass(frozen=True)
class Events:
    """Events as columns: each text field a code into its list of values; price NaN for none."""

    item: np.ndarray  # int32 codes into item_ids
    event_type: np.ndarray  # int32 codes into event_types
    quantity: np.ndarray  # int64 (object for a stored number past int64)
    timestamp: np.ndarray  # float64, seconds since the epoch
    channel: np.ndarray  # int32 codes into channels (None is a value)
    price: np.ndarray  # float64, NaN: none
    currency: np.ndarray  # int32 codes into currencies
    campaign: np.ndarray  # int32 codes into campaigns
    discount: np.ndarray  # bool
    item_ids: list[Any]
    event_types: list[Any]
    channels: list[Any]
    currencies: list[Any]
    campaigns: list[Any]

    def __len__(self) -> int:
        return len(self.timestamp)

    def take(self, rows: np.ndarray) -> Events:
        """These events (indexes), the same value lists."""
        return Events(self.item[rows], self.event_type[rows], self.quantity[rows], self.timestamp[rows],
                      self.channel[rows], self.price[rows], self.currency[rows], self.campaign[rows],
                      self.discount[rows], self.item_ids, self.event_types, self.channels, self.currencies,
                      self.campaigns)

    def objects(self, start: int, end: int) -> list[HistoryEvent]:
        """Events start..end as HistoryEvent, as they were stored."""
        s = slice(start, end)
        items, types, channels = self.item_ids, self.event_types, self.channels
        currencies, campaigns = self.currencies, self.campaigns
        return [HistoryEvent(items[i], types[t], q, at, channels[c], None if p != p else p, currencies[m],
                             campaigns[g], d)
                for i, t, q, at, c, p, m, g, d in zip(
                    self.item[s].tolist(), self.event_type[s].tolist(), self.quantity[s].tolist(),
                    self.timestamp[s].tolist(), self.channel[s].tolist(), self.price[s].tolist(),
                    self.currency[s].tolist(), self.campaign[s].tolist(), self.discount[s].tolist())]


def quantities(values: Sequence[int]) -> np.ndarray:
    try:
        return np.fromiter(values, np.int64, len(values))
    except OverflowError:  # a stored number past int64 (ingest bounds quantities; a legacy row may not)
        return np.array(values, dtype=object)


_FIELDS = attrgetter("item_id", "event_type", "quantity", "timestamp", "channel", "price", "currency",
                     "campaign_id", "discount")


def event_fields(objects: Sequence[HistoryEvent]) -> list[list[Any]]:
    """Each field of these events, a list per field in HistoryEvent's order."""
    return [list(column) for column in zip(*map(_FIELDS, objects))] if objects else [[] for _ in range(9)]


def events_of(objects: Sequence[HistoryEvent]) -> Events:
    """Columns of these events, in their order."""
    items, types, channels, currencies, campaigns = Codes(), Codes(), Codes(), Codes(), Codes()
    fields = event_fields(objects)
    item, kind, quantity, timestamp, channel, price, currency, campaign, discount = fields
    return Events(items.of(item), types.of(kind), quantities(quantity), np.array(timestamp, dtype=np.float64),
                  channels.of(channel), np.array(price, dtype=np.float64), currencies.of(currency),
                  campaigns.of(campaign), np.array(discount, dtype=bool), items.values, types.values,
                  channels.values, currencies.values, campaigns.values)


class HistoryColumns(Mapping[str, list[HistoryEvent]]):
    """Each customer's history (newest first), customer after customer: user_ids[k]'s events are
    events[starts[k]:starts[k + 1]]. A customer with an empty history has a key and no events."""

    def __init__(self, user_ids: list[str], starts: np.ndarray, events: Events) -> None:
        self.user_ids, self.starts, self.events = user_ids, starts, events
        self.position = {user_id: k for k, user_id in enumerate(user_ids)}

    @classmethod
    def of(cls, histories: Mapping[str, Sequence[HistoryEvent]]) -> HistoryColumns:
        """The columns of histories held as lists."""
        lengths = np.fromiter(map(len, histories.values()), np.int64, len(histories))
        flat = [event for history in histories.values() for event in history]
        return cls(list(histories), np.concatenate([[0], np.cumsum(lengths)]), events_of(flat))

    def __getitem__(self, user_id: str) -> list[HistoryEvent]:
        k = self.position[user_id]
        return self.events.objects(int(self.starts[k]), int(self.starts[k + 1]))

    def __iter__(self) -> Iterator[str]:
        return iter(self.user_ids)

    def __len__(self) -> int:
        return len(self.user_ids)

    def __contains__(self, user_id: object) -> bool:
        return user_id in self.position

    def item_ids_of(self, event_type: str) -> dict[str, list[str]]:
        """Each customer's item ids of their events of this type, newest first ([] for none)."""
        answer: dict[str, list[str]] = {user_id: [] for user_id in self.user_ids}
        if event_type not in self.events.event_types:
            return answer
        hit = np.flatnonzero(self.events.event_type == self.events.event_types.index(event_type))
        owners = self._owners()[hit].tolist()
        items = np.array(self.events.item_ids, dtype=object)[self.events.item[hit]].tolist()
        for owner, item_id in zip(owners, items):
            answer[self.user_ids[owner]].append(item_id)
        return answer

    def of_customers_with(self, item_ids: Collection[str]) -> HistoryColumns:
        """The customers with an event naming one of these items, with their whole histories."""
        wanted = [code for code, item_id in enumerate(self.events.item_ids) if item_id in item_ids]
        owners = np.unique(self._owners()[np.isin(self.events.item, wanted)]).tolist()
        user_ids = [self.user_ids[k] for k in owners]
        lengths, rows = self.rows_of(user_ids)
        return HistoryColumns(user_ids, np.concatenate([[0], np.cumsum(lengths)]), self.events.take(rows))

    def _owners(self) -> np.ndarray:
        """The customer (their place in user_ids) of each event."""
        return np.repeat(np.arange(len(self.user_ids)), np.diff(self.starts))

    def rows_of(self, user_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """For these customers (any, with a history or not): how many events each has, and the
        indexes of those events in `events`, customer after customer."""
        position = self.position
        found = np.fromiter((position.get(u, -1) for u in user_ids), np.int64, len(user_ids))
        known = found >= 0
        begins = np.where(known, self.starts[:-1][np.maximum(found, 0)] if len(self.user_ids) else 0, 0)
        lengths = np.where(known, (self.starts[1:][np.maximum(found, 0)] if len(self.user_ids) else 0) - begins, 0)
        offsets = np.cumsum(lengths) - lengths
        rows = np.repeat(begins - offsets, lengths) + np.arange(int(lengths.sum()))
        return lengths, rows
