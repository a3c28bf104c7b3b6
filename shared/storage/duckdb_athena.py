"""Athena's part on one machine: the export path's statements (shared/storage/export_queries.py),
run on DuckDB over the same export files.

The SELECT runs unchanged: DuckDB is given the Trino functions it lacks as macros. The
statements around it are Athena DDL and UNLOAD, which DuckDB does not speak; they are
translated here, and only in the shapes export_queries writes:
- CREATE EXTERNAL TABLE t (columns) PARTITIONED BY (p int) ... WITH SERDEPROPERTIES (...) and
  ALTER TABLE t ADD PARTITION (p = n) LOCATION 'folder' ...: a view over the partitions' gzipped
  JSON lines (UNION ALL, each with its partition value), typed as the JSON SerDe types them, a
  missing attribute NULL. DuckDB's read_json matches names by case, as the SerDe does with the
  properties export_queries sets ('case.insensitive'='false', each mixed-case name mapped);
- UNLOAD (select) TO 'folder' WITH (format = 'JSON', compression = 'ZSTD' or 'GZIP'): COPY to JSON
  lines there, compressed the same way; with format = 'TEXTFILE', field_delimiter = ',': COPY to
  lines of values with that delimiter, no header and no quotes (the SQL writes numbers alone);
- DROP TABLE IF EXISTS t: DROP VIEW.
Locations are s3:// addresses; `resolve` turns each into a local folder (the local stack's
export directory, or a copy of a test's S3 bucket).

DuckDB is a development dependency: the Lambda packages never import this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from shared.storage.exports import not_read

# Trino's functions the SQL uses, with Trino's results: microseconds kept, seconds since the epoch.
TRINO_FUNCTIONS = (
    "CREATE MACRO from_iso8601_timestamp_nanos(text) AS CAST(text AS TIMESTAMPTZ)",
    "CREATE MACRO to_unixtime(stamp) AS epoch_us(stamp) / 1e6",
    "CREATE MACRO regexp_like(text, pattern) AS regexp_matches(text, pattern)",  # both find the pattern anywhere
)
CREATE = re.compile(r"CREATE EXTERNAL TABLE (?P<table>[\w.]+) \((?P<columns>.*)\) PARTITIONED BY \((?P<partition>\w+) int\) "
                    r"ROW FORMAT SERDE '[\w.]+' WITH SERDEPROPERTIES \((?P<properties>[^)]*)\) LOCATION '[^']+'$", re.S)
PARTITIONS = re.compile(r"ALTER TABLE (?P<table>[\w.]+) ADD (?P<partitions>.*)$", re.S)
PARTITION = re.compile(r"PARTITION \((?P<partition>\w+) = (?P<value>\d+)\) LOCATION '(?P<location>[^']+)'")
UNLOAD = re.compile(r"UNLOAD \((?P<select>.*)\) TO '(?P<location>[^']+)' "
                    r"WITH \(format = (?:'JSON'|'(?P<text>TEXTFILE)', field_delimiter = ','), "
                    r"compression = '(?P<compression>ZSTD|GZIP)'\)$", re.S)
SUFFIXES = {"ZSTD": "zst", "GZIP": "gz"}
DROP = re.compile(r"DROP TABLE IF EXISTS (?P<table>[\w.]+)$")


class DuckDBAthena:
    """One DuckDB database standing in for Athena and the Glue catalog."""

    def __init__(self, resolve: Callable[[str], Path], threads: int | None = None) -> None:
        import duckdb

        self.resolve = resolve
        self.tables: dict[str, tuple[str, str]] = {}  # created, not yet given partitions: columns, partition
        self.db = duckdb.connect()
        if threads:
            self.db.execute(f"SET threads = {int(threads)}")
        self.db.execute("SET TimeZone = 'UTC'")
        for macro in TRINO_FUNCTIONS:
            self.db.execute(macro)

    def run(self, statement: str) -> None:
        if found := CREATE.match(statement):
            self.tables[found["table"]] = (found["columns"], found["partition"])
        elif found := PARTITIONS.match(statement):
            self._view(found["table"], PARTITION.findall(found["partitions"]))
        elif found := UNLOAD.match(statement):
            target = self.resolve(found["location"])
            if target.exists() and any(target.iterdir()):
                raise ValueError(f"UNLOAD needs an empty location, as Athena does: {found['location']}")
            target.mkdir(parents=True, exist_ok=True)
            compression = found["compression"]
            name, options = (("part-0.txt", "FORMAT CSV, HEADER false, DELIMITER ','") if found["text"]
                             else ("part-0.json", "FORMAT JSON"))
            self.db.execute(f"COPY ({found['select']}) TO '{target / f'{name}.{SUFFIXES[compression]}'}' "
                            f"({options}, COMPRESSION {compression.lower()})")
        elif found := DROP.match(statement):
            self.tables.pop(found["table"], None)
            self.db.execute(f"DROP VIEW IF EXISTS {found['table']}")
        else:
            raise ValueError(f"not a statement of the export path: {statement[:80]!r}")

    def _view(self, table: str, partitions: list[tuple[str, str, str]]) -> None:
        columns, partition = self.tables[table]
        schema, _, _ = table.rpartition(".")
        if schema:
            self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        named_types = [(name, duckdb_type(hive_type))
                       for name, hive_type in (column.split(" ", 1) for column in _top_level(columns))]
        typed = ", ".join(f"'{name}': '{sql_type}'" for name, sql_type in named_types)
        # A partition without files (an incremental export of a quiet day) has no rows, as on Athena;
        # DuckDB's read_json refuses a pattern that matches nothing.
        nothing = ", ".join(f"CAST(NULL AS {sql_type}) AS {name}" for name, sql_type in named_types)
        parts = [f"SELECT *, {int(value)} AS {partition} FROM read_json({files}, "
                 f"format = 'newline_delimited', columns = {{{typed}}})"
                 if (files := _data_files(self.resolve(location))) else
                 f"SELECT {nothing}, {int(value)} AS {partition} WHERE false"
                 for named, value, location in partitions if named == partition]
        self.db.execute(f"CREATE OR REPLACE VIEW {table} AS {' UNION ALL '.join(parts)}")


def _data_files(folder: Path) -> str:
    """The folder's data files as a DuckDB list ('' for none). Files of no bytes are left out: DynamoDB
    writes a file for each empty partition (its docs do not say whether it is an empty gzip stream),
    Athena reads no rows from one, and DuckDB's read_json refuses it. So are names that start with
    those Athena reads nothing from (shared/storage/exports.py `not_read`)."""
    files = sorted(str(path) for path in folder.glob("*.json.gz")
                   if path.stat().st_size > 0 and not not_read(path.name))
    return "[" + ", ".join("'" + file.replace("'", "''") + "'" for file in files) + "]" if files else ""


def _top_level(columns: str) -> list[str]:
    """The DDL's column list split at its top-level commas (struct types hold commas too)."""
    found, depth, start = [], 0, 0
    for position, char in enumerate(columns):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "," and depth == 0:
            found.append(columns[start:position].strip())
            start = position + 1
    return [*found, columns[start:].strip()]


def duckdb_type(hive_type: str) -> str:
    """struct<a:struct<s:string>> -> STRUCT(a STRUCT(s VARCHAR)): the DDL's types in DuckDB's words."""
    text = re.sub(r"(\w+):", r"\1 ", hive_type)
    return text.replace("struct<", "STRUCT(").replace(">", ")").replace("string", "VARCHAR")


def run_statements(statements: Iterable[str], resolve: Callable[[str], Path], **options: Any) -> None:
    engine = DuckDBAthena(resolve, **options)
    for statement in statements:
        engine.run(statement)
