"""Incremental exports as DynamoDB writes them, for tests that fold or query an export chain."""

from __future__ import annotations

import gzip
import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any


def incremental_changes(before: dict[Hashable, dict[str, Any]], after: dict[Hashable, dict[str, Any]],
                        key_names: tuple[str, ...]) -> list[dict[str, Any]]:
    """What an incremental export (NEW_IMAGE) holds for the changes from `before` to `after` (a
    table's items by key): a NewImage for each new or changed item, Keys alone for a deleted one."""
    changes = [{"Keys": {k: item[k] for k in key_names}, "NewImage": item}
               for key, item in after.items() if before.get(key) != item]
    changes += [{"Keys": {k: before[key][k] for k in key_names}} for key in before.keys() - after.keys()]
    return changes


def write_changes(data_file: Path, changes: list[dict[str, Any]]) -> None:
    """An incremental export's data file: one line per change, with the metadata DynamoDB adds."""
    with gzip.open(data_file, "wt") as out:
        out.writelines(json.dumps({"Metadata": {"WriteTimestampMicros": {"N": "1"}}, **change}) + "\n"
                       for change in changes)
