"""Everything a training run reads: the window's interactions and who may be trained on."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from shared.events import format_timestamp
from shared.storage.scan import parallel_scan, scan_by_key
from shared.storage.privacy import IN_PROGRESS as ERASURE_IN_PROGRESS
from shared.storage.users import user_from_row
from shared.users import may_personalize
from shared.training.config import TrainingConfig
from shared.training.customers import customer_statistics
from shared.training.interactions import InteractionLog
from shared.training.pipeline import TrainingData

SCAN_SEGMENTS = 8


def load_training_data(events_table: str, users_table: str, config: TrainingConfig, now: datetime,
                       segments: int = SCAN_SEGMENTS) -> TrainingData:
    rows = scan_by_key(users_table, "user_id", lambda row: row, segments)
    profiles = {user: user_from_row(row) for user, row in rows.items()}
    # Objected, or being erased: an erasure that ran out of time has left events still to delete.
    excluded = {user for user, profile in profiles.items() if not may_personalize(profile)}
    excluded |= {user for user, row in rows.items() if row.get("erasure_status") == ERASURE_IN_PROGRESS}
    window_start = format_timestamp(now - timedelta(days=config.window_days))
    log = InteractionLog(limit=config.max_interactions)
    lock = threading.Lock()

    def add_page(items: list[dict[str, Any]]) -> None:
        rows = [(item["user_id"]["S"], item["item_id"]["S"], item["event_type"]["S"],
                 float(item.get("quantity", {}).get("N", "1")), item["ts"]["S"])
                for item in items if item["user_id"]["S"] not in excluded]
        if not rows:
            return
        users, items_, types, quantities, stamps = zip(*rows)
        # Fixed-width UTC stamps: numpy parses a whole page at once.
        seconds = np.array([s[:-1] for s in stamps], dtype="datetime64[us]").astype(np.int64) / 1e6
        with lock:
            log.add_page(users, items_, types, quantities, seconds)

    parallel_scan(
        events_table, segments, add_page,
        ProjectionExpression="#u, #i, #e, #q, #t",
        FilterExpression="#t >= :start",
        ExpressionAttributeNames={"#u": "user_id", "#i": "item_id", "#e": "event_type",
                                  "#q": "quantity", "#t": "ts"},
        ExpressionAttributeValues={":start": {"S": window_start}},
    )
    trained = [profile for user, profile in profiles.items() if user not in excluded]
    return TrainingData(
        interactions=log.finish(),
        end=now.timestamp(),
        countries={p.user_id: p.country for p in trained if p.country},
        customer_statistics=customer_statistics([p.summary for p in trained], now),
        excluded_users=len(excluded),
    )

