"""The catalog as serving reads it: every item in the warm function's memory, loaded and refreshed
in the background (never on a request), with the items an answer returns read again by key.

A recommendation weighs 100 or more candidates and a popular list up to 200 items; reading their
rows on every request was most of what a request cost (docs/deploy.md). The catalog changes far
less often than it is read, so the function keeps a snapshot of it and:

- answers `details` from the snapshot; an id the snapshot lacks (an item added since it was
  loaded) is read by key, once, and kept; an id not found that way (an event's item the catalog
  feed has not sent yet) is read again after `ABSENT_SECONDS`, not on every request, and at once
  when the by-category index lists it (`newest`); before the first load completes, every id is
  read by key (as before the snapshot existed);
- starts a load in a background thread when it has none, and a reload once it is
  `CATALOG_REFRESH_SECONDS` old (both from `current`, at the end of an answer); requests go on with
  the old one meanwhile (a title or category change shows within that time, except in the items an
  answer returns, which are always read by key);
- `current` reads the given ids by key and puts what it read into the snapshot: the recommender
  asks it for the items of each answer before returning it, so stock, retirement and price are
  always as stored (shared/serving/recommender.py, `_confirmed`).

The segments function keeps the same kind of snapshot of the items' categories only
(`KeyedSnapshot[str]`): a customer's behaviour tags need the category of everything they bought,
which was most of what `GET /users/{id}/segments` read (about 82 of its 85.8 read units).

No boto3 here: the loads are callables the handler wires from shared/storage/catalog.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from shared.catalog import Item
from shared.observability import logger, metrics

V = TypeVar("V")

# How old the snapshot may grow before a reload starts (seconds). A reload is one Scan of the
# items table (0.5 read units per 4 KB) per warm instance: about 100 units for 5,000 items.
CATALOG_REFRESH_SECONDS = 300.0
# After a failed load, how long until the next try (the old snapshot, or reads by key, serve).
RETRY_SECONDS = 30.0
# How long an id read by key and not found is taken as absent: an item the catalog feed sends
# after its first events shows within this, not only at the next load.
ABSENT_SECONDS = 30.0


def in_background(work: Callable[[], None]) -> None:
    threading.Thread(target=work, name="catalog-snapshot", daemon=True).start()


class KeyedSnapshot(Generic[V]):
    """Every item's value (a row, a category) by id, loaded and refreshed in the background."""

    def __init__(
        self,
        load_all: Callable[[], Mapping[str, V]],
        read: Callable[[Sequence[str]], Mapping[str, V]],
        refresh_seconds: float = CATALOG_REFRESH_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        start: Callable[[Callable[[], None]], None] = in_background,
    ) -> None:
        self._load_all, self._read = load_all, read
        self.refresh_seconds = refresh_seconds
        self._clock, self._start = clock, start
        self._items: dict[str, V] | None = None
        self._absent: dict[str, float] = {}  # ids read by key and not found: when
        self._due = float("-inf")  # when the next load may start
        self._lock = threading.Lock()
        self._loading = False
        self.loads = 0  # completed loads
        self.failures = 0

    def details(self, item_ids: Sequence[str], listed: bool = False) -> dict[str, V]:
        """`listed`: the ids come from the items table itself (an index), so one found absent
        before is read again now."""
        items = self._items
        unique = list(dict.fromkeys(item_ids))
        if items is None:
            return dict(self._read(unique))
        found = {i: items[i] for i in unique if i in items}
        recently = self._clock() - ABSENT_SECONDS
        missing = [i for i in unique if i not in found and (listed or self._absent.get(i, recently) <= recently)]
        if missing:
            found.update(self._keep(missing, self._read(missing)))
        return found

    def current(self, item_ids: Sequence[str]) -> dict[str, V]:
        """These items as stored now (read by key); the snapshot keeps what was read. Asked once an
        answer is composed, so a load it starts does not slow the composing of the first one."""
        self.refresh_when_due()
        unique = list(dict.fromkeys(item_ids))
        if not unique:
            return {}
        return self._keep(unique, self._read(unique))

    def ready(self) -> bool:
        """The snapshot has been loaded once (a warm function)."""
        return self._items is not None

    # -- loading

    def _keep(self, asked: Sequence[str], read: Mapping[str, V]) -> dict[str, V]:
        items = self._items
        if items is not None:
            items.update(read)
            now = self._clock()
            for item_id in asked:
                if item_id in read:
                    self._absent.pop(item_id, None)
                else:
                    items.pop(item_id, None)
                    self._absent[item_id] = now
        return dict(read)

    def refresh_when_due(self) -> None:
        """Start a load in the background when there is none yet or the last one is old; called
        once an answer is composed."""
        now = self._clock()
        with self._lock:
            if self._loading or now < self._due:
                return
            self._loading = True
        self._start(self._load)

    def _load(self) -> None:
        try:
            items = dict(self._load_all())
        except Exception as error:  # noqa: BLE001 - a failed load keeps the old snapshot; retried later
            logger.warning("snapshot load failed: ids are read by key meanwhile",
                           extra={"error": f"{type(error).__name__}: {str(error)[:300]}"})
            metrics.add_metric("SnapshotLoadsFailed", MetricUnit.Count, 1)
            with self._lock:
                self.failures += 1
                self._due = self._clock() + min(RETRY_SECONDS, self.refresh_seconds)
                self._loading = False
            return
        with self._lock:
            self._items, self._absent = items, {}
            self.loads += 1
            self._due = self._clock() + self.refresh_seconds
            self._loading = False


class CatalogSnapshot(KeyedSnapshot[Item]):
    """The Catalog that serving reads (shared/serving/recommender.py): the items' rows."""

    def __init__(self, load_all: Callable[[], Mapping[str, Item]], read: Callable[[Sequence[str]], Mapping[str, Item]],
                 newest_ids: Callable[[str, int], list[str]], **timing: Any) -> None:
        """`timing`: KeyedSnapshot's refresh_seconds, clock and start."""
        super().__init__(load_all, read, **timing)
        self._newest_ids = newest_ids

    def newest(self, category: str, limit: int) -> list[Item]:
        """A category's newest items (the by_category index, read now: a new item counts at once),
        with their rows from the snapshot."""
        ids = self._newest_ids(category, limit)
        details = self.details(ids, listed=True)
        return [details[i] for i in ids if i in details]
