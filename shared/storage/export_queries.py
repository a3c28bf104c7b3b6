"""The export path's query stage: SQL turns the events export into the training window's interactions.

The statements of one run (`statements`), in Athena's dialect:
1. CREATE EXTERNAL TABLE over the events export's data files (DynamoDB JSON lines, gzipped), with
   only the attributes training reads;
2. UNLOAD of sql/interactions.sql to the run's output folder, as gzipped JSON lines;
3. DROP TABLE: the table only lives for the run, so two runs never share one.

On AWS the TrainingPipeline state machine runs them on Athena, and the fit reads the output; on
one machine shared/storage/duckdb_athena.py runs the same statements on DuckDB over the same
files. `read_interactions` reads the output into the Interactions training fits, through the Scan
path's own InteractionLog, leaving out the customers who may not be trained on.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import islice
from pathlib import Path

from shared.events import format_timestamp
from shared.training.config import TrainingConfig
from shared.training.interactions import InteractionLog, Interactions

SQL = Path(__file__).with_name("sql")
# The attributes of an event item that training reads, typed as DynamoDB JSON holds them. Athena's
# SerDe matches names whatever their case; DynamoDB's own spelling lets DuckDB's reader match them too.
EVENT_COLUMNS = ("Item struct<user_id:struct<S:string>, item_id:struct<S:string>, event_type:struct<S:string>, "
                 "quantity:struct<N:string>, ts:struct<S:string>, order_id:struct<S:string>>")
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
ROWS_PER_PAGE = 50_000  # output lines handed to the InteractionLog at a time


@dataclass(frozen=True)
class QueryRun:
    """Where one run's query reads and writes: `events_data`, the export's data folder
    (…/AWSDynamoDB/<export id>/data/), and `output`, an empty folder for the interactions."""

    database: str
    run_id: str
    events_data: str
    output: str

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


def statements(run: QueryRun, window_start: str, window_end: str) -> list[str]:
    """The run's Athena statements, in order. The bounds are our own timestamps (format_timestamp)."""
    for bound in (window_start, window_end):
        if not re.fullmatch(r"[0-9T:.Z-]+", bound):
            raise ValueError(f"not a stored timestamp: {bound!r}")
    select = "\n".join(line for line in (SQL / "interactions.sql").read_text().splitlines()
                       if not line.lstrip().startswith("--")).format(events=run.table, window_start=window_start,
                                                             window_end=window_end)
    return [
        f"CREATE EXTERNAL TABLE {run.table} ({EVENT_COLUMNS}) "
        f"ROW FORMAT SERDE '{JSON_SERDE}' LOCATION '{run.events_data}'",
        f"UNLOAD ({select}) TO '{run.output}' WITH (format = 'JSON', compression = 'GZIP')",
        f"DROP TABLE IF EXISTS {run.table}",
    ]


def read_interactions(files: Iterable[Path], excluded: set[str], limit: int) -> Interactions:
    """The query's output (gzipped JSON lines {u, i, t, q, s, o}) as Interactions, without the
    interactions of `excluded` customers; TooManyInteractions past `limit`."""
    log = InteractionLog(limit=limit)
    rows = _rows(files, excluded)
    while page := list(islice(rows, ROWS_PER_PAGE)):
        users, items, types, quantities, seconds, orders = zip(*page)
        log.add_page(users, items, types, quantities, seconds, orders)
    return log.finish()


def _rows(files: Iterable[Path], excluded: set[str]) -> Iterator[tuple[str, str, str, float, float, str | None]]:
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            for line in lines:
                if line.strip():
                    row = json.loads(line)
                    if row["u"] not in excluded:
                        yield row["u"], row["i"], row["t"], row["q"], row["s"], row.get("o")



def export_queries(bucket: str, database: str, run_id: str, events_summary_key: str, config: TrainingConfig,
                   now: datetime) -> dict[str, str]:
    """What the TrainingPipeline's query stage runs for one run: its three statements (create,
    unload, drop) and `interactions`, the key prefix the output lands under in `bucket`."""
    output = f"queries/{run_id}/interactions/"
    run = QueryRun(database, run_id, f"s3://{bucket}/{events_data_folder(events_summary_key)}", f"s3://{bucket}/{output}")
    create, unload, drop = statements(run, *window_bounds(now, config.window_days))
    return {"create": create, "unload": unload, "drop": drop, "interactions": output}
