"""How this code fits and scores, named: a run takes an earlier run's blend choice, or starts a fit
from its kept factors, only when that run fitted and scored the same way (shared/training/job.py).

A deploy that changes how the interactions are weighed, how ALS fits or how a blend is scored
would otherwise hand the next runs a choice made on the old scores (for up to `blend_reuse_days`)
and starts fitted the old way (for up to `start_chain_days`, a chain carrying them on). The
holdout would still score the new code, so the gate stays sound; what is lost is what the reuse
claims to keep. The price of a change: one night that chooses and fits cold.
"""

from __future__ import annotations

from implicit import __version__ as implicit_version

# Raised by a change to the code that weighs the interactions, makes a fit, starts one from an
# earlier fit or scores a blend. tests/unit/test_training_method.py holds a fingerprint of that
# code and fails when it changes, until this is raised or the change is recorded as one that
# changes no fit and no score.
CODE = 2


def method() -> str:
    """This code's way of fitting and scoring: CODE, and implicit's release (a new one may fit
    differently too)."""
    return f"{CODE}; implicit {implicit_version}"
