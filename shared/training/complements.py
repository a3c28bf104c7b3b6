"""Complements: what is bought together, in the same basket, more often than chance says.

A basket is one customer's order (its ``order_id``), or, without one, one customer's purchases of
one UTC day. Only purchases count. For each pair of items the counts are

- ``baskets``: distinct baskets holding both,
- ``customers``: distinct customers with at least one basket holding both (the honest number
  a reason quotes: "bought together by 136 customers"; one wholesaler's 40 orders are one).

A pair is kept when at least ``min_customers`` customers bought it together and it is bought
together more often than chance (lift > 1). Pairs are ranked by Dunning's log-likelihood ratio
(G^2) over the 2x2 table of baskets (with and without each item), or by lift
(``rank_by="lift"``). Lift alone favours rare pairs; G^2 weighs how sure the association is.

Variants of the same product are demoted, not dropped: their score is multiplied by
``variant_penalty`` for the ranking (0, the default: after every other complement of the item;
the score kept is the real one, and ``variant`` flags them). Two titles are variants when
- their first two words are the same, in titles of three words or more (filler words aside): the
  product, then its design or colour, as catalogs often name them ("JUMBO BAG RED RETROSPOT",
  "JUMBO BAG STRAWBERRY"; "T-shirt basic red XL"); or
- after lower-casing and dropping digits, colour, size, pattern and filler words, their word sets
  are the same, or overlap by at least ``variant_overlap`` of the smaller set on at least two
  words ("GREEN REGENCY TEACUP AND SAUCER" and "ROSES REGENCY TEACUP AND SAUCER"; "Oak chopping
  board" and "Oak chopping board, large").
Not "LUNCH BAG RED RETROSPOT" and "JUMBO BAG RED RETROSPOT" (another product in the same print).
Without titles (Ta-Feng) nothing is demoted. The word lists are English and shaped by home-goods
catalogs: a shop whose product words are in them ("star anise") sees a few
pairs demoted that are not variants; they are still shown, after the others.

Baskets of more than ``max_basket_items`` distinct items (a wholesaler's restock) are left out
of the pair counts, and of the basket total the lift and G^2 use: their pairs grow with the
square of their size and say little about what goes together.

The result is a CSR structure over the model's item indexes (rows in rank order), small enough
for the model artifact, with a pure lookup. numpy and scipy only; no storage.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_MIN_CUSTOMERS = 3
DEFAULT_TOP_N = 30
DEFAULT_MAX_BASKET_ITEMS = 100
DEFAULT_VARIANT_OVERLAP = 2 / 3
DEFAULT_VARIANT_PENALTY = 0.0
ARTIFACT_PREFIX = "complements_"
FIELDS = ("indptr", "indices", "customers", "baskets", "scores", "variant")

COLOURS = frozenset("""
red pink blue green yellow black white grey gray orange purple violet brown beige cream ivory
gold golden silver bronze copper turquoise teal navy lilac lavender mint aqua natural clear
multicolour multicolor multi colour colours color colors pastel light dark bright rose ruby
""".split())
SIZES = frozenset("""
xs s m l xl xxl xxxl small medium large mini jumbo big giant tiny extra size regular
""".split())
PATTERNS = frozenset("""
retrospot polkadot polka dot dots spotty spots stripe stripes striped stripey floral flower
flowers paisley vintage leaf leaves tartan gingham check checked doily heart hearts star stars
""".split())
FILLER = frozenset("of the a an and with in for set sets pack box tin assorted design designs new".split())
IGNORED = COLOURS | SIZES | PATTERNS | FILLER


@dataclass(frozen=True)
class TitleKey:
    words: frozenset[str]  # the words that name the product
    head: tuple[str, ...]  # its first two words, sizes and colours included ("jumbo", "bag")


def title_words(title: str) -> TitleKey:
    """The words that name the product (no digits, colours, sizes, patterns or filler), and its head."""
    words = [w for w in re.findall(r"[^\W\d_]+", title.lower()) if w not in FILLER]
    kept = frozenset(w for w in words if w not in IGNORED and len(w) > 1)
    return TitleKey(kept or frozenset(words), tuple(words[:2]) if len(words) >= 3 else ())


def are_variants(a: TitleKey, b: TitleKey, overlap: float = DEFAULT_VARIANT_OVERLAP) -> bool:
    if not a.words or not b.words:
        return False
    if a.words == b.words or (a.head and a.head == b.head):
        return True
    shared = len(a.words & b.words)
    return shared >= 2 and shared >= overlap * min(len(a.words), len(b.words))


@dataclass(frozen=True)
class Complement:
    item: int  # index into the model's item ids
    customers: int
    baskets: int
    score: float
    variant: bool


@dataclass(frozen=True)
class Complements:
    """Per item (row), its complements best first: CSR arrays over the model's item indexes."""

    indptr: np.ndarray  # int64 (n_items + 1)
    indices: np.ndarray  # int32
    customers: np.ndarray  # int32: distinct customers who bought both in one basket
    baskets: np.ndarray  # int32: distinct baskets holding both
    scores: np.ndarray  # float32: G^2 or lift, as ranked
    variant: np.ndarray  # bool: a variant of the same product, demoted after the others

    @property
    def n_items(self) -> int:
        return len(self.indptr) - 1

    def of(self, item: int, count: int | None = None) -> list[Complement]:
        """The item's complements, best first (variants last); [] for an unknown index."""
        if not 0 <= item < self.n_items:
            return []
        start, end = int(self.indptr[item]), int(self.indptr[item + 1])
        if count is not None:
            end = min(end, start + max(count, 0))
        return [Complement(int(self.indices[k]), int(self.customers[k]), int(self.baskets[k]),
                           float(self.scores[k]), bool(self.variant[k])) for k in range(start, end)]

    @classmethod
    def empty(cls, n_items: int) -> Complements:
        return cls(np.zeros(n_items + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int32),
                   np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros(0, bool))


def basket_keys_by_day(users: np.ndarray, timestamps: np.ndarray) -> np.ndarray:
    """One key per (customer, UTC day), for purchases without an order id."""
    days = np.floor(np.asarray(timestamps, dtype=np.float64) / 86_400).astype(np.int64)
    return np.asarray(users, dtype=np.int64) * 1_000_000 + (days - days.min(initial=0))


def compute_complements(users: np.ndarray, items: np.ndarray, baskets: np.ndarray, n_items: int,
                        titles: Sequence[str] | Mapping[int, str] | None = None, *,
                        min_customers: int = DEFAULT_MIN_CUSTOMERS, top_n: int = DEFAULT_TOP_N,
                        rank_by: str = "llr", max_basket_items: int = DEFAULT_MAX_BASKET_ITEMS,
                        variant_overlap: float = DEFAULT_VARIANT_OVERLAP,
                        variant_penalty: float = DEFAULT_VARIANT_PENALTY) -> Complements:
    """Complements of every item from purchase lines: ``users``, ``items`` (indexes below
    ``n_items``) and ``baskets`` (any int64 key, unique per basket across customers), one per line.
    ``titles``: per item index (a list, or a map for some of them), for the variant rule."""
    if rank_by not in ("llr", "lift"):
        raise ValueError(f"rank_by is 'llr' or 'lift', not {rank_by!r}")
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    baskets = np.asarray(baskets, dtype=np.int64)
    if len(items) == 0:
        return Complements.empty(n_items)

    # One row per (basket, item); the basket's customer (a basket belongs to one customer).
    _, basket_ids = np.unique(baskets, return_inverse=True)
    lines = np.unique(basket_ids.astype(np.int64) * n_items + items)
    line_basket, line_item = lines // n_items, lines % n_items
    owner = np.zeros(basket_ids.max() + 1, dtype=np.int64)
    owner[basket_ids] = users
    sizes = np.bincount(line_basket)
    kept = sizes[line_basket] <= max_basket_items
    line_basket, line_item = line_basket[kept], line_item[kept]
    n_baskets = int(np.count_nonzero((sizes > 0) & (sizes <= max_basket_items)))
    item_baskets = np.bincount(line_item, minlength=n_items).astype(np.float64)

    first, second, pair_basket = _pairs(line_basket, line_item)
    if len(first) == 0:
        return Complements.empty(n_items)
    pair_key = first * n_items + second
    keys, together = np.unique(pair_key, return_counts=True)
    # Distinct customers per pair: a customer's many baskets with the pair count once.
    n_users = int(owner.max()) + 1
    per_customer = np.unique(pair_key * n_users + owner[pair_basket]) // n_users
    customers = np.bincount(np.searchsorted(keys, per_customer), minlength=len(keys))

    a, b = keys // n_items, keys % n_items
    expected = item_baskets[a] * item_baskets[b] / n_baskets
    lift = together / expected
    keep = (customers >= min_customers) & (lift > 1)
    a, b, together, customers, lift = a[keep], b[keep], together[keep], customers[keep], lift[keep]
    if rank_by == "lift":
        score = lift
    else:
        score = log_likelihood_ratio(together.astype(np.float64), item_baskets[a], item_baskets[b], n_baskets)

    # Both directions: b is a complement of a, and a of b.
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    score2 = np.concatenate([score, score])
    customers2 = np.concatenate([customers, customers])
    together2 = np.concatenate([together, together])
    words = _title_words(titles, n_items)
    variant = np.zeros(len(rows), bool)
    if words is not None:  # each pair once (a < b), then both directions
        once = np.fromiter((are_variants(words[i], words[j], variant_overlap) for i, j in zip(a.tolist(), b.tolist())),
                           bool, len(a))
        variant = np.concatenate([once, once])
    # Per row, by score, a variant's times variant_penalty (0: after every other complement);
    # ties: non-variants first, then more customers, then the lower index.
    ranked_by = np.where(variant, score2 * variant_penalty, score2)
    order = np.lexsort((cols, -customers2, variant, -ranked_by, rows))
    rows, cols, score2, customers2, together2, variant = (
        rows[order], cols[order], score2[order], customers2[order], together2[order], variant[order])
    rank = np.arange(len(rows)) - np.searchsorted(rows, rows)  # position within its row
    top = rank < top_n
    rows = rows[top]
    indptr = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=n_items), out=indptr[1:])
    return Complements(indptr, cols[top].astype(np.int32), customers2[top].astype(np.int32),
                       together2[top].astype(np.int32), score2[top].astype(np.float32), variant[top])


def log_likelihood_ratio(k11: np.ndarray, n1: np.ndarray, n2: np.ndarray, n: float) -> np.ndarray:
    """Dunning's G^2 for the 2x2 table: k11 baskets with both, n1 with the first, n2 with the second, n in all."""
    k12, k21 = n1 - k11, n2 - k11
    k22 = n - k11 - k12 - k21
    table = np.stack([k11, k12, k21, k22])
    rows = np.stack([k11 + k12, k21 + k22])
    cols = np.stack([k11 + k21, k12 + k22])
    return np.maximum(2.0 * (_xlogx(table).sum(0) - _xlogx(rows).sum(0) - _xlogx(cols).sum(0) + _xlogx(n)), 0.0)


def _xlogx(x: np.ndarray | float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def _pairs(line_basket: np.ndarray, line_item: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair (first < second) of items in the same basket, with its basket: vectorised per basket size."""
    order = np.lexsort((line_item, line_basket))
    line_basket, line_item = line_basket[order], line_item[order]
    starts = np.flatnonzero(np.r_[True, line_basket[1:] != line_basket[:-1]])
    sizes = np.diff(np.r_[starts, len(line_basket)])
    firsts, seconds, owners = [], [], []
    for size in np.unique(sizes[sizes >= 2]).tolist():
        at = starts[sizes == size]
        block = line_item[at[:, None] + np.arange(size)]  # (baskets of this size, size), sorted rows
        i, j = np.triu_indices(size, k=1)
        firsts.append(block[:, i].ravel())
        seconds.append(block[:, j].ravel())
        owners.append(np.repeat(line_basket[at], len(i)))
    if not firsts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(owners)


def _title_words(titles: Sequence[str] | Mapping[int, str] | None, n_items: int) -> list[TitleKey] | None:
    if not titles:
        return None
    if not isinstance(titles, Mapping):
        titles = dict(enumerate(titles))
    none = TitleKey(frozenset(), ())
    return [title_words(titles[i]) if titles.get(i) else none for i in range(n_items)]


def titles_by_index(item_ids: Sequence[str], titles: Mapping[str, str]) -> list[str]:
    """The catalog's item_id -> title map as a list over the model's item indexes ('' when unknown)."""
    return [titles.get(item_id, "") for item_id in item_ids]


# -- the model artifact: flat arrays under one prefix, no pickle


def complements_for_artifact(complements: Complements) -> dict[str, np.ndarray]:
    """The npz entries that carry the complements: ``complements_indptr``, ``..._indices``, ..."""
    return {ARTIFACT_PREFIX + name: np.ascontiguousarray(getattr(complements, name)) for name in FIELDS}


def from_artifact_arrays(arrays: Mapping[str, np.ndarray], n_items: int) -> Complements | None:
    """The complements stored by ``complements_for_artifact``, or None when the artifact has none
    (a version trained before them) or they do not fit the model's items."""
    names = [ARTIFACT_PREFIX + name for name in FIELDS]
    if not all(name in arrays for name in names):
        return None
    found = Complements(**{name: np.asarray(arrays[ARTIFACT_PREFIX + name]) for name in FIELDS})
    length = len(found.indices)
    if (found.n_items != n_items or int(found.indptr[-1]) != length
            or any(len(getattr(found, name)) != length for name in FIELDS[2:])
            or (length and (found.indices.min() < 0 or found.indices.max() >= n_items))):
        return None
    return Complements(found.indptr.astype(np.int64), found.indices.astype(np.int32),
                       found.customers.astype(np.int32), found.baskets.astype(np.int32),
                       found.scores.astype(np.float32), found.variant.astype(bool))
