"""The export path's query stage: SQL turns the events export into the training window's interactions.

The statements of one run (`statements`), in Athena's dialect:
1. CREATE EXTERNAL TABLE over the events export's data files (DynamoDB JSON lines, gzipped), with
   only the attributes training reads, their names matched by case;
2. UNLOAD of sql/interactions.sql to the run's output folder, as comma-separated numbers
   (TEXTFILE) compressed with Zstandard (OUTPUT_COMPRESSION): each customer and item by its
   number, the event type by its code, the basket of a purchase by its rank;
3. UNLOAD of sql/ids.sql, the user ids and the item ids with events, each with its number (the
   segments read the histories of those users), as JSON lines to a folder of their own;
4. DROP TABLE: the table only lives for the run, so two runs never share one.

On AWS the TrainingPipeline state machine runs them on Athena, and the fit reads the output; on
one machine shared/storage/duckdb_athena.py runs the same statements on DuckDB over the same
files. `read_interactions` reads the output into the Interactions training fits: numpy parses
the numbers, and no Python work is done per row (the nightly read takes out the customers who
may not be trained on afterwards); `read_ids` reads the ids.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import orjson

from shared.events import MAX_QUANTITY, STORED_TIME_LENGTH, STORED_TIME_PATTERN, format_timestamp
from shared.storage.export_folders import check_in_bucket
from shared.storage.exports import compressed_blocks, compressed_lines
from shared.training.config import TrainingConfig
from shared.training.interactions import EVENT_CODES, PURCHASE_CODE, Interactions, TooManyInteractions

SQL = Path(__file__).with_name("sql")
# The attributes of an event item that training reads (and its key), typed as DynamoDB JSON holds
# them, in DynamoDB's own spelling: matched by case (SERDE_PROPERTIES; DuckDB's reader too). A full
# export's lines fill Item, an incremental export's Keys and NewImage.
EVENT_ATTRIBUTES = ("user_id:struct<S:string>, event_id:struct<S:string>, item_id:struct<S:string>, "
                    "event_type:struct<S:string>, quantity:struct<N:string>, ts:struct<S:string>, "
                    "order_id:struct<S:string>")
EVENT_COLUMNS = (f"Item struct<{EVENT_ATTRIBUTES}>, Keys struct<user_id:struct<S:string>, event_id:struct<S:string>>, "
                 f"NewImage struct<{EVENT_ATTRIBUTES}>")
CHAIN_PARTITION = "export_number"  # an export's place in its chain: 0 the full one, then the incremental ones
JSON_SERDE = "org.openx.data.jsonserde.JsonSerDe"
# The SerDe matches keys whatever their case by default, and then fails the whole query on a line
# holding two keys that differ only by case (DynamoDB's names are case-sensitive: an item written by
# hand may hold quantity and Quantity). Matched by case, as DuckDB and the Scan path match them,
# each name that is not in lower case is mapped (Athena's own names for columns and fields are).
SERDE_PROPERTIES = ", ".join(
    ["'case.insensitive'='false'"]
    + [f"'mapping.{name.lower()}'='{name}'" for name in sorted(set(re.findall(r"(\w+)[ :]", EVENT_COLUMNS)))
       if name != name.lower()])
# The query's output files. Not gzip: DuckDB writes gzip on one thread, 2.5 s per million rows,
# half of the whole query on one machine; Zstandard costs 0.5 s for files 12% larger, and is as
# quick to read back. Athena engine 3 writes it for UNLOAD.
OUTPUT_COMPRESSION = "ZSTD"
# An interactions line: u,i,t,q,s,b (interactions.sql), parsed by numpy as these types (the
# Interactions' own, so that the columns are taken as they are parsed).
INTERACTION_LINE = np.dtype([("u", np.int32), ("i", np.int32), ("t", np.int8), ("q", np.float32),
                             ("s", np.float64), ("b", np.int32)])


@dataclass(frozen=True)
class QueryRun:
    """Where one run's query reads and writes: `events_data`, the data folders
    (…/AWSDynamoDB/<export id>/data/) of the events table's export chain, the full export's first,
    `output`, an empty folder for the interactions, and `ids`, one for the ids with events."""

    database: str
    run_id: str
    events_data: tuple[str, ...]
    output: str
    ids: str

    @property
    def table(self) -> str:
        # Athena's names: lower-case letters, digits and underscores.
        return f"{self.database}.events_{re.sub(r'[^a-z0-9]', '_', self.run_id.lower())}"


def window_bounds(now: datetime, window_days: int) -> tuple[str, str]:
    """The window as the Scan path bounds it: stored timestamps from `window_days` before `now` to `now`."""
    return format_timestamp(now - timedelta(days=window_days)), format_timestamp(now)


def statements(run: QueryRun, window_start: str, window_end: str) -> dict[str, str]:
    """The run's Athena statements, in the order of their keys: the table over the chain (create,
    partitions: one per export), the queries (unload, unload_ids), then drop. The bounds are our own timestamps
    (format_timestamp); the folders, the export bucket's keys the state machine or this machine wrote."""
    for bound in (window_start, window_end):
        if not re.fullmatch(r"[0-9T:.Z-]+", bound):
            raise ValueError(f"not a stored timestamp: {bound!r}")
    # A line without an item is not DynamoDB's (the Python readers refuse it): no row, as in a chain.
    events = (f"SELECT Item AS item FROM {run.table} WHERE Item IS NOT NULL" if len(run.events_data) == 1
              else _sql("events_of_chain.sql").format(table=run.table))
    codes = _sql("codes.sql")
    event_codes = " ".join(f"WHEN '{event_type}' THEN {code}" for event_type, code in EVENT_CODES.items())
    select = _sql("interactions.sql").format(
        events=events, codes=codes, event_codes=event_codes, window_start=window_start, window_end=window_end,
        counted_types=", ".join(f"'{event_type}'" for event_type in EVENT_CODES), max_quantity=MAX_QUANTITY,
        time_length=STORED_TIME_LENGTH, stored_time=STORED_TIME_PATTERN)
    numbers = f"(format = 'TEXTFILE', field_delimiter = ',', compression = '{OUTPUT_COMPRESSION}')"
    lines = f"(format = 'JSON', compression = '{OUTPUT_COMPRESSION}')"
    partitions = " ".join(f"PARTITION ({CHAIN_PARTITION} = {number}) LOCATION '{folder}'"
                          for number, folder in enumerate(run.events_data))
    return {
        "create": f"CREATE EXTERNAL TABLE {run.table} ({EVENT_COLUMNS}) PARTITIONED BY ({CHAIN_PARTITION} int) "
                  f"ROW FORMAT SERDE '{JSON_SERDE}' WITH SERDEPROPERTIES ({SERDE_PROPERTIES}) "
                  f"LOCATION '{run.events_data[0]}'",
        "partitions": f"ALTER TABLE {run.table} ADD {partitions}",
        "unload": f"UNLOAD ({select}) TO '{run.output}' WITH {numbers}",
        "unload_ids": f"UNLOAD ({_sql('ids.sql').format(events=events, codes=codes)}) TO '{run.ids}' WITH {lines}",
        "drop": f"DROP TABLE IF EXISTS {run.table}",
    }


def _sql(name: str) -> str:
    """A query of sql/, without its comments (they explain the file, not the run)."""
    return "\n".join(line for line in (SQL / name).read_text().splitlines() if not line.lstrip().startswith("--"))


@dataclass(frozen=True)
class QueriedIds:
    """The ids the query numbered (ids.sql): `users[n]` is the user id numbered n."""

    users: list[str]
    items: list[str]


def read_ids(files: Iterable[Path]) -> QueriedIds:
    """The query's user ids and item ids with events (compressed JSON lines {k, c, id}), in the
    order of their numbers."""
    found: dict[str, dict[int, str]] = {"u": {}, "i": {}}
    for path in files:
        for line in compressed_lines(path):
            row = orjson.loads(line)
            found[row["k"]][row["c"]] = row["id"]
    return QueriedIds(_in_order(found["u"]), _in_order(found["i"]))


def _in_order(numbered: dict[int, str]) -> list[str]:
    if set(numbered) != set(range(len(numbered))):
        raise ValueError("the query's ids are not numbered 0 to n - 1: its output is incomplete")
    return [numbered[n] for n in range(len(numbered))]


def read_interactions(files: Iterable[Path], id_files: Iterable[Path], limit: int) -> Interactions:
    """The query's output (compressed lines of numbers u,i,t,q,s,b, and the ids they number) as
    Interactions: the customers and items with an interaction, sorted by id (codes.sql; the Scan
    path numbers them in the order it meets them: the same data, though a fit's random start and
    the validation's sample of customers follow the numbering), and the
    Scan path's baskets, one number shared by the purchases of one basket; TooManyInteractions
    past `limit`."""
    ids = read_ids(id_files)
    parts, count = [], 0
    for path in files:
        for block in compressed_blocks(path):
            part = np.loadtxt(io.BytesIO(block), delimiter=",", dtype=INTERACTION_LINE, ndmin=1)
            count += len(part)
            if count > limit:
                raise TooManyInteractions(f"the window holds more than {limit:,} interactions")
            parts.append(part)
    rows = np.concatenate(parts) if parts else np.zeros(0, INTERACTION_LINE)
    del parts
    users, user_ids = _compacted(rows["u"], ids.users, "customer")
    items, item_ids = _compacted(rows["i"], ids.items, "item")
    bought = rows["t"] == PURCHASE_CODE
    baskets = np.full(len(rows), -1, np.int64)
    if bought.any():
        # A basket's rank is its customer's: with the customer, it names one basket across all of them.
        ranks = rows["b"][bought]
        keys = users[bought].astype(np.int64) * (int(ranks.max()) + 1) + ranks
        baskets[bought] = np.unique(keys, return_inverse=True)[1].ravel()
    return Interactions(user_ids, item_ids, users, items, np.ascontiguousarray(rows["t"]),
                        np.ascontiguousarray(rows["q"]), np.ascontiguousarray(rows["s"]), baskets)


def _compacted(codes: np.ndarray, ids: list[str], what: str) -> tuple[np.ndarray, list[str]]:
    """Numbers of `ids` as 0..n-1 over those used alone, in the same order; and the ids used."""
    if len(codes) and not (0 <= codes.min() and codes.max() < len(ids)):
        raise ValueError(f"the query's interactions name a {what} number its ids lack: its output is incomplete")
    used = np.zeros(len(ids), bool)
    used[codes] = True
    renumbered = (np.cumsum(used) - 1).astype(np.int32)
    return renumbered[codes], [ids[n] for n in np.flatnonzero(used).tolist()]


def export_queries(bucket: str, database: str, run_id: str, events_summary_keys: list[str],
                   config: TrainingConfig, now: datetime) -> dict[str, str]:
    """What the TrainingPipeline's query stage runs for one run: its statements over the events
    table's export chain (`events_summary_keys`, the full export's first), and `interactions` and
    `ids`, the key prefixes their output lands under in `bucket`. Athena reads each export's data
    folder whole: each is checked against its manifest first (a DamagedExport fails the stage)."""
    folders = [check_in_bucket(bucket, key) for key in events_summary_keys]
    output, ids = f"queries/{run_id}/interactions/", f"queries/{run_id}/ids/"
    run = QueryRun(database, run_id, tuple(f"s3://{bucket}/{folder}" for folder in folders),
                   f"s3://{bucket}/{output}", f"s3://{bucket}/{ids}")
    return {**statements(run, *window_bounds(now, config.window_days)), "interactions": output, "ids": ids}
