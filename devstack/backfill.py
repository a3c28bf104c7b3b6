"""Give customers stored before the bought set existed their item and order keys.

Ingest keeps each customer's bought set ("<id>\\0purchases" in the users table) current from the
first purchase stored after it shipped; purchases stored before have no keys, so "already bought"
would only see them in the newest 500 events serving reads. This one-off migration scans the
events once and ADDs every purchase's item and order keys, with the same code and the same
version condition as ingest (`PurchaseKeys.adding`, `purchases_update`, in a transaction with
ingest's erasure check): it can run while events arrive (a version conflict is read again and
retried), never brings back the keys of an erased customer, and running it twice adds nothing.

    .venv/bin/devstack backfill-bought-sets                              the local stack's tables
    .venv/bin/python -m devstack.backfill EVENTS USERS      tables on AWS, with your credentials

The summary's `orders` of such a customer stays what it was (their purchase lines: the best
count there was); orders from now on are counted against the keys this adds.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime

from botocore.exceptions import ClientError

from shared.events import EventType
from shared.storage import dynamo
from shared.storage.customers import scan_events
from shared.storage.users import PurchaseKeys, erasure_unchanged, purchases_update, read_summaries

ATTEMPTS = 8


@dataclass(frozen=True)
class Purchase:
    """What PurchaseKeys.adding reads of a stored purchase."""

    item_id: str
    order_id: str | None
    timestamp: datetime
    event_type: EventType = EventType.PURCHASE


@dataclass
class Totals:
    customers: int = 0
    item_keys_added: int = 0
    order_keys_added: int = 0
    truncated: int = 0


def backfill(events_table: str, users_table: str, segments: int = 4) -> Totals:
    purchases: dict[str, list[Purchase]] = defaultdict(list)
    lock = threading.Lock()

    def on_page(items: list[dict]) -> None:
        page = [(row["user_id"]["S"], Purchase(row["item_id"]["S"], row.get("order_id", {}).get("S"),
                                               datetime.fromisoformat(row["ts"]["S"].replace("Z", "+00:00"))))
                for row in items]
        with lock:
            for user_id, purchase in page:
                purchases[user_id].append(purchase)

    scan_events(events_table, on_page, ("user_id", "item_id", "order_id", "ts", "event_type"), segments,
                FilterExpression="#f4 = :purchase", ExpressionAttributeValues={":purchase": {"S": "purchase"}})
    totals = Totals()
    for user_id, bought in purchases.items():
        added_items, added_orders, truncated = _add_keys(users_table, user_id, bought)
        totals.customers += 1
        totals.item_keys_added += added_items
        totals.order_keys_added += added_orders
        totals.truncated += truncated
    return totals


def _add_keys(users_table: str, user_id: str, bought: list[Purchase]) -> tuple[int, int, bool]:
    for _ in range(ATTEMPTS):
        state = read_summaries(users_table, [user_id]).get(user_id)
        if state is not None and state.erased_at:
            return 0, 0, False  # erased (their events may still be going): nothing is to be kept of them
        stored = state.purchases if state is not None else PurchaseKeys()
        after, add_items, add_orders = stored.adding(bought)  # type: ignore[arg-type]  # duck-typed events
        if not add_items and not add_orders:
            return 0, 0, after.items_truncated
        # As ingest does: the keys only if the customer is still not erased (an erasure deletes the
        # keys item; this must not bring it back) and no ingest wrote them meanwhile.
        actions = [erasure_unchanged(users_table, user_id, ""),
                   purchases_update(users_table, user_id, stored, after, add_items, add_orders)]
        try:
            with dynamo.aws_faults("add bought keys"):
                dynamo.client().transact_write_items(TransactItems=actions)
            return len(add_items), len(add_orders), after.items_truncated
        except ClientError as error:
            if dynamo.error_code(error) != "TransactionCanceledException":
                raise
            continue  # erased or written meanwhile: read again
    raise RuntimeError(f"{user_id}: the bought set kept changing; run the backfill again")


def table_arguments(description: str, argv: list[str] | None) -> argparse.Namespace:
    """A one-off migration's command line: EVENTS USERS, the tables' names."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events_table")
    parser.add_argument("users_table")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = table_arguments(__doc__, argv)
    totals = backfill(args.events_table, args.users_table)
    print(f"{totals.customers:,} customers: {totals.item_keys_added:,} item keys and "
          f"{totals.order_keys_added:,} order keys added; {totals.truncated:,} past the cap")
    return 0


if __name__ == "__main__":
    sys.exit(main())
