"""What an answer may show. Every answer (recommendations, similar, popular, new items) asks this
one object, so the rules cannot drift apart between them. It imports nothing heavy: the model
and the storage stay out of it."""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field

from shared.catalog import Item


@dataclass(frozen=True)
class AnswerFilter:
    category: str | None = None
    excluded: frozenset[str] = field(default_factory=frozenset)
    # Everything the customer ever bought (shared/purchases.PurchasedItems, kept at ingest): a
    # membership test, because the set holds keys of the ids, not the ids themselves.
    bought: Container[str] = frozenset()

    @classmethod
    def of(cls, category: str | None = None, exclude: Iterable[str] = ()) -> AnswerFilter:
        return cls(category, frozenset(exclude))

    def taking(self, item_ids: Iterable[str]) -> AnswerFilter:
        """The same filter, with these ids already in the answer (or bought) and so not shown again."""
        return AnswerFilter(self.category, self.excluded | frozenset(item_ids), self.bought)

    def without_bought(self, bought: Container[str]) -> AnswerFilter:
        return AnswerFilter(self.category, self.excluded, bought)

    def leaves_out(self, item_id: str) -> bool:
        return item_id in self.excluded or item_id in self.bought

    def in_category(self, category: str) -> bool:
        return self.category is None or self.category == category

    def allows(self, item: Item | None) -> bool:
        # None: an id the catalog does not know (yet, or any more) is never shown.
        return (item is not None and item.in_stock and not item.retired
                and self.in_category(item.category) and not self.leaves_out(item.item_id))

    def worth_reading(self, item_ids: Iterable[str]) -> list[str]:
        """The ids not excluded, in order: no catalog read is spent on an item that cannot be shown."""
        return [item_id for item_id in item_ids if not self.leaves_out(item_id)]
