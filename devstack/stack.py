"""The local stack: DynamoDB Local + tables from template.yaml + the local gateway, one process.

``up`` starts the stack process in the background and waits until it answers; ``down`` stops
it (and DynamoDB Local with it); the state file in the state folder says what is running where.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devstack.dynamodb_local import LOCAL_CREDENTIALS, DynamoDBLocal, create_tables, port_in_use
from devstack.gateway import Gateway, make_server
from devstack.local_auth import LocalAuth
from devstack.template import PROJECT_ROOT, function_environment, load_template, resources

DEFAULT_STATE_DIR = PROJECT_ROOT / ".devstack"
DEFAULT_PORT = 3000
TABLE_PREFIX = "shop-recs"
BUS_FILE = "bus.jsonl"  # the local event bus (shared/storage/bus.py, LocalBus)


EXPORTED_TABLES = ("EventsTable", "UsersTable", "ItemsTable")  # what a training run reads


def export_dir(state_dir: Path) -> Path:
    return state_dir / "exports"


class StackError(RuntimeError):
    """Something a person must act on; the message says what."""


@dataclass
class StackState:
    pid: int
    port: int
    dynamodb_pid: int
    dynamodb_endpoint: str
    tables: dict[str, str]
    started_at: float

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def state_file(state_dir: Path) -> Path:
    return state_dir / "stack.json"


def running(state_dir: Path) -> tuple[StackState, LocalAuth]:
    """The stack running from state_dir, with its token issuer and trusted key (new at every start)."""
    state = read_state(state_dir)
    if state is None:
        raise StackError(f"no local stack is running from {state_dir}: start it with ./dev up")
    return state, LocalAuth.load(state_dir / "local-auth.json")


def read_state(state_dir: Path) -> StackState | None:
    try:
        return StackState(**json.loads(state_file(state_dir).read_text()))
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def alive(pid: int) -> bool:
    try:
        # A stack started by this very process lingers as a zombie until reaped.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: the usual case, `./dev up` and `./dev down` are separate processes
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_environment(template: dict[str, Any], endpoint: str, tables: dict[str, str],
                      state_dir: Path) -> dict[str, str]:
    """What every function sees locally: the template's variables with local names."""
    # The train function is never invoked by name locally: the gateway gives the admin function
    # a trainer that runs its handler in a thread (devstack/local_trainer.py).
    # No Secrets Manager here: VisitorTokenSecret's ARN is empty and the key itself is given.
    # Campaign exports go to LOCAL_CAMPAIGN_DIR instead of CampaignBucket (below).
    refs = {**tables, "ModelBucket": f"{TABLE_PREFIX}-models", "TrainFunction": f"{TABLE_PREFIX}-TrainFunction",
            "CampaignBucket": f"{TABLE_PREFIX}-campaigns",
            "VisitorTokenSecret": "", "ShopEventsBus": f"{TABLE_PREFIX}-events"}
    environment: dict[str, str] = {}
    for function in resources(template, "AWS::Serverless::Function"):
        for name, value in function_environment(template, function, refs, {}).items():
            if environment.get(name, value) != value:
                raise StackError(f"functions disagree on {name}; the local stack runs them in one process")
            environment[name] = value
    environment.update(LOCAL_CREDENTIALS)
    environment.update({
        "AWS_ENDPOINT_URL_DYNAMODB": endpoint,
        "LOCAL_MODEL_DIR": str(state_dir / "models"),
        # `./dev export` writes the tables here; `TRAINING_PATH=export ./dev up` trains from them.
        "LOCAL_EXPORT_DIR": str(export_dir(state_dir)),
        "TRAINING_PATH": os.environ.get("TRAINING_PATH", environment.get("TRAINING_PATH", "scan")),
        # Campaign exports and their status: what the campaign bucket holds on AWS.
        "LOCAL_CAMPAIGN_DIR": str(state_dir / "campaigns"),
        # Triggers go to a JSON Lines file instead of EventBridge; GET /dev/bus reads it.
        "LOCAL_BUS_FILE": str(state_dir / BUS_FILE),
        "OPENBLAS_NUM_THREADS": "1",
        "MODEL_REFRESH_SECONDS": "5",  # a model trained locally is served within seconds
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_DEV": "false",
        "VISITOR_TOKEN_SECRET": secrets.token_urlsafe(48),  # visitors start again with each stack
    })
    return environment


def serve(port: int, state_dir: Path, dynamodb_port: int = 0, persist: bool = False) -> None:
    """Run the stack in this process until SIGTERM or Ctrl-C; the state file marks it ready."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if not persist:  # models trained on data that is gone would serve items nobody bought
        shutil.rmtree(state_dir / "models", ignore_errors=True)
        (state_dir / BUS_FILE).unlink(missing_ok=True)  # events about data that is gone
    if port_in_use(port):
        raise StackError(f"port {port} is in use by another program: pick another with --port")
    template = load_template()
    dynamodb = DynamoDBLocal.start(
        dynamodb_port, data_dir=state_dir / "dynamodb" if persist else None,
        log_path=state_dir / "dynamodb.log",
    )
    try:
        tables = create_tables(dynamodb.endpoint, TABLE_PREFIX, template)
        os.environ.update(local_environment(template, dynamodb.endpoint, tables, state_dir))
        origins = [o.strip() for o in template["Parameters"]["AllowedOrigins"]["Default"].split(",")]
        auth = LocalAuth.create()
        auth.save(state_dir / "local-auth.json")
        server = make_server(Gateway(template, origins, auth), port)
        state = StackState(os.getpid(), server.server_address[1], dynamodb.process.pid,
                           dynamodb.endpoint, tables, time.time())

        def stop(*_: Any) -> None:
            threading.Thread(target=server.shutdown, daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        state_file(state_dir).write_text(json.dumps(asdict(state)))
        print(f"local stack ready at {state.url} (DynamoDB Local at {dynamodb.endpoint})", flush=True)
        server.serve_forever()
        server.server_close()
    finally:
        dynamodb.stop()
        state_file(state_dir).unlink(missing_ok=True)
        print("local stack stopped", flush=True)


def up(port: int = DEFAULT_PORT, state_dir: Path = DEFAULT_STATE_DIR, persist: bool = False,
       timeout: float = 120) -> tuple[StackState, bool]:
    """Start the stack in the background; (state, False) if one was already running."""
    running = read_state(state_dir)
    if running and alive(running.pid):
        return running, False
    if running:  # left over from a stack that was killed: clean up after it
        _kill(running.dynamodb_pid)
        state_file(state_dir).unlink(missing_ok=True)
    if port and port_in_use(port):
        raise StackError(f"port {port} is in use by another program: pick another with --port")
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "stack.log"
    command = [sys.executable, "-m", "devstack.cli", "serve", "--port", str(port),
               "--state-dir", str(state_dir)] + (["--persist"] if persist else [])
    with open(log_path, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True, cwd=PROJECT_ROOT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read_state(state_dir)
        if state and state.pid == process.pid:
            return state, True
        if process.poll() is not None:
            raise StackError(f"the local stack failed to start:\n{_tail(log_path)}")
        time.sleep(0.2)
    process.terminate()
    raise StackError(f"the local stack did not start within {timeout:.0f} s:\n{_tail(log_path)}")


def down(state_dir: Path = DEFAULT_STATE_DIR, timeout: float = 20) -> StackState | None:
    """Stop the stack if one runs; returns what was stopped."""
    state = read_state(state_dir)
    if state is None:
        return None
    if alive(state.pid):
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    _kill(state.pid)
    _kill(state.dynamodb_pid)
    state_file(state_dir).unlink(missing_ok=True)
    return state


def _kill(pid: int) -> None:
    if alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"
