"""From interactions to the users x items confidence matrix ALS is fitted on."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from shared.events import EventType
from shared.training.config import TrainingConfig
from shared.training.interactions import EVENT_CODES, Interactions

DAY = 86_400.0


def at_most_days_before(earlier: float, later: float, days: int) -> bool:
    """Whether `earlier` is no later than `later` and at most `days` before it in whole days (a
    nightly run starts a little later or earlier each night): what a run may take of an earlier
    run's, a blend choice or a fit."""
    return earlier <= later and round((later - earlier) / DAY) <= days


def interaction_weights(interactions: Interactions, config: TrainingConfig, now: float) -> np.ndarray:
    """Weight of each event: its type's weight, more for larger quantities, less when old."""
    by_code = np.zeros(len(EVENT_CODES), dtype=np.float32)
    for event_type, weight in config.event_weights.items():
        by_code[EVENT_CODES[EventType(event_type)]] = weight
    age_days = np.maximum(now - interactions.timestamps, 0) / DAY
    decay = np.power(0.5, age_days / config.recency_half_life_days)
    # log: ten units of an item say more than one, not ten times more.
    quantity = 1.0 + np.log(np.maximum(interactions.quantities, 1.0))
    return (by_code[interactions.event_codes] * quantity * decay).astype(np.float32)


def confidence_matrix(interactions: Interactions, config: TrainingConfig, now: float,
                      shape: tuple[int, int], rows: np.ndarray | None = None) -> csr_matrix:
    """`rows`: a mask of the interactions to count (all when None), so that a part of the run's
    events needs no copy of its own (10M events are 250 MB of columns)."""
    weights = interaction_weights(interactions, config, now)
    keep = weights > 0 if rows is None else (weights > 0) & rows
    summed = coo_matrix((weights[keep], (interactions.users[keep], interactions.items[keep])),
                        shape=shape, dtype=np.float32).tocsr()
    summed.sum_duplicates()
    summed.data = 1.0 + config.alpha * np.log1p(summed.data / config.epsilon)
    return summed.astype(np.float32)


def purchase_matrix(interactions: Interactions, shape: tuple[int, int], rows: np.ndarray | None = None) -> csr_matrix:
    """1 where the user bought the item: what recommendations leave out by default. `rows`: as
    confidence_matrix's."""
    bought = interactions.event_codes == EVENT_CODES[EventType.PURCHASE]
    if rows is not None:
        bought &= rows
    ones = np.ones(int(bought.sum()), dtype=np.float32)
    matrix = coo_matrix((ones, (interactions.users[bought], interactions.items[bought])),
                        shape=shape).tocsr()
    matrix.data[:] = 1.0
    return matrix
