"""One training run: split, fit, evaluate against popularity, decide, fit on everything."""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from shared.training.artifact import ModelArtifact
from shared.training.config import TrainingConfig
from shared.training.evaluation import Metrics, holdout, ranking_metrics, top_items
from shared.training.interactions import Interactions
from shared.training.matrix import DAY, confidence_matrix, purchase_matrix

ACCEPTED, REJECTED, INSUFFICIENT_DATA = "accepted", "rejected", "insufficient_data"
POPULAR_LIST_LENGTH = 200


@dataclass
class TrainingData:
    interactions: Interactions
    end: float  # seconds since the epoch: "now" for this run
    countries: dict[str, str] = field(default_factory=dict)  # user_id -> ISO country
    customer_statistics: dict[str, Any] = field(default_factory=dict)
    excluded_users: int = 0  # withdrew consent: not trained on


@dataclass
class TrainingOutcome:
    status: str
    reason: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    artifact: ModelArtifact | None = None
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def decide(model: Metrics, baseline: Metrics, active_ndcg: float | None, config: TrainingConfig) -> tuple[str, str]:
    """The activation gate: better than popularity, and not much worse than what serves now."""
    needed = baseline.ndcg * config.min_gain_over_popularity
    if model.ndcg <= needed or model.ndcg <= 0:
        return REJECTED, (f"NDCG@{config.top_k} {model.ndcg:.4f} does not beat the popularity "
                          f"baseline's {baseline.ndcg:.4f} (x{config.min_gain_over_popularity:g})")
    if active_ndcg is not None and model.ndcg < active_ndcg * (1 - config.max_drop_from_active):
        return REJECTED, (f"NDCG@{config.top_k} {model.ndcg:.4f} is more than "
                          f"{config.max_drop_from_active:.0%} below the active version's {active_ndcg:.4f}")
    return ACCEPTED, (f"NDCG@{config.top_k} {model.ndcg:.4f} vs popularity {baseline.ndcg:.4f}"
                      + (f" and active {active_ndcg:.4f}" if active_ndcg is not None else ""))


def fit_als(matrix: csr_matrix, config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ALS with BLAS on one thread (implicit parallelises itself), seeded, quiet."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization,
                                    alpha=1.0, iterations=config.iterations, random_state=config.random_seed)
    with threadpool_limits(1, "blas"):
        model.fit(matrix, show_progress=False)
    return np.asarray(model.user_factors), np.asarray(model.item_factors)


def popularity(interactions: Interactions, until: float, config: TrainingConfig, n_items: int) -> np.ndarray:
    """Distinct buyers per item over the recent popularity window (all time if that is empty)."""
    bought = purchase_matrix(interactions.select(interactions.timestamps >= until - config.popularity_days * DAY),
                             (len(interactions.user_ids), n_items))
    counts = np.asarray((bought > 0).sum(axis=0)).ravel().astype(np.float64)
    if counts.sum() == 0:
        counts = np.asarray((purchase_matrix(interactions, bought.shape) > 0).sum(axis=0)).ravel().astype(np.float64)
    # Ties broken by all-time interactions, so the list is stable.
    return counts + np.bincount(interactions.items, minlength=n_items) * 1e-6


def train_model(data: TrainingData, config: TrainingConfig, active_ndcg: float | None = None) -> TrainingOutcome:
    timings: dict[str, float] = {}
    interactions = data.interactions
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    counts = {"interactions": len(interactions), "users": shape[0], "items": shape[1],
              "excluded_users": data.excluded_users}
    if len(interactions) == 0:
        return TrainingOutcome(INSUFFICIENT_DATA, f"no interactions in the last {config.window_days} days",
                               counts=counts)
    started = time.perf_counter()
    cutoff = data.end - config.holdout_days * DAY
    before = interactions.select(interactions.timestamps < cutoff)
    after = interactions.select(interactions.timestamps >= cutoff)
    train_matrix = confidence_matrix(before, config, cutoff, shape)
    bought_before = purchase_matrix(before, shape)  # the answers' exclusions and the holdout's
    evaluated = holdout(purchase_matrix(after, shape), bought_before,
                        known_users=np.diff(train_matrix.indptr) > 0)
    timings["matrix"] = time.perf_counter() - started
    counts["evaluated_users"] = len(evaluated.users)
    if len(evaluated.users) < config.min_users_to_evaluate:
        return TrainingOutcome(
            INSUFFICIENT_DATA,
            f"only {len(evaluated.users)} customers bought something new in the last {config.holdout_days} "
            f"days; at least {config.min_users_to_evaluate} are needed to evaluate a model",
            counts=counts, timings=timings)

    started = time.perf_counter()
    user_factors, item_factors = fit_als(train_matrix, config)
    timings["fit"] = time.perf_counter() - started

    started = time.perf_counter()
    recent = popularity(before, cutoff, config, shape[1])
    model_metrics = ranking_metrics(top_items(lambda users: user_factors[users] @ item_factors.T,
                                              evaluated.users, bought_before, config.top_k),
                                    evaluated.relevant, shape[1])
    baseline_metrics = ranking_metrics(top_items(lambda users: np.tile(recent, (len(users), 1)),
                                                 evaluated.users, bought_before, config.top_k),
                                       evaluated.relevant, shape[1])
    status, reason = decide(model_metrics, baseline_metrics, active_ndcg, config)
    timings["evaluate"] = time.perf_counter() - started

    started = time.perf_counter()
    # The user factors stay here: serving folds each customer in from their own history.
    _, item_factors = fit_als(confidence_matrix(interactions, config, data.end, shape), config)
    timings["final_fit"] = time.perf_counter() - started
    artifact = ModelArtifact(
        item_ids=interactions.item_ids, item_factors=item_factors,
        popular_items=_ranked_ids(popularity(interactions, data.end, config, shape[1]), interactions.item_ids),
        popular_by_country=_popular_by_country(interactions, data, config),
        customer_statistics=data.customer_statistics,
        parameters=config.model_dump(mode="json"),
    )
    return TrainingOutcome(status, reason, {"model": model_metrics.as_dict(),
                                            "popularity": baseline_metrics.as_dict()},
                           artifact, counts, timings)


def _ranked_ids(scores: np.ndarray, ids: list[str]) -> list[str]:
    order = np.argsort(-scores, kind="stable")[:POPULAR_LIST_LENGTH]
    return [ids[i] for i in order if scores[i] >= 1]


def _popular_by_country(interactions: Interactions, data: TrainingData, config: TrainingConfig) -> dict[str, list[str]]:
    users_by_country: dict[str, list[int]] = defaultdict(list)
    for index, user_id in enumerate(interactions.user_ids):
        if user_id in data.countries:
            users_by_country[data.countries[user_id]].append(index)
    popular = {}
    for country, users in users_by_country.items():
        mine = interactions.select(np.isin(interactions.users, users))
        ranked = _ranked_ids(popularity(mine, data.end, config, len(interactions.item_ids)), interactions.item_ids)
        if len(ranked) >= 10:
            popular[country] = ranked
    return popular
