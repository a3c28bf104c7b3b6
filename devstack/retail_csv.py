"""Purchase history from CSV files of order lines, as API items, users and events.

Any CSV of order lines is read with a column mapping (`OrderLines`): which columns hold the
customer, the item, the quantity, the time, the unit price or the line total, and optionally the
order, the title, the category and the country, with the date format and the shop's time zone.
Presets: `ONLINE_RETAIL` (UCI Online Retail: InvoiceNo, StockCode, Description, Quantity,
InvoiceDate, UnitPrice, CustomerID, Country), `ONLINE_RETAIL_II` (Invoice, ..., Price,
Customer ID, ...) and `TA_FENG` (TRANSACTION_DT M/D/YYYY, CUSTOMER_ID, PRODUCT_SUBCLASS as the
category, PRODUCT_ID, AMOUNT, SALES_PRICE as the line total; no invoice: a customer's lines of
one day form one order). Files are plain or gzipped (told by the first bytes, not the name).
Rows that are not a customer's purchase or return are skipped and counted by reason, never
dropped silently.

Cancellations (an order id starting with the mapping's `cancellation_prefix`, "C" in Online
Retail, or a negative quantity) become `return` events, netted against the original lines: the
same customer and item, the latest earlier purchase with units not yet returned; the return's
order_id is that purchase's order when one is found, else the cancellation's own.

Choices, so that a second import of the same file sends the same events (and they are counted
as duplicates):
- event_id is "<order>-<line>", line being the row's position within its order (without an
  order column the order is "<customer>@<day>", the day's basket);
- times are the shop's local time (Europe/London for Online Retail) and become UTC;
- without a category column an item's category is the last word of its title
  ("HEART T-LIGHT HOLDER" -> "holder"), a rough but stable grouping.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from statistics import median
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from shared.events import minor_units, round_money

SHOP_TIMEZONE = ZoneInfo("Europe/London")
DATE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%m/%d/%Y %H:%M", "%d/%m/%Y %H:%M")
NON_PRODUCT_CODES = {"POST", "D", "M", "C2", "DOT", "CRUK", "PADS", "BANK CHARGES", "AMAZONFEE", "S", "B", "m"}
COUNTRY_CODES = {
    "Australia": "AU", "Austria": "AT", "Bahrain": "BH", "Belgium": "BE", "Brazil": "BR",
    "Canada": "CA", "Channel Islands": "JE", "Cyprus": "CY", "Czech Republic": "CZ",
    "Denmark": "DK", "EIRE": "IE", "Finland": "FI", "France": "FR", "Germany": "DE",
    "Greece": "GR", "Hong Kong": "HK", "Iceland": "IS", "Israel": "IL", "Italy": "IT",
    "Japan": "JP", "Korea": "KR", "Lebanon": "LB", "Lithuania": "LT", "Malta": "MT",
    "Netherlands": "NL", "Nigeria": "NG", "Norway": "NO", "Poland": "PL", "Portugal": "PT",
    "RSA": "ZA", "Saudi Arabia": "SA", "Singapore": "SG", "Spain": "ES", "Sweden": "SE",
    "Switzerland": "CH", "Thailand": "TH", "USA": "US", "United Arab Emirates": "AE",
    "United Kingdom": "GB", "West Indies": "JM",
}  # "European Community" and "Unspecified" name no country: the profile gets none


class Skip(Exception):
    """A row that is not a customer's purchase or return; the message is the reason reported."""


Columns = tuple[str, ...]  # the names a file may use for one column, the first present wins


@dataclass(frozen=True)
class OrderLines:
    """How to read a CSV of order lines. Column fields name the CSV's columns (one name or
    several candidates); price is the unit price, line_total the line's total (one of the two)."""

    user: Columns
    item: Columns
    quantity: Columns
    timestamp: Columns
    price: Columns = ()
    line_total: Columns = ()
    order: Columns = ()
    title: Columns = ()
    category: Columns = ()
    country: Columns = ()
    date_formats: tuple[str, ...] = DATE_FORMATS
    timezone: str = "UTC"
    currency: str = "GBP"
    cancellation_prefix: str | None = None  # an order id starting so is a cancellation
    skip_items: frozenset[str] = frozenset()
    items_need_a_digit: bool = False  # Online Retail: codes without a digit are fees, not products
    default_country: str | None = None
    name: str = "order lines"

    def __post_init__(self) -> None:
        if bool(self.price) == bool(self.line_total):
            raise ValueError("a mapping needs either price (unit price) or line_total, not both")

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> OrderLines:
        """From plain data (e.g. JSON): column names as strings or lists, date_format or date_formats."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(mapping) - known - {"date_format"}
        if unknown:
            raise ValueError(f"unknown mapping keys: {sorted(unknown)}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for key, value in mapping.items():
            if key == "date_format":
                values["date_formats"] = (value,)
            elif key == "skip_items":
                values[key] = frozenset(value)
            elif key in ("date_formats",):
                values[key] = tuple(value)
            elif isinstance(value, list):
                values[key] = tuple(value)
            elif key in COLUMN_FIELDS and isinstance(value, str):
                values[key] = (value,)
            else:
                values[key] = value
        for required in ("user", "item", "quantity", "timestamp"):
            if required not in values:
                raise ValueError(f"the mapping needs {required!r}")
        return cls(**values)


COLUMN_FIELDS = ("user", "item", "quantity", "timestamp", "price", "line_total", "order", "title", "category", "country")

ONLINE_RETAIL = OrderLines(
    user=("CustomerID",), item=("StockCode",), quantity=("Quantity",), timestamp=("InvoiceDate",),
    price=("UnitPrice",), order=("InvoiceNo",), title=("Description",), country=("Country",),
    timezone="Europe/London", currency="GBP", cancellation_prefix="C", skip_items=frozenset(NON_PRODUCT_CODES),
    items_need_a_digit=True, name="Online Retail")
ONLINE_RETAIL_II = OrderLines(
    user=("Customer ID",), item=("StockCode",), quantity=("Quantity",), timestamp=("InvoiceDate",),
    price=("Price",), order=("Invoice",), title=("Description",), country=("Country",),
    timezone="Europe/London", currency="GBP", cancellation_prefix="C", skip_items=frozenset(NON_PRODUCT_CODES),
    items_need_a_digit=True, name="Online Retail II")
TA_FENG = OrderLines(
    user=("CUSTOMER_ID",), item=("PRODUCT_ID",), quantity=("AMOUNT",), timestamp=("TRANSACTION_DT",),
    line_total=("SALES_PRICE",), category=("PRODUCT_SUBCLASS",), date_formats=("%m/%d/%Y",),
    timezone="Asia/Taipei", currency="TWD", default_country="TW", name="Ta-Feng")
PRESETS = {"online_retail": ONLINE_RETAIL, "online_retail_ii": ONLINE_RETAIL_II, "ta_feng": TA_FENG}


@dataclass
class RetailImport:
    """`events`: the purchases; `returns`: the return events (cancellations), kept apart so that
    readers of purchases alone are not misled; `all_events()` is what an import sends."""

    items: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    returns: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    rows: int = 0
    returns_matched: int = 0  # returns netted against an earlier purchase of the same customer and item
    mapping: str = ""

    @property
    def returns_unmatched(self) -> int:
        return len(self.returns) - self.returns_matched

    def all_events(self) -> list[dict[str, Any]]:
        return sorted(self.events + self.returns, key=lambda e: e["timestamp"])


@dataclass
class _Product:
    title: str = ""
    category: str = ""
    prices: list[Decimal] = field(default_factory=list)
    first_seen: datetime | None = None


def read_retail_csv(path: Path | str, currency: str = "GBP", limit_rows: int | None = None) -> RetailImport:
    """An Online Retail (I or II) file; refused when it is neither."""
    header = _header(Path(path))
    for mapping in (ONLINE_RETAIL, ONLINE_RETAIL_II):
        if _resolve(mapping, header, quiet=True) is not None:
            return read_order_lines(path, replace(mapping, currency=currency), limit_rows)
    _resolve(ONLINE_RETAIL, header)  # names what is missing
    raise AssertionError("unreachable")


def detect_mapping(path: Path | str) -> OrderLines:
    """The preset whose columns the file has."""
    header = _header(Path(path))
    for mapping in PRESETS.values():
        if _resolve(mapping, header, quiet=True) is not None:
            return mapping
    raise ValueError(f"no preset fits the columns {header}: give a mapping ({', '.join(PRESETS)} or JSON)")


def read_order_lines(path: Path | str, mapping: OrderLines, limit_rows: int | None = None) -> RetailImport:
    result = RetailImport(mapping=mapping.name)
    products: dict[str, _Product] = defaultdict(_Product)
    countries: dict[str, str | None] = {}
    lines_in_order: Counter = Counter()
    zone = ZoneInfo(mapping.timezone)
    cancellations: list[dict[str, Any]] = []
    with _open_text(Path(path)) as text:
        reader = csv.DictReader(text)
        columns = _resolve(mapping, reader.fieldnames or [])
        assert columns is not None
        for row in reader:
            if limit_rows is not None and result.rows >= limit_rows:
                break
            result.rows += 1
            if "order" in columns:  # every row of an order has its place, skipped or not (stable ids)
                lines_in_order[_text(row, columns["order"])] += 1
            try:
                event = _line(row, columns, mapping, zone, lines_in_order)
            except Skip as reason:
                result.skipped[str(reason)] += 1
                continue
            if event["event_type"] == "return":
                cancellations.append(event)
                continue
            result.events.append(event)
            moment = datetime.fromisoformat(event["timestamp"])
            product = products[event["item_id"]]
            product.title = _text(row, columns.get("title")) or product.title
            product.category = _text(row, columns.get("category")) or product.category
            product.prices.append(Decimal(str(event["price"])))
            product.first_seen = min(product.first_seen or moment, moment)
            country = _text(row, columns.get("country"))
            countries[event["user_id"]] = (COUNTRY_CODES.get(country) or (country if re.fullmatch(r"[A-Z]{2}", country)
                                           else None)) if country else mapping.default_country
    result.returns, result.returns_matched = _net_returns(result.events, cancellations)
    result.items = [_item(code, product, mapping.currency) for code, product in products.items()]
    result.users = [{"user_id": user, **({"country": code} if code else {})} for user, code in countries.items()]
    return result


def _header(path: Path) -> list[str]:
    with _open_text(path) as text:
        return next(csv.reader(text), [])


def _resolve(mapping: OrderLines, header: list[str], quiet: bool = False) -> dict[str, str] | None:
    """Our field -> the file's column; None (quiet) or ValueError naming what is missing."""
    found: dict[str, str] = {}
    for name in COLUMN_FIELDS:
        candidates: Columns = getattr(mapping, name)
        if not candidates:
            continue
        match = next((c for c in candidates if c in header), None)
        if match is None:
            if quiet:
                return None
            raise ValueError(f"not a {mapping.name} file: no column {' or '.join(candidates)} in {header}")
        found[name] = match
    return found


def _open_text(path: Path) -> TextIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 - wrapped below
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")


def _text(row: dict[str, str], column: str | None) -> str:
    return (row.get(column) or "").strip() if column else ""


def _line(row: dict[str, str], columns: dict[str, str], mapping: OrderLines, zone: ZoneInfo,
          lines_in_order: Counter) -> dict[str, Any]:
    code = _text(row, columns["item"])
    customer = _customer_id(_text(row, columns["user"]))
    order = _text(row, columns.get("order"))
    try:
        quantity = int(Decimal(_text(row, columns["quantity"])))
        moment = _parse_date(_text(row, columns["timestamp"]), mapping.date_formats, zone)
        amount = Decimal(_text(row, columns.get("price") or columns["line_total"]))
    except (ValueError, KeyError, InvalidOperation):
        raise Skip("malformed row") from None
    if not code or ("order" in columns and not order):
        raise Skip("malformed row")
    if not amount.is_finite():
        raise Skip("malformed row")
    if not customer:
        raise Skip("no customer")
    if code in mapping.skip_items or (mapping.items_need_a_digit and not re.search(r"\d", code)):
        raise Skip("non-product code")
    if quantity == 0:
        raise Skip("bad quantity")
    cancelled = quantity < 0 or bool(mapping.cancellation_prefix and order.upper().startswith(mapping.cancellation_prefix))
    units = abs(quantity)
    price = amount if "price" in columns else abs(amount) / units
    price = round_money(abs(price) if cancelled else price, minor_units(mapping.currency))
    if price <= 0:
        raise Skip("bad price")
    if "order" not in columns:  # a customer's lines of one day are one basket
        order = f"{customer}@{moment.astimezone(zone).date().isoformat()}"
        lines_in_order[order] += 1
    return {
        "event_id": f"{order}-{lines_in_order[order]}", "user_id": customer, "item_id": code,
        "event_type": "return" if cancelled else "purchase", "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quantity": units, "price": float(price), "currency": mapping.currency, "channel": "web",
        "order_id": order,
    }


def _net_returns(purchases: list[dict[str, Any]], cancellations: list[dict[str, Any]]
                 ) -> tuple[list[dict[str, Any]], int]:
    """Each cancellation as a return of the latest earlier purchase of the same customer and item
    with units not yet returned (its order_id then that purchase's); how many were matched."""
    open_units: dict[tuple[str, str], list[list[Any]]] = defaultdict(list)  # [timestamp, order, units left]
    for event in sorted(purchases, key=lambda e: e["timestamp"]):
        open_units[(event["user_id"], event["item_id"])].append([event["timestamp"], event["order_id"], event["quantity"]])
    returns, matched = [], 0
    for event in sorted(cancellations, key=lambda e: e["timestamp"]):
        bought = [line for line in open_units.get((event["user_id"], event["item_id"]), ())
                  if line[0] <= event["timestamp"] and line[2] > 0]
        if bought:
            matched += 1
            event = {**event, "order_id": bought[-1][1]}
            left = event["quantity"]
            for line in reversed(bought):
                taken = min(left, line[2])
                line[2] -= taken
                left -= taken
                if not left:
                    break
        returns.append(event)
    return returns, matched


def _parse_date(text: str, formats: tuple[str, ...], zone: ZoneInfo) -> datetime:
    for layout in formats:
        try:
            local = datetime.strptime(text, layout)
        except ValueError:
            continue
        return local.replace(tzinfo=zone).astimezone(timezone.utc)
    raise ValueError(f"unknown date format: {text!r}")


def _customer_id(text: str) -> str:
    """'17850.0' -> '17850' (the UCI file writes ids as floats)."""
    return text[:-2] if text.endswith(".0") else text


def _item(code: str, product: _Product, currency: str) -> dict[str, Any]:
    title = product.title or code
    words = re.findall(r"[A-Za-z]+", title)
    category = product.category or (words[-1].lower() if words and product.title else "general")
    return {
        "item_id": code, "title": title[:512], "category": category[:256],
        "price": float(median(product.prices)), "currency": currency, "in_stock": True,
        "created_at": product.first_seen.strftime("%Y-%m-%dT%H:%M:%SZ") if product.first_seen else None,
    }
