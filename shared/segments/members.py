"""A run's members, segment by segment: what the nightly computation hands the store to write.

Each segment comes once, with its members in the order they were tagged; the segments in the
order their first member was. Columns, not a row per member: the store pages each segment's
members and names each customer's pages, and a million rows of tuples cost more to make and to
group again than the tags themselves (docs/segments.md).
"""

from __future__ import annotations

from collections.abc import Set
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class SegmentMembers:
    """One segment's members: `user_ids[k]` with `reasons[k]`. A customer listed twice (two names
    can make one id: "Likes A&B" and "Likes A B") is a member once, with their first reason."""

    segment_id: str
    family: str
    name: str
    user_ids: list[str]
    reasons: list[str]

    def first_reasons(self) -> dict[str, str]:
        """Each member's first reason, in the order they were listed."""
        members = dict(zip(self.user_ids, self.reasons))
        if len(members) == len(self.user_ids):
            return members
        first = dict(zip(reversed(self.user_ids), reversed(self.reasons)))
        return {user_id: first[user_id] for user_id in members}


    def without(self, user_ids: Set[str]) -> SegmentMembers | None:
        """The segment without `user_ids`; None when none of its members is left."""
        kept = [k for k, user_id in enumerate(self.user_ids) if user_id not in user_ids]
        if len(kept) == len(self.user_ids):
            return self
        return replace(self, user_ids=[self.user_ids[k] for k in kept],
                       reasons=[self.reasons[k] for k in kept]) if kept else None
