"""Give customers whose events were all stored before the recent-activity item existed their item.

Ingest keeps each customer's newest events in one item of the users table (shared/recent.py) and
starts it, from their stored events, the first time they send one. A customer who has not come
back since has none, so serving reads their history with a Query of up to 500 events instead of
one GetItem, and every nightly run needs their events. This one-off migration scans the events'
user ids once and starts the item of each id that has none (or one that does not read, which it
replaces as ingest would, logged where it is met), with ingest's own code: the same
newest stored events (`stored_recent_events`), the same item (`RecentActivity.adding`), written
in a transaction with ingest's conditions (`recent_put`: only if there is still no item, or the
same unreadable one;
`erasure_unchanged`: only if no erasure came since it was read). So it can run while events
arrive (an item ingest started meanwhile is kept, events and all), never keeps anything of an
erased customer, and starts nothing the second time.

    .venv/bin/devstack backfill-recent-activity                                the local stack's tables
    .venv/bin/python -m devstack.backfill_recent EVENTS USERS      tables on AWS, with your credentials
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.exceptions import ClientError

from devstack.backfill import table_arguments
from shared.errors import StorageUnavailable
from shared.recent import RecentActivity
from shared.storage import dynamo
from shared.storage.customers import EventIds, scan_events
from shared.storage.history import stored_recent_events
from shared.storage.users import erased_since, erasure_unchanged, read_recent, recent_put

ATTEMPTS = 8
IDS_PER_READ = 100  # a BatchGetItem's most keys
THREADS = 16  # customers started at once: each is a Query and a transaction, round trips mostly waited on


@dataclass
class Totals:
    ids: int = 0  # user ids with stored events
    had_one: int = 0  # already had their item
    started: int = 0  # given one here
    replaced: int = 0  # had one that does not read: given one here in its place
    started_meanwhile: int = 0  # ingest started theirs while this ran (it holds their events too)
    nothing_to_keep: int = 0  # every stored event is covered by an erasure: no item
    failed: int = 0  # DynamoDB throttled or unreachable past the retries: run the backfill again


def backfill_recent(events_table: str, users_table: str, segments: int = 4, threads: int = THREADS) -> Totals:
    with_events = EventIds()
    scan_events(events_table, with_events.add_page, ("user_id",), segments)
    ordered = with_events.sorted()
    totals = Totals(ids=len(ordered))
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for start in range(0, len(ordered), IDS_PER_READ):
            chunk = ordered[start:start + IDS_PER_READ]
            have = read_recent(users_table, chunk)
            missing = [user for user in chunk if user not in have or have[user].unreadable]
            erasures = erased_since(users_table, missing) if missing else {}
            totals.had_one += len(chunk) - len(missing)
            for outcome in pool.map(lambda user: _start(events_table, users_table, user, erasures.get(user, ""),
                                                        have.get(user)), missing):
                setattr(totals, outcome, getattr(totals, outcome) + 1)
    return totals


def _start(events_table: str, users_table: str, user_id: str, erased_at: str,
           stored: RecentActivity | None) -> str:
    """Start one id's item (in place of `stored`, one that does not read); which of Totals' counts
    it falls under. One id's fault is counted, not raised: the others go on."""
    try:
        return _started(events_table, users_table, user_id, erased_at, stored)
    except StorageUnavailable:
        return "failed"


def _started(events_table: str, users_table: str, user_id: str, erased_at: str,
             stored: RecentActivity | None) -> str:
    for delay in dynamo.backoff_delays(ATTEMPTS):
        events = stored_recent_events(events_table, user_id, erased_at)
        if not events:
            return "nothing_to_keep"
        expected = stored if stored is not None else RecentActivity()
        after, payload = RecentActivity(tuple(events)).adding((), erased_at)
        actions = [recent_put(users_table, user_id, expected, after, payload),
                   erasure_unchanged(users_table, user_id, erased_at)]
        try:
            with dynamo.aws_faults("start recent activity"):
                dynamo.client().transact_write_items(TransactItems=actions)
            return "replaced" if stored is not None else "started"
        except ClientError as error:
            if dynamo.error_code(error) != "TransactionCanceledException":
                raise
        # Ingest started (or replaced) the item meanwhile (it is theirs to keep), an erasure came,
        # or another transaction held the items: read again.
        stored = read_recent(users_table, [user_id]).get(user_id)
        if stored is not None and not stored.unreadable:
            return "started_meanwhile"
        erased_at = erased_since(users_table, [user_id]).get(user_id, "")
        time.sleep(delay)
    return "failed"


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__, argv)
    totals = backfill_recent(args.events_table, args.users_table)
    print(f"{totals.ids:,} user ids with events: {totals.had_one:,} had their recent activity, "
          f"{totals.started:,} started now, {totals.replaced:,} unreadable ones replaced, "
          f"{totals.started_meanwhile:,} started by ingest meanwhile, "
          f"{totals.nothing_to_keep:,} erased (nothing to keep), {totals.failed:,} failed"
          + (" (DynamoDB throttled or unreachable: run it again)" if totals.failed else ""))
    return 1 if totals.failed else 0


if __name__ == "__main__":
    sys.exit(main())
