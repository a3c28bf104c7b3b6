"""Response bodies of the serving routes (documented in the OpenAPI schema)."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from shared.catalog import Item


class Because(BaseModel):
    text: str = Field(description='Human-readable reason, e.g. "because you bought Oak chopping board"')
    items: list[str] = Field(description="History items that contributed most (ALS explain), strongest first")


class Recommendation(BaseModel):
    item_id: str
    score: float | None = Field(description="Model score; null for popular or new items")
    title: str
    category: str
    price: Decimal | None
    currency: str | None
    image_url: str | None = Field(description="The item's picture (https), as the catalog has it; null when none")
    url: str | None = Field(description="The item's page in the shop (https), as the catalog has it; null when none")
    reason: Because

    @classmethod
    def of(cls, item: Item, score: float | None, reason: Because) -> Recommendation:
        # Built from a validated catalog item: nothing to check again (a campaign builds millions).
        return cls.model_construct(item_id=item.item_id, score=None if score is None else round(score, 6), title=item.title,
                   category=item.category, price=item.price, currency=item.currency, image_url=item.image_url,
                   url=item.url, reason=reason)


class Recommendations(BaseModel):
    user_id: str
    model_version: str | None
    personalized: bool = Field(description="True: from the customer's own history, or from the interests they "
                                           "declared when they have none; false: popular items (no consent, no usable "
                                           "history or interests, or no model)")
    strategy: str = Field(description="The version's strategy (hybrid, als, knn), or why not from history and what "
                                      "instead: cold_start:interests (their declared interests), no_consent:popular, "
                                      "cold_start:popular_country, chosen:popular (the active version serves popular "
                                      "items: they beat its model), ...")
    items: list[Recommendation]
    recommendation_id: str | None = Field(default=None, description=(
        "Names this answer: send it with an impression event when the list is shown and with each click, "
        "so purchases can be credited to it (docs/experiments.md)"))


class Similar(BaseModel):
    item_id: str
    model_version: str | None
    strategy: str
    items: list[Recommendation]
    recommendation_id: str | None = Field(default=None, description=(
        "Names this answer: send it with an impression event when the list is shown and with each click, "
        "so purchases can be credited to it (docs/experiments.md)"))


class RankedItem(BaseModel):
    item_id: str
    score: float | None
    known: bool = Field(description="False: the model does not know this item; kept, at the end")


class Ranking(BaseModel):
    user_id: str
    model_version: str | None
    personalized: bool
    items: list[RankedItem]


class PopularItems(BaseModel):
    model_version: str | None
    strategy: str
    items: list[Recommendation]
    recommendation_id: str | None = Field(default=None, description=(
        "Names this answer: send it with an impression event when the list is shown and with each click, "
        "so purchases can be credited to it (docs/experiments.md)"))


class BoughtTogether(BaseModel):
    item_id: str
    model_version: str | None
    strategy: str = Field(description="complements, or why not: no_complements:popular_in_category "
                                      "(no model, or no item bought together with it often enough)")
    items: list[Recommendation]
    recommendation_id: str | None = Field(default=None, description=(
        "Names this answer: send it with an impression event when the list is shown and with each click, "
        "so purchases can be credited to it (docs/experiments.md)"))


class BasketRecommendations(BaseModel):
    user_id: str | None = Field(description="The customer whose purchases were left out, if one was given")
    model_version: str | None
    strategy: str = Field(description="complements, or why not: no_complements:popular_in_category")
    cart: list[str] = Field(description="The cart's item ids as considered: each once, in the order sent")
    items: list[Recommendation]
    recommendation_id: str | None = Field(default=None, description=(
        "Names this answer: send it with an impression event when the list is shown and with each click, "
        "so purchases can be credited to it (docs/experiments.md)"))
