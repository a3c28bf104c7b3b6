"""Experiments and their daily results, beside the model versions (the model bucket or LOCAL_MODEL_DIR).

    experiments/<id>/experiment.json          the spec and its state (running, stopped, promoted)
    experiments/<id>/results/<day>.json       the results as of the end of that day (cumulative)
    experiments-running/<id>                  (empty) names each running experiment
    experiments-running/_complete             written once every running experiment is named there
    attribution/report.json                   the last days' credited revenue, click-through, conversion

Serving reads which experiments run at most every MODEL_REFRESH_SECONDS, as it reads the active
pointer, in the request that finds it due: the experiments named under experiments-running/
(one per surface at most), not every experiment a shop ever ran. A name is written before its
experiment runs and deleted after it ends, and only names a candidate: its experiment.json says
whether it runs, so a name an interrupted call left misleads nobody. The nightly run makes the
names agree with the experiments (and names those that ran before the names did), then marks
them complete; until then the running experiments are found among all of them, as before.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import NotFound
from shared.experiments.spec import Experiment
from shared.storage.blobs import Blobs

PREFIX = "experiments/"
RUNNING_PREFIX = "experiments-running/"
RUNNING_COMPLETE_KEY = RUNNING_PREFIX + "_complete"
REPORT_KEY = "attribution/report.json"


class ExperimentStore:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def save(self, experiment: Experiment) -> None:
        """The experiment, and its name among the running: written before an experiment that
        runs, deleted after one that ended."""
        named = _running_key(experiment.experiment_id)
        if experiment.status == "running":
            self.blobs.put(named, b"")
        self.blobs.put(_key(experiment.experiment_id), experiment.model_dump_json().encode())
        if experiment.status != "running":
            self.blobs.delete(named)

    def get(self, experiment_id: str) -> Experiment:
        try:
            return Experiment.model_validate_json(self.blobs.get(_key(experiment_id)))
        except NotFound:
            raise NotFound(f"experiment {experiment_id} does not exist", field="experiment_id") from None

    def all(self) -> list[Experiment]:
        """Every experiment, newest first: a read of each, for the nightly run."""
        return self._read([key for key in self.blobs.keys(PREFIX) if key.endswith("/experiment.json")])

    def recent(self, limit: int) -> list[Experiment]:
        """The `limit` newest experiments, reading those of their days only (an id starts with its
        day: exp-20261201-a1b2c3)."""
        keys = sorted((key for key in self.blobs.keys(PREFIX) if key.endswith("/experiment.json")), reverse=True)
        days = sorted({_day(key) for key in keys}, reverse=True)
        newest: list[str] = []
        for day in days:
            if len(newest) >= limit:
                break
            newest += [key for key in keys if _day(key) == day]
        return self._read(newest)[:limit]

    def running(self) -> list[Experiment]:
        if self._names_complete():
            named = self._read([_key(key[len(RUNNING_PREFIX):]) for key in self._running_names()])
            return [e for e in named if e.status == "running"]
        return [e for e in self.all() if e.status == "running"]

    def reconcile_running(self) -> None:
        """Name every running experiment and no other under experiments-running/ (the nightly run),
        then mark the names complete."""
        running = {_running_key(e.experiment_id) for e in self.all() if e.status == "running"}
        named = set(self._running_names())
        for key in running - named:
            self.blobs.put(key, b"")
        for stale in named - running:  # an ended experiment's, or one whose experiment.json is gone
            self.blobs.delete(stale)
        self.blobs.put(RUNNING_COMPLETE_KEY, b"")

    def _running_names(self) -> list[str]:
        return [key for key in self.blobs.keys(RUNNING_PREFIX) if key != RUNNING_COMPLETE_KEY]

    def _names_complete(self) -> bool:
        try:
            self.blobs.get(RUNNING_COMPLETE_KEY)
        except NotFound:
            return False
        return True

    def _read(self, keys: list[str]) -> list[Experiment]:
        found = []
        for key in keys:
            try:
                found.append(Experiment.model_validate_json(self.blobs.get(key)))
            except (NotFound, ValueError):
                continue  # deleted meanwhile, or unreadable: never breaks the list for the others
        return sorted(found, key=lambda e: e.started_at, reverse=True)

    def put_results(self, experiment_id: str, day: str, results: dict[str, Any]) -> None:
        self.blobs.put(f"{PREFIX}{experiment_id}/results/{day}.json", json.dumps(results).encode())

    def results(self, experiment_id: str) -> list[dict[str, Any]]:
        """Every day's results, oldest first."""
        return [json.loads(self.blobs.get(key)) for key in self._result_keys(experiment_id)]

    def latest_results(self, experiment_id: str) -> dict[str, Any] | None:
        """The last day's results, reading that day's only; None before the first."""
        keys = self._result_keys(experiment_id)
        return json.loads(self.blobs.get(keys[-1])) if keys else None

    def _result_keys(self, experiment_id: str) -> list[str]:
        return sorted(k for k in self.blobs.keys(f"{PREFIX}{experiment_id}/results/") if k.endswith(".json"))

    def put_report(self, report: dict[str, Any]) -> None:
        """The attribution report: per day, strategy, version and variant (shared/experiments/attribution.py)."""
        self.blobs.put(REPORT_KEY, json.dumps(report).encode())

    def report(self) -> dict[str, Any]:
        try:
            return json.loads(self.blobs.get(REPORT_KEY))
        except NotFound:
            return {"as_of": None, "days": []}


def _key(experiment_id: str) -> str:
    return f"{PREFIX}{experiment_id}/experiment.json"


def _running_key(experiment_id: str) -> str:
    return RUNNING_PREFIX + experiment_id


def _day(key: str) -> str:
    """The day an experiment's key names (its id's second part); "" for an id of another form."""
    parts = key[len(PREFIX):].split("/", 1)[0].split("-")
    return parts[1] if len(parts) > 2 else ""
