"""The schedules' runs take the start claim POST /models/train takes: a schedule may deliver its
event twice, and a run started from the API may still be going. Two runs at once would each
publish a version and write the night's segments."""

from __future__ import annotations

from datetime import datetime, timezone

from devstack.gateway import LambdaContext
from shared.storage.blobs import S3Blobs
from shared.storage.models import ModelStore, run_manifest
from shared.storage.training_start import TrainingStarts
from shared.training.config import TrainingConfig
from tests.conftest import MODEL_BUCKET
from tests.training_data import A_MODEL_SERVES
from tests.unit.test_training_reads_once import seeded, train_handler  # noqa: F401 - the fixture

CONTEXT = LambdaContext(function_name="TrainFunction")


def test_a_scheduled_run_while_another_run_is_in_progress_is_skipped_and_says_why(seeded):  # noqa: F811
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    running = run_manifest(TrainingConfig(), datetime.now(timezone.utc))
    models.save(running)

    answer = train_handler()({}, CONTEXT)

    assert answer == {"skipped": f"another run is starting or in progress: training run {running.version} "
                                 "is in progress"}
    assert [m.version for m in models.manifests()] == [running.version]
    # The claim it took is given back: the run in progress, not a claim, keeps the next start out.
    TrainingStarts(models.blobs).claim(datetime.now(timezone.utc), lambda run: False)


def test_a_scheduled_run_while_a_start_holds_the_claim_is_skipped(seeded):  # noqa: F811
    models = ModelStore(S3Blobs(MODEL_BUCKET))
    TrainingStarts(models.blobs).claim(datetime.now(timezone.utc), lambda run: False)

    answer = train_handler()({}, CONTEXT)

    assert answer["skipped"].startswith("another run is starting or in progress: a training run was started")
    assert models.manifests() == []


def test_scheduled_runs_one_after_the_other_each_run(seeded):  # noqa: F811
    handler = train_handler()

    first = handler({"config": A_MODEL_SERVES}, CONTEXT)
    second = handler({"config": A_MODEL_SERVES}, CONTEXT)

    assert first["status"] == "accepted" and second["status"] == "accepted", (first, second)
    assert first["version"] != second["version"]
