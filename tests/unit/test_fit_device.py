"""ALS on a GPU when the fit job has one (FIT_DEVICE=gpu), on the CPU with the reason when it has not.

This machine has no GPU: the GPU path is checked through implicit's own to_gpu seam, with a twin
that fits on the CPU, so what is ours (the start carried over, numpy factors back, the manifest)
is what the tests see.
"""

from __future__ import annotations

from pathlib import Path

import implicit.gpu
import numpy as np
import pytest
from implicit.cpu.als import AlternatingLeastSquares

from shared.storage.blobs import LocalBlobs
from shared.storage.models import ModelStore
from shared.training import fit_device
from shared.training.config import TrainingConfig
from shared.training.job import run_training
from shared.training.pipeline import TrainingData
from tests.training_data import A_MODEL_SERVES, END, interactions_of, shop

CONFIG = TrainingConfig(as_of=END, **A_MODEL_SERVES)


@pytest.fixture(scope="module")
def data():
    return TrainingData(interactions_of(shop().events), END.timestamp())


def trained(tmp_path: Path, data: TrainingData, device: str):
    store = ModelStore(LocalBlobs(tmp_path / device))
    manifest = run_training(lambda config, at: data, store, CONFIG, END, device)
    assert manifest.artifact is not None, manifest.reason
    return manifest, store.load(manifest)


class GpuTwin:
    """What implicit's to_gpu returns, fitting on the CPU: it records what it was handed."""

    handed: list[tuple[np.ndarray | None, np.ndarray | None]] = []

    def __init__(self, model: AlternatingLeastSquares) -> None:
        self.model = model
        GpuTwin.handed.append((model.user_factors, model.item_factors))

    def fit(self, matrix, show_progress: bool = False) -> None:
        self.model.fit(matrix, show_progress=show_progress)

    def to_cpu(self) -> AlternatingLeastSquares:
        return self.model


def test_a_run_asked_for_a_gpu_where_there_is_none_fits_on_the_cpu_and_says_why(tmp_path, data):
    assert not implicit.gpu.HAS_CUDA  # this machine
    on_cpu, cpu_artifact = trained(tmp_path, data, "cpu")
    asked, artifact = trained(tmp_path, data, "gpu")
    assert on_cpu.fit_device == "cpu"
    assert asked.fit_device.startswith("cpu: FIT_DEVICE is gpu, but ")
    assert asked.status == on_cpu.status and asked.metrics == on_cpu.metrics
    assert np.array_equal(artifact.item_factors, cpu_artifact.item_factors)


def test_a_gpu_fit_goes_through_implicits_gpu_model_from_the_same_start(tmp_path, data, monkeypatch):
    _, cpu_artifact = trained(tmp_path, data, "cpu")
    monkeypatch.setattr(fit_device, "gpu_missing", lambda: None)
    monkeypatch.setattr(AlternatingLeastSquares, "to_gpu", lambda model: GpuTwin(model), raising=False)
    GpuTwin.handed.clear()
    manifest, artifact = trained(tmp_path, data, "gpu")
    assert manifest.fit_device == "gpu"
    # The holdout's fit starts cold, the final one from its factors (a fixed blend: no folds).
    assert [(users is None, items is None) for users, items in GpuTwin.handed] == [(True, True), (False, False)]
    assert artifact.item_factors.dtype == np.float32
    assert np.array_equal(artifact.item_factors, cpu_artifact.item_factors)


@pytest.mark.parametrize("rmm, cuda, says", [(False, False, "rmm-cu13"), (True, False, "no CUDA device")])
def test_why_a_gpu_cannot_be_used_names_what_is_missing(monkeypatch, rmm, cuda, says):
    monkeypatch.setattr(implicit.gpu, "HAS_RMM", rmm)
    monkeypatch.setattr(implicit.gpu, "HAS_CUDA", cuda)
    device, note = fit_device.resolve("gpu")
    assert device == "cpu" and says in note
    assert fit_device.resolve("cpu") == ("cpu", "cpu")


def test_the_gpu_job_and_only_it_asks_for_the_gpu():
    from devstack.template import load_template

    resources = load_template()["Resources"]
    environment = {name: {v["Name"]: v["Value"] for v in resources[name]["Properties"]["ContainerProperties"]
                          ["Environment"]} for name in ("FitGpuJobDefinition", "FitFargateJobDefinition")}
    assert environment["FitGpuJobDefinition"]["FIT_DEVICE"] == "gpu"
    assert "FIT_DEVICE" not in environment["FitFargateJobDefinition"]
