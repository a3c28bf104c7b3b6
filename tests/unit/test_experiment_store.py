"""What serving and GET /experiments read of the experiments: bounded by what they show, not by
every experiment a shop ever ran. Serving finds the running ones in the request that refreshes
them; before, that request read every experiment.json ever written (hundreds after a year of
weekly tests), and GET /experiments read every day's results of every experiment."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.experiments.spec import Experiment, ExperimentSpec
from shared.storage.blobs import LocalBlobs
from shared.storage.experiments import ExperimentStore

START = datetime(2026, 9, 1, 9, tzinfo=timezone.utc)
SPEC = ExperimentSpec(name="test", variants=[{"name": "model", "serves": "active", "traffic": 0.5},
                                             {"name": "popular", "serves": "popular", "traffic": 0.5}])


class CountingBlobs(LocalBlobs):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.read: list[str] = []

    def get(self, key: str) -> bytes:
        self.read.append(key)
        return super().get(key)


@pytest.fixture
def blobs(tmp_path) -> CountingBlobs:
    return CountingBlobs(tmp_path)


def experiment(day: int, status: str = "stopped", hour: int = 9) -> Experiment:
    started = START + timedelta(days=day, hours=hour - 9)
    return Experiment(experiment_id=f"exp-{started:%Y%m%d}-{day:02d}{hour:02d}aa", spec=SPEC, status=status,
                      started_at=started,
                      ended_at=None if status == "running" else started + timedelta(days=1))


def ran_for_months(store: ExperimentStore) -> list[Experiment]:
    """Forty experiments ended, one a day, then one running."""
    ended = [experiment(day) for day in range(40)]
    running = experiment(40, "running")
    for done in ended:
        store.save(done.model_copy(update={"status": "running", "ended_at": None}))
        store.save(done)
    store.save(running)
    return [running, *reversed(ended)]


def test_serving_reads_the_running_experiments_not_every_one_ever(blobs):
    store = ExperimentStore(blobs)
    running = ran_for_months(store)[0]
    store.reconcile_running()  # the nightly run: the names are complete from now on
    blobs.read.clear()

    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    assert len(blobs.read) == 2  # whether the names are complete, and the one experiment named


def test_experiments_from_before_the_names_run_on_until_and_after_the_nightly_run(blobs, tmp_path):
    """Saved by a version before the names: no name, and no mark that the names are complete."""
    store = ExperimentStore(blobs)
    old = [experiment(day, "running" if day == 3 else "stopped", hour=10) for day in range(5)]
    for written in old:
        (tmp_path / "experiments" / written.experiment_id).mkdir(parents=True)
        (tmp_path / "experiments" / written.experiment_id / "experiment.json").write_text(written.model_dump_json())

    assert [e.experiment_id for e in store.running()] == [old[3].experiment_id]  # among all of them
    store.reconcile_running()
    blobs.read.clear()
    assert [e.experiment_id for e in store.running()] == [old[3].experiment_id]
    assert len(blobs.read) == 2


def test_a_name_an_interrupted_call_left_misleads_nobody_and_the_nightly_run_removes_it(blobs, tmp_path):
    store = ExperimentStore(blobs)
    running = ran_for_months(store)[0]
    store.reconcile_running()
    blobs.put("experiments-running/exp-20261001-orphan", b"")  # its experiment.json never written
    stopped = experiment(41, "running")
    store.save(stopped)
    blobs.put("experiments-running/" + experiment(7).experiment_id, b"")  # a stop whose delete failed
    store.save(stopped.model_copy(update={"status": "stopped", "ended_at": START + timedelta(days=42)}))

    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    store.reconcile_running()
    assert sorted(p.name for p in (tmp_path / "experiments-running").iterdir()) == ["_complete", running.experiment_id]


def test_get_experiments_reads_the_newest_and_their_latest_results_only(blobs):
    store = ExperimentStore(blobs)
    everyone = ran_for_months(store)
    same_day = experiment(40, "stopped", hour=7)  # started earlier on the running one's day
    store.save(same_day)
    for day in ("2026-10-01", "2026-10-02", "2026-10-03"):
        store.put_results(everyone[1].experiment_id, day, {"as_of": day})
    blobs.read.clear()

    newest = store.recent(3)
    assert [e.experiment_id for e in newest] == [everyone[0].experiment_id, same_day.experiment_id,
                                                 everyone[1].experiment_id]
    assert len(blobs.read) == 3  # the two of the newest day and the one of the day before
    blobs.read.clear()
    assert store.latest_results(everyone[1].experiment_id) == {"as_of": "2026-10-03"} and len(blobs.read) == 1
    assert store.latest_results(everyone[0].experiment_id) is None


def test_get_experiments_takes_a_limit(api, moto_tables):
    assert api.json("GET", "/experiments?limit=0")[1]["error"]["fields"][0]["field"] == "limit"
    assert api.json("GET", "/experiments?limit=101")[0] == 422
    status, listing = api.json("GET", "/experiments?limit=5")
    assert (status, listing) == (200, {"experiments": []})
