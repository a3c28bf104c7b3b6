"""What the website and the app ask for: recommendations with reasons, similar items, a ranking,
popular items. Rules only; where the data comes from is passed in (storage, the active model).

Rules every answer keeps:
- out-of-stock and retired items are never returned, nor excluded ones, nor (unless asked) ones the
  customer already bought: one `AnswerFilter` (filters.py) decides for every answer;
- a customer who objected to personalization gets popular items, and their history is not read;
- a customer unknown to the model, or without usable history, gets popular items (for their
  country when it is known), marked as not personalized; unless they declared interests in their
  profile: then the popular items of those interests, marked personalized (their own declared
  data, so only with their consent), with the reason "because you're interested in cooking",
  whatever the version's strategy (a popular version has the interests' lists too);
- new catalog items, which no model has seen yet, reach customers as "new in a category you buy".
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Protocol, TypeVar

from shared.catalog import Item
from shared.errors import StorageUnavailable
from shared.history import HistoryEvent
from shared.serving import reasons
from shared.serving.answers import PopularItems, RankedItem, Ranking, Recommendation, Recommendations, Similar
from shared.serving.filters import AnswerFilter
from shared.serving.model import ServingModel
from shared.serving.popular import PopularLists
from shared.training import interests
from shared.users import User, may_personalize

NEW_ITEM_DAYS = 30
# How often an answer is composed again when its items changed since the catalog snapshot was taken.
CONFIRM_ROUNDS = 3
# What an answer shows of an item, confirmed as stored before it is returned.
SHOWN_FIELDS = ("price", "currency", "title", "category", "image_url", "url")
# A cold start's declared interests served in turn: the first ones declared, at most this many.
MAX_SERVED_INTERESTS = 5
SEEN = ("view", "click", "add_to_cart")


class Catalog(Protocol):
    """Catalog rows for serving. One that answers from a snapshot also has
    `current(item_ids) -> dict[str, Item]`, which reads them as stored now (catalog_snapshot.py)."""

    def details(self, item_ids: Sequence[str]) -> dict[str, Item]: ...
    def newest(self, category: str, limit: int) -> list[Item]: ...


class _Answer(Protocol):
    items: list[Recommendation]

    def model_copy(self, *, update: dict) -> _Answer: ...


A = TypeVar("A", bound=_Answer)


@dataclass(frozen=True)
class _Items:
    """A bare list of recommendations, confirmed as an answer is."""

    items: list[Recommendation]

    def model_copy(self, *, update: dict) -> _Items:
        return _Items(update["items"])


@dataclass
class Sources:
    model: Callable[[], ServingModel | None]
    catalog: Catalog
    # The events of these ids, merged: the customer's own id first, then the visitor ids linked to it.
    history: Callable[[list[str]], list[HistoryEvent]]
    profile: Callable[[str], User | None]
    cached_popular: Callable[[], PopularLists | None] = lambda: None
    # Every item the customer ever bought (kept at ingest), however long their history.
    purchased: Callable[[str], Container[str]] = lambda _: frozenset()


@dataclass(frozen=True)
class Mix:
    """How a personal list is composed, as shares of the slots asked for, rounded down: with the
    defaults, a list of 10 holds at most 2 items the customer only viewed or carted and at most 2
    new items; a list of 1, 2, 3 or 4 holds neither (settings SEEN_ITEMS_SHARE, NEW_ITEMS_SHARE)."""

    seen_share: float = 0.2
    new_share: float = 0.2

    def seen_slots(self, limit: int) -> int:
        return math.floor(limit * self.seen_share + 1e-9)

    def new_slots(self, limit: int) -> int:
        return math.floor(limit * self.new_share + 1e-9)


class Recommender:
    def __init__(self, sources: Sources, mix: Mix | None = None) -> None:
        self.sources = sources
        self.mix = mix or Mix()

    def model(self) -> ServingModel | None:
        """The active model. When storage refused it and the function holds none (a cold start while
        S3 throttles: shared/refresh.py), None if the cached popular list can answer instead, as it
        does for an artifact that does not load; else the fault (a 503)."""
        try:
            return self.sources.model()
        except StorageUnavailable:
            if self.sources.cached_popular() is None:  # raises its own fault when it could not be read
                raise
            return None

    def recommend(self, user_id: str, limit: int, category: str | None = None,
                  exclude: Sequence[str] = (), include_purchased: bool = False,
                  now: datetime | None = None, model: ServingModel | None = None,
                  popular_only: bool = False) -> Recommendations:
        """`model`: a version to serve instead of the active one; `popular_only`: popular items
        whatever the history (both for an experiment's variant: shared/serving/experiments.py)."""
        now = now or datetime.now(timezone.utc)
        profile = self.sources.profile(user_id)
        model = model or self.model()
        country = profile.country if profile else None
        asked = AnswerFilter.of(category, exclude)
        if not may_personalize(profile):
            return self._confirmed(lambda: self._popular_answer(user_id, model, limit, asked, country, "no_consent"))
        if popular_only:
            baseline = asked if include_purchased else asked.without_bought(self.sources.purchased(user_id))
            return self._confirmed(lambda: self._popular_answer(user_id, model, limit, baseline, country, "experiment"))
        history = self.sources.history([user_id, *_linked(profile)])
        shown = asked
        if not include_purchased:
            bought = self.sources.purchased(user_id)
            # The history's purchases too: events stored before the bought set was kept.
            shown = asked.without_bought(bought).taking(e.item_id for e in history if e.event_type == "purchase")
        row = model.user_row(history, now.timestamp()) if model else None
        return self._confirmed(lambda: self._compose(user_id, limit, now, profile, model, history, shown, row))

    def _compose(self, user_id: str, limit: int, now: datetime, profile: User | None, model: ServingModel | None,
                 history: list[HistoryEvent], shown: AnswerFilter, row) -> Recommendations:  # noqa: ANN001
        """A customer's answer from what was read for it (the catalog aside): run again, without
        reading anything else, when an item of it changed in the meantime (`_confirmed`)."""
        country = profile.country if profile else None
        if row is None or row.nnz == 0:  # no usable history: their declared interests, if any have lists
            interested = self._interests_answer(user_id, model, limit, shown, country, profile)
            if interested is not None:
                return interested
        if model is not None and not model.personalized:  # the version's strategy is popular
            return self._popular_answer(user_id, model, limit, shown, country, "chosen")
        if model is None or row is None or row.nnz == 0:
            return self._popular_answer(user_id, model, limit, shown, country, "cold_start")

        leave_out = set(shown.excluded) | model.bought(shown.bought)
        candidates = model.recommend(row, max(100, 4 * limit + len(leave_out)), leave_out)
        details = self.sources.catalog.details([c.item_id for c in candidates] + [e.item_id for e in history])
        seen = {e.item_id for e in history if e.event_type in SEEN}
        picked, seen_slots = [], self.mix.seen_slots(limit)
        for candidate in candidates:
            if len(picked) == limit:
                break
            if not shown.allows(details.get(candidate.item_id)):
                continue
            if candidate.item_id in seen:
                if seen_slots == 0:
                    continue
                seen_slots -= 1
            picked.append(candidate)
        titles = {item_id: item.title for item_id, item in details.items()}
        contributors = model.explain(row, [c.item_id for c in picked])
        kinds = kinds_by_item(history)
        recommended = [Recommendation.of(details[c.item_id], c.score,
                                         history_reason(c.item_id, contributors[c.item_id], kinds, titles))
                       for c in picked]
        shown = shown.taking(r.item_id for r in recommended)
        new_items = self._new_in_favourite_categories(history, details, shown, now, self.mix.new_slots(limit))
        # Items cut here to make room stay excluded: popular items must not bring them back.
        recommended = recommended[: max(limit - len(new_items), 0)] + new_items
        if len(recommended) < limit:
            recommended += self._popular(model, limit - len(recommended),
                                         shown.taking(r.item_id for r in new_items), country)
        return Recommendations(user_id=user_id, model_version=model.version, personalized=True,
                               strategy=model.strategy, items=recommended[:limit])

    def similar(self, item: Item, limit: int) -> Similar:
        model = self.model()
        return self._confirmed(lambda: self._similar(model, item, limit))

    def _similar(self, model: ServingModel | None, item: Item, limit: int) -> Similar:
        if model is None or not model.knows(item.item_id):
            items = self._popular(model, limit, AnswerFilter.of(item.category, [item.item_id]), None)
            return Similar(item_id=item.item_id, model_version=model.version if model else None,
                           strategy="popular_in_category", items=items)
        candidates = model.similar(item.item_id, max(50, 4 * limit))
        details = self.sources.catalog.details([c.item_id for c in candidates])
        because = reasons.similar_to(item.item_id, item.title)
        shown = AnswerFilter.of(None, [item.item_id])
        items = [Recommendation.of(details[c.item_id], c.score, because)
                 for c in candidates if shown.allows(details.get(c.item_id))][:limit]
        return Similar(item_id=item.item_id, model_version=model.version, strategy="als_similar", items=items)

    def rank(self, user_id: str, item_ids: list[str], now: datetime | None = None) -> Ranking:
        now = now or datetime.now(timezone.utc)
        profile = self.sources.profile(user_id)
        model = self.model()
        personalized = model is not None and may_personalize(profile)
        scores: dict[str, float] = {}
        if personalized:
            history = self.sources.history([user_id, *_linked(profile)])
            scores = model.rank(model.user_row(history, now.timestamp()), item_ids)
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
        model = self.model()
        lists = self._popular_lists(model)
        return self._confirmed(lambda: PopularItems(
            model_version=lists.version if lists else None, strategy=_popular_strategy(lists, country),
            items=self._popular(model, limit, AnswerFilter.of(category), country)))

    def popular_filling(self, limit: int, shown: AnswerFilter, country: str | None) -> list[Recommendation]:
        """Popular items (for the country first) that `shown` allows: what fills a short list."""
        model = self.model()
        return self._confirmed_items(lambda: self._popular(model, limit, shown, country))

    # -- helpers

    def _confirmed(self, compose: Callable[[], A]) -> A:
        """The answer `compose` gives, once the items in it are confirmed as stored now. A catalog
        that serves from a snapshot (catalog_snapshot.py) has `current`, which reads them by key
        and corrects the snapshot: when one went out of stock, was retired or changed its price,
        the answer is composed again from the corrected rows. What still changes after
        CONFIRM_ROUNDS is left out. A catalog without `current` reads every row fresh already."""
        answer = compose()
        if not hasattr(self.sources.catalog, "current"):
            return answer
        for _ in range(CONFIRM_ROUNDS):
            stale = self._stale(answer.items)
            if not stale:
                return answer
            answer = compose()
        stale = self._stale(answer.items)
        return answer.model_copy(update={"items": [r for r in answer.items if r.item_id not in stale]})

    def _confirmed_items(self, compose: Callable[[], list[Recommendation]]) -> list[Recommendation]:
        return self._confirmed(lambda: _Items(compose())).items

    def _stale(self, shown: Sequence[Recommendation]) -> set[str]:
        """The ids in `shown` whose stored row no longer matches the answer: gone, out of stock,
        retired, or showing another price, currency, title, category, picture or page."""
        current = self.sources.catalog.current([r.item_id for r in shown])  # type: ignore[attr-defined]
        stale = set()
        for recommendation in shown:
            item = current.get(recommendation.item_id)
            if item is None or not item.in_stock or item.retired or any(
                    getattr(item, name) != getattr(recommendation, name) for name in SHOWN_FIELDS):
                stale.add(recommendation.item_id)
        return stale

    def _popular_answer(self, user_id: str, model: ServingModel | None, limit: int, shown: AnswerFilter,
                        country: str | None, reason: str) -> Recommendations:
        items = self._popular(model, limit, shown, country)
        lists = self._popular_lists(model)
        return Recommendations(user_id=user_id, model_version=lists.version if lists else None,
                               personalized=False, strategy=f"{reason}:{_popular_strategy(lists, country)}",
                               items=items)

    def _interests_answer(self, user_id: str, model: ServingModel | None, limit: int, shown: AnswerFilter,
                          country: str | None, profile: User | None) -> Recommendations | None:
        """A cold start who declared interests: the popular items of each interest, taken in turn
        (an interest named like a category: that category's list; otherwise the interest's own),
        then popular items when short. None when no declared interest has a list."""
        lists = self._popular_lists(model)
        declared = interests.declared(profile.attributes) if profile is not None else []
        if lists is None or not declared:
            return None
        categories = {interests.normalise(category): category for category in lists.by_category}
        queues = []
        for key, text in declared:
            ranked = lists.by_category[categories[key]] if key in categories else lists.by_interest.get(key, [])
            if ranked:
                queues.append((reasons.interested_in(text), shown.worth_reading(ranked)))
            if len(queues) == MAX_SERVED_INTERESTS:
                break
        if not queues:
            return None
        details = self.sources.catalog.details(list(dict.fromkeys(i for _, ranked in queues for i in ranked)))
        picked: list[Recommendation] = []
        taken: set[str] = set()
        pending = [(because, iter(ranked)) for because, ranked in queues]
        while pending and len(picked) < limit:
            for entry in list(pending):  # one item of each interest in turn, the first declared first
                because, ranked = entry
                item_id = next((i for i in ranked if i not in taken and shown.allows(details.get(i))), None)
                if item_id is None:
                    pending.remove(entry)
                    continue
                taken.add(item_id)
                picked.append(Recommendation.of(details[item_id], None, because))
                if len(picked) == limit:
                    break
        if not picked:  # nothing of theirs can be shown (filters, stock): popular, as for anyone
            return None
        if len(picked) < limit:
            picked += self._popular(model, limit - len(picked), shown.taking(taken), country)
        return Recommendations(user_id=user_id, model_version=lists.version, personalized=True,
                               strategy="cold_start:interests" + (":cached" if lists.cached else ""), items=picked)

    def _popular_lists(self, model: ServingModel | None) -> PopularLists | None:
        if model is not None:
            return PopularLists(model.version, model.artifact.popular_items, model.artifact.popular_by_country, False,
                                model.artifact.popular_by_category, model.artifact.popular_by_interest)
        return self.sources.cached_popular()

    def _popular(self, model: ServingModel | None, limit: int, shown: AnswerFilter,
                 country: str | None) -> list[Recommendation]:
        lists = self._popular_lists(model)
        if lists is None:
            return []
        ranked = lists.by_country.get(country or "", [])
        ranked = ranked + [i for i in lists.items if i not in set(ranked)]
        if shown.category is not None:  # the category's own list: its items may not be in the overall one
            ranked = ranked + [i for i in lists.by_category.get(shown.category, []) if i not in set(ranked)]
        candidates = shown.worth_reading(ranked)
        details = self.sources.catalog.details(candidates)
        because = reasons.popular(country if country in lists.by_country else None)
        picked = [i for i in candidates if shown.allows(details.get(i))][:limit]
        return [Recommendation.of(details[i], None, because) for i in picked]

    def _new_in_favourite_categories(self, history: list[HistoryEvent], details: dict[str, Item],
                                     shown: AnswerFilter, now: datetime, slots: int) -> list[Recommendation]:
        bought = Counter(details[e.item_id].category for e in history
                         if e.event_type == "purchase" and e.item_id in details)
        favourites = [c for c, _ in bought.most_common(2) if shown.in_category(c)]
        # Whole seconds: an item created in the very second 30 days ago still counts as new.
        since = (now - timedelta(days=NEW_ITEM_DAYS)).replace(microsecond=0)
        found: list[Recommendation] = []
        if slots == 0:
            return found
        for favourite in favourites:
            for item in self.sources.catalog.newest(favourite, 10):
                if len(found) >= slots:
                    return found
                if item.created_at is None or item.created_at < since or not shown.allows(item):
                    continue
                found.append(Recommendation.of(item, None, reasons.new_in_category(favourite)))
                shown = shown.taking([item.item_id])
        return found


def _linked(profile: User | None) -> list[str]:
    """The visitor ids linked to the customer (their devices before they signed in)."""
    return profile.linked_visitors if profile is not None else []


def history_reason(item_id: str, contributors: list[str], kinds: Mapping[str, set[str]], titles: dict[str, str]):
    """The reason of a history-based item: what the customer did with its strongest contributor.
    `kinds`: what the customer did with each item of their history (`kinds_by_item`)."""
    top = contributors[0] if contributors else None
    return reasons.from_history(item_id, contributors, kinds.get(top, set()) if top else set(),
                                titles.get(top, top) if top else "")


def kinds_by_item(history: list[HistoryEvent]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for event in history:
        found.setdefault(event.item_id, set()).add(event.event_type)
    return found


def _popular_strategy(lists: PopularLists | None, country: str | None) -> str:
    if lists is None:
        return "popular:no_model"
    name = "popular_country" if country and country in lists.by_country else "popular"
    return f"{name}:cached" if lists.cached else name
