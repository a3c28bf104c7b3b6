"""The export path's query stage: SQL turns the events export into the training window's interactions.

The statements of one run (`statements`), in Athena's dialect:
1. CREATE EXTERNAL TABLE over the events export's data files (DynamoDB JSON lines, gzipped), with
   only the attributes training reads;
2. UNLOAD of sql/interactions.sql to the run's output folder, as JSON lines compressed with
   Zstandard (OUTPUT_COMPRESSION);
3. UNLOAD of sql/customers.sql, the user ids with events (whose histories the segments read), to
   a folder of their own;
4. DROP TABLE: the table only lives for the run, so two runs never share one.

On AWS the TrainingPipeline state machine runs them on Athena, and the fit reads the output; on
one machine shared/storage/duckdb_athena.py runs the same statements on DuckDB over the same
files. `read_interactions` reads the output into the Interactions training fits, through the Scan
path's own InteractionLog (the nightly read takes out the customers who may not be trained on
afterwards); `read_customers` reads the ids.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path

import orjson

from shared.events import format_timestamp
from shared.storage.exports import compressed_lines
from shared.training.config import TrainingConfig
from shared.training.interactions import InteractionLog, Interactions

SQL = Path(__file__).with_name("sql")
# The attributes of an event item that training reads (and its key), typed as DynamoDB JSON holds
# them. Athena's SerDe matches names whatever their case; DynamoDB's own spelling lets DuckDB's
# reader match them too. A full export's lines fill Item, an incremental export's Keys and NewImage.
EVENT_ATTRIBUTES = ("user_id:struct<S:string>, event_id:struct<S:string>, item_id:struct<S:string>, "
                    "event_type:struct<S:string>, quantity:struct<N:string>, ts:struct<S:string>, "
                    "order_id:struct<S:string>")
EVENT_COLUMNS = (f"Item struct<{EVENT_ATTRIBUTES}>, Keys struct<user_id:struct<S:string>, event_id:struct<S:string>>, "
                 f"NewImage struct<{EVENT_ATTRIBUTES}>")
CHAIN_PARTITION = "export_number"  # an export's place in its chain: 0 the full one, then the incremental ones
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
# The query's output files. Not gzip: DuckDB writes gzip on one thread, 2.5 s per million rows,
# half of the whole query on one machine; Zstandard costs 0.5 s for files 12% larger (1M rows:
# 15.3 MB against 13.7), and is as quick to read back. Athena engine 3 writes it for UNLOAD.
OUTPUT_COMPRESSION = "ZSTD"
ROWS_PER_PAGE = 50_000  # output lines handed to the InteractionLog at a time


@dataclass(frozen=True)
class QueryRun:
    """Where one run's query reads and writes: `events_data`, the data folders
    (…/AWSDynamoDB/<export id>/data/) of the events table's export chain, the full export's first,
    `output`, an empty folder for the interactions, and `customers`, one for the ids with events."""

    database: str
    run_id: str
    events_data: tuple[str, ...]
    output: str
    customers: str

    @property
    def table(self) -> str:
        # Athena's names: lower-case letters, digits and underscores.
        return f"{self.database}.events_{re.sub(r'[^a-z0-9]', '_', self.run_id.lower())}"


def events_data_folder(summary_key: str) -> str:
    """The data folder of the export whose manifest-summary.json is `summary_key`."""
    return summary_key.rsplit("/", 1)[0] + "/data/"


def window_bounds(now: datetime, window_days: int) -> tuple[str, str]:
    """The window as the Scan path bounds it: stored timestamps from `window_days` before `now` to `now`."""
    return format_timestamp(now - timedelta(days=window_days)), format_timestamp(now)


def statements(run: QueryRun, window_start: str, window_end: str) -> dict[str, str]:
    """The run's Athena statements, in the order of their keys: the table over the chain (create,
    partitions: one per export), the queries (unload, unload_customers), then drop. The bounds are our own timestamps
    (format_timestamp); the folders, the export bucket's keys the state machine or this machine wrote."""
    for bound in (window_start, window_end):
        if not re.fullmatch(r"[0-9T:.Z-]+", bound):
            raise ValueError(f"not a stored timestamp: {bound!r}")
    events = (f"SELECT Item AS item FROM {run.table}" if len(run.events_data) == 1
              else _sql("events_of_chain.sql").format(table=run.table))
    select = _sql("interactions.sql").format(events=events, window_start=window_start, window_end=window_end)
    output = f"(format = 'JSON', compression = '{OUTPUT_COMPRESSION}')"
    partitions = " ".join(f"PARTITION ({CHAIN_PARTITION} = {number}) LOCATION '{folder}'"
                          for number, folder in enumerate(run.events_data))
    return {
        "create": f"CREATE EXTERNAL TABLE {run.table} ({EVENT_COLUMNS}) PARTITIONED BY ({CHAIN_PARTITION} int) "
                  f"ROW FORMAT SERDE '{JSON_SERDE}' LOCATION '{run.events_data[0]}'",
        "partitions": f"ALTER TABLE {run.table} ADD {partitions}",
        "unload": f"UNLOAD ({select}) TO '{run.output}' WITH {output}",
        "unload_customers": f"UNLOAD ({_sql('customers.sql').format(events=events)}) TO '{run.customers}' WITH {output}",
        "drop": f"DROP TABLE IF EXISTS {run.table}",
    }


def _sql(name: str) -> str:
    """A query of sql/, without its comments (they explain the file, not the run)."""
    return "\n".join(line for line in (SQL / name).read_text().splitlines() if not line.lstrip().startswith("--"))


def read_interactions(files: Iterable[Path], limit: int) -> Interactions:
    """The query's output (compressed JSON lines {u, i, t, q, s, o}) as Interactions;
    TooManyInteractions past `limit`."""
    log = InteractionLog(limit=limit)
    rows = _rows(files)
    while page := list(islice(rows, ROWS_PER_PAGE)):
        users, items, types, quantities, seconds, orders = zip(*page)
        log.add_page(users, items, types, quantities, seconds, orders)
    return log.finish()


def read_customers(files: Iterable[Path]) -> list[str]:
    """The query's user ids with events (compressed JSON lines {u})."""
    return [orjson.loads(line)["u"] for path in files for line in compressed_lines(path)]


def _rows(files: Iterable[Path]) -> Iterator[tuple[str, str, str, float, float, str | None]]:
    for path in files:
        for line in compressed_lines(path):
            row = orjson.loads(line)
            yield row["u"], row["i"], row["t"], row["q"], row["s"], row.get("o")


def export_queries(bucket: str, database: str, run_id: str, events_summary_keys: list[str],
                   config: TrainingConfig, now: datetime) -> dict[str, str]:
    """What the TrainingPipeline's query stage runs for one run: its statements over the events
    table's export chain (`events_summary_keys`, the full export's first), and `interactions` and
    `customers`, the key prefixes their output lands under in `bucket`."""
    output, customers = f"queries/{run_id}/interactions/", f"queries/{run_id}/customers/"
    run = QueryRun(database, run_id, tuple(f"s3://{bucket}/{events_data_folder(key)}" for key in events_summary_keys),
                   f"s3://{bucket}/{output}", f"s3://{bucket}/{customers}")
    return {**statements(run, *window_bounds(now, config.window_days)), "interactions": output, "customers": customers}
