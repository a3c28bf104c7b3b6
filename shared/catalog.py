"""Catalog items: what the shop sells, with what the recommender needs to filter and enrich."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict, StringConstraints

from shared.events import CurrencyCode, Identifier, Moment, Money, SentMoney
from shared.users import Attributes

MAX_ITEMS_PER_BATCH = 500

Title = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=512)]
Category = Annotated[str, Strict(), StringConstraints(min_length=1, max_length=256, pattern=r"\S")]

MAX_URL_LENGTH = 2048
# ASCII a URL may hold as it is (RFC 3986: unreserved, reserved and "%"); anything else, such as
# a space, a quote, "<", ">" or a backslash, must be percent-encoded. Letters beyond ASCII are let
# through (an internationalised address), but no whitespace or control character of any script.
_URL_ASCII = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%")


def https_address(value: str) -> str:
    """An absolute https:// address with a host and no user name or password: what a storefront
    can put in a link or an image without a second thought (no http:, javascript: or data:)."""
    for character in value:
        if character.isascii() and character not in _URL_ASCII:
            raise ValueError(f"must not hold {character!r} (whitespace, control characters, quotes, "
                             "<, >, \\, {, }, |, ^ and ` must be percent-encoded)")
        if not character.isascii() and (character.isspace() or unicodedata.category(character).startswith("C")):
            raise ValueError(f"must not hold whitespace or control characters ({character!r})")
    if re.search(r"%(?![0-9A-Fa-f]{2})", value):
        raise ValueError("holds a % that is not followed by two hex digits")
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises here
    except ValueError as error:
        raise ValueError(f"is not a valid URL ({error})") from None
    if parts.scheme.lower() != "https":
        raise ValueError("must be an absolute https:// URL (http:, javascript:, data: and relative addresses "
                         "are refused)")
    if "@" in parts.netloc:
        raise ValueError("must not hold a user name or password (user:pass@)")
    if not parts.hostname:
        raise ValueError("must name a host (https://host/...)")
    return value


HttpsUrl = Annotated[
    str, Strict(), StringConstraints(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(https_address),
]


class ItemIn(BaseModel):
    """Body of PUT /items/{item_id}: the whole item (an upsert replaces it)."""

    model_config = ConfigDict(extra="forbid")

    title: Title
    category: Category
    price: SentMoney | None = None
    currency: CurrencyCode | None = None
    in_stock: Annotated[bool, Strict()] = True
    retired: Annotated[bool, Strict()] = Field(
        default=False, description="Retired items are never recommended again"
    )
    created_at: Moment | None = Field(
        default=None, description="When the item entered the catalog (from the year 1000 to 9999 in UTC); "
                                  "defaults to first upsert"
    )
    attributes: Attributes = Field(default_factory=dict)
    image_url: HttpsUrl | None = Field(
        default=None, description=f"The item's picture: an absolute https:// URL with a host, no user:pass@, "
                                  f"at most {MAX_URL_LENGTH:,} characters")
    url: HttpsUrl | None = Field(
        default=None, description=f"The item's page in the shop: an absolute https:// URL with a host, no "
                                  f"user:pass@, at most {MAX_URL_LENGTH:,} characters")


class ItemUpsert(ItemIn):
    """One entry of POST /items: an item with its id."""

    item_id: Identifier


class Item(ItemUpsert):
    price: Money | None = None  # as stored: a row written by hand with a text for its price still reads
    updated_at: datetime | None = None
