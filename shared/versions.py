"""Version counters of the items ingest rewrites on condition (a customer's summary, purchase keys
and recent-activity item): each rewrite writes the next whole number after the one it read."""

from __future__ import annotations

from typing import Any

# Versions are whole numbers below this: one past it was written by hand (a JSON reader's float, or
# DynamoDB's 38 digits, could not hold the next one exactly), and its item is read as unreadable.
MAX_VERSION = 2**53


def next_version(stored: Any) -> int:
    """The version a rewrite writes after `stored`, the one it read: one more; 1 after none, or after
    one that is not a whole number (written by hand), which the rewrite replaces."""
    return stored + 1 if type(stored) is int else 1
