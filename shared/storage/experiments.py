"""Experiments and their daily results, beside the model versions (the model bucket or LOCAL_MODEL_DIR).

    experiments/<id>/experiment.json          the spec and its state (running, stopped, promoted)
    experiments/<id>/results/<day>.json       the results as of the end of that day (cumulative)
    attribution/report.json                   the last days' credited revenue, click-through, conversion

Serving reads which experiments run at most every MODEL_REFRESH_SECONDS, as it reads the active
pointer: a few small objects, no table and no write per request.
"""

from __future__ import annotations

import json
from typing import Any

from shared.errors import NotFound
from shared.experiments.spec import Experiment
from shared.storage.blobs import Blobs

PREFIX = "experiments/"
REPORT_KEY = "attribution/report.json"


class ExperimentStore:
    def __init__(self, blobs: Blobs) -> None:
        self.blobs = blobs

    def save(self, experiment: Experiment) -> None:
        self.blobs.put(f"{PREFIX}{experiment.experiment_id}/experiment.json", experiment.model_dump_json().encode())

    def get(self, experiment_id: str) -> Experiment:
        try:
            return Experiment.model_validate_json(self.blobs.get(f"{PREFIX}{experiment_id}/experiment.json"))
        except NotFound:
            raise NotFound(f"experiment {experiment_id} does not exist", field="experiment_id") from None

    def all(self) -> list[Experiment]:
        found = []
        for key in self.blobs.keys(PREFIX):
            if key.endswith("/experiment.json"):
                try:
                    found.append(Experiment.model_validate_json(self.blobs.get(key)))
                except (NotFound, ValueError):
                    continue  # deleted meanwhile, or unreadable: never breaks the list for the others
        return sorted(found, key=lambda e: e.started_at, reverse=True)

    def running(self) -> list[Experiment]:
        return [e for e in self.all() if e.status == "running"]

    def put_results(self, experiment_id: str, day: str, results: dict[str, Any]) -> None:
        self.blobs.put(f"{PREFIX}{experiment_id}/results/{day}.json", json.dumps(results).encode())

    def results(self, experiment_id: str) -> list[dict[str, Any]]:
        """Every day's results, oldest first."""
        keys = sorted(k for k in self.blobs.keys(f"{PREFIX}{experiment_id}/results/") if k.endswith(".json"))
        return [json.loads(self.blobs.get(key)) for key in keys]

    def put_report(self, report: dict[str, Any]) -> None:
        """The attribution report: per day, strategy, version and variant (shared/experiments/attribution.py)."""
        self.blobs.put(REPORT_KEY, json.dumps(report).encode())

    def report(self) -> dict[str, Any]:
        try:
            return json.loads(self.blobs.get(REPORT_KEY))
        except NotFound:
            return {"as_of": None, "days": []}
