"""Materialized segments: each run's members in pages, each customer's pages, and an index of the segments.

Keys (SegmentsTable):
    segment_id = "#index", sk = "current"              the latest run: {run, at, segments: {id: {family, name, members}},
                                                       parts, layout, order, sizes, families}
    segment_id = "#index", sk = <run>#<001>            the index's further segments, when there are more than
                                                       fit in one item: {segments}, `parts` of them
    segment_id = <segment>, sk = "p#<run>#<000001>"    a page of that run's members: {members: {user_id: reason}}
    segment_id = "#customers#<bucket>", sk = <run>#<share>#<part>   which page of that run holds each
                                                       customer of the bucket's share, by segment (its
                                                       place in the run's list): {customers: {user_id: {"3": n}}}
    segment_id = "#runs", sk = <run>                   the run's segments, how many buckets it spread its
                                                       customers over and how many shares it cut each
                                                       into: {segments: [id, ...], parts, buckets, shares}
    segment_id = "#runs#parts", sk = <run>#<001>       the further ids of that list, in `parts` items
    segment_id = "#custom", sk = <segment>             a custom definition, as JSON text in "definition"
    segment_id = "#erasures", sk = <noted at>#<user>   a customer erased lately: {erased_user}, for the
                                                       nightly run that read them before (end_erased)
The index's segments are in the listing's order across its items (by family, the largest first,
then id); the head's `sizes` counts each item's (its own first) and `families` gives each family's
[start, count] in that order, so that a page of the listing reads the items it shows.
Listings go through the index's run id, so a run being written is invisible to them until its
index is written, and members of old runs are never mixed in; they expire through the table's TTL.
Access and erasure read every run recorded in #runs instead, the one being written included.

Why pages: DynamoDB bills a write by the KB, rounded up per item, and an index entry as much
again. An item per member (about 170 bytes, and its entry in a by-customer index) cost 2 write
units; a page of up to 1,000 members costs about 0.1 a member. Erasure and access find a
customer's pages through their entry in a bucket of customers, under 0.1 write units a customer
of ten segments (each named by its place in the run's list of segments, not its id): an item of
their own cost 1, most of a run's writes, as the smallest item is billed a whole KB. Their id's
hash picks the bucket (a partition: one of the run's `buckets`, up to `CUSTOMER_BUCKETS`) and the
share of it (one of the run's `shares`), so that an item holds about `CUSTOMERS_AN_ITEM`
customers whatever the shop's size: finding a customer reads their share's item of each run,
about 10 KB, not a whole bucket. A map keyed by customer lets erasure remove one member from a
page, or one customer from a bucket, by name, without reading it.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import math
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from itertools import accumulate, islice, repeat
from operator import add, setitem
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from botocore.exceptions import ClientError

from shared.errors import Conflict, DomainError, NotFound
from shared.events import format_timestamp
from shared.limits import chunks_within
from shared.observability import logger, metrics
from shared.segments.families import family_of, segment_id_for
from shared.segments.members import SegmentMembers
from shared.segments.rules import MAX_CUSTOM_SEGMENTS, CustomSegment, from_stored_text, stored_text
from shared.storage import dynamo

INDEX_KEY = {"segment_id": "#index", "sk": "current"}
# Marks an index whose run stored its members in pages. An index without it was written before
# (an item per member, which nothing reads now): no run can be read until the next one.
MEMBERS_LAYOUT = "pages"
# Marks an index whose entries are in the listing's order across its parts, with each part's size and
# each family's span, so that GET /segments reads a page's parts only. Before it, a listing reads them all.
LISTING_ORDER = "family,-members,segment_id"
CUSTOM_PARTITION = "#custom"  # one item per custom definition, sk = its segment id
# Erasures of the last days: a nightly run reads its customers minutes (on the export path hours)
# before it writes their memberships, and an erasure in between finds no run of theirs to end them
# in. Kept longer than any run's data can be old (an export of ExportRetentionDays at most).
ERASURES_PARTITION = "#erasures"
ERASURES_KEPT_SECONDS = 10 * 86_400
CUSTOMER_BUCKET_PARTITION = "#customers#"  # + a bucket number: the customers of that bucket, by run
RUNS_PARTITION = "#runs"  # sk = a run: its segments and layout, so that a customer's item of it can be found
# sk = <run>#<001>: the rest of a run's list of ids. A partition of their own: what reads #runs
# (a version before them too) reads run records only.
RUN_PARTS_PARTITION = "#runs#parts"
# Partitions a run's customers are spread over at most (DynamoDB writes about 1 MB a second to
# one); each is cut into as many shares as make items of about CUSTOMERS_AN_ITEM customers, a few
# KB, so that an entry is billed by its bytes, not a KB each.
CUSTOMER_BUCKETS = 1024
CUSTOMERS_AN_ITEM = 100
# A run's record outlives its items by a week: TTL deletes expired items within days, in no
# order, and an erasure must find an item as long as it is there.
RUN_RECORD_EXTRA_SECONDS = 7 * 86_400
# Runs written before the buckets gave each customer an item of their own: still found (and
# erased) until they expire, as every run's items do, OLD_RUNS_KEPT_SECONDS after they were written.
CUSTOMER_PARTITION = "#customer#"  # + a user id: one item per run
OLD_RUNS_KEPT_SECONDS = 3 * 86_400
WRITE_THREADS = 8  # the writes wait on DynamoDB, not on the CPU
# Items a write_run serializes at once: pages and buckets' items are up to about 360 KB (100 KB is
# a full page, about 10 KB an item of 100 customers). Enough for every thread to have calls to make.
PAGES_A_SLICE, BUCKETS_A_SLICE = 200, 50
MEMBERS_PER_PAGE = 1000  # as many as GET /segments/{id}/members gives at once
# A page holds members up to this many characters of ids and reasons; at most 4 bytes a character,
# and a few bytes a map entry, it stays under DynamoDB's 400 KB an item.
PAGE_CHARACTERS = 90_000
LAST_PAGE = 999_999
# What a customer's entry of a bucket counts for each segment (named by its place in the run's
# list), beside the customer's id.
PAGE_ENTRY_CHARACTERS = 8
# A shop whose customers live in thousands of cities has thousands of segments: the index's
# entries and the run's list of ids are cut into parts of up to PAGE_CHARACTERS each, the first in
# the item itself, so that none passes 400 KB. What an index entry counts beside its id, family
# and name (its members' count and the names of its fields):
INDEX_ENTRY_CHARACTERS = 40
# The index's parts stay while their run is the latest, however long the nightly runs stop (its
# pages expire after OLD_RUNS_KEPT_SECONDS); then TTL takes those of runs long replaced. A part is
# at most 360 KB: a night's few cost cents a month to keep.
INDEX_PARTS_KEPT_SECONDS = 90 * 86_400


@dataclass(frozen=True)
class StoredDefinitions:
    readable: list[CustomSegment]
    unreadable: list[str]  # segment ids of definitions that do not parse: skipped, kept for deletion


@dataclass(frozen=True)
class SegmentListing:
    run: str | None
    at: str | None
    families: dict[str, int]  # every family of the run: how many segments it has
    segments: list[dict[str, Any]]  # {segment_id, family, name, members}
    next_cursor: str | None


class SegmentStore:
    def __init__(self, table: str) -> None:
        self.table = table

    def write_run(self, run: str, at: str, members: Iterable[SegmentMembers],
                  threads: int = WRITE_THREADS) -> dict[str, Any]:
        """Each segment's members (each segment once, shared/segments/members.py), a customer's
        second listing in a segment left out, so that each member is on one page, counted once.
        Writes the run's record, the pages and the buckets naming each customer's pages, then the index."""
        if "#" in run:
            raise ValueError(f"a run id is part of keys split at '#': {run!r}")
        expires = int(time.time()) + OLD_RUNS_KEPT_SECONDS
        segments: dict[str, dict[str, Any]] = {}
        pages: list[dict[str, Any]] = []
        # Each customer's pages, by the segment's place in the run's list (its code in the buckets).
        customers: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for group in members:
            if group.segment_id in segments:
                raise ValueError(f"segment {group.segment_id} is listed twice: its members would be paged apart")
            first = group.first_reasons()
            if not first:
                continue
            code = str(len(segments))
            segments[group.segment_id] = {"family": group.family, "name": group.name, "members": len(first)}
            user_ids, reasons = list(first), list(first.values())
            for number, (start, stop) in enumerate(_page_spans(user_ids, reasons), 1):
                on_page = user_ids[start:stop]
                pages.append({"segment_id": group.segment_id, "sk": _page_key(run, number),
                              "members": dict(zip(on_page, reasons[start:stop])), "run": run, "expires_at": expires})
                # customers[user_id][code] = number for each, looped in C: a million members a night.
                deque(map(setitem, map(customers.__getitem__, on_page), repeat(code), repeat(number)), maxlen=0)
        # The run's record first: an erasure while the run is written finds what is written of it.
        layout = _Layout.for_customers(len(customers))
        kept = expires + RUN_RECORD_EXTRA_SECONDS
        listed = _parts(list(segments), len)
        # The parts, then the record that counts them: no reader counts a part not yet written.
        dynamo.batch_put(self.table, [{**key, "segments": part, "expires_at": kept} for key, part in
                                      zip(_part_keys(RUN_PARTS_PARTITION, run, len(listed) - 1), listed[1:])])
        dynamo.batch_put(self.table, [{"segment_id": RUNS_PARTITION, "sk": run, "segments": listed[0],
                                       "parts": len(listed) - 1, "buckets": layout.buckets, "shares": layout.shares,
                                       "expires_at": kept}])
        # In slices: the items' wire form is made a slice at a time, not for a whole shop at once.
        for items, size in ((iter(pages), PAGES_A_SLICE),
                            (_bucket_items(run, layout, customers, expires), BUCKETS_A_SLICE)):
            while chunk := list(islice(items, size)):
                dynamo.batch_put(self.table, chunk, threads)
        # In the listing's order, so that a page of it reads only the parts it shows.
        ordered = sorted(segments.items(), key=_listing_key)
        entries = _parts(ordered, lambda entry: len(entry[0]) + len(entry[1]["family"]) + len(entry[1]["name"])
                         + INDEX_ENTRY_CHARACTERS)
        parts_expire = int(time.time()) + INDEX_PARTS_KEPT_SECONDS
        dynamo.batch_put(self.table, [{**key, "segments": dict(part), "expires_at": parts_expire} for key, part in
                                      zip(_part_keys(INDEX_KEY["segment_id"], run, len(entries) - 1), entries[1:])])
        # The index item last, in one put: listings switch to the new run at once, with all its parts there.
        dynamo.batch_put(self.table, [{**INDEX_KEY, "run": run, "at": at, "segments": dict(entries[0]),
                                       "parts": len(entries) - 1, "layout": MEMBERS_LAYOUT, "order": LISTING_ORDER,
                                       "sizes": [len(part) for part in entries],
                                       "families": _family_spans(entry[1]["family"] for entry in ordered)}])
        return {**INDEX_KEY, "run": run, "at": at, "segments": segments, "layout": MEMBERS_LAYOUT}

    def create_definition(self, definition: CustomSegment) -> None:
        # Read, then written: two definitions created at the same instant may both pass, so the
        # limit can be passed by the few created concurrently; it bounds reads, it is not a quota.
        # (Reading them costs what counting them did: a Query's COUNT is billed for the items it reads.)
        stored = self.read_definitions()
        if len(stored.readable) + len(stored.unreadable) >= MAX_CUSTOM_SEGMENTS:
            raise Conflict(f"at most {MAX_CUSTOM_SEGMENTS} custom segments; delete one before defining another")
        # A definition keeps the id its name made when it was defined: one named in another script
        # before ids kept its letters is stored under an id that is not its name's today.
        for held in stored.readable:
            if definition.segment_id in (held.segment_id, segment_id_for("custom", held.name)):
                raise Conflict(f"a segment named {definition.name!r} exists already" if held.name == definition.name
                               else f"{definition.name!r} makes the id {definition.segment_id!r}, which the segment "
                                    f"{held.name!r} has", field="name")
        item = {"segment_id": CUSTOM_PARTITION, "sk": definition.segment_id, "definition": stored_text(definition)}
        try:
            with dynamo.aws_faults("store a segment definition"):
                dynamo.client().put_item(TableName=self.table, Item=dynamo.serialize(item),
                                         ConditionExpression="attribute_not_exists(sk)")
        except ClientError as error:
            if dynamo.error_code(error) == "ConditionalCheckFailedException":
                raise Conflict(f"a segment named {definition.name!r} exists already", field="name") from None
            raise

    def definitions(self) -> list[CustomSegment]:
        return self.read_definitions().readable

    def read_definitions(self) -> StoredDefinitions:
        """Every definition that parses. One that does not (written by an older version, or put in
        the table by hand) is logged, counted and skipped: it must not fail a customer's read, the
        listing or the nightly run. Its id is returned, so that it can be deleted."""
        with dynamo.aws_faults("read segment definitions"):
            pages = dynamo.client().get_paginator("query").paginate(
                TableName=self.table, KeyConditionExpression="segment_id = :custom",
                ExpressionAttributeValues=dynamo.serialize({":custom": CUSTOM_PARTITION}))
            rows = [row for page in pages for row in page["Items"]]
        readable, unreadable = [], []
        for row in rows:
            segment_id = row["sk"]["S"]
            try:
                definition = from_stored_text(row["definition"]["S"])
                if definition.segment_id != segment_id:  # it could not be deleted by the id it shows
                    raise ValueError(f"it names itself {definition.segment_id!r}")
                readable.append(definition)
            except Exception as error:  # noqa: BLE001 - whatever a stored item holds, the others are read
                logger.warning("unreadable custom segment definition skipped", extra={
                    "segment_id": segment_id, "error": f"{type(error).__name__}: {str(error)[:500]}"})
                metrics.add_metric("SegmentDefinitionsSkipped", MetricUnit.Count, 1)
                unreadable.append(segment_id)
        return StoredDefinitions(readable, unreadable)

    def delete_definition(self, segment_id: str) -> None:
        try:
            with dynamo.aws_faults("delete a segment definition"):
                dynamo.client().delete_item(TableName=self.table, ConditionExpression="attribute_exists(sk)",
                                            Key=dynamo.serialize({"segment_id": CUSTOM_PARTITION, "sk": segment_id}))
        except ClientError as error:
            if dynamo.error_code(error) == "ConditionalCheckFailedException":
                raise NotFound(f"no custom segment {segment_id!r}", field="segment_id") from None
            raise

    def index(self) -> dict[str, Any] | None:
        """The latest run's index; None before the first run, and until the first run after an
        upgrade from the item-per-member layout: its lists cannot be read, and the nightly
        triggers must take the new run as their baseline, not announce every member as new."""
        index = self._head()
        return None if index is None else self._with_parts(index)

    def _with_parts(self, index: dict[str, Any]) -> dict[str, Any]:
        """The index's item with the segments of its further parts."""
        parts = int(index.pop("parts", 0))
        if parts:
            found = dynamo.batch_get(self.table, _part_keys(INDEX_KEY["segment_id"], index["run"], parts),
                                     consistent=True)
            if len(found) < parts:  # expired (no run for INDEX_PARTS_KEPT_SECONDS): listed without them
                logger.warning("segment index parts missing", extra={"run": index["run"], "parts": parts,
                                                                     "found": len(found)})
            for part in sorted(found, key=lambda row: row["sk"]):
                if isinstance(part.get("segments"), dict):
                    index["segments"].update(part["segments"])
        # An entry written by hand that does not read is left out, as the listing leaves it out.
        index["segments"] = {segment_id: entry for segment_id, entry in index["segments"].items()
                             if _readable_entry(entry)}
        return index

    def listing(self, family: str | None, limit: int, cursor: str | None) -> SegmentListing:
        """A page of the latest run's segments (of one family, or all), in the listing's order: by
        family, the largest first. Reads the index's parts that hold the page, not the others."""
        head = self._head()
        if head is None:
            if cursor:
                raise DomainError("cursor belongs to an older run; start again without it", field="cursor")
            return SegmentListing(None, None, {}, [], None)
        run = head["run"]
        if (ordered := _ordered(head)) is not None:
            spans, sizes = ordered
            read = functools.partial(self._index_entries, head, sizes)
        else:  # written before the index was kept in order (until the next run), or by hand: read whole, ordered here
            ordered = _in_listing_order(self._with_parts(head)["segments"])
            spans = _family_spans(entry["family"] for entry in ordered)
            read = lambda start, stop: ordered[start:stop]  # noqa: E731
        if family is None:
            low, high = 0, sum(count for _, count in spans.values())
        else:
            low, count = spans.get(family, (0, 0))
            high = low + count
        start = _listing_position(cursor, run, family, low, high) if cursor else low
        stop = min(start + limit, high)
        return SegmentListing(run, head["at"], {name: spans[name][1] for name in sorted(spans)},
                              read(start, stop), _listing_cursor(run, family, stop) if stop < high else None)

    def in_latest_run(self, segment_id: str) -> bool:
        """Whether the latest run has the segment: from the index's own item or the segment's first
        page, never by reading every part of the index."""
        head = self._head()
        if head is None:
            return False
        if segment_id in head["segments"]:
            return True
        if not head.get("parts"):
            return False
        if dynamo.batch_get(self.table, [{"segment_id": segment_id, "sk": _page_key(head["run"], 1)}],
                            consistent=True, projection="segment_id, sk"):
            return True
        # Its pages expired (no run for OLD_RUNS_KEPT_SECONDS) while the index still lists it: the
        # index's entries of its family, in one listing.
        return any(entry["segment_id"] == segment_id
                   for entry in self.listing(family_of(segment_id), sys.maxsize, None).segments)

    def _index_entries(self, head: dict[str, Any], sizes: list[int], start: int, stop: int) -> list[dict[str, Any]]:
        """The ordered index's entries from `start` to `stop`: from the parts that hold them."""
        firsts = list(accumulate(sizes, initial=0))
        wanted = [k for k in range(len(sizes)) if firsts[k] < stop and firsts[k + 1] > start]
        further = _part_keys(INDEX_KEY["segment_id"], head["run"], len(sizes) - 1)
        number = {key["sk"]: k for k, key in enumerate(further, start=1)}
        parts = {0: head["segments"]} if 0 in wanted else {}
        # A part whose segments are not a map (written by hand) lists none, as an entry that does not read.
        parts |= {number[row["sk"]]: segments if isinstance(segments := row.get("segments"), dict) else {}
                  for row in dynamo.batch_get(self.table, [further[k - 1] for k in wanted if k], consistent=True)}
        if len(parts) < len(wanted):  # expired (no run for INDEX_PARTS_KEPT_SECONDS): listed without them
            logger.warning("segment index parts missing", extra={"run": head["run"], "parts": wanted,
                                                                 "found": sorted(parts)})
        if any(len(parts[k]) != sizes[k] for k in parts):  # not as written: places may be off, nothing fails
            logger.warning("segment index part sizes differ from the head's", extra={"run": head["run"]})
        return [entry for k in sorted(parts) for place, entry in enumerate(_in_listing_order(parts[k]), firsts[k])
                if start <= place < stop]

    def _head(self) -> dict[str, Any] | None:
        """The index's own item: the latest run and the segments of its first part. One that does
        not read (written by hand) is as none, logged: the next run writes it again."""
        rows = dynamo.batch_get(self.table, [INDEX_KEY], consistent=True)
        if not rows or rows[0].get("layout") != MEMBERS_LAYOUT:
            return None
        head = rows[0]
        try:
            readable = (isinstance(head["run"], str) and isinstance(head["segments"], dict)
                        and datetime.fromisoformat(head["at"]).tzinfo is not None)
        except (KeyError, TypeError, ValueError):
            readable = False
        if not readable:
            logger.error("the segment index does not read: listed as no run until the next run writes it")
            return None
        return head

    def members(self, segment_id: str, limit: int, cursor: str | None) -> tuple[dict[str, Any], list[dict[str, str]], str | None]:
        """The latest run's index item (its run and time; not every part of its segments), a page of
        the segment's members (by page, then by user id), and the cursor of the next page (None when
        no member follows)."""
        index = self._head()
        listed = index is not None and segment_id in index["segments"]
        if index is None or not (listed or index.get("parts")):
            raise NotFound(f"segment {segment_id!r} has no members in the latest run", field="segment_id")
        run = index["run"]
        number, after = _position(cursor, run, segment_id) if cursor else (1, "")
        # One page a Query: a page is up to about 100 KB, read whole, so no more are read than the
        # answer needs.
        request: dict[str, Any] = {
            "TableName": self.table, "Limit": 1,
            "KeyConditionExpression": "segment_id = :segment AND sk BETWEEN :first AND :last",
            "ExpressionAttributeValues": dynamo.serialize({":segment": segment_id, ":first": _page_key(run, number),
                                                           ":last": _page_key(run, LAST_PAGE)}),
        }
        found: list[dict[str, str]] = []
        while True:
            with dynamo.aws_faults("read segment members"):
                response = dynamo.client().query(**request)
            for row in response.get("Items", []):
                page = dynamo.deserialize(row)
                here, members = _page_number(page["sk"], run), page.get("members")
                if here is None:  # a key in the range that no run writes (by hand): not a page
                    continue
                if not isinstance(members, dict):  # written by hand: no member to show
                    members = {}
                for user_id in sorted(members):
                    if here == number and after and user_id <= after:
                        continue
                    if not isinstance(members[user_id], str):  # written by hand: no reason to show
                        continue
                    if len(found) == limit:  # a member follows on this page: go on from it next time
                        return index, found, _cursor(run, segment_id, here, found[-1]["user_id"])
                    found.append({"user_id": user_id, "reason": members[user_id]})
                number, after = here + 1, ""  # this page is done: a later call starts at the next
            if "LastEvaluatedKey" not in response:
                if not (listed or cursor or response.get("Items")):  # in no part either: a run has no empty segment
                    raise NotFound(f"segment {segment_id!r} has no members in the latest run", field="segment_id")
                return index, found, None
            if len(found) == limit:  # pages may follow (DynamoDB cannot tell without reading one)
                return index, found, _cursor(run, segment_id, number, after)
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def memberships(self, user_id: str, records: list[dict[str, Any]] | None = None) -> list[dict[str, str]]:
        """The customer's memberships in every run still kept (the run being written included):
        segment, run and reason, newest run first. `records`: the runs' records, read once for
        several customers (run_records)."""
        keys = [{"segment_id": segment_id, "sk": _page_key(entry.run, number)}
                for entry in self._entries(user_id, records) for segment_id, number in entry.pages.items()]
        # Only the customer's own entry of each page is read back.
        pages = dynamo.batch_get(self.table, keys, consistent=True, projection="segment_id, sk, #members.#user",
                                 names={"#members": "members", "#user": user_id})
        found = [{"segment_id": page["segment_id"], "run": page["sk"].split("#")[1],
                  "reason": page["members"][user_id]} for page in pages if user_id in page.get("members", {})]
        return sorted(found, key=lambda m: (m["run"], m["segment_id"]), reverse=True)

    def end_memberships(self, user_id: str, which: Callable[[str], bool]) -> int:
        """Take the customer out of the pages of the segments `which` picks, in every run still
        kept; how many memberships ended."""
        ended = 0
        emptied: list[dict[str, str]] = []
        for entry in self._entries(user_id):
            leaving = sorted(segment_id for segment_id in entry.pages if which(segment_id))
            ended += sum(self._leave(segment_id, _page_key(entry.run, entry.pages[segment_id]), user_id)
                         for segment_id in leaving)
            if len(leaving) == len(entry.pages):  # nothing of theirs is left in the entry
                if entry.path == "pages":  # an item of their own
                    emptied.append(entry.key)
                else:  # their whole entry of the bucket (if it is still there)
                    self._remove_where(entry.key, entry.path, f"attribute_exists({entry.path})", entry.names)
            elif leaving:
                names = {**entry.names, **{f"#s{k}": entry.stored[segment_id] for k, segment_id in enumerate(leaving)}}
                self._remove_where(entry.key, ", ".join(f"{entry.path}.#s{k}" for k in range(len(leaving))),
                                   f"attribute_exists({entry.path})", names)
        dynamo.batch_delete(self.table, emptied)
        return ended

    def _leave(self, segment_id: str, page_key: str, user_id: str) -> int:
        return int(self._remove_where({"segment_id": segment_id, "sk": page_key}, "#members.#user",
                                      "attribute_exists(#members.#user)", {"#members": "members", "#user": user_id}))

    def _remove_where(self, key: dict[str, str], paths: str, condition: str, names: dict[str, str]) -> bool:
        """REMOVE `paths` from the item where `condition` holds; False where it does not (gone
        already, or expired: a REMOVE on a missing item would create it, and on a missing map fail)."""
        try:
            with dynamo.aws_faults("end segment memberships"):
                dynamo.client().update_item(TableName=self.table, Key=dynamo.serialize(key),
                                            UpdateExpression=f"REMOVE {paths}", ConditionExpression=condition,
                                            ExpressionAttributeNames=names)
        except ClientError as error:
            if dynamo.error_code(error) == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def _entries(self, user_id: str, records: list[dict[str, Any]] | None = None) -> list[_Entry]:
        """The customer's entry of each run still kept: in their share of their bucket, or (a run
        written before the buckets) their own item."""
        names = {"#user": user_id}
        entries = []
        for run in self.run_records() if records is None else records:
            partition, place = _Layout(int(run["buckets"]), int(run["shares"])).place(user_id)
            share = f"{run['sk']}#{place:04d}#"
            rows = self._query("segment_id = :bucket AND begins_with(sk, :share)",
                               {":bucket": partition, ":share": share},
                               projection="segment_id, sk, customers.#user", names=names)
            segment_ids = run["segments"]
            for row in rows:
                customers = row.get("customers")
                if isinstance(customers, dict) and _page_numbers(stored := customers.get(user_id)):
                    # By place in the run's list, as written; a place the list lacks names no segment.
                    named = {segment_ids[int(code)]: code for code in stored
                             if code.isascii() and code.isdigit() and int(code) < len(segment_ids)}
                    entries.append(_Entry(run["sk"], {segment_id: stored[code] for segment_id, code in named.items()},
                                          {"segment_id": row["segment_id"], "sk": row["sk"]}, "customers.#user",
                                          names, named))
        own = self._query("segment_id = :customer", {":customer": CUSTOMER_PARTITION + user_id})
        return entries + [_Entry(row["sk"], row["pages"], {"segment_id": row["segment_id"], "sk": row["sk"]}, "pages", {},
                                 {segment_id: segment_id for segment_id in row["pages"]})
                          for row in own if _page_numbers(row.get("pages"))]

    def run_records(self) -> list[dict[str, Any]]:
        """Each run's record with its whole list of segments: its parts' lists after its own, in
        order. A part gone (expiring: TTL deletes in no order) ends the list there, so that no place
        after it names the wrong segment."""
        records = [record for record in self._query("segment_id = :runs", {":runs": RUNS_PARTITION})
                   if _readable_run(record)]
        keys = {record["sk"]: _part_keys(RUN_PARTS_PARTITION, record["sk"], record.get("parts", 0))
                for record in records}
        parts = {row["sk"]: row["segments"] for row in
                 dynamo.batch_get(self.table, [key for listed in keys.values() for key in listed], consistent=True)
                 if _texts(row.get("segments"))}
        whole = []
        for record in records:
            listed = list(record["segments"])
            for key in keys[record["sk"]]:
                if key["sk"] not in parts:  # gone, or not a list of ids: no place after it can be trusted
                    break
                listed += parts[key["sk"]]
            whole.append({**record, "segments": listed})
        return whole

    def note_erasure(self, user_id: str) -> None:
        """Record an erasure for the nightly run in progress (end_erased); done before the erasure
        ends the customer's memberships, so a run either is listed by then or finds this note. Stamped
        with the time it is written, not the erasure's: the sweep finishing a paused erasure notes
        it again, for the runs that read the customer since it began."""
        noted_at = format_timestamp(datetime.now(timezone.utc))
        with dynamo.aws_faults("note the erasure"):
            dynamo.client().update_item(
                TableName=self.table,
                Key=dynamo.serialize({"segment_id": ERASURES_PARTITION, "sk": f"{noted_at}#{user_id}"}),
                UpdateExpression="SET erased_user = :user, expires_at = :expires",
                ExpressionAttributeValues=dynamo.serialize({":user": user_id,
                                                            ":expires": int(time.time()) + ERASURES_KEPT_SECONDS}))

    def erased_since(self, as_of: str, members: Container[str]) -> set[str]:
        """The customers among `members` whose erasure was noted since `as_of`."""
        rows = self._query("segment_id = :erasures AND sk >= :since",
                           {":erasures": ERASURES_PARTITION, ":since": as_of}, "#user", {"#user": "erased_user"})
        return {row["erased_user"] for row in rows
                if isinstance(row.get("erased_user"), str) and row["erased_user"] in members}

    def end_erased(self, as_of: str, members: Container[str]) -> set[str]:
        """After a run is written (listed in #runs): the customers among `members` erased since
        `as_of`, when the run's data was read, with their memberships ended. An erasure later than
        this read finds the run listed and ends them itself."""
        erased = self.erased_since(as_of, members)
        for user_id in sorted(erased):
            self.end_memberships(user_id, lambda _: True)
        return erased

    def _query(self, condition: str, values: dict[str, str], projection: str | None = None,
               names: dict[str, str] | None = None) -> list[dict[str, Any]]:
        request: dict[str, Any] = {"TableName": self.table, "ConsistentRead": True,
                                   "KeyConditionExpression": condition,
                                   "ExpressionAttributeValues": dynamo.serialize(values)}
        if projection:
            request |= {"ProjectionExpression": projection, "ExpressionAttributeNames": names}
        with dynamo.aws_faults("read segment memberships"):
            pages = dynamo.client().get_paginator("query").paginate(**request)
            return [dynamo.deserialize(row) for page in pages for row in page["Items"]]


@dataclass(frozen=True)
class _Entry:
    """A customer's entry of one run: the page they are on, by segment, and where it is stored
    (`path` in the item at `key`, with the names its expression needs; `stored`: each segment's
    key in that map)."""

    run: str
    pages: dict[str, int]
    key: dict[str, str]
    path: str
    names: dict[str, str]
    stored: dict[str, str]


@dataclass(frozen=True)
class _Layout:
    """How a run spread its customers: over `buckets` partitions, each cut into `shares`."""

    buckets: int
    shares: int

    @classmethod
    def for_customers(cls, customers: int) -> _Layout:
        buckets = min(CUSTOMER_BUCKETS, max(1, math.ceil(customers / CUSTOMERS_AN_ITEM)))
        return cls(buckets, max(1, math.ceil(customers / (buckets * CUSTOMERS_AN_ITEM))))

    def place(self, user_id: str) -> tuple[str, int]:
        """The customer's bucket (its partition) and share: from a hash of their id."""
        digest = int.from_bytes(hashlib.blake2b(user_id.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
                                "big")
        return f"{CUSTOMER_BUCKET_PARTITION}{digest % self.buckets:04d}", digest // self.buckets % self.shares


def _bucket_items(run: str, layout: _Layout, customers: dict[str, dict[str, int]],
                  expires: int) -> Iterator[dict[str, Any]]:
    """The run's customers (the page each is on, by the segment's code), share by share, in items
    of up to PAGE_CHARACTERS (as pages are); the partitions in turn, so that the writes of a moment
    are spread over them."""
    groups: dict[tuple[int, str], list[str]] = {}
    for user_id in customers:
        partition, share = layout.place(user_id)
        groups.setdefault((share, partition), []).append(user_id)
    for (share, partition), user_ids in sorted(groups.items()):
        part, held, characters = 1, {}, 0
        for user_id in user_ids:
            pages = customers[user_id]
            size = len(user_id) + sum(map(len, pages)) + PAGE_ENTRY_CHARACTERS * len(pages)
            if held and characters + size > PAGE_CHARACTERS:
                yield _bucket_item(partition, run, share, part, held, expires)
                part, held, characters = part + 1, {}, 0
            held[user_id] = pages
            characters += size
        yield _bucket_item(partition, run, share, part, held, expires)


def _page_spans(user_ids: list[str], reasons: list[str]) -> Iterator[tuple[int, int]]:
    """The members' pages, in order, as spans: up to MEMBERS_PER_PAGE members and PAGE_CHARACTERS
    of ids and reasons each (a member longer than that alone on a page)."""
    ends = list(accumulate(map(add, map(len, user_ids), map(len, reasons)), initial=0))
    start = 0
    while start < len(user_ids):
        fits = bisect.bisect_right(ends, ends[start] + PAGE_CHARACTERS, start + 1) - 1
        stop = min(max(fits, start + 1), start + MEMBERS_PER_PAGE)
        yield start, stop
        start = stop


def _bucket_item(partition: str, run: str, share: int, part: int, customers: dict[str, dict[str, int]],
                 expires: int) -> dict[str, Any]:
    return {"segment_id": partition, "sk": f"{run}#{share:04d}#{part:02d}", "customers": customers, "run": run,
            "expires_at": expires}


def _parts(entries: list[Any], characters: Callable[[Any], int]) -> list[list[Any]]:
    """`entries` in order, cut into parts of up to PAGE_CHARACTERS (by `characters`); at least one."""
    return list(chunks_within(entries, len(entries), PAGE_CHARACTERS, characters)) or [[]]


def _in_listing_order(segments: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Index entries as the listing gives them: by family, the largest first, then by id. An entry
    that does not read (written by hand) is left out."""
    readable = {segment_id: entry for segment_id, entry in segments.items() if _readable_entry(entry)}
    return [{"segment_id": segment_id, "family": entry["family"], "name": entry["name"],
             "members": int(entry["members"])} for segment_id, entry in sorted(readable.items(), key=_listing_key)]


def _readable_entry(entry: Any) -> bool:
    return (isinstance(entry, dict) and isinstance(entry.get("family"), str) and isinstance(entry.get("name"), str)
            and isinstance(entry.get("members"), (int, Decimal)) and not isinstance(entry["members"], bool)
            and entry["members"] == int(entry["members"]) >= 0)


def _ordered(head: dict[str, Any]) -> tuple[dict[str, tuple[int, int]], list[int]] | None:
    """The ordered index's family spans and part sizes; None for an index not kept in order, or
    whose spans and sizes do not read (then it is read whole and ordered)."""
    if head.get("order") != LISTING_ORDER:
        return None
    try:
        spans = {name: (int(start), int(count)) for name, (start, count) in head["families"].items()}
        sizes = [int(size) for size in head["sizes"]]
        # As a run writes them: the families tile the parts' entries. Spans past them (by hand)
        # would give pages of nothing, each with a cursor to the next, without end.
        tiles = sorted(spans.values())
        if (any(size < 0 for size in sizes) or any(count < 0 for _, count in tiles)
                or [start for start, _ in tiles] != list(accumulate((count for _, count in tiles[:-1]), initial=0))[:len(tiles)]
                or sum(count for _, count in tiles) != sum(sizes)):
            raise ValueError("family spans that do not tile the index's parts")
    except (KeyError, TypeError, ValueError, AttributeError):
        logger.warning("the segment index's order does not read: read whole", extra={"run": head["run"]})
        return None
    return spans, sizes


def _listing_key(item: tuple[str, dict[str, Any]]) -> tuple[str, int, str]:
    segment_id, entry = item
    return entry["family"], -int(entry["members"]), segment_id


def _family_spans(families: Iterable[str]) -> dict[str, list[int]]:
    """Where each family starts in the ordered index, and how many segments it has."""
    spans: dict[str, list[int]] = {}
    for place, family in enumerate(families):
        spans.setdefault(family, [place, 0])[1] += 1
    return spans


def _listing_cursor(run: str, family: str | None, position: int) -> str:
    return dynamo.encode_cursor(f"{run}#{family or ''}#{position}")


def _listing_position(cursor: str, run: str, family: str | None, low: int, high: int) -> int:
    """The place in the ordered index a cursor of `run` and `family` names."""
    _, named, place = _cursor_of(run, cursor, 2, lambda _: True)
    if named != (family or "") or not low <= int(place) < high:
        raise DomainError("cursor is not one this API returned for this family", field="cursor")
    return int(place)


def _readable_run(record: dict[str, Any]) -> bool:
    """Whether a run's record is as write_run writes it. One that is not (written by hand) locates
    none of its customers' items, which expire as every run's do; it is logged and passed over,
    so that it stops no erasure, export or objection of anyone else, nor the hourly sweep."""
    readable = (isinstance(record.get("sk"), str) and _whole(record.get("buckets"), 1, CUSTOMER_BUCKETS)
                and _whole(record.get("shares"), 1, 2**31) and _whole(record.get("parts", 0), 0, 10**5)
                and _texts(record.get("segments")))
    if not readable:
        logger.error("a segment run's record does not read: its memberships cannot be found",
                     extra={"run": str(record.get("sk"))[:100]})
    return readable


def _whole(value: Any, lowest: int, highest: int) -> bool:
    return type(value) is int and lowest <= value <= highest


def _texts(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(text, str) for text in value)


def _page_numbers(value: Any) -> bool:
    """A customer's entry of a run as written: each segment's key (a text) and the page they are on."""
    return isinstance(value, dict) and all(_whole(number, 1, LAST_PAGE) for number in value.values())


def _part_keys(partition: str, run: str, parts: int) -> list[dict[str, str]]:
    """The keys of a run's `parts` further items in `partition`, in order."""
    return [{"segment_id": partition, "sk": f"{run}#{k:03d}"} for k in range(1, parts + 1)]


def _page_key(run: str, number: int) -> str:
    return f"p#{run}#{number:06d}"


def _page_number(page_key: str, run: str) -> int | None:
    """The number of a page of `run` from its key; None for a key that is not one (_page_key's form)."""
    number = page_key.removeprefix(f"p#{run}#")
    return int(number) if len(number) == 6 and number.isascii() and number.isdigit() else None


# A member cursor starts with this and a mark of its segment (a run id never starts so): passed to
# another segment's members it is a 400, where its place would skip members there. One without it
# was given out before, and is read as it was.
SEGMENT_MARK = "@"


def _cursor(run: str, segment_id: str, page: int, user_id: str) -> str:
    return dynamo.encode_cursor(f"{SEGMENT_MARK}{_segment_mark(segment_id)}#{run}#{page}#{user_id}")


def _position(cursor: str, run: str, segment_id: str) -> tuple[int, str]:
    """The page and the last user id given from it ("": none yet) a cursor of `run` and `segment_id` names."""
    key = dynamo.decode_cursor(cursor)
    if key.startswith(SEGMENT_MARK):
        mark, _, key = key[len(SEGMENT_MARK):].partition("#")
        if mark != _segment_mark(segment_id):
            raise DomainError("cursor belongs to another segment; start again without it", field="cursor")
    _, page, after = _fields(run, key, 1, lambda page: 0 < page <= LAST_PAGE)
    return int(page), after


def _segment_mark(segment_id: str) -> str:
    return hashlib.sha256(segment_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def _cursor_of(run: str, cursor: str, number: int, fits: Callable[[int], bool]) -> list[str]:
    return _fields(run, dynamo.decode_cursor(cursor), number, fits)


def _fields(run: str, key: str, number: int, fits: Callable[[int], bool]) -> list[str]:
    """The three fields of a cursor's key of `run` (the last may hold '#'), field `number` a whole
    number that `fits`; a 400 naming the cursor for any other."""
    fields = key.split("#", 2)
    if len(fields) != 3 or not fields[number].isascii() or not fields[number].isdigit() or not fits(int(fields[number])):
        raise DomainError("cursor is not one this API returned", field="cursor")
    if fields[0] != run:
        raise DomainError("cursor belongs to an older run; start again without it", field="cursor")
    return fields
