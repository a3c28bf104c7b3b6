"""A function run in a Python process of its own, beside the caller: the nightly read's second core.

The export path's read is Python work on every line, held to one core by the GIL. `in_child`
starts a fresh interpreter (`python -m shared.storage.child_process`, fork and exec, so no lock
another thread held is copied, and nothing of the caller's main module runs again: Lambda's is
its runtime's bootstrap) that imports the function by name, runs it on the arguments and sends
back what it returns or raises, pickled through a pipe. The caller goes on with its own share
meanwhile and takes the result when it needs it. What the child logs is written to this
process's stderr when its answer is taken (on Lambda, both streams go to the function's log).

Only our own functions and data cross the pipe (the pickles never come from outside the run).
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from typing import Any, BinaryIO

from shared.bulk import cycle_collection_paused


class ChildFailed(Exception):
    """The child process ended without an answer (killed, out of memory) or raised what cannot be
    sent back; the message says which, with what it wrote to stderr last."""


class Running:
    """A call started in a child process; `result()` waits for it. As a context manager, the
    child is stopped on leaving if its result was never taken (the caller failed first)."""

    def __init__(self, process: subprocess.Popen[bytes], errors: BinaryIO, name: str) -> None:
        self.process, self.errors, self.name = process, errors, name
        self._done: tuple[bool, Any] | None = None
        self._taker: threading.Thread | None = None

    def taken_when_ready(self) -> Running:
        """Take the answer as the child sends it, on a thread of this process, rather than when
        result() is called: a child whose answer is bigger than the pipe holds otherwise waits,
        alive with all it holds, until then."""
        self._taker = threading.Thread(target=self._take, name=f"answer of {self.name}", daemon=True)
        self._taker.start()
        return self

    def _take(self) -> None:
        try:
            self._done = self._collect()
        except BaseException as error:  # noqa: BLE001 - result() raises it, rather than collecting twice
            self._done = False, ChildFailed(f"{self.name}: its answer could not be taken: {error!r}")

    def result(self) -> Any:
        """What the function returned; what it raised is raised here."""
        if self._taker is not None:
            self._taker.join()
        if self._done is None:
            self._done = self._collect()
        ok, value = self._done
        if not ok:
            raise value
        return value

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._done is None:
            self.process.kill()
            if self._taker is not None:
                self._taker.join()
            else:
                self._done = self._collect()

    def _collect(self) -> tuple[bool, Any]:
        assert self.process.stdout is not None
        try:
            answer = pickle.load(self.process.stdout)
        except Exception:  # noqa: BLE001 - a cut-off stream (a killed child) fails in many ways: no answer
            answer = None
        finally:
            self.process.stdout.close()
        code = self.process.wait()
        with self.errors:
            self.errors.seek(0)
            errors = self.errors.read().decode(errors="replace")
        if answer is None:
            return False, ChildFailed(f"{self.name} ended with exit code {code} and no answer: {errors[-2000:]}")
        if errors:  # what the child logged (its stdout went there too) joins this process's log
            sys.stderr.write(errors)
            sys.stderr.flush()
        return answer


def in_child(function: Callable[..., Any], *args: Any) -> Running:
    """Start `function(*args)` in a child process. The function must be importable by name (a
    module-level function of ours); the arguments and the result must pickle."""
    # The child finds our packages where this process does (Lambda puts its task and layer
    # folders on sys.path itself, not in PYTHONPATH).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}
    # stderr goes to a file: a pipe nobody reads until the end could fill and stop the child.
    errors = tempfile.TemporaryFile()
    process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=errors, env=env)
    assert process.stdin is not None
    try:
        pickle.dump((function, args), process.stdin, protocol=pickle.HIGHEST_PROTOCOL)
        process.stdin.close()
    except BrokenPipeError:  # the child died at start; _collect reports its stderr
        pass
    return Running(process, errors, f"{function.__module__}.{function.__qualname__}")


def _serve(requests: BinaryIO, answers: BinaryIO) -> None:
    function, args = pickle.load(requests)
    try:
        # The caller pauses it for its share of the same work (shared/bulk.py says why); the child
        # ends after one call, so what cycles it leaves go with it.
        with cycle_collection_paused():
            result = function(*args)
    except Exception as error:  # noqa: BLE001 - every error goes back to the caller, which raises it
        try:
            answers.write(pickle.dumps((False, error), protocol=pickle.HIGHEST_PROTOCOL))
        except Exception:  # noqa: BLE001 - one that does not pickle goes back as its traceback
            answers.write(pickle.dumps((False, ChildFailed("".join(traceback.format_exception(error))))))
    else:
        # Straight into the pipe: a result of hundreds of MB is not copied into one bytes first.
        pickle.dump((True, result), answers, protocol=pickle.HIGHEST_PROTOCOL)
    answers.flush()


if __name__ == "__main__":
    # stdout carries the answer alone: what the function prints or logs (Powertools logs to
    # stdout) goes to stderr instead.
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _serve(sys.stdin.buffer, answers)
