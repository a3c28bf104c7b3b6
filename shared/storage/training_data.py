"""What a nightly run reads: the training window and every customer's segments inputs.

Users, events and items are each scanned in one parallel pass. Every events page is handed to
training, which keeps the window's interactions of those it may train on, and gives the ids with
events; each one's history for the segments is what serving reads, their recent-activity item
from the users table's pass, or a Query for an id without one (shared/storage/recent_histories.py),
decoded once training is done (SegmentsRead). Scans are the run's largest read, so the scan path
scans each table once. The export path reads files the run holds instead, and reads the users
export three times rather than hold every customer through the fits: for what training uses of
the customers, then after training for the histories, and for the customers themselves.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from functools import cached_property, partial
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from shared.bulk import cycle_collection_paused
from shared.events import MAX_QUANTITY, STORED_TIME_LENGTH, STORED_TIME_PATTERN, EventType
from shared.storage.customers import (SCAN_SEGMENTS, USER_HISTORY_FIELDS, Customers, EventIds, catalog_labels,
                                      catalog_labels_of, scan_events)
from shared.observability import logger
from shared.storage.blobs import S3Blobs
from shared.storage.child_process import Running, in_child
from shared.storage.export_folders import check_in_bucket, check_local
from shared.storage.export_queries import QueryRun, read_ids, read_interactions, statements, window_bounds
from shared.storage.exports import DamagedExport, Export, UnusableExport, download_export, latest_chain, table_items
from shared.storage.outcomes import OUTCOME_FIELDS, OutcomePages, Outcomes, outcomes_of_chain
from shared.storage.privacy import IN_PROGRESS as ERASURE_IN_PROGRESS
from shared.history_columns import HistoryColumns
from shared.storage.recent_histories import erasure_stamps, nightly_histories, noting_erasures
from shared.storage.users import UsersRead, all_rows_and_recent, all_user_rows, read_users, recent_payloads
from shared.training.config import TrainingConfig
from shared.training.customers import customer_statistics
from shared.training.interactions import EVENT_CODES, InteractionLog, Interactions, TooManyInteractions
from shared.training.interests import declared
from shared.training.pipeline import TrainingData
from shared.users import User, may_personalize, may_profile

# From this many items in the users export (customers and their companion items) what training
# uses of them is read in a child process: below it, a child's start (a fresh interpreter, about a
# second and 80 MB) costs more than the memory the customers leave behind in this one.
CUSTOMERS_IN_A_CHILD_FROM = 250_000
# From this many bytes of the events export's files (gzipped: about 2.5M events) the outcomes are
# read in a child process while the segments read their inputs in this one; below it, after them
# here: a child's start (about a second and 80 MB) costs more than the read, which skips most
# lines unparsed (exports.current_items: 2 s of CPU at 1M events).
OUTCOMES_IN_A_CHILD_FROM_BYTES = 64 << 20
EXPORT_PAGE = 10_000  # export lines handed to the page handlers at a time, as a Scan's pages are
TRAINING_FIELDS = ("user_id", "item_id", "event_type", "quantity", "ts", "order_id")
RETURN = EventType.RETURN.value
STORED_TIME = re.compile(STORED_TIME_PATTERN)
STORED_TIMES = re.compile(f"(?:{STORED_TIME_PATTERN[1:-1]}\n)*")  # a page's times, a line each


@dataclass(frozen=True)
class TableExports:
    """Each table's export chain: a full export and the incremental ones after it."""

    events: list[Export]
    users: list[Export]
    items: list[Export]


@dataclass(frozen=True)
class Queried:
    """The query stage's output files: the window's interactions, and the user and item ids with events."""

    interactions: list[Path]
    ids: list[Path]


class SegmentsRead:
    """What the segments need of a nightly read: `inputs` gives the customers and their histories
    when first asked for. The segments are computed after training, with the statistics of the
    version it activates, so training does not wait for the histories (at 10M events over a
    minute of Python); on the export path the customers are read again then too, so training
    does not hold them either."""

    def __init__(self, categories: dict[str, str],
                 inputs: Callable[[], tuple[dict[str, User], HistoryColumns]], as_of: datetime | None = None) -> None:
        self._categories, self._inputs, self._as_of = categories, inputs, as_of

    @cached_property
    def customers(self) -> Customers:
        with cycle_collection_paused():  # millions of new lists: the collector would walk them over and over
            customers = Customers(*self._inputs(), self._categories, self._as_of)
        del self._inputs  # and the payloads it holds
        return customers


class LaterOutcomes:
    """The impressions, clicks and purchases since outcomes_since, for the attribution report and
    the experiments' results, which are written after the segments: `result()` gives them. The
    Scan path keeps them from the pages it reads for training. The export path reads them from
    the events export after training, so training neither waits for them nor holds them through
    the fits (at 10M events they were 19 s of its load); past OUTCOMES_IN_A_CHILD_FROM_BYTES in a
    child process (`in_a_child`), which `start()` starts so that it reads while the segments read
    theirs here. `read(*args)` reads them, here or there. `close()` stops a child whose result was
    never taken (the caller failed first)."""

    def __init__(self, read: Callable[..., Outcomes], *args: Any, in_a_child: bool = False) -> None:
        self._read, self._args, self._in_a_child = read, args, in_a_child
        self._running: Running | None = None

    def start(self) -> None:
        # Taken when ready: the child ends as soon as it has read them, and its memory is not
        # held through the rest of the segments' read.
        if self._in_a_child and self._running is None:
            try:
                self._running = in_child(self._read, *self._args).taken_when_ready()
            except OSError as error:  # no process to be had: result() reads them here
                logger.warning("the outcomes are read in this process: no child process could start",
                               extra={"reason": str(error)})
                self._in_a_child = False

    def result(self) -> Outcomes:
        if self._running is None:
            return self._read(*self._args)
        with self._running:
            return self._running.result()

    def close(self) -> None:
        if self._running is not None:
            self._running.__exit__(None, None, None)


@dataclass(frozen=True)
class NightlyRead:
    segments: SegmentsRead
    training: TrainingData | None
    overflow: TooManyInteractions | None  # the window held more than the run may train on
    outcomes: LaterOutcomes | None = None  # with outcomes_since

    def training_data(self) -> TrainingData:
        if self.overflow is not None:
            raise self.overflow
        assert self.training is not None
        return self.training


def read_nightly(events_table: str, users_table: str, items_table: str, config: TrainingConfig, now: datetime,
                 segments: int = SCAN_SEGMENTS, outcomes_since: str | None = None) -> NightlyRead:
    """Training data and segments inputs from one scan of each table; with `outcomes_since`, the
    experiments' and attribution's events since then too."""
    with cycle_collection_paused():
        return _read_nightly(events_table, users_table, items_table, config, now, segments, outcomes_since)


def _read_nightly(events_table: str, users_table: str, items_table: str, config: TrainingConfig, now: datetime,
                  segments: int, outcomes_since: str | None) -> NightlyRead:
    rows, recent = all_rows_and_recent(users_table, segments)
    stored = UsersRead.of_rows(rows)
    del rows
    customers = TrainingCustomers.of(stored, now)
    training = _TrainingPages(config, now, customers.excluded)
    outcomes = OutcomePages(outcomes_since) if outcomes_since else None
    with_events = EventIds()

    def on_page(items: list[dict[str, Any]]) -> None:
        training.add_page(items)
        with_events.add_page(items)
        if outcomes is not None:
            outcomes.add_page(items)

    # Unfiltered: segments need every id with events, training skips those outside its window itself.
    scan_events(events_table, on_page, tuple(dict.fromkeys((*USER_HISTORY_FIELDS, *OUTCOME_FIELDS))), segments)
    categories, titles = catalog_labels(items_table)
    ids = with_events.sorted()
    joined = None if outcomes is None else outcomes.outcomes.joined(customers.linked_to)
    return NightlyRead(SegmentsRead(categories, lambda: (stored.users, nightly_histories(
                           ids, recent, events_table, erasure_stamps(stored.users)))),
                       None if training.overflow else training.finish(customers, now, categories, titles),
                       training.overflow, None if joined is None else LaterOutcomes(lambda: joined))


def load_training_data(events_table: str, users_table: str, config: TrainingConfig, now: datetime,
                       segments: int = SCAN_SEGMENTS) -> TrainingData:
    """Training alone: DynamoDB filters the events to the window."""
    customers = TrainingCustomers.of(UsersRead.of_rows(all_user_rows(users_table, segments)), now)
    training = _TrainingPages(config, now, customers.excluded)
    scan_events(events_table, training.add_page, TRAINING_FIELDS, segments,
                FilterExpression=f"#f{TRAINING_FIELDS.index('ts')} BETWEEN :start AND :end",
                ExpressionAttributeValues={":start": {"S": training.window_start}, ":end": {"S": training.window_end}})
    if training.overflow is not None:
        raise training.overflow
    return training.finish(customers, now)


def read_nightly_from_exports(exports: TableExports, config: TrainingConfig, now: datetime, queried: Queried,
                              events_table: str, page_size: int = EXPORT_PAGE,
                              outcomes_since: str | None = None) -> NightlyRead:
    """The same read from DynamoDB exports (shared/storage/exports.py) and the query stage's output
    (shared/storage/export_queries.py): the window's interactions, and the ids with events, whose
    histories are their recent-activity items in the users export (or a Query of `events_table`
    for an id without one), so both paths give the same training data and segments. The events
    export itself is read only for the outcomes (with `outcomes_since`), through the Scan path's
    page handler.

    The reads are Python work on every line, so they are spread over processes: the query's
    interactions are read in a child process, and what training uses of the customers
    (TrainingCustomers) in another (past CUSTOMERS_IN_A_CHILD_FROM), both started first, while
    this one reads the ids and the catalog (the customers left out of training are taken out of
    the child's interactions after). The limit on interactions counts those the child holds, the
    left-out customers' too. The outcomes are read after training (LaterOutcomes).

    So training's process does not hold the customers through the fits (nor, past that size, ever
    makes them): the segments read the users export again once training is done, with their
    recent-activity items (SegmentsRead). At 500,000 customers they are 400 MB of Python objects,
    and a process that has made them keeps most of that memory after it lets them go. Reading
    again costs CPU, not money: the files are the run's own (downloaded or local), not a Scan."""
    with cycle_collection_paused():
        return _read_nightly_from_exports(exports, config, now, queried, events_table, page_size, outcomes_since)


def _read_nightly_from_exports(exports: TableExports, config: TrainingConfig, now: datetime, queried: Queried,
                               events_table: str, page_size: int, outcomes_since: str | None) -> NightlyRead:
    with ExitStack() as children:
        interactions = children.enter_context(in_child(read_interactions, queried.interactions, queried.ids,
                                                       config.max_interactions))
        customers_of = (children.enter_context(in_child(training_customers, exports.users, now)).result
                        if _items(exports.users) >= CUSTOMERS_IN_A_CHILD_FROM
                        else partial(training_customers, exports.users, now))
        customers = customers_of()
        ids = read_ids(queried.ids).users
        categories, titles = catalog_labels_of(table_items(exports.items, ("item_id",)))
        training = _TrainingPages(config, now, customers.excluded)
        training.take_queried(interactions)
    outcomes = None
    if outcomes_since:
        size = sum(path.stat().st_size for path in exports.events[0].data_files()) if exports.events else 0
        outcomes = LaterOutcomes(outcomes_of_chain, exports.events, outcomes_since, page_size, customers.linked_to,
                                 in_a_child=size >= OUTCOMES_IN_A_CHILD_FROM_BYTES)
    # The customers as the exports show them: an erasure since is the segments' to apply (end_erased).
    as_of = min(chain[-1].time for chain in (exports.users, exports.events) if chain) \
        if exports.users or exports.events else None
    return NightlyRead(SegmentsRead(categories, lambda: _segments_inputs(exports.users, ids, events_table), as_of),
                       None if training.overflow else training.finish(customers, now, categories, titles),
                       training.overflow, outcomes)


def _segments_inputs(users: list[Export], ids: list[str], events_table: str) -> tuple[dict[str, User], HistoryColumns]:
    """The customers and the histories of the ids with events, from the users export, read again
    after training. The histories first, in a pass of their own: the customers then take some of
    the memory the payloads leave as they are decoded, where read together both stood at once (at
    10M events the run's peak, 1.85 GB, went down to 1.6 for a pass costing about 3 s)."""
    erasures: dict[str, str] = {}
    histories = nightly_histories(ids, recent_payloads(noting_erasures(table_items(users, ("user_id",)), erasures)),
                                  events_table, erasures)
    # training_customers read these rows first and logged those that do not read.
    return read_users(table_items(users, ("user_id",)), logged=False).users, histories


def query_locally(events: list[Export], config: TrainingConfig, now: datetime, workdir: Path) -> Queried:
    """The query stage on one machine: the export path's SQL on DuckDB over the events table's
    export chain (a full export and the incremental ones after it), its output under `workdir`."""
    import duckdb

    from shared.storage.duckdb_athena import run_statements

    # DuckDB reads each data folder whole: each file the one listed, and no other, and the same
    # after the query as before it.
    checked = [check_local(export) for export in events]
    output, ids = workdir / "interactions", workdir / "ids"
    run = QueryRun(database="shoprecs", run_id="local", output=str(output), ids=str(ids),
                   events_data=tuple(str(folder.path) for folder in checked))
    try:
        run_statements(statements(run, *window_bounds(now, config.window_days)).values(), resolve=Path)
    except duckdb.IOException as error:  # a data file cut short: DuckDB's message names it
        if not any(folder in str(error) for folder in run.events_data):
            raise
        raise DamagedExport.of(str(error).rpartition(": ")[2], f"unreadable ({error})") from None
    except duckdb.InvalidInputException as error:  # a line that is not JSON, or not an object: named too
        named = re.search(r'in file "([^"]+)"', str(error))
        if named is None or not any(named[1].startswith(folder) for folder in run.events_data):
            raise
        raise DamagedExport.of(named[1], f"not DynamoDB's export format ({str(error)[:300]})") from None
    for folder in checked:
        folder.unchanged()
    return Queried(sorted(output.iterdir()), sorted(ids.iterdir()))


def download_queried(bucket: str, prefixes: dict[str, str], workdir: Path, events_chain: list[str]) -> Queried:
    """The query stage's output on AWS (the TrainingPipeline's Athena UNLOADs: `prefixes`, its
    "interactions" and "ids" key prefixes), downloaded to `workdir`. The events exports Athena
    read (`events_chain`, their summaries' keys) are checked again first, as the query stage
    checked them before Athena read them: a file replaced since may have been read."""
    for summary_key in events_chain:
        check_in_bucket(bucket, summary_key)
    blobs = S3Blobs(bucket)
    found: dict[str, list[Path]] = {}
    for part in ("interactions", "ids"):
        found[part] = []
        for number, key in enumerate(sorted(blobs.keys(prefixes[part]))):
            found[part].append(workdir / part / f"{number:05d}")  # read by their first bytes
            found[part][-1].parent.mkdir(parents=True, exist_ok=True)
            blobs.get_file(key, found[part][-1])
    return Queried(**found)


class NoExport(UnusableExport):
    """The export path is on and a table has no complete export to read."""


def table_exports(tables: dict[str, str], local_dir: str | None, bucket: str,
                  summary_keys: dict[str, list[str]] | None, workdir: Path) -> TableExports:
    """The exports a run reads, for `tables` ({"events": name, "users": ..., "items": ...}): on AWS
    the chains the state machine took (`summary_keys`, each table's manifest-summary.json keys in
    `bucket`, the full export's first), downloaded to `workdir`; on the local stack the newest
    chain under `local_dir`/<table>."""
    chains: dict[str, list[Export]] = {}
    for role, table in tables.items():
        if summary_keys:
            chains[role] = [download_export(bucket, key, workdir / role / str(number))
                            for number, key in enumerate(summary_keys[role])]
        else:
            chains[role] = latest_chain(Path(local_dir or ".") / table)
        if not chains[role]:
            raise NoExport(f"no export of {table} under {local_dir}: run ./dev export")
    return TableExports(**chains)


@dataclass(frozen=True)
class TrainingCustomers:
    """What training uses of the customers, not the customers themselves (at 500,000 they are
    400 MB of Python objects, which a process does not give back once it has made them)."""

    excluded: set[str]  # not to train on: objected, or being erased (an erasure that ran out of
    # time has left events still to delete)
    countries: dict[str, str]  # of those trained on
    interests: dict[str, list[str]]  # declared, of those trained on
    statistics: dict[str, Any]  # the segments' thresholds: customer_statistics
    linked_to: dict[str, str]  # visitor ids linked to a customer: outcomes count for the customer

    @classmethod
    def of(cls, read: UsersRead, now: datetime) -> TrainingCustomers:
        users = read.users
        excluded = {user_id for user_id, user in users.items() if not may_personalize(user)}
        excluded |= {user_id for user_id, status in read.erasure_status.items() if status == ERASURE_IN_PROGRESS}
        trained = [user for user_id, user in users.items() if user_id not in excluded]
        # The customer statistics are over those who may be profiled (an erasure's suppression
        # record holds no purchases, so it counts for nothing).
        profiled = [user for user in users.values() if may_profile(user)]
        return cls(excluded, {u.user_id: u.country for u in trained if u.country},
                   {u.user_id: [key for key, _ in found] for u in trained if (found := declared(u.attributes))},
                   customer_statistics([u.summary for u in profiled], now),
                   {user_id: user.linked_to for user_id, user in users.items() if user.linked_to})


def training_customers(users: list[Export], now: datetime) -> TrainingCustomers:
    """TrainingCustomers of a users export: run in a child process past CUSTOMERS_IN_A_CHILD_FROM,
    so that the customers it makes are gone with it and training's process never holds them.
    A row that does not read is logged here (a child's log joins this process's), and not again
    by the segments' read of the same export."""
    return TrainingCustomers.of(read_users(table_items(users, ("user_id",))), now)


def _items(chain: list[Export]) -> int:
    """The items of the chain's full export, as its summary counts them."""
    return int(chain[0].summary.get("itemCount", 0)) if chain else 0


class _TrainingPages:
    """The window's interactions of those who may be trained on, fed page by page from several threads."""

    def __init__(self, config: TrainingConfig, now: datetime, excluded: set[str]) -> None:
        # The window counts back from the run's end: now, or the as_of a backtest gives.
        self.window_start, self.window_end = window_bounds(now, config.window_days)
        self.excluded = excluded
        self.log = InteractionLog(limit=config.max_interactions)
        self.overflow: TooManyInteractions | None = None
        self.lock = threading.Lock()
        self.returned: dict[tuple[str, str], float] = {}  # units returned, by (user, item)
        self.queried: Interactions | None = None  # the query stage's output, when it ran

    def add_page(self, items: list[dict[str, Any]]) -> None:
        if self.overflow is not None:
            return
        start, end, excluded = self.window_start, self.window_end, self.excluded
        rows = [row for row in interaction_rows(items, start, end) if row[0] not in excluded]
        if not rows:
            return
        # Before the returns are taken out: a return at a time that does not exist takes back nothing.
        rows, seconds = _with_seconds(rows)
        returns = [row for row in rows if row[2] == RETURN]
        if returns:
            # Returns are no interaction of their own: they take back purchases, at finish().
            kept = [k for k, row in enumerate(rows) if row[2] != RETURN]
            rows, seconds = [rows[k] for k in kept], seconds[kept]
            with self.lock:
                for user_id, item_id, _, quantity, _, _ in returns:
                    self.returned[(user_id, item_id)] = self.returned.get((user_id, item_id), 0.0) + quantity
        if not rows:
            return
        users, item_ids, types, quantities, _, orders = zip(*rows)
        with self.lock:
            try:
                self.log.add_page(users, item_ids, types, quantities, seconds, orders)
            except TooManyInteractions as error:
                # Kept, not raised: the same pass goes on reading every customer's history for segments.
                self.overflow = error

    def take_queried(self, read: Running) -> None:
        """The window's interactions from the query stage's output (`read`, read_interactions
        running in a child process), returns already netted in SQL, without the excluded customers'."""
        try:
            self.queried = read.result().without_users(self.excluded)
        except TooManyInteractions as error:
            self.overflow = error

    def finish(self, customers: TrainingCustomers, now: datetime, categories: dict[str, str] | None = None,
               titles: dict[str, str] | None = None) -> TrainingData:
        return TrainingData(
            categories=categories or {}, titles=titles or {},
            interactions=self.queried if self.queried is not None else net_of_returns(self.log.finish(), self.returned),
            end=now.timestamp(), countries=customers.countries, interests=customers.interests,
            customer_statistics=customers.statistics, excluded_users=len(customers.excluded),
        )


def interaction_rows(items: list[dict[str, Any]], start: str, end: str) -> list[tuple[str, str, str, float, str, str | None]]:
    """interaction_row of each item, the Nones left out: read as a page when every event of the
    window is as ingest stores it (the usual case: checked a column at a time, in C), else one event
    at a time (twice the time)."""
    try:
        rows = [(item["user_id"]["S"], item["item_id"]["S"], item["event_type"]["S"],
                 item.get("quantity", {}).get("N", "1"), item["ts"]["S"], item.get("order_id", {}).get("S"))
                for item in items if "item_id" in item and start <= item["ts"]["S"] <= end]
        if not rows:
            return []
        users, item_ids, types, quantities, stamps, orders = zip(*rows)
        joined = "\n".join(stamps) + "\n"  # a time with a line break in it has more than its width
        if set(types) <= EVENT_CODES.keys() and len(joined) == (STORED_TIME_LENGTH + 1) * len(stamps) and \
                STORED_TIMES.fullmatch(joined) and (
                set(map(type, users)) | set(map(type, item_ids)) | set(map(type, orders)) <= {str, type(None)}):
            return list(zip(users, item_ids, types, _units(quantities), stamps, orders))
    except (KeyError, TypeError, AttributeError, ValueError):
        pass
    return [row for item in items if (row := interaction_row(item, start, end)) is not None]


def interaction_row(item: dict[str, Any], start: str, end: str) -> tuple[str, str, str, float, str, str | None] | None:
    """A stored event (DynamoDB JSON) as (user, item, type, quantity, time, order) when it is an
    interaction of the window, as the export path's SQL reads one (sql/interactions.sql): an item
    named, the time within [start, end], a known type, the time in its stored form (a time that
    does not exist is left out by _with_seconds, returns too), the quantity within MAX_QUANTITY either way and
    held as float32. Anything else (a search, an event written by hand) is None: one such event
    costs no other its place."""
    try:
        user_id, item_id, event_type, stamp = (item["user_id"]["S"], item["item_id"]["S"], item["event_type"]["S"],
                                               item["ts"]["S"])
        if not (type(stamp) is str and start <= stamp <= end and event_type in EVENT_CODES
                and len(stamp) == STORED_TIME_LENGTH and STORED_TIME.match(stamp)
                and type(user_id) is str and type(item_id) is str):
            return None
        [quantity] = _units([item.get("quantity", {}).get("N", "1")])
        order = item.get("order_id", {}).get("S")
    except (KeyError, TypeError, AttributeError, ValueError):
        return None
    return user_id, item_id, event_type, quantity, stamp, order if type(order) is str else None


def _units(quantities: Sequence[str]) -> list[float]:
    """Stored quantities (DynamoDB numbers, as text) as training holds them: within MAX_QUANTITY
    either way, as float32 (the SQL's REAL)."""
    return np.clip(np.array(quantities, dtype=np.float64), -MAX_QUANTITY, MAX_QUANTITY).astype(np.float32).tolist()


def _with_seconds(rows: list[tuple[Any, ...]]) -> tuple[list[tuple[Any, ...]], np.ndarray]:
    """The rows whose time exists, and each one's seconds since the epoch. Stored times have one
    width: numpy parses a whole page at once, and the rows one by one only when one does not parse
    (the 30th of February), which are left out, as the SQL's try() leaves them."""
    try:
        return rows, _seconds([row[4] for row in rows])
    except ValueError:
        kept = [row for row in rows if _parses(row[4])]
        return kept, _seconds([row[4] for row in kept])


def _seconds(stamps: list[str]) -> np.ndarray:
    return np.array([stamp[:-1] for stamp in stamps], dtype="datetime64[us]").astype(np.int64) / 1e6


def _parses(stamp: str) -> bool:
    try:
        _seconds([stamp])
        return True
    except ValueError:
        return False


def net_of_returns(interactions: Interactions, returned: dict[tuple[str, str], float]) -> Interactions:
    """Without the purchases of every (user, item) whose units bought, less those returned
    (`returned`, in the same window), are none: an item returned in full is no positive, and an
    item or a customer with no other interaction is not read at all, as on the export path."""
    if not returned or not len(interactions):
        return interactions
    user_index = {user_id: i for i, user_id in enumerate(interactions.user_ids)}
    item_index = {item_id: i for i, item_id in enumerate(interactions.item_ids)}
    n_items = max(len(interactions.item_ids), 1)
    pair = interactions.users.astype(np.int64) * n_items + interactions.items
    purchase = interactions.event_codes == EVENT_CODES[EventType.PURCHASE]
    bought: dict[int, float] = {}
    keys, inverse = np.unique(pair[purchase], return_inverse=True)
    for key, units in zip(keys.tolist(), np.bincount(inverse, weights=interactions.quantities[purchase]).tolist()):
        bought[key] = units
    taken_back = [
        key for key in (user_index[u] * n_items + item_index[i] for (u, i) in returned
                        if u in user_index and i in item_index)
        if key in bought
    ]
    gone = [key for key in taken_back
            if bought[key] - returned[(interactions.user_ids[key // n_items], interactions.item_ids[key % n_items])] <= 0]
    if not gone:
        return interactions
    return interactions.kept(~(purchase & np.isin(pair, np.array(gone, dtype=np.int64))))
