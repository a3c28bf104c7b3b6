"""Training parameters, with the defaults measured by bench/quality.py (see docs/model.md)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, AllowInfNan, BaseModel, BeforeValidator, ConfigDict, Field, Strict

from shared.events import EventType, iso_text


# Strict: lax pydantic would take false for 0 and "64" for 64; a config typo should be refused.
# Every number is bounded: a run must not overflow a date (holdout_days 10^12), allocate without
# end (factors 10^9) or fit NaNs (epsilon 10^-300, alpha 1e400 read as infinity).
Count = Annotated[int, Strict()]
Number = Annotated[float, Strict(), AllowInfNan(False)]
# numpy's RandomState, which implicit seeds, takes 0 to 2^32 - 1.
MAX_SEED = 2**32 - 1


class BlendWeights(BaseModel):
    """Fixed weights of the served blend (shared/training/hybrid.py), instead of choosing them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    als: Number = Field(default=0.0, ge=0, le=100)
    knn: Number = Field(default=0.0, ge=0, le=100)
    popularity: Number = Field(default=0.0, ge=0, le=100)


# A string, never a number (lax pydantic reads one as Unix seconds); checked by past_moment below.
AsOf = Annotated[datetime, BeforeValidator(iso_text), AfterValidator(lambda value: past_moment(value))]


class TrainingConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    window_days: Count = Field(default=365, ge=1, le=3650, description="Interactions older than this are ignored")
    holdout_days: Count = Field(default=14, ge=1, le=365, description="Most recent days held out for evaluation")
    max_interactions: Count = Field(default=5_000_000, ge=1, le=100_000_000,
                                    description="More in the window: refuse, use an export")
    event_weights: dict[EventType, Annotated[Number, Field(ge=0, le=100)]] = Field(default_factory=lambda: {
        EventType.PURCHASE: 1.0, EventType.ADD_TO_CART: 0.3, EventType.VIEW: 0.05,
        EventType.REMOVE_FROM_CART: 0.0, EventType.CLICK: 0.1,
        EventType.SEARCH: 0.0,  # a search says what the customer looked for, not which item they liked
        EventType.MESSAGE_SENT: 0.0,  # the shop's act, not the customer's (and it names no item)
        EventType.IMPRESSION: 0.0,  # shown is not chosen (and it names no item)
    })
    recency_half_life_days: Number = Field(default=60.0, gt=0, le=36_500)
    # Confidence = 1 + alpha * log(1 + weight / epsilon) (Hu, Koren, Volinsky 2008, eq. 6).
    alpha: Number = Field(default=1.0, gt=0, le=1000)
    epsilon: Number = Field(default=1.0, ge=1e-6, le=1e6)
    factors: Count = Field(default=64, ge=2, le=512)
    regularization: Number = Field(default=5.0, ge=0, le=10_000)
    iterations: Count = Field(default=15, ge=1, le=100)
    warm_iterations: Count = Field(
        default=3, ge=0, le=100,
        description="ALS iterations of a fit that starts from the run's previous fit (the validation folds, the "
                    "holdout and the final fit each add a few weeks to the one before); 0: every fit starts from "
                    "random factors with `iterations`")
    start_reuse_days: Count = Field(
        default=7, ge=0, le=365,
        description="A run's first ALS fit starts from the item factors of an earlier run's fit (with "
                    "`warm_iterations`) when that fit's events ended no later than its own and at most this many "
                    "days before, under the same configuration: the one cold fit was most of a night's fitting, "
                    "and a night or a week old start scored as well as a cold fit on both real shops "
                    "(docs/model.md); 0: every run's first fit is cold")
    start_chain_days: Count = Field(
        default=28, ge=1, le=365,
        description="A start carries what every fit before it learnt: a run's first fit is cold when the kept fits "
                    "descend from the cold fit of a run that ended more than this many days before, so the chain "
                    "begins again, and what an erasure removed from the data leaves the starts within that time")
    random_seed: Count = Field(default=42, ge=0, le=MAX_SEED)
    popularity_days: Count = Field(default=30, ge=1, le=3650,
                                   description="Window of the plain popularity baseline bench/quality.py reports")
    popularity_half_life_days: Number = Field(
        default=30.0, gt=0, le=36_500,
        description="Popular items: distinct buyers, each weighted 0.5^(age / this), counted back from the newest purchase")
    neighbours: Count = Field(default=50, ge=1, le=500,
                              description="Nearest items kept per item (cosine over purchases, squared)")
    blend: BlendWeights | None = Field(
        default=None, description="Fixed blend weights; unset: chosen on a validation split before the holdout")
    validation_folds: Count = Field(
        default=2, ge=1, le=6,
        description="Periods of holdout_days before the holdout the blend is chosen on (best sum of NDCGs), "
                    "each with its own fit: one more fit per fold")
    blend_reuse_days: Count = Field(
        default=6, ge=0, le=365,
        description="Take the blend the newest run chose on its validation folds, instead of choosing "
                    "again, while that choice is at most this many days old and the rest of the configuration is "
                    "unchanged: the folds are most of a run's time, and a week-old choice served as well as a "
                    "fresh one on both real shops (docs/model.md); 0: every run chooses")
    max_validation_users: Count = Field(default=5000, ge=1, le=1_000_000,
                                        description="Customers sampled to choose the blend")
    max_holdout_users: Count = Field(default=20_000, ge=1, le=10_000_000,
                                     description="Customers sampled from the holdout to score the model and "
                                                 "popularity on (the same customers for both)")
    as_of: AsOf | None = Field(
        default=None, description="Train and evaluate as of this moment (ISO 8601; without a zone, UTC): "
                                  "the window, decay, popularity and holdout count back from it, later events are "
                                  "ignored. Unset: now")
    top_k: Count = Field(default=10, ge=1, le=100)
    min_users_to_evaluate: Count = Field(default=5, ge=1, le=1_000_000)
    # Activation gate.
    min_gain_over_popularity: Number = Field(default=1.0, ge=0, le=100,
                                             description="model NDCG must exceed baseline x this")
    max_drop_from_active: Number = Field(default=0.1, ge=0, le=1, description="allowed NDCG drop vs the active version")



def past_moment(value: datetime) -> datetime:
    """An as_of: in UTC (a moment without a zone is read as UTC), not in the future, not before 1970."""
    try:
        value = value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)
    except OverflowError:  # year 1 at +14:00, year 9999 at -14:00: outside what a datetime holds in UTC
        raise ValueError("as_of is outside the years a time can be told in UTC") from None
    if value > datetime.now(timezone.utc):
        raise ValueError("as_of is in the future")
    if value.year < 1970:
        raise ValueError("as_of is before 1970")
    return value


def training_config(overrides: dict[str, Any] | None = None) -> TrainingConfig:
    """The defaults, then TRAINING_CONFIG's JSON (e.g. {"factors": 128}), then `overrides`."""
    configured = json.loads(os.environ.get("TRAINING_CONFIG") or "{}")
    return TrainingConfig.model_validate({**configured, **(overrides or {})})
