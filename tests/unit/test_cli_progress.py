"""Long work on the command line says it is still going."""

from __future__ import annotations

import time

from devstack.cli import progress_printer, wait_with_progress


def test_a_long_call_reports_that_it_is_still_running_and_returns_its_result(capsys):
    result = wait_with_progress("training", lambda: (time.sleep(0.35), "manifest")[1], every=0.1)

    assert result == "manifest"
    assert capsys.readouterr().err.count("training: still running") >= 2


def test_a_load_reports_progress_in_tenths_when_not_on_a_terminal(capsys):
    show = progress_printer("events", 1000)
    for done in range(0, 1001, 50):
        show(done)

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 11  # 0%, 10%, ..., 100%: one line each in a CI log
    assert lines[-1].startswith("  events: 1,000/1,000 (100%")
