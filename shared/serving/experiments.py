"""Experiments as serving sees them: which variant a customer or visitor gets, the model a variant
serves, and the recommendation id every answer that lists items carries (docs/experiments.md).

Which experiments run is read at most every `refresh_seconds`, as the active pointer is; a
variant's model version is loaded once and kept (at most VERSIONS_KEPT besides the active one).
A customer who objected to personalization gets the answer they always get (popular items) and
an id that names no experiment, so they are counted in no variant.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

from aws_lambda_powertools.metrics import MetricUnit

from shared.errors import DomainError, StorageUnavailable
from shared.experiments.assignment import assign
from shared.experiments.attribution import Served, recommendation_id
from shared.experiments.spec import ACTIVE, POPULAR, Experiment
from shared.observability import logger, metrics
from shared.refresh import Every
from shared.storage.experiments import ExperimentStore
from shared.storage.models import ModelStore

if TYPE_CHECKING:
    from shared.training.artifact import ModelArtifact

T = TypeVar("T")
VERSIONS_KEPT = 2
NO_CONSENT = "no_consent:"  # the strategy prefix of an objector's answer (shared/serving/recommender.py)


@dataclass(frozen=True)
class Assignment:
    experiment_id: str
    variant: str
    serves: str  # "active", "popular" or a model version


class RunningExperiments:
    def __init__(self, store: ExperimentStore, refresh_seconds: float) -> None:
        self.store = store
        self.running: dict[str, Experiment] | None = None  # by surface; None until read
        self._refresh_when_due = Every(refresh_seconds, self._refresh, held=lambda: self.running)

    def assignment(self, surface: str, subject_id: str) -> Assignment | None:
        # Not knowing the running experiments is a 503, not an answer outside them: it would count
        # against whichever variant the customer is in.
        self._refresh_when_due()
        experiment = (self.running or {}).get(surface)
        if experiment is None:
            return None
        name = assign(experiment.experiment_id, subject_id, experiment.spec.shares(), may_personalize=True)
        variant = next(v for v in experiment.spec.variants if v.name == name)
        return Assignment(experiment.experiment_id, variant.name, variant.serves)

    def _refresh(self) -> None:
        try:
            self.running = {e.spec.surface: e for e in self.store.running()}
        except DomainError as error:  # keep serving the experiments already known
            logger.warning("cannot read the running experiments", extra={"reason": error.message})
            metrics.add_metric("ExperimentsReadFailed", MetricUnit.Count, 1)
            if isinstance(error, StorageUnavailable):
                raise  # tried again soon (shared/refresh.py); a function holding nothing answers 503


class VersionModels(Generic[T]):
    """Model versions other than the active one, loaded when a variant first asks for them."""

    def __init__(self, store: ModelStore, build: Callable[[str, ModelArtifact], T]) -> None:
        self.store = store
        self.build = build
        self.loaded: OrderedDict[str, T] = OrderedDict()

    def get(self, version: str) -> T | None:
        if version in self.loaded:
            self.loaded.move_to_end(version)
            return self.loaded[version]
        try:
            model = self.build(version, self.store.load(self.store.manifest(version)))
        except DomainError as error:  # the variant falls back to the active model, and it is logged
            logger.error("experiment version could not be loaded", extra={"version": version, "reason": error.message})
            metrics.add_metric("ExperimentModelLoadFailed", MetricUnit.Count, 1)
            return None
        self.loaded[version] = model
        while len(self.loaded) > VERSIONS_KEPT:
            self.loaded.popitem(last=False)
        return model


def serves_popular(assignment: Assignment | None) -> bool:
    return assignment is not None and assignment.serves == POPULAR


def variant_version(assignment: Assignment | None) -> str | None:
    """The model version this assignment serves instead of the active one, if any."""
    if assignment is None or assignment.serves in (ACTIVE, POPULAR):
        return None
    return assignment.serves


class AnswerIds:
    """Signs the recommendation id of each answer (shared/experiments/attribution.py)."""

    def __init__(self, key: Callable[[], bytes]) -> None:
        self.key = key

    def tag(self, answer: T, surface: str, assignment: Assignment | None = None, shared: bool = False) -> T:
        """`shared`: an answer that is the same for everyone and cached (popular, an item's similar
        and bought-together items): its id depends on what it shows only, so ETags and a CDN still work."""
        strategy: str = answer.strategy  # type: ignore[attr-defined]
        counted = assignment if assignment is not None and not strategy.startswith(NO_CONSENT) else None
        served = Served(surface, strategy, answer.model_version,  # type: ignore[attr-defined]
                        counted.experiment_id if counted else None, counted.variant if counted else None,
                        0 if shared else int(time.time()))
        try:
            key = self.key()
        except DomainError as error:  # the answer goes out without an id rather than not at all
            logger.error("recommendation ids cannot be signed", extra={"reason": error.message})
            metrics.add_metric("RecommendationIdUnsigned", MetricUnit.Count, 1)
            return answer
        nonce = "shared" if shared else uuid.uuid4().hex[:12]
        answer.recommendation_id = recommendation_id(served, key, nonce)  # type: ignore[attr-defined]
        return answer
