"""The Segments function ships without numpy, scipy and implicit (functions/segments has no
requirements.txt): nothing it imports when it starts may need them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "scipy", "implicit")


def test_the_segments_function_starts_without_numpy_scipy_or_implicit():
    # A fresh interpreter: this test session has long imported numpy for other tests.
    script = ("import sys; sys.path.insert(0, 'functions/segments'); import app; "
              f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = {**os.environ, "EVENTS_TABLE": "events", "ITEMS_TABLE": "items", "USERS_TABLE": "users",
           "SEGMENTS_TABLE": "segments", "MODEL_BUCKET": "models",
           "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true",
           "POWERTOOLS_METRICS_DISABLED": "true"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"imported when the function starts: {result.stdout.strip()}"
