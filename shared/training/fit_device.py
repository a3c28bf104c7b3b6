"""Where ALS fits: on the CPU (implicit's OpenMP solver), or on a GPU (implicit's CUDA solver).

The fit job on GPU instances (template.yaml: FitCompute=gpu) sets FIT_DEVICE=gpu. implicit's
Linux wheels carry the CUDA extension, but it needs RMM (`rmm-cu13`) and a device
(functions/train/Dockerfile.gpu). When either is missing the run still trains, on the CPU, and
says so in its manifest (`fit_device`): a shop gets its model a little later rather than none.
"""

from __future__ import annotations

from typing import Literal

Device = Literal["cpu", "gpu"]
CPU: Device = "cpu"
GPU: Device = "gpu"


def gpu_missing() -> str | None:
    """Why implicit cannot fit on a GPU in this process (None: it can)."""
    try:
        import implicit.gpu
    except ImportError as error:  # an implicit without its gpu package
        return f"implicit.gpu cannot be imported ({error})"
    if not implicit.gpu.HAS_RMM:
        return "RMM is not installed (pip install rmm-cu13), which implicit's CUDA ALS needs"
    if not implicit.gpu.HAS_CUDA:
        return "implicit finds no CUDA device or runtime (implicit.gpu.HAS_CUDA is False)"
    return None


def resolve(asked: Device) -> tuple[Device, str]:
    """The device a run fits on when `asked` for one, and what its manifest says of it."""
    if asked == GPU:
        missing = gpu_missing()
        if missing is not None:
            return CPU, f"cpu: FIT_DEVICE is gpu, but {missing}"
    return asked, asked
