"""What the website and the app ask for: recommendations with reasons, similar items, a ranking,
popular items. Rules only; where the data comes from is passed in (storage, the active model).

Rules every answer keeps:
- out-of-stock and retired items are never returned;
- a customer who objected to personalization gets popular items, and their history is not read;
- a customer unknown to the model, or without usable history, gets popular items (for their
  country when it is known), marked as not personalized;
- new catalog items, which no model has seen yet, reach customers as "new in a category you buy".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol

from shared.catalog import Item
from shared.serving.answers import Because, PopularItems, RankedItem, Ranking, Recommendation, Recommendations, Similar
from shared.serving.model import HistoryEvent, ServingModel
from shared.users import User

NEW_ITEM_DAYS = 30
NEW_ITEM_SLOTS = 2
VERBS = {"purchase": "bought", "add_to_cart": "added to your cart", "view": "viewed"}


class Catalog(Protocol):
    def details(self, item_ids: Sequence[str]) -> dict[str, Item]: ...
    def newest(self, category: str, limit: int) -> list[dict]: ...


@dataclass(frozen=True)
class PopularLists:
    version: str
    items: list[str]
    by_country: dict[str, list[str]]
    cached: bool  # True: the small list kept beside the model, used while no model is loaded


@dataclass
class Sources:
    model: Callable[[], ServingModel | None]
    catalog: Catalog
    history: Callable[[str], list[HistoryEvent]]
    profile: Callable[[str], User | None]
    cached_popular: Callable[[], PopularLists | None] = lambda: None


class Recommender:
    def __init__(self, sources: Sources) -> None:
        self.sources = sources

    def recommend(self, user_id: str, limit: int, category: str | None = None,
                  exclude: Sequence[str] = (), include_purchased: bool = False,
                  now: datetime | None = None) -> Recommendations:
        now = now or datetime.now(timezone.utc)
        profile = self.sources.profile(user_id)
        model = self.sources.model()
        country = profile.country if profile else None
        if profile is not None and not profile.consent.personalization:
            return self._popular_answer(user_id, model, limit, category, set(exclude), country, "no_consent")
        history = self.sources.history(user_id)
        excluded = set(exclude) | (set() if include_purchased else
                                   {e.item_id for e in history if e.event_type == "purchase"})
        row = model.user_row(history, now.timestamp()) if model else None
        if model is None or row is None or row.nnz == 0:
            return self._popular_answer(user_id, model, limit, category, excluded, country, "cold_start")

        candidates = model.recommend(row, max(100, 4 * limit + len(excluded)), excluded)
        details = self.sources.catalog.details([c.item_id for c in candidates] + [e.item_id for e in history])
        picked = [c for c in candidates if _available(details.get(c.item_id), category)][:limit]
        titles = {item_id: item.title for item_id, item in details.items()}
        contributors = model.explain(row, [c.item_id for c in picked])
        recommended = [Recommendation.of(details[c.item_id], c.score,
                                         _reason(c.item_id, contributors[c.item_id], history, titles))
                       for c in picked]
        taken = excluded | {r.item_id for r in recommended}
        new_items = self._new_in_favourite_categories(history, details, category, taken, now)
        recommended = recommended[: max(limit - len(new_items), 0)] + new_items
        if len(recommended) < limit:
            recommended += self._popular(model, limit - len(recommended), category,
                                         taken | {r.item_id for r in recommended}, country)
        return Recommendations(user_id=user_id, model_version=model.version, personalized=True,
                               strategy="als", items=recommended[:limit])

    def similar(self, item: Item, limit: int) -> Similar:
        model = self.sources.model()
        if model is None or not model.knows(item.item_id):
            items = self._popular(model, limit, item.category, {item.item_id}, None)
            return Similar(item_id=item.item_id, model_version=model.version if model else None,
                           strategy="popular_in_category", items=items)
        candidates = model.similar(item.item_id, max(50, 4 * limit))
        details = self.sources.catalog.details([c.item_id for c in candidates])
        because = f"customers who bought {item.title} also bought this"
        items = [Recommendation.of(details[c.item_id], c.score, Because(text=because, items=[item.item_id]))
                 for c in candidates if _available(details.get(c.item_id), None)][:limit]
        return Similar(item_id=item.item_id, model_version=model.version, strategy="als_similar", items=items)

    def rank(self, user_id: str, item_ids: list[str], now: datetime | None = None) -> Ranking:
        now = now or datetime.now(timezone.utc)
        profile = self.sources.profile(user_id)
        model = self.sources.model()
        personalized = model is not None and (profile is None or profile.consent.personalization)
        scores: dict[str, float] = {}
        if personalized:
            scores = model.rank(model.user_row(self.sources.history(user_id), now.timestamp()), item_ids)
        if not scores:  # no consent, no model or no usable history: popularity order
            personalized = False
            order = {item_id: i for i, item_id in enumerate(model.artifact.popular_items)} if model else {}
            scores = {i: -float(order[i]) for i in item_ids if i in order}
        known = sorted((i for i in dict.fromkeys(item_ids) if i in scores), key=lambda i: -scores[i])
        unknown = [i for i in dict.fromkeys(item_ids) if i not in scores]
        return Ranking(
            user_id=user_id, model_version=model.version if model else None, personalized=personalized,
            items=[RankedItem(item_id=i, score=scores[i], known=True) for i in known]
            + [RankedItem(item_id=i, score=None, known=False) for i in unknown],
        )

    def popular(self, limit: int, category: str | None, country: str | None) -> PopularItems:
        model = self.sources.model()
        items = self._popular(model, limit, category, set(), country)
        lists = self._popular_lists(model)
        return PopularItems(model_version=lists.version if lists else None,
                            strategy=_popular_strategy(lists, country), items=items)

    # -- helpers

    def _popular_answer(self, user_id: str, model: ServingModel | None, limit: int, category: str | None,
                        excluded: set[str], country: str | None, reason: str) -> Recommendations:
        items = self._popular(model, limit, category, excluded, country)
        lists = self._popular_lists(model)
        return Recommendations(user_id=user_id, model_version=lists.version if lists else None,
                               personalized=False, strategy=f"{reason}:{_popular_strategy(lists, country)}",
                               items=items)

    def _popular_lists(self, model: ServingModel | None) -> PopularLists | None:
        if model is not None:
            return PopularLists(model.version, model.artifact.popular_items, model.artifact.popular_by_country, False)
        return self.sources.cached_popular()

    def _popular(self, model: ServingModel | None, limit: int, category: str | None, excluded: set[str],
                 country: str | None) -> list[Recommendation]:
        lists = self._popular_lists(model)
        if lists is None:
            return []
        ranked = lists.by_country.get(country or "", [])
        ranked = ranked + [i for i in lists.items if i not in set(ranked)]
        candidates = [i for i in ranked if i not in excluded]
        details = self.sources.catalog.details(candidates)
        where = f" in {country}" if country in lists.by_country else ""
        picked = [i for i in candidates if _available(details.get(i), category)][:limit]
        return [Recommendation.of(details[i], None, Because(text=f"popular{where} right now", items=[]))
                for i in picked]

    def _new_in_favourite_categories(self, history: list[HistoryEvent], details: dict[str, Item],
                                     category: str | None, taken: set[str], now: datetime) -> list[Recommendation]:
        bought = Counter(details[e.item_id].category for e in history
                         if e.event_type == "purchase" and e.item_id in details)
        favourites = [c for c, _ in bought.most_common(2) if category in (None, c)]
        since = (now - timedelta(days=NEW_ITEM_DAYS)).strftime("%Y-%m-%dT%H:%M:%S")
        found: list[Recommendation] = []
        for favourite in favourites:
            for row in self.sources.catalog.newest(favourite, 10):
                if len(found) >= NEW_ITEM_SLOTS:
                    return found
                if row["created_at"] < since or row["item_id"] in taken or not row.get("in_stock", True) \
                        or row.get("retired"):
                    continue
                item = Item.model_validate({**row, "category": favourite})
                found.append(Recommendation.of(item, None, Because(
                    text=f"new in {favourite}, a category you buy often", items=[])))
                taken.add(item.item_id)
        return found


def _reason(item_id: str, contributors: list[str], history: list[HistoryEvent], titles: dict[str, str]) -> Because:
    if not contributors:
        return Because(text="recommended for you", items=[])
    top = contributors[0]
    kinds = {e.event_type for e in history if e.item_id == top}
    verb = next((VERBS[kind] for kind in VERBS if kind in kinds), "liked")  # strongest kind first
    what = "it" if top == item_id else titles.get(top, top)  # e.g. viewed, not bought yet
    return Because(text=f"because you {verb} {what}", items=contributors)


def _popular_strategy(lists: PopularLists | None, country: str | None) -> str:
    if lists is None:
        return "popular:no_model"
    name = "popular_country" if country and country in lists.by_country else "popular"
    return f"{name}:cached" if lists.cached else name


def _available(item: Item | None, category: str | None) -> bool:
    return item is not None and item.in_stock and not item.retired and category in (None, item.category)
