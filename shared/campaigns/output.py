"""The lines a campaign writes: JSON Lines (Amazon Personalize's batch output shape, with our
reasons and display fields) and CSV (one row per customer, as a mail-merge tool reads it).

CSV text cells are written so a spreadsheet will not run them: one starting with =, +, -, @, a tab
or a carriage return gets a leading apostrophe (OWASP's advice against CSV injection), ids included,
since titles come from the catalog and ids from callers. The JSON Lines file has every value as stored.
"""

from __future__ import annotations

import json
from functools import lru_cache

from shared.campaigns.audience import AudienceMember
from shared.campaigns.batch import Line
from shared.catalog import Item

DISPLAY_FIELDS = ("item_id", "title", "category", "price", "currency", "image_url", "url")
RECOMMENDATION_FIELDS = ("item_id", "title", "url", "image_url", "price", "currency", "reason")
FORMULA_STARTS = frozenset("=+-@\t\r")


def recommendation_line(line: Line, channel: str) -> str:
    items = line.items
    return "".join((
        '{"input":{"userId":', _json(line.user_id), '},"output":{"recommendedItems":[',
        ",".join(_json(item.item_id) for item, _, _ in items), '],"scores":',
        json.dumps([score for _, score, _ in items]), ',"reasons":[', ",".join(_json(r) for _, _, r in items),
        '],"items":[', ",".join(_display(item) for item, _, _ in items), '],"strategy":', _json(line.strategy),
        ',"personalized":', "true" if line.personalized else "false", ',"modelVersion":', _json(line.model_version),
        ',"channel":', _json(channel), '},"error":null}\n'))


@lru_cache(maxsize=100_000)
def _json(value: str | None) -> str:
    """One JSON value; ids, titles and reasons repeat across lines, so each is encoded once."""
    return json.dumps(value, ensure_ascii=False)


def _display(item: Item) -> str:
    return _display_of(item.item_id, item.title, item.category, None if item.price is None else str(item.price),
                       item.currency, item.image_url, item.url)


@lru_cache(maxsize=100_000)
def _display_of(*fields: str | None) -> str:
    return json.dumps(dict(zip(DISPLAY_FIELDS, fields)), ensure_ascii=False, separators=(",", ":"))


def audience_line(member: AudienceMember, item_id: str, channel: str) -> str:
    return json.dumps({
        "input": {"itemId": item_id},
        "output": {"userId": member.user_id, "score": member.score, "evidence": member.evidence,
                   "reason": member.reason, "channel": channel},
        "error": None,
    }, ensure_ascii=False, separators=(",", ":")) + "\n"


def recommendation_header(num_results: int) -> str:
    return _row(["user_id", "channel", "strategy"] + [f"item_{n}_{field}" for n in range(1, num_results + 1)
                                                      for field in RECOMMENDATION_FIELDS])


def recommendation_row(line: Line, channel: str, num_results: int) -> str:
    cells = [_csv(line.user_id), _csv(channel), _csv(line.strategy)]
    for item, _, reason in line.items[:num_results]:
        cells += [_csv_item(item.item_id, item.title, item.url, item.image_url,
                            None if item.price is None else str(item.price), item.currency), _csv(reason)]
    missing = num_results - min(len(line.items), num_results)
    return ",".join(cells + [""] * (missing * len(RECOMMENDATION_FIELDS))) + "\n"


AUDIENCE_HEADER = ["user_id", "channel", "item_id", "score", "evidence", "reason"]


def audience_header() -> str:
    return _row(AUDIENCE_HEADER)


def audience_row(member: AudienceMember, item_id: str, channel: str) -> str:
    # The score is a number (a negative one is no formula), written as it is.
    return ",".join([_csv(member.user_id), _csv(channel), _csv(item_id), repr(member.score), _csv(member.evidence),
                     _csv(member.reason)]) + "\n"


def _row(cells: list[str | None]) -> str:
    return ",".join(_csv(cell) for cell in cells) + "\n"


@lru_cache(maxsize=100_000)
def _csv_item(*cells: str | None) -> str:
    return ",".join(_csv(cell) for cell in cells)


@lru_cache(maxsize=100_000)
def _csv(cell: str | None) -> str:
    """One CSV cell (RFC 4180 quoting), text a spreadsheet would run prefixed with an apostrophe."""
    if cell is None:
        return ""
    if cell[:1] in FORMULA_STARTS:
        cell = "'" + cell
    if any(c in cell for c in ',"\r\n'):
        return '"' + cell.replace('"', '""') + '"'
    return cell
