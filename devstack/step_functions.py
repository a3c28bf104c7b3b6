"""A stand-in for AWS Step Functions: runs an Amazon States Language definition in-process.

Step Functions cannot run here, so the TrainingPipeline's own definition
(statemachines/training.asl.json, with template.yaml's DefinitionSubstitutions) runs on this
interpreter, each Task's Resource ARN mapped to a Python callable that speaks that service's
format (a request dict in, a response dict out, an error as `TaskFailed(error, cause)`).

What it covers, as the States Language specifies it: Task, Pass, Wait (no sleeping: the seconds
are added to `Execution.waited`), Choice (the comparison operators, And/Or/Not, IsPresent, IsNull,
IsString, IsBoolean, IsNumeric), Parallel, Succeed, Fail (Error/Cause and ErrorPath/CausePath);
Retry (ErrorEquals, IntervalSeconds, MaxAttempts, BackoffRate, MaxDelaySeconds; the delays are
recorded, not slept) and Catch;
InputPath, Parameters, ResultSelector, ResultPath, OutputPath, with reference paths ($.a.b, $[0],
$$ for the context object) and the intrinsic functions States.Format, States.JsonToString,
States.StringToJson, States.Array, States.UUID. Map is not used by the pipeline and is refused.

`LocalStepFunctions` keeps executions and answers the Step Functions API calls the admin function
makes (StartExecution, ListExecutions, DescribeExecution, GetExecutionHistory) in the API's own
response shapes; `botocore_handler` plugs it into a real boto3 client, so parameters are still
validated by botocore and the storage code under test is the deployed one.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

Task = Callable[[dict[str, Any]], Any]


class StatesError(Exception):
    """An error as the States Language names it (States.TaskFailed, DynamoDb.X, a Fail state's)."""

    def __init__(self, error: str, cause: str = "") -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


class TaskFailed(StatesError):
    """Raised by a task's callable: the service answered with this error."""


RUNTIME = "States.Runtime"  # a definition that cannot be carried out: never retried nor caught


def load_definition(path: Path, substitutions: dict[str, str]) -> dict[str, Any]:
    """The definition as Step Functions gets it: each ${Name} replaced by DefinitionSubstitutions."""
    text = path.read_text()
    missing = set(re.findall(r"\$\{(\w+)\}", text)) - substitutions.keys()
    if missing:
        raise ValueError(f"{path.name}: no substitution for {sorted(missing)}")
    return json.loads(re.sub(r"\$\{(\w+)\}", lambda m: str(substitutions[m.group(1)]), text))


# --- paths and intrinsic functions ---------------------------------------------------------

_MISSING = object()


def _path_steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for name, index in re.findall(r"\.([^.\[\]]+)|\[(\d+)\]", path[1:]):
        steps.append(int(index) if index else name)
    if "".join(f".{s}" if isinstance(s, str) else f"[{s}]" for s in steps) != path[1:]:
        raise StatesError(RUNTIME, f"a path this interpreter cannot read: {path}")
    return steps


def read_path(path: str, data: Any, context: dict[str, Any]) -> Any:
    if path.startswith("$$"):
        path, data = path[1:], context
    if not path.startswith("$"):
        raise StatesError(RUNTIME, f"not a reference path: {path}")
    value = data
    for step in _path_steps(path):
        if isinstance(step, int):
            value = value[step] if isinstance(value, list) and step < len(value) else _MISSING
        elif isinstance(value, dict):
            value = value.get(step, _MISSING)
        else:
            value = _MISSING
        if value is _MISSING:
            raise StatesError(RUNTIME, f"the path {path} matches nothing in {json.dumps(data)[:500]}")
    return value


def write_path(path: str | None, data: Any, result: Any) -> Any:
    """ResultPath: null keeps the input, $ replaces it, $.a.b sets a field (making objects)."""
    if path is None:
        return data
    if path == "$":
        return result
    steps = _path_steps(path)
    if any(isinstance(step, int) for step in steps):
        raise StatesError(RUNTIME, f"ResultPath cannot index arrays: {path}")
    root = json.loads(json.dumps(data)) if isinstance(data, dict) else {}
    target = root
    for step in steps[:-1]:
        if not isinstance(target.get(step), dict):
            target[step] = {}
        target = target[step]
    target[steps[-1]] = result
    return root


def _intrinsic_arguments(text: str) -> list[str]:
    """Top-level comma-separated arguments, quotes and nested calls kept whole."""
    arguments, depth, quoted, current, escaped = [], 0, False, "", False
    for char in text:
        if quoted:
            current += char
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "'":
                quoted = False
            continue
        if char == "'":
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "," and depth == 0:
            arguments.append(current.strip())
            current = ""
            continue
        current += char
    if current.strip():
        arguments.append(current.strip())
    return arguments


def evaluate_intrinsic(expression: str, data: Any, context: dict[str, Any]) -> Any:
    found = re.fullmatch(r"(States\.\w+)\((.*)\)", expression.strip(), re.S)
    if not found:
        raise StatesError(RUNTIME, f"not an intrinsic function: {expression}")
    name, text = found.groups()

    def argument(raw: str) -> Any:
        if raw.startswith("'"):
            return re.sub(r"\\(.)", r"\1", raw[1:-1])
        if raw.startswith("$"):
            return read_path(raw, data, context)
        if raw.startswith("States."):
            return evaluate_intrinsic(raw, data, context)
        return json.loads(raw)  # a number, true, false, null

    arguments = [argument(raw) for raw in _intrinsic_arguments(text)]
    if name == "States.Format":
        template, *values = arguments
        pieces = re.split(r"(?<!\\)\{\}", template)
        if len(pieces) != len(values) + 1:
            raise StatesError("States.IntrinsicFailure", f"{expression}: {len(values)} values for {len(pieces) - 1} {{}}")
        text_values = [v if isinstance(v, str) else json.dumps(v) for v in values]
        return "".join(piece + (text_values[i] if i < len(values) else "") for i, piece in enumerate(pieces))
    if name == "States.JsonToString":
        return json.dumps(arguments[0], separators=(",", ":"))
    if name == "States.StringToJson":
        return json.loads(arguments[0])
    if name == "States.Array":
        return arguments
    if name == "States.UUID":
        return str(uuid.uuid4())
    raise StatesError(RUNTIME, f"{name} is not implemented by this interpreter")


def payload(template: Any, data: Any, context: dict[str, Any]) -> Any:
    """Parameters and ResultSelector: keys ending in .$ take a path's or a function's value."""
    if isinstance(template, dict):
        out = {}
        for key, value in template.items():
            if key.endswith(".$"):
                out[key[:-2]] = (evaluate_intrinsic(value, data, context) if value.startswith("States.")
                                 else read_path(value, data, context))
            else:
                out[key] = payload(value, data, context)
        return out
    if isinstance(template, list):
        return [payload(item, data, context) for item in template]
    return template


# --- Choice rules -------------------------------------------------------------------------

_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b, "GreaterThan": lambda a, b: a > b,
    "LessThanEquals": lambda a, b: a <= b, "GreaterThanEquals": lambda a, b: a >= b,
}
_KINDS = {"String": str, "Numeric": (int, float), "Boolean": bool, "Timestamp": str}
_TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsString": lambda v: isinstance(v, str), "IsBoolean": lambda v: isinstance(v, bool),
    "IsNumeric": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _rule_matches(rule: dict[str, Any], data: Any, context: dict[str, Any]) -> bool:
    if "And" in rule:
        return all(_rule_matches(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(_rule_matches(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not _rule_matches(rule["Not"], data, context)
    try:
        value = read_path(rule["Variable"], data, context)
        present = True
    except StatesError:
        value, present = None, False
    for key, expected in rule.items():
        if key in ("Variable", "Next"):
            continue
        if key == "IsPresent":
            return present == expected
        if not present:
            raise StatesError(RUNTIME, f"Choice: {rule['Variable']} is not in the input")
        if key == "IsNull":
            return (value is None) == expected
        if key in _TYPE_TESTS:
            return _TYPE_TESTS[key](value) == expected
        if key == "StringMatches":
            return isinstance(value, str) and re.fullmatch(re.escape(expected).replace(r"\*", ".*"), value) is not None
        for kind, types in _KINDS.items():
            if key.startswith(kind):
                operator = key[len(kind):]
                if operator.endswith("Path"):
                    operator, expected = operator[:-4], read_path(expected, data, context)
                if operator in _COMPARISONS:
                    if kind == "Numeric" and isinstance(value, bool):
                        return False
                    return isinstance(value, types) and _COMPARISONS[operator](value, expected)
        raise StatesError(RUNTIME, f"Choice: a comparison this interpreter does not know: {key}")
    raise StatesError(RUNTIME, f"Choice: a rule without a comparison: {rule}")


# --- executions ---------------------------------------------------------------------------


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _error_matches(names: list[str], error: str) -> bool:
    if error == RUNTIME:
        return False
    return any(name == error or name == "States.ALL" or (name == "States.TaskFailed" and error != "States.Timeout")
               for name in names)


@dataclass
class Execution:
    """One run: its status and output, the events of its history, and what its tasks were asked."""

    arn: str
    name: str
    state_machine_arn: str
    input: Any
    status: str = "RUNNING"
    output: Any = None
    error: str | None = None
    cause: str | None = None
    started: datetime = field(default_factory=_now)
    stopped: datetime | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (Task Resource, Parameters)
    waited: list[float] = field(default_factory=list)  # Wait states' and retries' seconds, not slept

    def event(self, kind: str, **details: Any) -> None:
        self.events.append({"timestamp": _now(), "type": kind, "id": len(self.events) + 1,
                            "previousEventId": len(self.events), **details})


class Interpreter:
    """Runs one definition against `tasks` (Resource ARN -> callable)."""

    def __init__(self, definition: dict[str, Any], tasks: dict[str, Task]) -> None:
        self.definition = definition
        self.tasks = tasks
        unknown = {state["Resource"] for state in self._all_states(definition) if state["Type"] == "Task"} - tasks.keys()
        if unknown:
            raise ValueError(f"no stand-in for the task resources {sorted(unknown)}")

    @classmethod
    def _all_states(cls, machine: dict[str, Any]) -> list[dict[str, Any]]:
        found = []
        for state in machine["States"].values():
            if state["Type"] == "Map":
                raise ValueError("Map states are not implemented by this interpreter")
            found.append(state)
            for branch in state.get("Branches", []):
                found += cls._all_states(branch)
        return found

    def run(self, execution: Execution) -> Execution:
        context = {"Execution": {"Id": execution.arn, "Name": execution.name, "Input": execution.input,
                                 "StartTime": execution.started.isoformat(), "RoleArn": "local"},
                   "StateMachine": {"Id": execution.state_machine_arn}}
        execution.event("ExecutionStarted", executionStartedEventDetails={"input": json.dumps(execution.input)})
        try:
            execution.output = self._machine(self.definition, execution.input, context, execution)
            execution.status = "SUCCEEDED"
            execution.event("ExecutionSucceeded", executionSucceededEventDetails={"output": json.dumps(execution.output)})
        except StatesError as failure:
            execution.status, execution.error, execution.cause = "FAILED", failure.error, failure.cause
            execution.event("ExecutionFailed", executionFailedEventDetails={"error": failure.error, "cause": failure.cause})
        execution.stopped = _now()
        return execution

    def _machine(self, machine: dict[str, Any], data: Any, context: dict[str, Any], execution: Execution) -> Any:
        name = machine["StartAt"]
        while True:
            state = machine["States"][name]
            kind = state["Type"]
            context = {**context, "State": {"Name": name, "EnteredTime": _now().isoformat()}}
            execution.event(f"{kind}StateEntered", stateEnteredEventDetails={"name": name, "input": json.dumps(data)})
            data, following = self._state(name, state, data, context, execution)
            if kind not in ("Fail",):
                execution.event(f"{kind}StateExited", stateExitedEventDetails={"name": name, "output": json.dumps(data)})
            if following is None:
                return data
            name = following

    def _state(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any],
               execution: Execution) -> tuple[Any, str | None]:
        kind = state["Type"]
        following = None if state.get("End") else state.get("Next")
        if kind == "Succeed":
            return self._output(state, self._input(state, data, context), context), None
        if kind == "Fail":
            error = read_or_call(state["ErrorPath"], data, context) if "ErrorPath" in state else state.get("Error", "States.Fail")
            cause = read_or_call(state["CausePath"], data, context) if "CausePath" in state else state.get("Cause", "")
            raise StatesError(str(error), str(cause))
        if kind == "Choice":
            chosen = self._input(state, data, context)
            for rule in state.get("Choices", []):
                if _rule_matches(rule, chosen, context):
                    return self._output(state, chosen, context), rule["Next"]
            if "Default" not in state:
                raise StatesError("States.NoChoiceMatched", f"{name}: no choice matched")
            return self._output(state, chosen, context), state["Default"]
        if kind == "Wait":
            execution.waited.append(float(state.get("Seconds", 0)))
            return self._output(state, self._input(state, data, context), context), following
        if kind == "Pass":
            effective = self._input(state, data, context)
            if "Parameters" in state:
                effective = payload(state["Parameters"], effective, context)
            result = state.get("Result", effective)
            return self._output(state, write_path(state.get("ResultPath", "$"), data, result), context), following
        if kind in ("Task", "Parallel"):
            try:
                result = self._with_retries(name, state, data, context, execution)
            except StatesError as failure:
                for catcher in state.get("Catch", []):
                    if _error_matches(catcher["ErrorEquals"], failure.error):
                        caught = {"Error": failure.error, "Cause": failure.cause}
                        return write_path(catcher.get("ResultPath", "$"), data, caught), catcher["Next"]
                raise
            if "ResultSelector" in state:
                result = payload(state["ResultSelector"], result, context)
            return self._output(state, write_path(state.get("ResultPath", "$"), data, result), context), following
        raise StatesError(RUNTIME, f"{name}: state type {kind} is not implemented")

    def _with_retries(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any],
                      execution: Execution) -> Any:
        attempts: dict[int, int] = {}
        while True:
            try:
                return self._attempt(name, state, data, context, execution)
            except StatesError as failure:
                retrier = next((i for i, r in enumerate(state.get("Retry", []))
                                if _error_matches(r["ErrorEquals"], failure.error)), None)
                if retrier is None:
                    raise
                rule = state["Retry"][retrier]
                made = attempts.get(retrier, 0)
                if made >= rule.get("MaxAttempts", 3):
                    raise
                attempts[retrier] = made + 1
                delay = rule.get("IntervalSeconds", 1) * rule.get("BackoffRate", 2.0) ** made
                execution.waited.append(min(delay, rule.get("MaxDelaySeconds", delay)))

    def _attempt(self, name: str, state: dict[str, Any], data: Any, context: dict[str, Any],
                 execution: Execution) -> Any:
        effective = self._input(state, data, context)
        if "Parameters" in state:
            effective = payload(state["Parameters"], effective, context)
        if state["Type"] == "Parallel":
            return [self._machine(branch, effective, context, execution) for branch in state["Branches"]]
        resource = state["Resource"]
        execution.calls.append((resource, effective))
        execution.event("TaskScheduled", taskScheduledEventDetails={"resource": resource, "parameters": json.dumps(effective)})
        try:
            result = self.tasks[resource](effective)
        except StatesError as failure:
            execution.event("TaskFailed", taskFailedEventDetails={"resource": resource, "error": failure.error,
                                                                  "cause": failure.cause})
            raise
        except Exception as failure:  # noqa: BLE001 - a service's unexpected error is the task's failure
            execution.event("TaskFailed", taskFailedEventDetails={"resource": resource, "error": type(failure).__name__,
                                                                  "cause": str(failure)})
            raise StatesError(type(failure).__name__, str(failure)) from failure
        execution.event("TaskSucceeded", taskSucceededEventDetails={"resource": resource, "output": json.dumps(result)})
        return result

    @staticmethod
    def _input(state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        path = state.get("InputPath", "$")
        return {} if path is None else read_path(path, data, context)

    @staticmethod
    def _output(state: dict[str, Any], data: Any, context: dict[str, Any]) -> Any:
        path = state.get("OutputPath", "$")
        return {} if path is None else read_path(path, data, context)


def read_or_call(expression: str, data: Any, context: dict[str, Any]) -> Any:
    if expression.startswith("States."):
        return evaluate_intrinsic(expression, data, context)
    return read_path(expression, data, context)


# --- the API ------------------------------------------------------------------------------


class LocalStepFunctions:
    """State machines and their executions, answering the Step Functions API's calls."""

    def __init__(self, region: str = "us-east-1", account: str = "123456789012", background: bool = False) -> None:
        self.region, self.account = region, account
        self.background = background  # StartExecution answers at once, as on AWS; `wait()` joins the runs
        self.machines: dict[str, Interpreter] = {}
        self.executions: dict[str, Execution] = {}
        self._lock = threading.Lock()
        self._runs: list[threading.Thread] = []

    def create_state_machine(self, name: str, definition: dict[str, Any], tasks: dict[str, Task]) -> str:
        arn = f"arn:aws:states:{self.region}:{self.account}:stateMachine:{name}"
        self.machines[arn] = Interpreter(definition, tasks)
        return arn

    def start_execution(self, state_machine_arn: str, input: Any = None, name: str | None = None) -> Execution:
        """Runs the execution to its end (no Wait or retry really waits), before returning or, in
        background mode, in a thread of its own."""
        if state_machine_arn not in self.machines:
            raise StatesError("StateMachineDoesNotExist", state_machine_arn)
        name = name or str(uuid.uuid4())
        machine_name = state_machine_arn.rsplit(":", 1)[-1]
        arn = f"arn:aws:states:{self.region}:{self.account}:execution:{machine_name}:{name}"
        with self._lock:
            if arn in self.executions:
                raise StatesError("ExecutionAlreadyExists", arn)
            execution = Execution(arn, name, state_machine_arn, {} if input is None else input)
            self.executions[arn] = execution
        if not self.background:
            return self.machines[state_machine_arn].run(execution)
        run = threading.Thread(target=self.machines[state_machine_arn].run, args=(execution,), daemon=True,
                               name=f"execution-{name}")
        self._runs.append(run)
        run.start()
        return execution

    def wait(self, timeout: float | None = None) -> bool:
        """True once every execution started in the background has ended."""
        for run in list(self._runs):
            run.join(timeout)
        return not any(run.is_alive() for run in self._runs)

    # The API's operations, in its request and response shapes.
    def call(self, operation: str, params: dict[str, Any]) -> dict[str, Any]:
        if operation == "StartExecution":
            execution = self.start_execution(params["stateMachineArn"], json.loads(params.get("input") or "{}"),
                                             params.get("name"))
            return {"executionArn": execution.arn, "startDate": execution.started}
        if operation == "ListExecutions":
            found = sorted((e for e in self.executions.values() if e.state_machine_arn == params["stateMachineArn"]
                            and params.get("statusFilter") in (None, e.status)),
                           key=lambda e: e.started, reverse=True)
            return {"executions": [self._summary(e) for e in found[:params.get("maxResults") or 100]]}
        if operation == "DescribeExecution":
            execution = self._execution(params["executionArn"])
            described = {**self._summary(execution), "input": json.dumps(execution.input)}
            if execution.output is not None:
                described["output"] = json.dumps(execution.output)
            if execution.error is not None:
                described.update(error=execution.error, cause=execution.cause)
            return described
        if operation == "GetExecutionHistory":
            events = list(self._execution(params["executionArn"]).events)
            if params.get("reverseOrder"):
                events.reverse()
            return {"events": events[:params.get("maxResults") or 1000]}
        raise StatesError("UnknownOperation", f"the stand-in does not answer {operation}")

    def botocore_handler(self, model: Any, params: dict[str, Any], **_: Any) -> tuple[Any, dict[str, Any]]:
        """For `client.meta.events.register("before-call.sfn", ...)`: botocore has validated and
        serialized the parameters (`params` is the request, its body the API's JSON); this answers
        instead of AWS, an error as the API's own (botocore raises its modeled exception)."""
        body = params.get("body") or b"{}"
        request = json.loads(body.decode() if isinstance(body, bytes) else body)
        try:
            return _Http(200), self.call(model.name, request)
        except StatesError as failure:
            return _Http(400), {"Error": {"Code": failure.error, "Message": failure.cause}}

    def _execution(self, arn: str) -> Execution:
        if arn not in self.executions:
            raise StatesError("ExecutionDoesNotExist", arn)
        return self.executions[arn]

    @staticmethod
    def _summary(execution: Execution) -> dict[str, Any]:
        summary = {"executionArn": execution.arn, "stateMachineArn": execution.state_machine_arn,
                   "name": execution.name, "status": execution.status, "startDate": execution.started}
        if execution.stopped is not None:
            summary["stopDate"] = execution.stopped
        return summary


@dataclass
class _Http:
    status_code: int
    headers: dict[str, str] = field(default_factory=dict)
