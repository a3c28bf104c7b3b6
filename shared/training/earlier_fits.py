"""The item factors of a run's fits, kept so that a later run's first fit starts from them.

Each run fits ALS cold once (15 iterations), then warm from that fit (3 each). The cold fit was
most of a night's fitting, and the night before already fitted nearly the same matrix. So a run
keeps the item factors of each fit that ended before its holdout (the validation folds' and the
holdout's: the final fit has seen everything, and the artifact holds it), and a later run's
first fit starts from the newest of them that:
- ended no later than that fit's own events (`until`): a start that has seen the window a fit is
  scored on would flatter the holdout the gate reads, or the folds that choose the blend;
- is at most `start_reuse_days` older than that, in whole days (nightly runs drift by minutes);
- descends from a cold fit (each start's start, back to the fit that had none) made by a run
  that ended at most `start_chain_days` before this one: the starts carry what every fit before
  them learnt, an erased customer's purchases too, so the chain begins again from a cold fit every
  few weeks, and what an erasure removed from the data leaves the starts within that time;
- was made under the same configuration (shared/training/job.py compares the parameters).
Items the earlier run did not know start as a cold fit starts them; customers start at zero and
are fitted from the items in the first iteration, so no customer's factors are kept anywhere but
in the run that fitted them.

Domain code plus its byte codec (numpy); storage reads and writes the bytes (ModelStore).
"""

from __future__ import annotations

import io
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from shared.training.config import TrainingConfig
from shared.training.matrix import DAY, at_most_days_before


class UnusableFit(ValueError):
    """Kept factors that cannot be read, or do not decode, or do not fit the run: it fits cold instead."""


@dataclass(frozen=True)
class ItemFactors:
    """A fit's item factors: row k is item `item_ids[k]`'s; the fit saw the events before `until`.
    `chain_began`: the end of the run whose cold fit it descends from (None: unknown, `until`);
    the manifest records it, the file does not."""

    until: float
    item_ids: list[str]
    factors: np.ndarray
    chain_began: float | None = None

    @property
    def began(self) -> float:
        return self.until if self.chain_began is None else self.chain_began

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, until=np.float64(self.until), item_ids=np.array(self.item_ids, dtype=str),
                 factors=np.ascontiguousarray(self.factors, dtype=np.float32))
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> ItemFactors:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
                until, ids, factors = float(arrays["until"]), arrays["item_ids"], arrays["factors"]
        except (ValueError, KeyError, TypeError, OSError, EOFError, zipfile.BadZipFile) as error:  # as the artifact's
            raise UnusableFit(f"kept item factors do not read: {type(error).__name__}: {error}") from error
        if (ids.dtype.kind != "U" or ids.ndim != 1 or factors.dtype.kind != "f" or factors.ndim != 2
                or factors.shape[0] != len(ids) or not math.isfinite(until) or not np.isfinite(factors).all()):
            raise UnusableFit(f"kept item factors of {factors.dtype} {factors.shape} for {ids.dtype} {ids.shape} "
                              f"items, until {until}")
        return cls(until, ids.tolist(), factors)


@dataclass(frozen=True)
class EarlierFit:
    """An earlier run's kept fit, read only if a run starts from it."""

    until: float  # to the second, rounded down (the manifest's)
    chain_began: float  # to the second, rounded down (the manifest's): ItemFactors.began
    version: str
    read: Callable[[], ItemFactors]


def usable(earlier: list[EarlierFit], until: float, run_end: float,
           config: TrainingConfig) -> tuple[list[EarlierFit], str]:
    """The fits a fit of the events before `until`, in a run ending at `run_end`, may start from,
    newest first (the module's rules; the configuration the caller compared), and when there is
    none, why."""
    if not earlier:
        return [], "no earlier run kept a fit under this configuration, fitted the same way"
    recent = [fit for fit in earlier if at_most_days_before(fit.until, until, config.start_reuse_days)]
    if not recent or config.start_reuse_days == 0:
        return [], (f"no fit an earlier run kept ended before this fit's events and at most "
                    f"{config.start_reuse_days} days before them")
    fresh = [fit for fit in recent if round((run_end - fit.chain_began) / DAY) <= config.start_chain_days]
    if not fresh:
        return [], (f"the fits earlier runs kept descend from a cold fit of a run more than {config.start_chain_days} "
                    f"days before this one (start_chain_days): the chain begins again")
    return sorted(fresh, key=lambda fit: fit.until, reverse=True), ""


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
