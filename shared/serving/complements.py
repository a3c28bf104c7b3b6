"""Bought together: the complements of one item, and of a whole cart. Rules only; the complements
(computed at training, shared/training/complements.py), the catalog, popular items and what a
customer bought are passed in.

Rules:
- an answer never shows the item asked about nor the cart's items, nor out-of-stock, retired or
  unknown items (`AnswerFilter`); given a customer, nor what they bought, unless they objected to
  personalization (then their history is not read, and only the cart decides);
- reasons quote real counts: "bought together by 136 customers" (distinct customers who bought
  both in one order), "often bought with Oak chopping board (136 customers)";
- a cart's candidates add up their scores over the cart items they go with; a candidate that is
  a variant of a cart item (or of the item asked about) comes after the others;
- without a model, without complements in it (a version trained before them), or without
  enough complements for the item, the answer is filled with popular items in the item's
  category (the cart's categories, most frequent first), marked in `strategy` and in the reason.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shared.catalog import Item
from shared.serving import reasons
from shared.serving.answers import BasketRecommendations, BoughtTogether, PopularItems, Recommendation
from shared.serving.filters import AnswerFilter
from shared.training.complements import Complements, from_artifact_arrays
from shared.users import User, may_personalize

if TYPE_CHECKING:
    from shared.serving.model import ServingModel

COMPLEMENTS = "complements"
FALLBACK = "no_complements:popular_in_category"
CANDIDATES_READ = 50  # complements read from the catalog per answer, at least


class Catalog(Protocol):
    def details(self, item_ids: Sequence[str]) -> dict[str, Item]: ...


@dataclass(frozen=True)
class ComplementData:
    """One model version's complements, with the item ids its indexes refer to."""

    version: str
    item_ids: list[str]
    complements: Complements
    index: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            self.index.update({item_id: i for i, item_id in enumerate(self.item_ids)})


class ModelComplements:
    """The active model's complements, read from its artifact once per version.

    The artifact carries them as flat arrays (`complements_for_artifact`); a version trained
    before them has none, and is served the popular fallback.
    """

    def __init__(self) -> None:
        self._version: str | None = None
        self._data: ComplementData | None = None

    def get(self, model: ServingModel | None) -> ComplementData | None:
        if model is None:
            return None
        if model.version != self._version:
            arrays = model.artifact.complements
            found = from_artifact_arrays(arrays, len(model.item_ids))
            self._data = ComplementData(model.version, list(model.item_ids), found, dict(model.index)) \
                if found is not None else None
            self._version = model.version
        return self._data


@dataclass
class ComplementSources:
    complements: Callable[[], ComplementData | None]
    catalog: Catalog
    popular: Callable[[int, str | None], PopularItems]  # popular items (in a category), filtered
    profile: Callable[[str], User | None]
    purchased: Callable[[str], Container[str]]  # what a customer ever bought


@dataclass
class _Candidate:
    score: float = 0.0
    demoted: bool = False
    best: tuple[float, str, int] = (-1.0, "", 0)  # (score, cart item, customers) of the strongest link
    with_items: dict[str, float] = field(default_factory=dict)


class BoughtTogetherRules:
    def __init__(self, sources: ComplementSources) -> None:
        self.sources = sources

    def bought_together(self, item: Item, limit: int) -> BoughtTogether:
        data = self.sources.complements()
        shown = AnswerFilter.of(None, [item.item_id])
        items: list[Recommendation] = []
        if data is not None and item.item_id in data.index:
            found = data.complements.of(data.index[item.item_id], max(CANDIDATES_READ, 4 * limit))
            details = self.sources.catalog.details(shown.worth_reading(data.item_ids[c.item] for c in found))
            items = [Recommendation.of(details[data.item_ids[c.item]], c.score,
                                       reasons.bought_together(item.item_id, c.customers))
                     for c in found if shown.allows(details.get(data.item_ids[c.item]))][:limit]
        strategy = COMPLEMENTS if items else FALLBACK
        version = data.version if data else None
        if len(items) < limit:
            filler, popular_version = self._popular(limit - len(items), shown.taking(r.item_id for r in items),
                                                    [item.category], ())
            items += filler
            version = version or popular_version
        return BoughtTogether(item_id=item.item_id, model_version=version, strategy=strategy, items=items)

    def basket(self, cart: Sequence[str], limit: int, user_id: str | None = None) -> BasketRecommendations:
        cart = list(dict.fromkeys(cart))
        data = self.sources.complements()
        bought: Container[str] = frozenset()
        if user_id is not None and may_personalize(self.sources.profile(user_id)):
            bought = self.sources.purchased(user_id)
        shown = AnswerFilter.of(None, cart)

        candidates = self._aggregate(data, cart) if data is not None else {}
        ranked = sorted(candidates, key=lambda i: (candidates[i].demoted, -candidates[i].score, i))
        ranked = [i for i in shown.worth_reading(ranked) if i not in bought][:max(CANDIDATES_READ, 4 * limit)]
        details = self.sources.catalog.details(ranked + cart)
        titles = {item_id: item.title for item_id, item in details.items()}
        items = []
        for item_id in ranked:
            if len(items) == limit:
                break
            if not shown.allows(details.get(item_id)):
                continue
            found = candidates[item_id]
            _, seed, customers = found.best
            contributors = sorted(found.with_items, key=lambda c: -found.with_items[c])[:3]
            items.append(Recommendation.of(details[item_id], found.score,
                                           reasons.often_bought_with(titles.get(seed, seed), customers, contributors)))
        strategy = COMPLEMENTS if items else FALLBACK
        version = data.version if data else None
        if len(items) < limit:
            categories = [c for c, _ in Counter(details[i].category for i in cart if i in details).most_common()]
            filler, popular_version = self._popular(limit - len(items), shown.taking(r.item_id for r in items),
                                                    categories, bought)
            items += filler
            version = version or popular_version
        return BasketRecommendations(user_id=user_id, model_version=version, strategy=strategy, cart=cart,
                                     items=items)

    # -- helpers

    @staticmethod
    def _aggregate(data: ComplementData, cart: list[str]) -> dict[str, _Candidate]:
        candidates: dict[str, _Candidate] = {}
        for seed in cart:
            if seed not in data.index:
                continue
            for complement in data.complements.of(data.index[seed]):
                item_id = data.item_ids[complement.item]
                found = candidates.setdefault(item_id, _Candidate())
                found.demoted |= complement.variant  # another version of something in the cart
                found.score += complement.score
                found.with_items[seed] = complement.score
                found.best = max(found.best, (complement.score, seed, complement.customers))
        return candidates

    def _popular(self, limit: int, shown: AnswerFilter, categories: Iterable[str | None],
                 bought: Container[str]) -> tuple[list[Recommendation], str | None]:
        """Popular items in these categories, in order, then in any; each with where it is popular."""
        picked: list[Recommendation] = []
        version = None
        for category in [*dict.fromkeys(categories), None]:
            if len(picked) >= limit:
                break
            wanted = min(200, 2 * (limit - len(picked)) + len(shown.excluded))
            answer = self.sources.popular(wanted, category)
            version = version or answer.model_version
            where = reasons.popular_in_category(category)
            for found in answer.items:
                if len(picked) < limit and found.item_id not in shown.excluded and found.item_id not in bought:
                    picked.append(found.model_copy(update={"reason": where}))
                    shown = shown.taking([found.item_id])
        return picked, version

