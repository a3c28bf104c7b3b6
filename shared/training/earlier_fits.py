"""The item factors of a run's fits, kept so that a later run's first fit starts from them.

Each run fits ALS cold once (15 iterations), then warm from that fit (3 each). The cold fit was
most of a night's fitting, and the night before already fitted nearly the same matrix. So a run
keeps the item factors of each fit that ended before its holdout (the validation folds' and the
holdout's: the final fit has seen everything, and the artifact holds it), and a later run's
first fit starts from the newest of them that:
- ended no later than that fit's own events (`until`): a start that has seen the window a fit is
  scored on would flatter the holdout the gate reads, or the folds that choose the blend;
- is at most `start_reuse_days` older than that, in whole days (nightly runs drift by minutes);
- was made under the same configuration (shared/training/job.py compares the parameters).
Items the earlier run did not know start as a cold fit starts them; every customer's factors are
solved afresh from the items' in the first iteration (they start at zero), so no customer's
factors are kept anywhere but in the run that fitted them.

Domain code plus its byte codec (numpy); storage reads and writes the bytes (ModelStore).
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.training.config import TrainingConfig
from shared.training.matrix import DAY


class UnusableFit(ValueError):
    """Kept factors that cannot be read, or do not decode, or do not fit the run: it fits cold instead."""


@dataclass(frozen=True)
class ItemFactors:
    """A fit's item factors: row k is item `item_ids[k]`'s; the fit saw the events before `until`."""

    until: float
    item_ids: list[str]
    factors: np.ndarray

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, until=np.float64(self.until), item_ids=np.array(self.item_ids, dtype=str),
                 factors=np.ascontiguousarray(self.factors, dtype=np.float32))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemFactors:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                until, item_ids, factors = float(arrays["until"]), arrays["item_ids"].tolist(), arrays["factors"]
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:  # as the artifact's
            raise UnusableFit(f"kept item factors do not read: {type(error).__name__}: {error}") from error
        if factors.ndim != 2 or factors.shape[0] != len(item_ids) or not np.isfinite(factors).all():
            raise UnusableFit(f"kept item factors of shape {factors.shape} for {len(item_ids)} items")
        return cls(until, item_ids, factors)


@dataclass(frozen=True)
class EarlierFit:
    """An earlier run's kept fit, read only if a run starts from it."""

    until: float  # to the second, rounded down (the manifest's)
    version: str
    read: Callable[[], ItemFactors]


def newest_usable(earlier: list[EarlierFit], until: float, config: TrainingConfig) -> EarlierFit | None:
    """The newest fit a fit of the events before `until` may start from (the module's rules; the
    configuration the caller compared)."""
    usable = [fit for fit in earlier
              if fit.until <= until and round((until - fit.until) / DAY) <= config.start_reuse_days]
    return max(usable, key=lambda fit: fit.until) if usable and config.start_reuse_days > 0 else None


def start_from(earlier: ItemFactors, item_ids: list[str], users: int, until: float,
               config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors for a fit of `users` x `item_ids` on the events before `until` from an
    earlier fit's items: known items take theirs, new ones implicit's cold start (uniform in
    [0, 0.01), the run's seed), and customers start at zero (the first iteration solves them from
    the items). The listing said when the earlier fit's events ended to the second; its own file
    says exactly, and is checked."""
    if earlier.until > until:
        raise UnusableFit("its events ended after this fit's")
    if earlier.factors.shape[1] != config.factors:
        raise UnusableFit(f"kept item factors have {earlier.factors.shape[1]} factors, the run {config.factors}")
    place = {item: k for k, item in enumerate(earlier.item_ids)}
    at = np.fromiter((place.get(item, -1) for item in item_ids), np.int64, len(item_ids))
    items = np.random.default_rng(config.random_seed).random((len(item_ids), config.factors), dtype=np.float32) * 0.01
    known = at >= 0
    items[known] = earlier.factors[at[known]]
    return np.zeros((users, config.factors), np.float32), items
