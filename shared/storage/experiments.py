"""Experiments and their daily results, beside the model versions (the model bucket or LOCAL_MODEL_DIR).

    experiments/<id>/experiment.json          the spec and its state (running, stopped, promoted)
    experiments/<id>/results/<day>.json       the results as of the end of that day (cumulative)
    experiments-running/<id>                  names each running experiment (holds when it was written)
    experiments-running/_complete             written once every running experiment is named there
    attribution/report.json                   the last days' credited revenue, click-through, conversion

Serving reads which experiments run at most every MODEL_REFRESH_SECONDS, as it reads the active
pointer, in the request that finds it due: a list of the names under experiments-running/ and a
read of each named experiment (one per surface at most), not every experiment a shop ever ran. A
name is written before its experiment runs and deleted after it ends, and only names a candidate:
its experiment.json says whether it runs, so a name an interrupted call left misleads nobody. The
nightly run makes the names agree with the experiments (and names those that ran before the names
did), then marks them complete; until then the running experiments are found among all of them,
as before. A version before the names, deployed again after the mark, starts experiments serving
would not see: delete experiments-running/_complete when rolling back past them.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

from shared.errors import Conflict, NotFound, StorageUnavailable
from shared.experiments.spec import STORED, Experiment
from shared.observability import logger
from shared.standard_json import finite
from shared.storage.blobs import Blobs

PREFIX = "experiments/"
RUNNING_PREFIX = "experiments-running/"
RUNNING_COMPLETE_KEY = RUNNING_PREFIX + "_complete"
REPORT_KEY = "attribution/report.json"
# A name whose experiment.json is missing is kept this long: a start writes it first.
NAME_GRACE = timedelta(hours=1)
DAY_OF_ID = re.compile(r"exp-(\d{8})-")


class ExperimentStore:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def save(self, experiment: Experiment) -> None:
        """The experiment, and its name among the running (holding when it was written): written
        before an experiment that runs, deleted after one that ended."""
        named = _running_key(experiment.experiment_id)
        if experiment.status == "running":
            self.blobs.put(named, datetime.now(timezone.utc).isoformat().encode())
        self.blobs.put(_key(experiment.experiment_id), experiment.model_dump_json().encode())
        if experiment.status != "running":
            try:
                self.blobs.delete(named)
            except StorageUnavailable as error:  # it has ended: the name misleads nobody, tonight's run deletes it
                logger.warning("an ended experiment's name is left", extra={"experiment": experiment.experiment_id,
                                                                           "reason": error.message})

    def get(self, experiment_id: str) -> Experiment:
        try:
            return _stored_experiment(self.blobs.get(_key(experiment_id)), _key(experiment_id))
        except NotFound:
            raise NotFound(f"experiment {experiment_id} does not exist", field="experiment_id") from None
        except ValueError:
            raise Conflict(f"experiment {experiment_id}: its stored record does not read",
                           field="experiment_id") from None

    def all(self) -> list[Experiment]:
        """Every experiment, newest first: a read of each, for the nightly run."""
        return self._read(self._experiment_keys())

    def recent(self, limit: int) -> list[Experiment]:
        """The `limit` newest experiments, reading those of their days only (an id starts with its
        day: exp-20261201-a1b2c3)."""
        newest: list[Experiment] = []
        last_day = None
        for key in sorted(self._experiment_keys(), key=lambda key: (_day(key), key), reverse=True):
            if len(newest) >= limit and _day(key) != last_day:
                break
            last_day = _day(key)
            if (experiment := self._read_one(key)) is not None:  # one that does not read takes no place
                newest.append(experiment)
        return sorted(newest, key=lambda e: e.started_at, reverse=True)[:limit]

    def running(self) -> list[Experiment]:
        """A list of the names and a read of each named experiment; every experiment until the
        nightly run marked the names complete."""
        names = self.blobs.keys(RUNNING_PREFIX)
        if RUNNING_COMPLETE_KEY in names:
            named = self._read([_key(key[len(RUNNING_PREFIX):]) for key in names if key != RUNNING_COMPLETE_KEY])
            return [e for e in named if e.status == "running"]
        return [e for e in self.all() if e.status == "running"]

    def reconcile_running(self, now: datetime) -> None:
        """Name every running experiment under experiments-running/ and unname the others (the
        nightly run), then mark the names complete. A name is deleted only after its experiment
        is read again: one started meanwhile keeps its name."""
        running = {_running_key(e.experiment_id) for e in self.all() if e.status == "running"}
        named = {key for key in self.blobs.keys(RUNNING_PREFIX) if key != RUNNING_COMPLETE_KEY}
        for key in running - named:
            self.blobs.put(key, now.isoformat().encode())
        for key in named - running:
            if not self._still_running(key, now):
                self.blobs.delete(key)
        self.blobs.put(RUNNING_COMPLETE_KEY, now.isoformat().encode())

    def _still_running(self, name: str, now: datetime) -> bool:
        """Whether a name the first read found no running experiment for must stay: its experiment
        runs now, or has not been written yet (a start in progress, named under NAME_GRACE ago)."""
        try:
            return self.get(name[len(RUNNING_PREFIX):]).status == "running"
        except NotFound:
            try:
                written = datetime.fromisoformat(self.blobs.get(name).decode())
            except (NotFound, ValueError):
                return False
            # Written with a zone; one without (by hand) is read as UTC.
            return now - (written if written.tzinfo else written.replace(tzinfo=timezone.utc)) < NAME_GRACE
        except Conflict:  # an experiment.json that does not parse: no experiment to serve
            return False

    def _experiment_keys(self) -> list[str]:
        return [key for key in self.blobs.keys(PREFIX) if key.endswith("/experiment.json")]

    def _read(self, keys: list[str]) -> list[Experiment]:
        found = [experiment for key in keys if (experiment := self._read_one(key)) is not None]
        return sorted(found, key=lambda e: e.started_at, reverse=True)

    def _read_one(self, key: str) -> Experiment | None:
        """None when deleted meanwhile or unreadable: one record never breaks a list for the others."""
        try:
            return _stored_experiment(self.blobs.get(key), key)
        except NotFound:
            return None
        except ValueError:
            logger.error("a stored experiment does not read: left out", extra={"key": key})
            return None

    def put_results(self, experiment_id: str, day: str, results: dict[str, Any]) -> None:
        self.blobs.put(f"{PREFIX}{experiment_id}/results/{day}.json", _standard_json(results))

    def results(self, experiment_id: str) -> list[dict[str, Any]]:
        """Every day's results, oldest first (a day's that does not read left out)."""
        read = (self._stored_json(key) for key in self._result_keys(experiment_id))
        return [day for day in read if day is not None]

    def latest_results(self, experiment_id: str) -> dict[str, Any] | None:
        """The newest day's results that read, reading from the last day back; None before the first."""
        for key in reversed(self._result_keys(experiment_id)):
            if (day := self._stored_json(key)) is not None:
                return day
        return None

    def _stored_json(self, key: str) -> dict[str, Any] | None:
        """A stored JSON object; None when it is gone or does not read (logged): one file never
        breaks a listing or a report for the others."""
        try:
            read = json.loads(self.blobs.get(key))
        except NotFound:
            return None
        except (ValueError, RecursionError):  # RecursionError: nested past the parser's depth (by hand)
            read = None
        # Nested deeper than any file a run writes (by hand): the answer that holds it could not be
        # written (pydantic stops at 255 levels), for this experiment or for every one listed.
        if not isinstance(read, dict) or _deeper_than(read, MAX_STORED_DEPTH):
            logger.error("a stored experiment file does not read: left out", extra={"key": key})
            return None
        return read

    def _result_keys(self, experiment_id: str) -> list[str]:
        return sorted(k for k in self.blobs.keys(f"{PREFIX}{experiment_id}/results/") if k.endswith(".json"))

    def put_report(self, report: dict[str, Any]) -> None:
        """The attribution report: per day, strategy, version and variant (shared/experiments/attribution.py)."""
        self.blobs.put(REPORT_KEY, _standard_json(report))

    def report(self) -> dict[str, Any]:
        """The attribution report; empty before the first night's, or when it does not read (the
        next night's replaces it)."""
        return self._stored_json(REPORT_KEY) or {"as_of": None, "days": []}


def _standard_json(value: Any) -> bytes:
    """JSON any reader of the bucket takes (Athena, jq, a browser): a number that is not finite
    (an interval before any data: unbounded) is written null, as the API shows it."""
    return json.dumps(finite(value), allow_nan=False).encode()


# Results and the report are a few levels deep: one past this was not written by a run.
MAX_STORED_DEPTH = 32


def _deeper_than(value: Any, most: int) -> bool:
    """Whether JSON `value` nests more than `most` levels of objects and arrays."""
    level = [value]
    for _ in range(most):
        level = [inner for outer in level if isinstance(outer, (dict, list))
                 for inner in (outer.values() if isinstance(outer, dict) else outer)]
        if not level:
            return False
    return any(isinstance(inner, (dict, list)) for inner in level)


def _stored_experiment(raw: bytes, key: str) -> Experiment:
    """The experiment stored at `key`; ValueError for one that is not that key's (by hand: a stop
    would write another key and leave this one running for ever), or that started before the day
    its id names (by hand: the nightly tallies would count every day back to it)."""
    experiment = Experiment.model_validate_json(raw, context=STORED)
    if _key(experiment.experiment_id) != key:
        raise ValueError(f"its experiment_id {experiment.experiment_id[:100]!r} is not its key's")
    day = _day(key)
    if day and experiment.started_at < datetime.strptime(day, "%Y%m%d").replace(tzinfo=timezone.utc) - timedelta(days=1):
        raise ValueError("it started before the day its id names")
    return experiment


def _key(experiment_id: str) -> str:
    return f"{PREFIX}{experiment_id}/experiment.json"


def _running_key(experiment_id: str) -> str:
    return RUNNING_PREFIX + experiment_id


def _day(key: str) -> str:
    """The day an experiment's key names (exp-20261201-...); "" for an id of another form, which
    is listed after all others."""
    found = DAY_OF_ID.match(key[len(PREFIX):])
    return found.group(1) if found else ""
