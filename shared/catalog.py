"""Catalog items: what the shop sells, with what the recommender needs to filter and enrich."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, Strict, StringConstraints

from shared.events import CurrencyCode, Identifier, Moment, Money
from shared.users import Attributes

MAX_ITEMS_PER_BATCH = 500

Title = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=512)]
Category = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256, pattern=r"\S")]


class ItemIn(BaseModel):
    """Body of PUT /items/{item_id}: the whole item (an upsert replaces it)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    category: Category
    price: Money | None = None
    currency: CurrencyCode | None = None
    in_stock: Annotated[bool, Strict()] = True
    retired: Annotated[bool, Strict()] = Field(
        default=False, description="Retired items are never recommended again"
    )
    created_at: Moment | None = Field(
        default=None, description="When the item entered the catalog; defaults to first upsert"
    )
    attributes: Attributes = Field(default_factory=dict)


class ItemUpsert(ItemIn):
    """One entry of POST /items: an item with its id."""

    item_id: Identifier


class Item(ItemUpsert):
    updated_at: datetime | None = None
