"""What serving and GET /experiments read of the experiments: bounded by what they show, not by
every experiment a shop ever ran. Serving finds the running ones in the request that refreshes
them; before, that request read every experiment.json ever written (hundreds after a year of
weekly tests), and GET /experiments read every day's results of every experiment."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from shared.experiments.spec import Experiment, ExperimentSpec
from shared.storage.blobs import LocalBlobs
from shared.storage.experiments import ExperimentStore

START = datetime(2026, 9, 1, 9, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 1, 3, tzinfo=timezone.utc)
SPEC = ExperimentSpec(name="test", variants=[{"name": "model", "serves": "active", "traffic": 0.5},
                                             {"name": "popular", "serves": "popular", "traffic": 0.5}])


class CountingBlobs(LocalBlobs):
    def __init__(self, root) -> None:
        super().__init__(root)
        self.read: list[str] = []  # objects read, and "list <prefix>" for each listing

    def get(self, key: str) -> bytes:
        self.read.append(key)
        return super().get(key)

    def keys(self, prefix: str) -> list[str]:
        self.read.append(f"list {prefix}")
        return super().keys(prefix)


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
    store.reconcile_running(NOW)  # the nightly run: the names are complete from now on
    blobs.read.clear()

    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    # A list of the names (with the mark that they are complete) and the one experiment named.
    assert blobs.read == ["list experiments-running/", f"experiments/{running.experiment_id}/experiment.json"]


def test_experiments_from_before_the_names_run_on_until_and_after_the_nightly_run(blobs, tmp_path):
    """Saved by a version before the names: no name, and no mark that the names are complete."""
    store = ExperimentStore(blobs)
    old = [experiment(day, "running" if day == 3 else "stopped", hour=10) for day in range(5)]
    for written in old:
        (tmp_path / "experiments" / written.experiment_id).mkdir(parents=True)
        (tmp_path / "experiments" / written.experiment_id / "experiment.json").write_text(written.model_dump_json())

    assert [e.experiment_id for e in store.running()] == [old[3].experiment_id]  # among all of them
    store.reconcile_running(NOW)
    blobs.read.clear()
    assert [e.experiment_id for e in store.running()] == [old[3].experiment_id]
    assert len(blobs.read) == 2


def test_a_name_an_interrupted_call_left_misleads_nobody_and_the_nightly_run_removes_it(blobs, tmp_path):
    store = ExperimentStore(blobs)
    running = ran_for_months(store)[0]
    store.reconcile_running(NOW)
    blobs.put("experiments-running/exp-20261001-orphan", b"2026-10-01T09:00:00+00:00")  # never written
    stopped = experiment(41, "running")
    store.save(stopped)
    blobs.put("experiments-running/" + experiment(7).experiment_id, b"")  # a stop whose delete failed
    store.save(stopped.model_copy(update={"status": "stopped", "ended_at": START + timedelta(days=42)}))

    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    store.reconcile_running(NOW)
    assert sorted(p.name for p in (tmp_path / "experiments-running").iterdir()) == ["_complete", running.experiment_id]


def test_an_experiment_started_while_the_nightly_run_reconciles_keeps_its_name(blobs, monkeypatch):
    """The run reads every experiment, then the names: one started in between is named, not yet
    read as running. Its name stays, so serving serves it and a second start on its surface is refused."""
    store = ExperimentStore(blobs)
    ran_for_months(store)
    started = experiment(41, "running")
    starting = experiment(42, "running")
    read_all = store.all

    def a_start_meanwhile():
        found = read_all()
        store.save(started.model_copy(update={"started_at": datetime.now(timezone.utc)}))
        blobs.put("experiments-running/" + starting.experiment_id, datetime.now(timezone.utc).isoformat().encode())
        return found

    monkeypatch.setattr(store, "all", a_start_meanwhile)
    store.reconcile_running(datetime.now(timezone.utc))
    monkeypatch.undo()

    names = {key.rsplit("/", 1)[1] for key in blobs.keys("experiments-running/")}
    # The one started, and one whose experiment.json is being written (named a moment ago).
    assert {started.experiment_id, starting.experiment_id} <= names
    assert started.experiment_id in {e.experiment_id for e in store.running()}
    store.reconcile_running(datetime.now(timezone.utc) + timedelta(hours=2))  # the start never finished
    assert starting.experiment_id not in {key.rsplit("/", 1)[1] for key in blobs.keys("experiments-running/")}


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
    # A list, then the two of the newest day and the one of the day before.
    assert blobs.read[1:] == [f"experiments/{e.experiment_id}/experiment.json" for e in
                              sorted(newest, key=lambda e: e.experiment_id, reverse=True)]
    blobs.read.clear()
    assert store.latest_results(everyone[1].experiment_id) == {"as_of": "2026-10-03"}
    assert blobs.read[1:] == [f"experiments/{everyone[1].experiment_id}/results/2026-10-03.json"]
    assert store.latest_results(everyone[0].experiment_id) is None


def test_get_experiments_takes_a_limit(api, moto_tables):
    assert api.json("GET", "/experiments?limit=0")[1]["error"]["fields"][0]["field"] == "limit"
    assert api.json("GET", "/experiments?limit=101")[0] == 422
    status, listing = api.json("GET", "/experiments?limit=5")
    assert (status, listing) == (200, {"experiments": []})


def test_a_record_written_by_hand_with_times_that_do_not_read_is_left_out_by_every_reader(blobs):
    """A time without a zone cannot be compared with one with a zone, and one before the year 1000
    cannot be stored as a timestamp: such a record is unreadable, never a reader's crash."""
    from shared.experiments.service import outcomes_since

    store = ExperimentStore(blobs)
    running = experiment(40, "running")
    store.save(running)
    for n, times in enumerate(({"started_at": "2026-11-02T00:00:00", "ended_at": "2026-11-03T00:00:00"},
                               {"started_at": "0001-01-01T00:00:00+01:00"})):
        record = running.model_copy(update={"experiment_id": f"exp-20261102-bad{n:03d}"}).model_dump(mode="json")
        blobs.put(f"experiments/exp-20261102-bad{n:03d}/experiment.json", json.dumps({**record, **times}).encode())
    blobs.put("experiments-running/exp-20261101-noexpr", b"2026-11-30T23:00:00")  # a name, no zone, no record

    assert [e.experiment_id for e in store.all()] == [running.experiment_id]
    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    assert outcomes_since(store, NOW) == "2026-10-02T03:00:00.000000Z"  # the report's 60 days, not the year 1
    store.reconcile_running(NOW)  # the name without a zone is read as UTC: over an hour old, deleted
    assert blobs.keys("experiments-running/") == ["experiments-running/_complete",
                                                  f"experiments-running/{running.experiment_id}"]


def test_the_newest_list_holds_the_limit_when_a_newer_record_does_not_read(blobs):
    store = ExperimentStore(blobs)
    ended = [experiment(day) for day in range(3)]
    for done in ended:
        store.save(done)
    blobs.put("experiments/exp-20261201-zzzzzz/experiment.json", b'{"experiment_id": "exp-20261201-zzzzzz"')

    assert [e.experiment_id for e in store.recent(2)] == [ended[2].experiment_id, ended[1].experiment_id]


@pytest.mark.parametrize("deep", [("[" * 100_000 + "]" * 100_000).encode(),
                                  # parses, but no answer could hold it (pydantic writes 255 levels at most)
                                  ('{"as_of": "x", "a":' * 300 + "1" + "}" * 300).encode()],
                         ids=["past the parser", "past what an answer holds"])
def test_a_results_file_nested_past_the_parsers_depth_is_left_out(blobs, deep):
    store = ExperimentStore(blobs)
    store.save(experiment(1))
    store.put_results(experiment(1).experiment_id, "2026-09-03", {"as_of": "2026-09-03"})
    store.put_results(experiment(1).experiment_id, "2026-09-04", {"as_of": "2026-09-04"})
    blobs.put(f"experiments/{experiment(1).experiment_id}/results/2026-09-05.json", deep)
    blobs.put("attribution/report.json", deep)

    assert store.latest_results(experiment(1).experiment_id) == {"as_of": "2026-09-04"}
    assert [day["as_of"] for day in store.results(experiment(1).experiment_id)] == ["2026-09-03", "2026-09-04"]
    assert store.report() == {"as_of": None, "days": []}


@pytest.mark.parametrize("change", [{"experiment_id": "exp-20260901-000000"}, {"started_at": "1000-01-01T00:00:00Z"}],
                         ids=["another id than its key's", "a start before its id's day"])
def test_a_record_written_by_hand_that_is_not_its_keys_is_left_out_and_blocks_nothing(blobs, change):
    """An id not its key's: a stop would write the other key, and this one run for ever, holding
    its surface. A start back in the year 1000: every night would tally every day since."""
    from shared.errors import Conflict
    from shared.experiments.service import outcomes_since

    store = ExperimentStore(blobs)
    running = experiment(40, "running")
    blobs.put(f"experiments/{running.experiment_id}/experiment.json",
              json.dumps({**running.model_dump(mode="json"), **change}).encode())

    assert store.all() == [] and store.running() == []
    with pytest.raises(Conflict, match="its stored record does not read"):
        store.get(running.experiment_id)
    assert outcomes_since(store, NOW) == "2026-10-02T03:00:00.000000Z"  # the report's 60 days


def test_the_nightly_read_keeps_the_reports_days_when_the_experiments_cannot_be_listed(blobs, monkeypatch):
    """S3 unavailable: the night trains all the same, not stopped at its first line."""
    from shared.errors import StorageUnavailable
    from shared.experiments.service import outcomes_since

    store = ExperimentStore(blobs)
    store.save(experiment(40, "running"))

    def unavailable():
        raise StorageUnavailable("list the model bucket: S3 is throttling")

    monkeypatch.setattr(store, "all", unavailable)
    assert outcomes_since(store, NOW) == "2026-10-02T03:00:00.000000Z"


def test_results_before_any_data_are_standard_json_with_unbounded_intervals_as_null(blobs):
    """An interval with no data yet is unbounded: written null (as the API shows it), not Infinity,
    which Athena, jq and browsers refuse."""
    store = ExperimentStore(blobs)
    unbounded = {"difference": 0.0, "interval": [float("-inf"), float("inf")], "p_value": 1.0, "lift": float("nan")}
    store.put_results("exp-20261201-aaaaaa", "2026-12-01", {"variants": {"b": {"revenue": unbounded}}})

    def refuse(constant: str) -> None:
        raise ValueError(f"not standard JSON: {constant}")

    raw = blobs.get("experiments/exp-20261201-aaaaaa/results/2026-12-01.json")
    assert json.loads(raw, parse_constant=refuse)["variants"]["b"]["revenue"] == {
        "difference": 0.0, "interval": [None, None], "p_value": 1.0, "lift": None}


def test_a_record_with_fields_a_later_version_added_still_reads_and_keeps_serving(blobs, api, moto_tables):
    """After a rollback, experiment.json may hold fields only the newer version knew, in the
    experiment, its spec and its variants: the running experiment still serves. A request that
    names an unknown field is still refused, naming it."""
    store = ExperimentStore(blobs)
    running = experiment(40, "running")
    record = running.model_dump(mode="json")
    record["spec"]["holdout_share"] = 0.1
    record["spec"]["variants"][0]["ramp"] = {"from": 0.1}
    blobs.put(f"experiments/{running.experiment_id}/experiment.json", json.dumps({**record, "owner": "x"}).encode())

    assert store.get(running.experiment_id) == running
    assert [e.experiment_id for e in store.running()] == [running.experiment_id]
    status, body = api.json("POST", "/experiments", {"name": "t", "holdout_share": 0.1, "variants": [
        {"name": "a", "serves": "popular", "traffic": 0.5, "ramp": 1}, {"name": "b", "serves": "popular", "traffic": 0.5}]})
    assert status == 422
    assert {f["field"] for f in body["error"]["fields"]} == {"holdout_share", "variants[0].ramp"}
