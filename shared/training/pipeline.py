"""One training run: split, choose the blend, fit, evaluate against popularity, decide, fit on everything.

Three splits of the window, all counted back from its end (now, or `as_of`):
- validation: the `validation_folds` (2) periods of `holdout_days` before the holdout, each scored
  with its own fit on the events before it. The blend's weights (shared/training/hybrid.py) are
  chosen there, from `BLENDS`, on the shop's own data (best sum of NDCGs over the folds); the
  holdout itself is never looked at. A run may take an earlier run's choice instead, while it is
  at most `blend_reuse_days` old (`reusable`);
- holdout: the last `holdout_days`. The chosen blend and popularity are scored there, and the gate
  decides which strategy serves: the model, or popularity when the model does not beat it;
- everything: the published version is fitted on the whole window.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

import numpy as np
from scipy.sparse import csr_matrix

from shared.bulk import mapped_on_threads
from shared.events import EventType
from shared.observability import logger
from shared.training.artifact import ModelArtifact
from shared.training.blend_ranking import rank_blends
from shared.training.complements import (Complements, basket_keys_by_day, complements_for_artifact,
                                         compute_complements, titles_by_index)
from shared.training.config import TrainingConfig
from shared.training.earlier_fits import EarlierFit, ItemFactors, UnusableFit, start_from, usable
from shared.training.evaluation import Holdout, Metrics, holdout, ranking_metrics, top_items_of_one_row
from shared.training.fit_device import CPU, GPU, Device
from shared.training.hybrid import BLENDS, DEFAULT_BLEND, Blend, Scorer, item_neighbours, recent_popularity
from shared.training.interactions import EVENT_CODES, Interactions
from shared.training.interests import INTEREST_LIST_LENGTH, MAX_INTERESTS, MIN_INTEREST_BUYERS, normalise
from shared.training.matrix import DAY, at_most_days_before, confidence_matrix, purchase_matrix

ACCEPTED, REJECTED, INSUFFICIENT_DATA = "accepted", "rejected", "insufficient_data"
POPULAR = "popular"
POPULAR_LIST_LENGTH = 200
CATEGORY_LIST_LENGTH = 20
# Customers scored at a time when the blends are compared: each blend's scores of a chunk stay in
# the processor's cache while they are ranked.
BLEND_CHUNK = 64


@dataclass
class TrainingData:
    interactions: Interactions
    end: float  # seconds since the epoch: "now" (or as_of) for this run; later events are ignored
    countries: dict[str, str] = field(default_factory=dict)  # user_id -> ISO country
    customer_statistics: dict[str, Any] = field(default_factory=dict)
    excluded_users: int = 0  # withdrew consent: not trained on
    categories: dict[str, str] = field(default_factory=dict)  # item_id -> category
    titles: dict[str, str] = field(default_factory=dict)  # item_id -> title: tells variants apart
    # user_id -> declared interests, normalised (shared/training/interests.py), of those trained on
    interests: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class TrainingOutcome:
    status: str
    reason: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    artifact: ModelArtifact | None = None
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    strategy: str = POPULAR  # what this version serves: hybrid, als, knn, or popular
    strategy_reason: str = ""
    popularity_is_better: bool = False  # rejected because popularity beat the model on the holdout
    gpu_failure: str = ""  # the fits fell back to the CPU, and why (WarmStart)
    blend_choice: BlendChoice | None = None  # the evaluation's: the blend, why, and which run's validation chose it
    fit_start: str = ""  # where the run's first ALS fit started (WarmStart.first_start)


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


def fit_als(matrix: csr_matrix, config: TrainingConfig, start: tuple[np.ndarray, np.ndarray] | None = None,
            device: Device = CPU, cold_iterations: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """implicit's ALS with BLAS on one thread (implicit parallelises itself), seeded, quiet; from
    `start` (user and item factors of the same shape) with `warm_iterations`, when given, and
    otherwise cold with `cold_iterations` (by default `iterations`: WarmStart gives fewer to a
    fit that warm fits will go on from). On the
    GPU (a device fit_device.resolve allowed), implicit's own to_gpu and to_cpu carry the factors
    there and back. A cold GPU fit starts from factors drawn here with the run's seed: implicit's
    GPU model seeds from the clock when the seed is 0, and a run must be reproducible."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    warm = starts_warm(start, config)
    model = AlternatingLeastSquares(factors=config.factors, regularization=config.regularization, alpha=1.0,
                                    iterations=config.warm_iterations if warm else cold_iterations or config.iterations,
                                    random_state=config.random_seed)
    if warm:
        assert start is not None
        model.user_factors, model.item_factors = start[0].copy(), start[1].copy()
    elif device == GPU:
        model.user_factors, model.item_factors = _first_factors(matrix.shape, config)
    fitting = model.to_gpu() if device == GPU else model
    with threadpool_limits(1, "blas"):
        fitting.fit(matrix, show_progress=False)
    fitted = fitting.to_cpu() if device == GPU else fitting
    return np.asarray(fitted.user_factors), np.asarray(fitted.item_factors)


def starts_warm(start: tuple[np.ndarray, np.ndarray] | None, config: TrainingConfig) -> bool:
    """Whether a fit from `start` runs warm (`warm_iterations` from it) rather than cold."""
    return start is not None and config.warm_iterations > 0


def _first_factors(shape: tuple[int, int], config: TrainingConfig) -> tuple[np.ndarray, np.ndarray]:
    """Users' and items' first factors, uniform in +-0.5 / factors as implicit's GPU model draws
    them, from the run's seed."""
    rng = np.random.default_rng(config.random_seed)
    scale = 0.5 / config.factors
    return tuple(rng.uniform(-scale, scale, (rows, config.factors)).astype(np.float32)  # type: ignore[return-value]
                 for rows in shape)


class WarmStart:
    """The factors of a run's latest ALS fit. A run fits the same customers and items up to four
    times, each fit on a few weeks more than the one before (validation folds oldest first, the
    holdout, everything). Each fit after the first starts from the one before and runs
    `warm_iterations` (3), not `iterations` (15). The first starts from an `earlier` run's
    fit when earlier_fits.py's rules allow (`item_ids`: the run's items), and cold otherwise;
    a cold one that warm fits go on from before the holdout's runs that many `warm_iterations`
    fewer, so that the holdout's fit, which the gate judges, has had `iterations` in all: 18
    iterations on a shop's first night instead of 60, as good on both real shops (docs/model.md
    has the measure).
    `keep` is handed the item factors of each fit whose events end by `keep_until` (the holdout's
    start: the final fit has seen everything), for later runs, as each is made."""

    def __init__(self, device: Device = CPU, earlier: Sequence[EarlierFit] = (), item_ids: list[str] | None = None,
                 keep: Callable[[ItemFactors], None] | None = None, keep_until: float = -math.inf,
                 run_end: float | None = None) -> None:
        self.device = device
        self.factors: tuple[np.ndarray, np.ndarray] | None = None
        self.gpu_failure = ""  # why the fits went on on the CPU after a GPU fit failed
        self.earlier, self.item_ids = list(earlier), item_ids
        self.keep, self.keep_until = keep, keep_until
        self.first_start = ""  # where the run's first fit started: cold, or which earlier run's fit
        self.run_end = run_end
        self.chain_began: float | None = None  # the end of the run whose cold fit the latest descends from

    def fit(self, matrix: csr_matrix, config: TrainingConfig, until: float | None = None,
            fits_before_holdout: int = 0) -> np.ndarray:
        """The item factors of a fit on `matrix` (the events before `until`, when given), from the
        last fit's factors when they fit its shape, or for the run's first fit from an earlier
        run's. `fits_before_holdout`: the fits still to come up to the holdout's, this one left
        out, which a cold fit leaves their share of the iterations to (a fold then left out for
        too few customers leaves the holdout's fit that share short). A GPU fit that fails (out of
        the device's memory, a CUDA error) is done again on the CPU, and so is every later fit of
        the run: a night's model a little later, not none."""
        start = self.factors
        if start is not None and (len(start[0]), *start[1].shape) != (*matrix.shape, config.factors):
            start = None
        chain_began = self.chain_began
        cold_iterations = max(1, config.iterations - config.warm_iterations * fits_before_holdout)
        if self.factors is None and until is not None:
            start, chain_began = self._earlier_start(matrix.shape[0], config, until, cold_iterations)
        try:
            self.factors = fit_als(matrix, config, start, self.device, cold_iterations)
        except (RuntimeError, MemoryError) as error:  # what implicit's CUDA code raises
            if self.device != GPU:
                raise
            self.device = CPU
            self.gpu_failure = f"cpu: the GPU fit failed ({type(error).__name__}: {error})"
            self.factors = fit_als(matrix, config, start, CPU, cold_iterations)
        # A cold fit begins a chain of starts, dated by its run's end.
        self.chain_began = chain_began if starts_warm(start, config) else self._run_end(until)
        if (self.keep is not None and self.item_ids is not None and until is not None and until <= self.keep_until
                and config.warm_iterations > 0):  # a run of cold fits starts nothing from them
            self.keep(ItemFactors(until, self.item_ids, self.factors[1], self.chain_began))
        return self.factors[1]

    def _run_end(self, until: float | None) -> float | None:
        """The end of the run the fits belong to, or without one given, the fit's own."""
        return self.run_end if self.run_end is not None else until

    def _earlier_start(self, users: int, config: TrainingConfig, until: float,
                       cold_iterations: int) -> tuple[tuple[np.ndarray, np.ndarray] | None, float | None]:
        """The newest usable earlier fit's start and when its chain began (one that turns out
        unusable gives way to the next); None for a cold fit."""
        cold = f"cold ({cold_iterations} iterations): "
        if config.warm_iterations == 0:
            self.first_start = cold + "every fit is cold (warm_iterations 0)"
            return None, None
        candidates, why_none = usable(self.earlier if self.item_ids is not None else [], until,
                                      self._run_end(until), config)
        self.first_start = cold + why_none
        for chosen in candidates:
            try:
                start = start_from(chosen.read(), self.item_ids, users, until, config)
            except UnusableFit as error:
                logger.warning("an earlier run's fit could not be used", extra={"version": chosen.version,
                                                                               "reason": str(error)})
                self.first_start = cold + f"the fit of run {chosen.version} could not be used ({error})"
                continue
            self.first_start = (f"from the fit of run {chosen.version}, whose events ended "
                                f"{(until - chosen.until) / DAY:.1f} days before this fit's "
                                f"({config.warm_iterations} iterations)")
            return start, chosen.chain_began
        return None, None


def popularity(interactions: Interactions, until: float, config: TrainingConfig, n_items: int) -> np.ndarray:
    """The plain baseline bench/quality.py reports: distinct buyers per item over the
    `popularity_days` before `until` (all time if that is empty)."""
    bought = purchase_matrix(interactions, (len(interactions.user_ids), n_items),
                             interactions.timestamps >= until - config.popularity_days * DAY)
    counts = np.asarray((bought > 0).sum(axis=0)).ravel().astype(np.float64)
    if counts.sum() == 0:
        counts = np.asarray((purchase_matrix(interactions, bought.shape) > 0).sum(axis=0)).ravel().astype(np.float64)
    return counts + np.bincount(interactions.items, minlength=n_items) * 1e-6


def popular_scores(interactions: Interactions, until: float, config: TrainingConfig, n_items: int) -> np.ndarray:
    """What the popular strategy ranks by, as of `until` (events from then on are not counted):
    recent popularity (decayed distinct buyers, anchored at the newest purchase), ties broken by
    all-time interactions so the list is stable. Positive for every item bought at least once:
    never an empty list while any purchase exists."""
    before = interactions.timestamps < until
    return (recent_popularity(interactions, until, config.popularity_half_life_days, n_items).astype(np.float64)
            + np.bincount(interactions.items[before], minlength=n_items) * 1e-9)


@dataclass
class History:
    """What a fit needs of the events before a moment, built once for the holdout that counts the
    customers and for the fit that scores them. The events themselves are neither kept nor
    copied: the matrices take the rows before the moment from the run's columns (a copy was most
    of the window, 250 MB at 10M events, and the run's peak memory as it was made)."""

    until: float
    rows: csr_matrix  # confidence rows of every user, as of `until`
    bought: csr_matrix  # purchases before `until`: what the answers leave out
    popularity: np.ndarray  # popular_scores as of `until`

    @classmethod
    def before(cls, interactions: Interactions, until: float, config: TrainingConfig,
               shape: tuple[int, int]) -> History:
        before = interactions.timestamps < until
        return cls(until, confidence_matrix(interactions, config, until, shape, before),
                   purchase_matrix(interactions, shape, before), popular_scores(interactions, until, config, shape[1]))

    @property
    def known_users(self) -> np.ndarray:
        """Customers with any weighed event: the only ones a holdout scores."""
        return np.diff(self.rows.indptr) > 0


@dataclass
class Fitted:
    """A blend fitted on one part of the data, ready to score its rows."""

    scorer: Scorer
    rows: csr_matrix  # confidence rows of every user, as of the part's end
    bought: csr_matrix  # purchases before the part's end: what the answers leave out
    popularity: np.ndarray  # popular_scores at the part's end


def fit_blend(history: History, config: TrainingConfig, blend: Blend, warm: WarmStart | None = None,
              fits_before_holdout: int = 0) -> Fitted:
    """ALS (when the blend uses it), item neighbours and recent popularity, on the history."""
    item_factors = ((warm or WarmStart()).fit(history.rows, config, history.until, fits_before_holdout)
                    if blend.als > 0
                    else np.zeros((0, config.factors), np.float32))
    neighbours = item_neighbours(history.bought, config.neighbours) if blend.knn > 0 else None
    scorer = Scorer(item_factors, config.regularization, neighbours, history.popularity, blend, config.random_seed)
    return Fitted(scorer, history.rows, history.bought, history.popularity)


def score_blends(fitted: Fitted, evaluated: Holdout, blends: tuple[Blend, ...], k: int) -> dict[Blend, Metrics]:
    """Every blend on the same customers; the parts are computed once, then weighed per blend."""
    n_items = fitted.rows.shape[1]
    return {blend: ranking_metrics(ranked, evaluated.relevant, n_items)
            for blend, ranked in ranked_by_blends(fitted, evaluated.users, blends, k).items()}


def ranked_by_blends(fitted: Fitted, users: np.ndarray, blends: tuple[Blend, ...], k: int) -> dict[Blend, np.ndarray]:
    """Each blend's k best items for each of `users` (their purchases left out): best_first's lists
    of the blend's scores on every item (blend_ranking.py), in chunks on both cores."""
    ranked: dict[Blend, list[np.ndarray]] = {blend: [] for blend in blends}
    popularity_nan_free = not np.isnan(fitted.scorer.popularity).any()

    def ranked_chunk(start: int) -> dict[Blend, np.ndarray]:
        chunk = users[start : start + BLEND_CHUNK]
        (als, _), (knn, _) = (part or (None, None) for part in fitted.scorer.parts(fitted.rows[chunk]))
        # A blend's scores hold a NaN only where a part does (its z-scores are bounded, its
        # weights at most 100): checked once here, not once per blend.
        nan_free = popularity_nan_free and not any(np.isnan(part).any() for part in (als, knn) if part is not None)
        excluded = fitted.bought[chunk].tocoo()
        return rank_blends(blends, als, knn, fitted.scorer.popularity, excluded, k, nan_free)

    for chunk in mapped_on_threads(ranked_chunk, range(0, len(users), BLEND_CHUNK)):
        for blend, top in chunk.items():
            ranked[blend].append(top)
    return {blend: np.vstack(parts) if parts else np.zeros((0, k), np.int64) for blend, parts in ranked.items()}


class BlendChoice(NamedTuple):
    blend: Blend
    reason: str  # why this blend, as the run that chose it said
    at: float | None = None  # the end of the run whose validation folds chose it; None: fixed, or the default
    taken_again: str = ""  # how old a choice a later run took, and why it could

    @property
    def described(self) -> str:
        return f"{self.reason}; {self.taken_again}" if self.taken_again else self.reason


def choose_blend(interactions: Interactions, cutoff: float, config: TrainingConfig,
                 shape: tuple[int, int], warm: WarmStart | None = None,
                 chosen_before: BlendChoice | None = None) -> BlendChoice:
    """The blend with the best sum of NDCGs over the validation folds, never looking at the holdout;
    or `chosen_before`, an earlier run's validated choice, while it is `reusable`.

    Fold i (from 0) is the `holdout_days` ending `i x holdout_days` before the cutoff, scored with
    a fit on the events before it: fold 0 is the month before the holdout, fold 1 the month before
    that. `validation_folds` (2) of them: one month alone is a few hundred customers on a small
    shop, and the best mixes are within noise of each other there. A fold with too few customers
    is left out; none left, the default blend."""
    if config.blend is not None:
        blend = Blend(config.blend.als, config.blend.knn, config.blend.popularity)
        return BlendChoice(blend, f"blend fixed by the configuration: {blend.as_dict()}")
    end = cutoff + config.holdout_days * DAY
    if chosen_before is not None and reusable(chosen_before, end, config):
        assert chosen_before.at is not None
        chosen = datetime.fromtimestamp(chosen_before.at, timezone.utc)
        return chosen_before._replace(taken_again=(f"chosen by the run ending {chosen:%Y-%m-%d %H:%M} UTC, "
                                                   f"{(end - chosen_before.at) / DAY:.1f} days before this one, "
                                                   f"and taken again (blend_reuse_days {config.blend_reuse_days})"))
    folds: list[tuple[int, dict[Blend, Metrics]]] = []
    warm = warm or WarmStart()
    for fold in reversed(range(config.validation_folds)):  # oldest first: each fit starts from the one before
        fold_end = cutoff - fold * config.holdout_days * DAY
        scored = _score_fold(interactions, fold_end - config.holdout_days * DAY, fold_end, config, shape, warm,
                             fits_before_holdout=fold + 1)
        if scored is not None:
            folds.insert(0, scored)
    if not folds:
        return BlendChoice(DEFAULT_BLEND, (f"too few customers to validate on (fewer than {config.min_users_to_evaluate} "
                                           f"in each of {config.validation_folds} validation folds): the default "
                                           f"blend {DEFAULT_BLEND.as_dict()}"))
    totals = {blend: sum(scored[blend].ndcg for _, scored in folds) for blend in BLENDS}
    best = max(BLENDS, key=lambda blend: (round(totals[blend], 6), -BLENDS.index(blend)))
    per_fold = "; ".join(f"{customers} customers: {scored[best].ndcg:.4f}, popularity alone {scored[BLENDS[0]].ndcg:.4f}"
                         for customers, scored in folds)
    return BlendChoice(best, (f"blend {best.as_dict()} scored NDCG@{config.top_k} {totals[best] / len(folds):.4f} "
                              f"on average on {len(folds)} validation split{'s' if len(folds) > 1 else ''} of "
                              f"{config.holdout_days} days before the holdout ({per_fold})"), end)


def reusable(earlier: BlendChoice, end: float, config: TrainingConfig) -> bool:
    """Whether a run ending at `end` may take an `earlier` choice instead of making one: a
    validated choice, at most `blend_reuse_days` old in whole days (a nightly run starts a little
    later or earlier each night), never a later run's (as_of runs a backfill at an earlier end). A
    run's folds end where its holdout starts, so only the choice of a run ending no later than
    this one has seen none of this holdout. The configuration the choice was made under is the
    caller's to compare (shared/training/job.py)."""
    return (config.blend_reuse_days > 0 and earlier.at is not None
            and at_most_days_before(earlier.at, end, config.blend_reuse_days))


def _score_fold(interactions: Interactions, start: float, end: float, config: TrainingConfig,
                shape: tuple[int, int], warm: WarmStart,
                fits_before_holdout: int) -> tuple[int, dict[Blend, Metrics]] | None:
    """Every blend of `BLENDS`, fitted on the events before `start`, scored on [start, end); None
    (and no fit) when fewer than `min_users_to_evaluate` customers bought something new there.
    `fits_before_holdout`: WarmStart.fit's."""
    earlier = History.before(interactions, start, config, shape)
    in_fold = (interactions.timestamps >= start) & (interactions.timestamps < end)
    evaluated = holdout(purchase_matrix(interactions, shape, in_fold), earlier.bought, known_users=earlier.known_users)
    if len(evaluated.users) < config.min_users_to_evaluate:
        return None
    evaluated = sampled(evaluated, config.max_validation_users, config.random_seed)
    fitted = fit_blend(earlier, config, Blend(1, 1, 1), warm, fits_before_holdout)
    return len(evaluated.users), score_blends(fitted, evaluated, BLENDS, config.top_k)


def sampled(evaluated: Holdout, most: int, seed: int) -> Holdout:
    """At most `most` of the customers, drawn with the run's seed: scoring costs customers x items,
    and past a few thousand customers the metrics barely move."""
    if len(evaluated.users) <= most:
        return evaluated
    pick = np.sort(np.random.default_rng(seed).choice(len(evaluated.users), most, replace=False))
    return Holdout(evaluated.users[pick], evaluated.relevant[pick])


@dataclass
class Evaluation:
    """What the holdout says: the chosen blend and popularity, scored alike."""

    choice: BlendChoice
    model: Metrics
    popularity: Metrics
    evaluated_users: int

    @property
    def blend(self) -> Blend:
        return self.choice.blend

    @property
    def blend_reason(self) -> str:
        return self.choice.described


@dataclass
class HoldoutSplit:
    """The run's events (to its end), the history before the holdout and the customers the
    holdout scores: made once, for counting and for evaluating."""

    interactions: Interactions
    shape: tuple[int, int]
    cutoff: float
    earlier: History
    evaluated: Holdout

    @classmethod
    def of(cls, interactions: Interactions, end: float, config: TrainingConfig) -> HoldoutSplit:
        """`interactions`: the run's, to its `end` (_until_end)."""
        shape = (len(interactions.user_ids), len(interactions.item_ids))
        cutoff = end - config.holdout_days * DAY
        earlier = History.before(interactions, cutoff, config, shape)
        evaluated = holdout(purchase_matrix(interactions, shape, interactions.timestamps >= cutoff),
                            earlier.bought, known_users=earlier.known_users)
        return cls(interactions, shape, cutoff, earlier, evaluated)


def evaluate(data: TrainingData, config: TrainingConfig, warm: WarmStart | None = None,
             split: HoldoutSplit | None = None, chosen_before: BlendChoice | None = None) -> Evaluation | str:
    """Choose the blend before the holdout (or take `chosen_before`: choose_blend), fit it, score it and
    popularity on the holdout; or why not. `split`: the data's HoldoutSplit, when the caller made
    it already."""
    split = split or HoldoutSplit.of(_until_end(data), data.end, config)
    interactions, shape, cutoff, earlier, evaluated = (split.interactions, split.shape, split.cutoff, split.earlier,
                                                       split.evaluated)
    if len(evaluated.users) < config.min_users_to_evaluate:
        return (f"only {len(evaluated.users)} customers bought something new in the last {config.holdout_days} "
                f"days; at least {config.min_users_to_evaluate} are needed to evaluate a model")
    evaluated = sampled(evaluated, config.max_holdout_users, config.random_seed)
    warm = warm or WarmStart()
    choice = choose_blend(interactions, cutoff, config, shape, warm, chosen_before)
    blend = choice.blend
    fitted = fit_blend(earlier, config, blend, warm)
    if blend.als == 0 and blend.knn == 0:  # popularity alone: one row for every customer
        model = ranking_metrics(top_items_of_one_row(fitted.scorer.weighed(blend, None, None, 1)[0], evaluated.users,
                                                     fitted.bought, config.top_k), evaluated.relevant, shape[1])
    else:
        # Ranked as the validation ranks each blend: the lists every item's scores give, from the
        # cells that can make them (blend_ranking.py), on both cores.
        model = score_blends(fitted, evaluated, (blend,), config.top_k)[blend]
    baseline = ranking_metrics(top_items_of_one_row(fitted.popularity, evaluated.users, fitted.bought, config.top_k),
                               evaluated.relevant, shape[1])
    return Evaluation(choice, model, baseline, len(evaluated.users))


def train_model(data: TrainingData, config: TrainingConfig, active_ndcg: float | None = None,
                device: Device = CPU, chosen_before: BlendChoice | None = None,
                earlier_fits: Sequence[EarlierFit] = (), keep_fit: Callable[[ItemFactors], None] | None = None
                ) -> TrainingOutcome:
    """`chosen_before`: the newest blend a run chose (job.latest_blend_choice), which this run may take
    (choose_blend); `earlier_fits`: earlier runs' kept fits under this configuration, which its first
    fit may start from; `keep_fit`: handed each fit a later run may start from (WarmStart)."""
    timings: dict[str, float] = {}
    interactions = _until_end(data)
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    counts = {"interactions": len(interactions), "users": shape[0], "items": shape[1],
              "excluded_users": data.excluded_users}
    if len(interactions) == 0:
        return TrainingOutcome(INSUFFICIENT_DATA, f"no interactions in the last {config.window_days} days",
                               counts=counts, strategy_reason="nothing to serve: no purchase yet")
    has_purchases = bool((interactions.event_codes == EVENT_CODES[EventType.PURCHASE]).any())
    started = time.perf_counter()
    split = HoldoutSplit.of(interactions, data.end, config)
    evaluated = split.evaluated
    counts["evaluated_users"] = len(evaluated.users)
    timings["matrix"] = time.perf_counter() - started
    if len(evaluated.users) < config.min_users_to_evaluate:
        reason = (f"only {len(evaluated.users)} customers bought something new in the last {config.holdout_days} "
                  f"days; at least {config.min_users_to_evaluate} are needed to evaluate a model")
        if not has_purchases:
            return TrainingOutcome(INSUFFICIENT_DATA, reason, counts=counts, timings=timings,
                                   strategy_reason="nothing to serve: no purchase yet")
        return TrainingOutcome(INSUFFICIENT_DATA, reason, counts=counts, timings=timings,
                               artifact=_artifact(data, interactions, config, None, POPULAR),
                               strategy=POPULAR, strategy_reason="too little data to evaluate a model: popular items")

    started = time.perf_counter()
    warm = WarmStart(device, earlier_fits, interactions.item_ids, keep_fit, split.cutoff, data.end)
    result = evaluate(data, config, warm, split, chosen_before)
    del split, evaluated  # the final fit's history takes their place
    timings["evaluate"] = time.perf_counter() - started
    assert isinstance(result, Evaluation)  # the same customers were counted above
    status, reason = decide(result.model, result.popularity, active_ndcg, config)
    popularity_is_better = status == REJECTED and result.model.ndcg <= (
        result.popularity.ndcg * config.min_gain_over_popularity)
    if popularity_is_better:
        strategy = POPULAR
        if result.blend.strategy == POPULAR:  # the blend grid's own choice: popularity alone
            strategy_reason = (f"the validation months chose popularity alone ({result.blend_reason}); "
                               f"the popular list serves (NDCG@{config.top_k} {result.popularity.ndcg:.4f} "
                               f"on the holdout)")
        else:
            strategy_reason = (f"popularity (NDCG@{config.top_k} {result.popularity.ndcg:.4f}) is at least as good "
                               f"as the {result.blend.strategy} model ({result.model.ndcg:.4f}) on the holdout")
    else:
        strategy = result.blend.strategy
        strategy_reason = (f"{strategy}: NDCG@{config.top_k} {result.model.ndcg:.4f} vs popularity "
                           f"{result.popularity.ndcg:.4f} on the holdout; {result.blend_reason}")

    started = time.perf_counter()
    # The user factors stay here: serving folds each customer in from their own history.
    everything = None if strategy == POPULAR else History.before(interactions, data.end + 1, config, shape)
    fitted = None if everything is None else fit_blend(everything, config, result.blend, warm)
    timings["final_fit"] = time.perf_counter() - started
    artifact = _artifact(data, interactions, config, fitted, strategy, warm)
    return TrainingOutcome(status, reason, {"model": result.model.as_dict(), "popularity": result.popularity.as_dict()},
                           artifact, counts, timings, strategy, strategy_reason, popularity_is_better,
                           warm.gpu_failure, result.choice, warm.first_start)


def _until_end(data: TrainingData) -> Interactions:
    """Events after the run's end (as_of) are ignored, whatever the loader returned."""
    interactions = data.interactions
    later = interactions.timestamps > data.end
    return interactions.select(~later) if later.any() else interactions


def _artifact(data: TrainingData, interactions: Interactions, config: TrainingConfig, fitted: Fitted | None,
              strategy: str, warm: WarmStart | None = None) -> ModelArtifact:
    n_items = len(interactions.item_ids)
    # The final fit's history is as of the same moment: its popular scores are these.
    scores = fitted.popularity if fitted is not None else popular_scores(interactions, data.end + 1, config, n_items)
    scorer = fitted.scorer if fitted is not None else None
    item_factors = (scorer.als.item_factors if scorer is not None and scorer.als is not None
                    else np.zeros((0, config.factors), np.float32))
    if strategy != POPULAR and item_factors.shape[0] == 0:
        # A blend without ALS still publishes factors: similar items and explanations use them.
        item_factors = (warm or WarmStart()).fit(fitted.rows, config, data.end + 1)
    parameters = config.model_dump(mode="json")
    if scorer is not None:
        parameters["blend"] = scorer.blend.as_dict()
    by_category = _popular_by_category(scores, interactions.item_ids, data.categories)
    return ModelArtifact(
        item_ids=interactions.item_ids, item_factors=item_factors,
        popular_items=_ranked_ids(scores, interactions.item_ids),
        popular_by_country=_popular_by_country(interactions, data, config),
        customer_statistics=data.customer_statistics,
        parameters=parameters,
        strategy=strategy,
        popular_by_category=by_category,
        item_popularity=scores.astype(np.float32),
        neighbours=scorer.neighbours if scorer is not None else None,
        complements=complements_for_artifact(_complements(data, interactions)),
        popular_by_interest=_popular_by_interest(interactions, data, config, set(by_category)),
    )


def _complements(data: TrainingData, interactions: Interactions) -> Complements:
    """Bought together: pairs in one basket (an order; without an order id, a customer's day)."""
    bought = interactions.select(interactions.event_codes == EVENT_CODES[EventType.PURCHASE])
    baskets = bought.baskets if bought.baskets is not None else basket_keys_by_day(bought.users, bought.timestamps)
    return compute_complements(bought.users, bought.items, baskets, len(interactions.item_ids),
                               titles_by_index(interactions.item_ids, data.titles))


def _ranked_ids(scores: np.ndarray, ids: list[str], length: int = POPULAR_LIST_LENGTH) -> list[str]:
    order = np.argsort(-scores, kind="stable")[:length]
    return [ids[i] for i in order if scores[i] > 1e-6]  # bought at least once (the tie-break alone is smaller)


def _popular_by_country(interactions: Interactions, data: TrainingData, config: TrainingConfig) -> dict[str, list[str]]:
    users_by_country: dict[str, list[int]] = defaultdict(list)
    for index, user_id in enumerate(interactions.user_ids):
        if user_id in data.countries:
            users_by_country[data.countries[user_id]].append(index)
    popular = {}
    for country, users in users_by_country.items():
        mine = interactions.select(np.isin(interactions.users, users))
        ranked = _ranked_ids(popular_scores(mine, data.end + 1, config, len(interactions.item_ids)),
                             interactions.item_ids)
        if len(ranked) >= 10:
            popular[country] = ranked
    return popular


def _popular_by_interest(interactions: Interactions, data: TrainingData, config: TrainingConfig,
                         categories: set[str]) -> dict[str, list[str]]:
    """For each declared interest, the items most bought by the customers who declared it, ranked
    as the other popular lists (decayed distinct buyers). Only interests of at least
    `MIN_INTEREST_BUYERS` buyers, the `MAX_INTERESTS` with the most, `INTEREST_LIST_LENGTH` items
    each. An interest named like one of `categories` (those with a popular list; casefolded) is
    left out: serving answers it with that category's own list."""
    if not data.interests:
        return {}
    purchase = interactions.event_codes == EVENT_CODES[EventType.PURCHASE]
    buyers = set(np.unique(interactions.users[purchase]).tolist())
    categories = {normalise(category) for category in categories}
    users_by_interest: dict[str, list[int]] = defaultdict(list)
    for index, user_id in enumerate(interactions.user_ids):
        if index in buyers:
            for interest in dict.fromkeys(data.interests.get(user_id, ())):
                if interest not in categories:
                    users_by_interest[interest].append(index)
    held = sorted(((interest, users) for interest, users in users_by_interest.items()
                   if len(users) >= MIN_INTEREST_BUYERS), key=lambda pair: (-len(pair[1]), pair[0]))
    # Each customer's rows, found once: an interest then reads only its own customers' rows.
    by_user = np.argsort(interactions.users, kind="stable")
    starts = np.searchsorted(interactions.users[by_user], np.arange(len(interactions.user_ids) + 1))
    popular = {}
    for interest, users in held[:MAX_INTERESTS]:
        mine = interactions.select(np.concatenate([by_user[starts[u]:starts[u + 1]] for u in users]))
        ranked = _ranked_ids(popular_scores(mine, data.end + 1, config, len(interactions.item_ids)),
                             interactions.item_ids, INTEREST_LIST_LENGTH)
        if ranked:
            popular[interest] = ranked
    return popular


def _popular_by_category(scores: np.ndarray, ids: list[str], categories: dict[str, str]) -> dict[str, list[str]]:
    """Each category's most popular items, by the same scores as the overall list."""
    by_category: dict[str, list[str]] = defaultdict(list)
    for i in np.argsort(-scores, kind="stable"):
        if scores[i] <= 1e-6:
            break
        category = categories.get(ids[i])
        if category and len(by_category[category]) < CATEGORY_LIST_LENGTH:
            by_category[category].append(ids[i])
    return dict(by_category)
