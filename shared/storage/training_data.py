"""Everything a training run reads: the window's interactions and who may be trained on."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from shared.events import format_timestamp
from shared.storage.scan import parallel_scan
from shared.training.config import TrainingConfig
from shared.training.customers import CustomerSummary, customer_statistics
from shared.training.interactions import InteractionLog
from shared.training.pipeline import TrainingData

SCAN_SEGMENTS = 8


def load_training_data(events_table: str, users_table: str, config: TrainingConfig, now: datetime,
                       segments: int = SCAN_SEGMENTS) -> TrainingData:
    profiles = _load_profiles(users_table, segments)
    excluded = {user for user, profile in profiles.items() if not profile["personalized"]}
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
    summaries = [profile["summary"] for user, profile in profiles.items() if user not in excluded]
    return TrainingData(
        interactions=log.finish(),
        end=now.timestamp(),
        countries={user: p["country"] for user, p in profiles.items() if p["country"] and user not in excluded},
        customer_statistics=customer_statistics([s for s in summaries if s is not None], now),
        excluded_users=len(excluded),
    )


def _load_profiles(users_table: str, segments: int) -> dict[str, dict[str, Any]]:
    profiles: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()

    def add_page(items: list[dict[str, Any]]) -> None:
        page = {item["user_id"]["S"]: _profile(item) for item in items}
        with lock:
            profiles.update(page)

    parallel_scan(users_table, segments, add_page)
    return profiles


def _profile(item: dict[str, Any]) -> dict[str, Any]:
    consent = item.get("consent", {}).get("M", {}).get("personalization", {}).get("BOOL", True)
    summary = None
    if "purchase_count" in item and "last_purchase_at" in item:
        summary = CustomerSummary(
            purchase_count=int(item["purchase_count"]["N"]),
            spend={currency: float(value["N"]) for currency, value in item.get("spend", {}).get("M", {}).items()},
            first_purchase_at=datetime.fromisoformat(item["first_purchase_at"]["S"]),
            last_purchase_at=datetime.fromisoformat(item["last_purchase_at"]["S"]),
        )
    return {"personalized": consent, "country": item.get("country", {}).get("S"), "summary": summary}


