"""Segment families and ids, split by what they read: declared data, or behaviour that profiling consent governs.

Kept apart from the tag rules (which import the history types) so that storage and the privacy
function can tell which memberships an objection ends without importing any of them.
"""

from __future__ import annotations

import hashlib
import unicodedata
from functools import lru_cache

from shared.limits import MAX_ID_BYTES

# From what the customer declared in their profile: kept when they object to profiling. Every other
# family reads behaviour.
DECLARED = ("geography", "demographic", "psychographic")
BEHAVIOURAL = ("rfm", "value", "lifecycle", "behaviour", "technographic", "engagement", "custom")
FAMILIES = BEHAVIOURAL + DECLARED


@lru_cache(maxsize=65_536)
def segment_id_for(family: str, name: str) -> str:
    """`family:slug`: the name in NFKC, case-folded, with each run of what is not a letter, digit
    or a mark on one made one hyphen. Letters of every script are kept (with their marks:
    Devanagari's vowel signs are marks), so "Likes 家具" and "Likes 食品" are two segments
    ("behaviour:likes-家具"); an ASCII name with a letter or digit gives the id it always had
    ("rfm:can-t-lose-them"). A name with no letter or digit ("🎉", "❤️") is named by a hash of it.
    An id is at most MAX_ID_BYTES in UTF-8, as every id in a path is: a longer one is cut at a
    character and ends in a hash of the whole name."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    kept: list[str] = []
    for character in folded:
        kind = unicodedata.category(character)[0]
        # A mark counts with the letter it is on; alone (or a variation selector after an emoji) it is none.
        if kind in "LN" or (kind == "M" and kept and kept[-1] != "-" and not _selects_variation(character)):
            kept.append(character)
        elif not kept or kept[-1] != "-":
            kept.append("-")
    slug = "".join(kept).strip("-")
    if not any(unicodedata.category(c)[0] in "LN" for c in slug):
        slug = "x" + _hash(folded)
    made = f"{family}:{slug}"
    if len(made.encode()) <= MAX_ID_BYTES:
        return made
    ending = "-" + _hash(folded)
    cut = made.encode()[:MAX_ID_BYTES - len(ending)].decode(errors="ignore").rstrip("-")
    return cut + ending


def _selects_variation(character: str) -> bool:
    return "\ufe00" <= character <= "\ufe0f" or "\U000e0100" <= character <= "\U000e01ef"


def _hash(folded: str) -> str:
    """Of the folded name without its outer spaces: "🎉" and "🎉 " are one name, as "VIP" and "VIP " are."""
    return hashlib.blake2b(folded.strip().encode("utf-8", "surrogatepass"), digest_size=5).hexdigest()


def family_of(segment_id: str) -> str:
    return segment_id.split(":", 1)[0]


def needs_consent(segment_id: str) -> bool:
    """A membership a customer who objected to profiling must not have (unknown families count as behaviour)."""
    return family_of(segment_id) not in DECLARED
