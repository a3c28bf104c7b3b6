"""A function run in a child process: what it returns or raises comes back, and a child that dies says so."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from shared.storage.child_process import ChildFailed, in_child
from shared.training.interactions import TooManyInteractions


def columns(n: int) -> dict[str, object]:
    print("a line on stdout, as a logger writes it")  # must not spoil the answer
    return {"pid": os.getpid(), "codes": np.arange(n, dtype=np.int32), "ids": [f"u{k}" for k in range(n)]}


def too_many(limit: int) -> None:
    raise TooManyInteractions(f"the window holds more than {limit:,} interactions")


def dies() -> None:
    os.write(2, b"out of memory, say\n")
    os._exit(9)


def sleeps(seconds: float) -> None:
    time.sleep(seconds)


def test_the_result_comes_back_from_another_process():
    with in_child(columns, 100_000) as running:
        answer = running.result()
    assert answer["pid"] != os.getpid()
    assert np.array_equal(answer["codes"], np.arange(100_000)) and answer["codes"].dtype == np.int32
    assert answer["ids"][-1] == "u99999"
    assert running.result() is answer  # taken once


def logs(message: str) -> None:
    from shared.observability import logger
    logger.warning(message)


def test_what_the_child_logs_joins_the_callers_log_when_its_answer_is_taken(capfd):
    capfd.readouterr()
    with in_child(logs, "a row that does not read, say") as running:
        assert "does not read" not in capfd.readouterr().err  # not yet: when the answer is taken
        running.result()
    assert '"message":"a row that does not read, say"' in capfd.readouterr().err


def test_what_the_function_raises_is_raised_in_the_caller():
    running = in_child(too_many, 5)
    with pytest.raises(TooManyInteractions, match="more than 5 interactions"):
        running.result()


def test_a_child_that_dies_without_answering_is_an_error_with_its_exit_code_and_stderr():
    with pytest.raises(ChildFailed, match=r"(?s)test_child_process.dies ended with exit code 9.*out of memory"):
        in_child(dies).result()


def test_an_answer_taken_when_ready_lets_the_child_end_before_the_result_is_asked_for():
    """A big answer (here 6 MB: a pipe holds 64 KB) would keep the child alive, with all it holds,
    until the caller asks; taken when ready, the child is gone as soon as it has sent it."""
    running = in_child(columns, 300_000).taken_when_ready()
    deadline = time.monotonic() + 60
    while running.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.process.poll() == 0
    assert running.result()["ids"][-1] == "u299999"


def test_leaving_early_stops_the_child_also_while_its_answer_is_being_taken():
    with pytest.raises(RuntimeError), in_child(sleeps, 60).taken_when_ready() as running:
        raise RuntimeError("the caller failed first")
    assert running.process.poll() is not None


def test_leaving_early_stops_the_child():
    with pytest.raises(RuntimeError), in_child(sleeps, 60) as running:
        raise RuntimeError("the caller failed first")
    assert running.process.poll() is not None
