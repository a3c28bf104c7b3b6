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
    """What implicit's to_gpu returns, fitting on the CPU: it records the factors it was handed,
    and fails its fits with `failure` when one is set."""

    handed: list[tuple[np.ndarray, np.ndarray]] = []
    failure: Exception | None = None

    def __init__(self, model: AlternatingLeastSquares) -> None:
        self.model = model
        GpuTwin.handed.append((np.copy(model.user_factors), np.copy(model.item_factors)))  # fits write in place

    def fit(self, matrix, show_progress: bool = False) -> None:
        if GpuTwin.failure is not None:
            raise GpuTwin.failure
        self.model.fit(matrix, show_progress=show_progress)

    def to_cpu(self) -> AlternatingLeastSquares:
        return self.model


@pytest.fixture
def gpu(monkeypatch):
    """A GPU that implicit can use, behind its own to_gpu seam."""
    monkeypatch.setattr(fit_device, "gpu_missing", lambda: None)
    monkeypatch.setattr(AlternatingLeastSquares, "to_gpu", lambda model: GpuTwin(model), raising=False)
    GpuTwin.handed.clear()
    GpuTwin.failure = None
    yield GpuTwin
    GpuTwin.failure = None


def test_a_run_asked_for_a_gpu_where_there_is_none_fits_on_the_cpu_and_says_why(tmp_path, data):
    assert not implicit.gpu.HAS_CUDA  # this machine
    on_cpu, cpu_artifact = trained(tmp_path, data, "cpu")
    asked, artifact = trained(tmp_path, data, "gpu")
    assert on_cpu.fit_device == "cpu"
    assert asked.fit_device.startswith("cpu: FIT_DEVICE is gpu, but ")
    assert asked.status == on_cpu.status and asked.metrics == on_cpu.metrics
    assert np.array_equal(artifact.item_factors, cpu_artifact.item_factors)


def test_a_gpu_fit_goes_through_implicits_gpu_model_from_seeded_factors(tmp_path, data, gpu):
    manifest, artifact = trained(tmp_path, data, "gpu")
    assert manifest.fit_device == "gpu"
    # The holdout's fit starts from factors of the run's seed, the final one from the holdout's
    # (a fixed blend: no folds); implicit's GPU model would seed a seed of 0 from the clock.
    (first_users, first_items), (users, items) = gpu.handed
    assert len(gpu.handed) == 2 and first_users.dtype == np.float32
    assert np.abs(first_items).max() <= 0.5 / CONFIG.factors
    assert users.shape == first_users.shape and not np.array_equal(users, first_users)
    assert artifact.item_factors.dtype == np.float32 and artifact.item_factors.shape == first_items.shape
    gpu.handed.clear()
    again, repeated = trained(tmp_path / "again", data, "gpu")
    assert np.array_equal(gpu.handed[0][1], first_items)
    assert np.array_equal(repeated.item_factors, artifact.item_factors)


def test_a_gpu_fit_that_fails_is_done_on_the_cpu_and_the_manifest_says_why(tmp_path, data, gpu):
    on_cpu, cpu_artifact = trained(tmp_path, data, "cpu")
    gpu.failure = MemoryError("std::bad_alloc: out_of_memory: CUDA error")
    manifest, artifact = trained(tmp_path, data, "gpu")
    assert manifest.fit_device == "cpu: the GPU fit failed (MemoryError: std::bad_alloc: out_of_memory: CUDA error)"
    assert manifest.status == on_cpu.status and len(gpu.handed) == 1  # later fits go straight to the CPU
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
