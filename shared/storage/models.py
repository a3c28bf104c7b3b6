"""Model versions: artifacts, manifests and the active-version pointer, in S3 or a local folder.

Layout (the same in the bucket and in LOCAL_MODEL_DIR):
    models/<version>/model.npz        the artifact (written first)
    models/<version>/statistics.json  its customer statistics, what segmentation reads (next)
    models/<version>/fit-<n>.npz      item factors of its fits before the holdout's end, for later
                                      runs' first fits (shared/training/earlier_fits.py)
    models/<version>/manifest.json    status, metrics, parameters, window, timings, checksum
    active.json                       {"version", "sha256", "activated_at"}: written last, in one put
    training-start.json               the claim of the latest POST /models/train (shared/storage/training_start.py)
A version becomes active only by replacing active.json, which S3 and os.replace both do
atomically, so serving never sees a half-published version. Old versions are deleted by
ModelStore.prune after each training run.

statistics.json is a copy of what segmentation reads of the artifact, a few kilobytes, so the
Segments function needs neither the artifact nor numpy. Versions published before it existed
get it when they are activated (ModelStore.activate) or by the nightly run (shared/segments/service.py).

The artifact's codec imports numpy; it is imported only where an artifact is encoded or decoded,
so the functions that read manifests, pointers and statistics do not ship it.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field, ValidationError, ValidatorFunctionWrapHandler, WrapValidator

from shared.errors import Conflict, NotFound
from shared.events import Moment, format_timestamp
from shared.observability import logger
from shared.segments.thresholds import check_thresholds
from shared.storage.blobs import Blobs, LocalBlobs, S3Blobs
from shared.training.config import BlendWeights, TrainingConfig

if TYPE_CHECKING:
    from shared.training.artifact import ModelArtifact

ACTIVE_KEY = "active.json"
# A few kilobytes beside the model: popular items for cold starts when the model cannot be loaded.
CACHED_POPULAR_KEY = "popular.json"
STATISTICS_FILE = "statistics.json"
# A run still "training" after Lambda's longest timeout was killed.
ABANDONED_AFTER = timedelta(minutes=16)
# How far ahead of this clock a run's start may be (another instance's clock): further is by hand.
CLOCK_SKEW = timedelta(minutes=5)
ACTIVATABLE = {"accepted"}


class ArtifactInfo(BaseModel):
    key: str
    sha256: str
    bytes: int


class BlendChoiceRecord(BaseModel):
    """The blend a run's validation folds chose (shared/training/pipeline.py), kept so that later
    runs may take it instead of choosing again (TrainingConfig.blend_reuse_days)."""

    weights: BlendWeights
    reason: str = Field(max_length=2000, description="What the validation folds scored")
    chosen_at: Moment = Field(description="The end of the run whose validation folds chose it")


class KeptFitRecord(BaseModel):
    """Item factors a run kept of one of its fits (shared/training/earlier_fits.py)."""

    key: str = Field(pattern=r"^models/v[0-9]{8}-[0-9]{6}-[0-9a-f]{4}/fit-[0-9]{1,2}\.npz$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    until: Moment = Field(description="The fit saw the events before this moment")
    chain_began: Moment = Field(description="The end of the run whose cold fit it descends from (start_chain_days)")


def _unreadable_as(absent: Callable[[], Any]) -> WrapValidator:
    """A record an earlier run left for later runs that does not read is absent (a blend choice:
    none, the next run chooses again; kept fits: none, it fits cold), and the manifest still reads."""
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            return absent()

    return WrapValidator(validate)


class Manifest(BaseModel):
    version: str
    status: str = Field(description="training, accepted, rejected, insufficient_data, failed, abandoned")
    reason: str = ""
    started_at: Moment  # with a zone: one written without (by hand) does not read, and is left out of lists
    finished_at: Moment | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    window: dict[str, str] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    artifact: ArtifactInfo | None = None
    strategy: str = Field(default="", description="What this version serves: hybrid, als, knn, or popular "
                                                  "(empty: a version trained before strategies, ALS)")
    strategy_reason: str = Field(default="", description="Why this strategy, with the holdout's figures")
    fit_device: str = Field(default="", description="Where ALS fitted: cpu, gpu, or cpu with the reason a GPU "
                                                    "that was asked for could not be used (empty: before this was recorded)")
    blend_choice: Annotated[BlendChoiceRecord | None, _unreadable_as(lambda: None)] = Field(
        default=None, description="The blend validation chose, by this run or an earlier one whose choice it took "
                                  "(blend_reuse_days); none when the configuration fixed the blend or too few "
                                  "customers could validate one")
    fit_start: str = Field(default="", description="Where the run's first ALS fit started: cold, or from which "
                                                   "earlier run's fit (start_reuse_days)")
    method: Annotated[str, _unreadable_as(str)] = Field(
        default="", max_length=200, description="How the run fitted and scored (shared/training/method.py): a later "
                                                "run takes its blend choice and kept fits only when it fits and "
                                                "scores the same way (empty: before this was recorded)")
    kept_fits: Annotated[list[KeptFitRecord], _unreadable_as(list)] = Field(
        default_factory=list, description="Item factors of the run's fits before its holdout's end, which a later "
                                          "run's first fit may start from")
    active: bool = False


# What new_version names: the only version an event may hand the train function.
NEW_VERSION = re.compile(r"v[0-9]{8}-[0-9]{6}-[0-9a-f]{4}")


def new_version(now: datetime) -> str:
    return f"v{now:%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"


def run_manifest(config: TrainingConfig, now: datetime, version: str | None = None) -> Manifest:
    """A run's manifest as it starts ("training"): written by POST /models/train before it starts
    the train function, which then takes the version over, or by the run itself."""
    end = config.as_of or now
    return Manifest(version=version or new_version(now), status="training", started_at=now,
                    parameters=config.model_dump(mode="json"),
                    window={"start": format_timestamp(end - timedelta(days=config.window_days)),
                            "holdout_start": format_timestamp(end - timedelta(days=config.holdout_days)),
                            "end": format_timestamp(end)})


class CachedPopular(BaseModel):
    """popular.json: the active version's popular lists, a few kilobytes that serving reads when
    the model cannot be loaded."""

    version: str
    items: list[str]
    by_country: dict[str, list[str]]
    by_category: dict[str, list[str]] = Field(default_factory=dict)
    by_interest: dict[str, list[str]] = Field(default_factory=dict)


class ActivePointer(BaseModel):
    version: str
    sha256: str
    activated_at: datetime


class ModelStore:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    @classmethod
    def from_settings(cls, bucket: str, local_dir: str | None) -> ModelStore:
        return cls(LocalBlobs(Path(local_dir)) if local_dir else S3Blobs(bucket))

    def save(self, manifest: Manifest) -> None:
        body = manifest.model_dump(mode="json", exclude={"active"})
        self.blobs.put(f"models/{manifest.version}/manifest.json", json.dumps(body, indent=2).encode())

    def publish(self, manifest: Manifest, artifact: ModelArtifact) -> None:
        from shared.training.artifact import sha256

        data = artifact.to_bytes()
        key = f"models/{manifest.version}/model.npz"
        self.blobs.put(key, data)
        self.put_statistics(manifest.version, artifact.customer_statistics)
        manifest.artifact = ArtifactInfo(key=key, sha256=sha256(data), bytes=len(data))

    def keep_fit(self, version: str, index: int, data: bytes, until: datetime, chain_began: datetime) -> KeptFitRecord:
        key = f"models/{version}/fit-{index}.npz"
        self.blobs.put(key, data)
        return KeptFitRecord(key=key, sha256=hashlib.sha256(data).hexdigest(), bytes=len(data), until=until,
                             chain_began=chain_began)

    def kept_fit(self, record: KeptFitRecord) -> bytes:
        """The bytes `record` names, checked against its checksum (Conflict when they differ)."""
        data = self.blobs.get(record.key)
        if hashlib.sha256(data).hexdigest() != record.sha256:
            raise Conflict(f"{record.key} does not match its checksum", field="version")
        return data

    def put_statistics(self, version: str, statistics: dict[str, Any]) -> None:
        self.blobs.put(f"models/{version}/{STATISTICS_FILE}",
                       json.dumps({"version": version, "customer_statistics": statistics}).encode())

    def statistics(self, version: str) -> dict[str, Any] | None:
        """The customer statistics published beside `version`; None for a version published
        before statistics.json existed and not activated since."""
        key = f"models/{version}/{STATISTICS_FILE}"
        try:
            raw = self.blobs.get(key)
        except NotFound:
            return None
        try:
            body = json.loads(raw)
            statistics = body["customer_statistics"]
            if body["version"] != version or not isinstance(statistics, dict):
                raise ValueError("not the statistics of this version")
            check_thresholds(statistics)
        except (ValueError, KeyError, TypeError, RecursionError) as error:  # nested past the parser's depth
            raise Conflict(f"{key} cannot be used: {error}", field="version") from error
        return statistics

    def ensure_statistics(self, version: str) -> dict[str, Any]:
        """The statistics of `version`, written from its artifact first when the file is missing
        or damaged. Only then is the artifact loaded, with numpy: for code that ships it."""
        try:
            statistics = self.statistics(version)
        except Conflict:
            statistics = None
        if statistics is None:
            statistics = self.load(self.manifest(version)).customer_statistics
            self.put_statistics(version, statistics)
        return statistics

    def manifest(self, version: str) -> Manifest:
        try:
            raw = self.blobs.get(f"models/{version}/manifest.json")
        except NotFound:
            raise NotFound(f"model version {version!r} does not exist", field="version") from None
        try:
            read = Manifest.model_validate_json(raw)
        except ValueError:
            raise Conflict(f"model version {version!r}: its manifest does not read", field="version") from None
        return self._with_state(read, self._listed_active())

    def manifests(self) -> list[Manifest]:
        """Every version's manifest, newest first; one that does not read is logged and left out."""
        active = self._listed_active()
        found = []
        for key in self.blobs.keys("models/"):
            if not key.endswith("/manifest.json"):
                continue
            try:
                found.append(self._with_state(Manifest.model_validate_json(self.blobs.get(key)), active))
            except NotFound:  # pruned by a training run between the listing and this read
                continue
            except ValueError:
                logger.error("a model manifest does not read: left out of the list", extra={"key": key})
        return sorted(found, key=lambda m: m.started_at, reverse=True)

    def in_progress(self) -> Manifest | None:
        """The run listed as "training" (one at a time), if any: a start waits for it to finish."""
        return next((m for m in self.manifests() if m.status == "training"), None)

    def run_finished(self, version: str) -> bool:
        """Whether the run of `version` has finished (or was pruned since: long over). Conflict when
        its manifest does not read."""
        try:
            return self.manifest(version).status != "training"
        except NotFound:
            return True

    def active(self) -> ActivePointer | None:
        """The pointer; Conflict when it does not read (serving keeps what it holds; an activation writes it)."""
        try:
            raw = self.blobs.get(ACTIVE_KEY)
        except NotFound:
            return None
        try:
            return ActivePointer.model_validate_json(raw)
        except ValueError:
            raise Conflict(f"the active model pointer ({ACTIVE_KEY}) does not read: activate a version to write "
                           "it again", field="version") from None

    def _listed_active(self) -> ActivePointer | None:
        """The pointer for the listing's `active` flags: none when it does not read, so that the
        versions can still be listed and one activated, which writes it again."""
        try:
            return self.active()
        except Conflict as unreadable:
            logger.error("the active model pointer does not read", extra={"reason": unreadable.message})
            return None

    def activate(self, version: str, force: bool = False) -> Manifest:
        """Make `version` the one serving uses; its artifact is read and checked first."""
        manifest = self.manifest(version)
        if manifest.artifact is None:
            raise Conflict(f"version {version} has no artifact (status {manifest.status})", field="version")
        if manifest.status not in ACTIVATABLE and not force:
            raise Conflict(f"version {version} was {manifest.status}: {manifest.reason}. "
                           "Activate it anyway with ?force=true", field="version")
        artifact = self.load(manifest)
        # Written on every activation, from the artifact just checked against its checksum: a
        # version published before statistics.json existed gets it, and a damaged one is mended.
        self.put_statistics(version, artifact.customer_statistics)
        self.blobs.put(CACHED_POPULAR_KEY, json.dumps({
            "version": version, "items": artifact.popular_items[:100],
            "by_country": {country: items[:50] for country, items in artifact.popular_by_country.items()},
            "by_category": {category: items[:20] for category, items in artifact.popular_by_category.items()},
            "by_interest": {interest: items[:20] for interest, items in artifact.popular_by_interest.items()},
        }).encode())
        pointer = ActivePointer(version=version, sha256=manifest.artifact.sha256,
                                activated_at=datetime.now(timezone.utc))
        self.blobs.put(ACTIVE_KEY, pointer.model_dump_json().encode())
        manifest.active = True
        return manifest

    def cached_popular(self) -> dict[str, Any] | None:
        """popular.json as activation writes it; None when there is none, or when it does not read
        (cut short, or by hand: logged), as serving would have none: it is written again on the next
        activation."""
        try:
            raw = self.blobs.get(CACHED_POPULAR_KEY)
        except NotFound:
            return None
        try:
            return CachedPopular.model_validate_json(raw).model_dump()
        except ValidationError as error:
            logger.error("popular.json does not read: serving goes without it",
                         extra={"reason": str(error)[:300]})
            return None

    def load(self, manifest: Manifest) -> ModelArtifact:
        from shared.training.artifact import CorruptArtifact, ModelArtifact

        if manifest.artifact is None:
            raise Conflict(f"version {manifest.version} has no artifact", field="version")
        try:
            return ModelArtifact.from_bytes(self.blobs.get(manifest.artifact.key), manifest.artifact.sha256)
        except (CorruptArtifact, NotFound) as error:
            raise Conflict(f"version {manifest.version} cannot be used: {error}", field="version") from error

    def prune(self, keep: int, max_age_days: int, now: datetime) -> list[str]:
        """Delete the versions that are both outside the newest `keep` versions with a model and
        started more than `max_age_days` before `now`; return their names, oldest first.

        Both must hold, so the `keep` newest models stay however old they are (months without
        training, or of failed runs, still leave `keep` to roll back to), and a burst of runs
        never deletes a version younger than `max_age_days`. Runs that left no model (failed,
        insufficient data, abandoned) do not count among the `keep`, and go once they are old.
        Whatever the rule says, the active version stays, and so does a run still in progress
        (status training, not yet listed as abandoned). A version's artifact is deleted before
        its manifest: a prune cut short leaves a listed version that cannot be activated (409)
        and is pruned next time, never a file that no listing shows.
        """
        cutoff = now - timedelta(days=max_age_days)
        versions = self.manifests()
        kept = {m.version for m in [m for m in versions if m.artifact is not None][:keep]}
        pruned = []
        for manifest in reversed(versions):
            if manifest.version in kept or manifest.active or manifest.status == "training" \
                    or manifest.started_at >= cutoff:
                continue
            self._delete(manifest.version)
            pruned.append(manifest.version)
        return pruned

    def discard(self, manifest: Manifest) -> None:
        """Forget a run that found nothing to learn from and published nothing (the hourly
        first-model check on a shop without purchases yet), so such runs do not pile up."""
        if manifest.artifact is None and not manifest.active:
            self._delete(manifest.version)

    def _delete(self, version: str) -> None:
        folder = f"models/{version}/"
        manifest_key = f"{folder}manifest.json"
        for key in [k for k in self.blobs.keys(folder) if k != manifest_key] + [manifest_key]:
            self.blobs.delete(key)

    @staticmethod
    def _with_state(manifest: Manifest, active: ActivePointer | None) -> Manifest:
        manifest.active = active is not None and active.version == manifest.version
        started = datetime.now(timezone.utc) - manifest.started_at
        if manifest.status == "training" and started > ABANDONED_AFTER:
            manifest.status, manifest.reason = "abandoned", "the run stopped before it finished"
        elif manifest.status == "training" and started < -CLOCK_SKEW:  # by hand: it would hold off every start
            manifest.status, manifest.reason = "abandoned", "its start time is in the future: not a run's"
        return manifest
