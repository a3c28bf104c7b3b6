"""The start claim: one training start at a time, in S3 (moto) and in the local stack's folder alike."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.errors import Conflict
from shared.storage.blobs import LocalBlobs, S3Blobs
from shared.storage.training_start import CLAIM_SECONDS, START_KEY, TrainingStarts
from tests.conftest import MODEL_BUCKET

NOW = datetime(2026, 12, 1, 9, tzinfo=timezone.utc)
RUNNING = lambda run: False  # noqa: E731 - the run a claim names is still going
OVER = lambda run: True  # noqa: E731


@pytest.fixture(params=["s3", "folder"])
def blobs(request, tmp_path):
    if request.param == "folder":
        return LocalBlobs(tmp_path)
    request.getfixturevalue("moto_tables")
    return S3Blobs(MODEL_BUCKET)


def test_a_start_holds_until_its_run_is_over(blobs):
    starts = TrainingStarts(blobs)
    claim = starts.claim(NOW, RUNNING)
    starts.name(claim, "v20261201-090000-abcd")

    with pytest.raises(Conflict, match="v20261201-090000-abcd was started 5 s ago"):
        starts.claim(NOW + timedelta(seconds=5), RUNNING)
    starts.claim(NOW + timedelta(seconds=5), OVER)


def test_a_start_that_never_named_its_run_holds_until_the_claim_is_old(blobs):
    starts = TrainingStarts(blobs)
    starts.claim(NOW, OVER)  # the request died before it started anything

    with pytest.raises(Conflict, match="a training run was started"):
        starts.claim(NOW + timedelta(seconds=CLAIM_SECONDS - 1), OVER)
    starts.claim(NOW + timedelta(seconds=CLAIM_SECONDS), RUNNING)  # the listings tell from now on


@pytest.mark.parametrize("damaged", [b"", b"{", b"[]", b'{"claimed_at": "2026-12-01T09:00:00", "run": null}',
                                     b'{"claimed_at": "2026-12-01T09:00:00+00:00", "run": 7}',
                                     b"[" * 5000 + b"]" * 5000])  # nested past the parser's depth
def test_a_damaged_claim_holds_nothing(blobs, damaged):
    blobs.put(START_KEY, damaged)

    TrainingStarts(blobs).claim(NOW, RUNNING)


def test_a_claim_written_by_another_start_since_it_was_read_wins(blobs):
    blobs.put(START_KEY, b"old")
    _, tag = blobs.get_tagged(START_KEY)
    assert blobs.put_if(START_KEY, b"theirs", tag) is not None

    assert blobs.put_if(START_KEY, b"mine", tag) is None
    assert blobs.put_if(START_KEY, b"mine", None) is None  # nor where "none yet" was read
    assert blobs.get(START_KEY) == b"theirs"


def test_naming_the_run_never_overwrites_a_later_claim(blobs):
    starts = TrainingStarts(blobs)
    mine = starts.claim(NOW, OVER)
    later = NOW + timedelta(seconds=CLAIM_SECONDS + 1)
    theirs = starts.claim(later, RUNNING)
    starts.name(mine, "v20261201-090000-aaaa")

    with pytest.raises(Conflict, match="a training run was started 0 s ago"):
        starts.claim(later, OVER)
    starts.name(theirs, "v20261201-090100-bbbb")
    with pytest.raises(Conflict, match="v20261201-090100-bbbb"):
        starts.claim(later, RUNNING)


def test_a_claim_a_moment_ahead_holds_and_one_far_ahead_does_not(blobs):
    """Two starts at once: the one that read the clock first finds the other's claim a little in
    its future (or an instance's clock is ahead). It must hold, not read as stale."""
    starts = TrainingStarts(blobs)
    starts.claim(NOW + timedelta(milliseconds=3), RUNNING)

    with pytest.raises(Conflict, match="was started 0 s ago"):
        starts.claim(NOW, RUNNING)
    blobs.put(START_KEY, b'{"claimed_at": "2099-01-01T00:00:00+00:00", "run": null}')  # by hand
    starts.claim(NOW, RUNNING)


def test_a_released_claim_holds_nothing(blobs):
    starts = TrainingStarts(blobs)
    starts.release(starts.claim(NOW, RUNNING))

    starts.claim(NOW + timedelta(seconds=1), RUNNING)
