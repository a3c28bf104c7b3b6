"""Athena's part on one machine: the export path's statements (shared/storage/export_queries.py),
run on DuckDB over the same export files.

The SELECT runs unchanged: DuckDB is given the two Trino functions it uses as macros. The
statements around it are Athena DDL and UNLOAD, which DuckDB does not speak; they are
translated here, and only in the shapes export_queries writes:
- CREATE EXTERNAL TABLE t (item struct<...>) ... LOCATION 'folder': a view over the folder's
  gzipped JSON lines, typed as the JSON SerDe types them;
- UNLOAD (select) TO 'folder' WITH (format = 'JSON', ...): COPY to gzipped JSON lines there;
- DROP TABLE IF EXISTS t: DROP VIEW.
Locations are s3:// addresses; `resolve` turns each into a local folder (the local stack's
export directory, or a copy of a test's S3 bucket).

DuckDB is a development dependency: the Lambda packages never import this module.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Trino's functions the SQL uses, with Trino's results: microseconds kept, seconds since the epoch.
TRINO_FUNCTIONS = (
    "CREATE MACRO from_iso8601_timestamp_nanos(text) AS CAST(text AS TIMESTAMPTZ)",
    "CREATE MACRO to_unixtime(stamp) AS epoch_us(stamp) / 1e6",
)
CREATE = re.compile(r"CREATE EXTERNAL TABLE (?P<table>[\w.]+) \((?P<columns>.*)\) ROW FORMAT SERDE '[\w.]+' "
                    r"LOCATION '(?P<location>[^']+)'$", re.S)
UNLOAD = re.compile(r"UNLOAD \((?P<select>.*)\) TO '(?P<location>[^']+)' WITH \(format = 'JSON'.*\)$", re.S)
DROP = re.compile(r"DROP TABLE IF EXISTS (?P<table>[\w.]+)$")


class DuckDBAthena:
    """One DuckDB database standing in for Athena and the Glue catalog."""

    def __init__(self, resolve: Callable[[str], Path], threads: int | None = None) -> None:
        import duckdb

        self.resolve = resolve
        self.db = duckdb.connect()
        if threads:
            self.db.execute(f"SET threads = {int(threads)}")
        self.db.execute("SET TimeZone = 'UTC'")
        for macro in TRINO_FUNCTIONS:
            self.db.execute(macro)

    def run(self, statement: str) -> None:
        if found := CREATE.match(statement):
            self._create(found["table"], found["columns"], found["location"])
        elif found := UNLOAD.match(statement):
            target = self.resolve(found["location"])
            if target.exists() and any(target.iterdir()):
                raise ValueError(f"UNLOAD needs an empty location, as Athena does: {found['location']}")
            target.mkdir(parents=True, exist_ok=True)
            self.db.execute(f"COPY ({found['select']}) TO '{target / 'part-0.json.gz'}' "
                            "(FORMAT JSON, COMPRESSION GZIP)")
        elif found := DROP.match(statement):
            self.db.execute(f"DROP VIEW IF EXISTS {found['table']}")
        else:
            raise ValueError(f"not a statement of the export path: {statement[:80]!r}")

    def _create(self, table: str, columns: str, location: str) -> None:
        name, _, hive_type = columns.partition(" ")
        schema, _, _ = table.rpartition(".")
        if schema:
            self.db.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        files = str(self.resolve(location) / "*.json.gz")
        self.db.execute(f"CREATE VIEW {table} AS SELECT * FROM read_json('{files}', format = 'newline_delimited', "
                        f"columns = {{'{name}': '{duckdb_type(hive_type)}'}})")


def duckdb_type(hive_type: str) -> str:
    """struct<a:struct<s:string>> -> STRUCT(a STRUCT(s VARCHAR)): the DDL's types in DuckDB's words."""
    text = re.sub(r"(\w+):", r"\1 ", hive_type)
    return text.replace("struct<", "STRUCT(").replace(">", ")").replace("string", "VARCHAR")


def run_statements(statements: list[str], resolve: Callable[[str], Path], **options: Any) -> None:
    engine = DuckDBAthena(resolve, **options)
    for statement in statements:
        engine.run(statement)
