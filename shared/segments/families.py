"""Segment families, split by what they read: declared data, or behaviour that profiling consent governs.

Kept apart from the tag rules (which import the history types) so that storage and the privacy
function can tell which memberships an objection ends without importing any of them.
"""

from __future__ import annotations

# From what the customer declared in their profile: kept when they object to profiling. Every other family
# (rfm, value, lifecycle, behaviour, technographic, engagement, custom) reads behaviour.
DECLARED = ("geography", "demographic", "psychographic")


def family_of(segment_id: str) -> str:
    return segment_id.split(":", 1)[0]


def needs_consent(segment_id: str) -> bool:
    """A membership a customer who objected to profiling must not have (unknown families count as behaviour)."""
    return family_of(segment_id) not in DECLARED
