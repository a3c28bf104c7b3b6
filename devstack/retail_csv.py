"""Purchase history from UCI "Online Retail" style CSV files, as API items, users and events.

Both releases are read: Online Retail (InvoiceNo, StockCode, Description, Quantity, InvoiceDate,
UnitPrice, CustomerID, Country) and Online Retail II (Invoice, ..., Price, Customer ID, ...),
plain or gzipped (told by the file's first bytes, not its name). Rows that are not purchases a
customer made are skipped and counted by reason, never dropped silently.

Choices, so that a second import of the same file sends the same events (and they are counted
as duplicates):
- event_id is "<invoice>-<line>", line being the row's position within its invoice;
- invoice dates are UK local time (Europe/London) and become UTC;
- an item's category is the last word of its description ("HEART T-LIGHT HOLDER" -> "holder"),
  a rough but stable grouping: the file has no categories.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from pathlib import Path
from statistics import median
from typing import Any, TextIO
from zoneinfo import ZoneInfo

SHOP_TIMEZONE = ZoneInfo("Europe/London")
COLUMNS = {  # our name -> the names either release uses
    "invoice": ("InvoiceNo", "Invoice"),
    "stock_code": ("StockCode",),
    "description": ("Description",),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "price": ("UnitPrice", "Price"),
    "customer": ("CustomerID", "Customer ID"),
    "country": ("Country",),
}
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
    """A row that is not a customer's purchase; the message is the reason reported."""


@dataclass
class RetailImport:
    items: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    rows: int = 0


@dataclass
class _Product:
    title: str = ""
    prices: list[Decimal] = field(default_factory=list)
    first_seen: datetime | None = None


def read_retail_csv(path: Path | str, currency: str = "GBP", limit_rows: int | None = None) -> RetailImport:
    result = RetailImport()
    products: dict[str, _Product] = defaultdict(_Product)
    countries: dict[str, str | None] = {}
    lines_in_invoice: Counter = Counter()
    with _open_text(Path(path)) as text:
        reader = csv.DictReader(text)
        columns = _column_names(reader.fieldnames or [])
        for row in reader:
            if limit_rows is not None and result.rows >= limit_rows:
                break
            result.rows += 1
            invoice = (row.get(columns["invoice"]) or "").strip()
            lines_in_invoice[invoice] += 1
            try:
                event = _purchase(row, columns, invoice, lines_in_invoice[invoice], currency)
            except Skip as reason:
                result.skipped[str(reason)] += 1
                continue
            result.events.append(event)
            moment = datetime.fromisoformat(event["timestamp"])
            product = products[event["item_id"]]
            product.title = (row.get(columns["description"]) or "").strip() or product.title
            product.prices.append(Decimal(str(event["price"])))
            product.first_seen = min(product.first_seen or moment, moment)
            country = (row.get(columns["country"]) or "").strip()
            countries[event["user_id"]] = COUNTRY_CODES.get(country)
    result.items = [_item(code, product, currency) for code, product in products.items()]
    result.users = [{"user_id": user, **({"country": code} if code else {})} for user, code in countries.items()]
    return result


def _open_text(path: Path) -> TextIO:
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    raw = gzip.open(path, "rb") if gzipped else open(path, "rb")  # noqa: SIM115 - wrapped below
    return io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")


def _column_names(header: list[str]) -> dict[str, str]:
    found = {}
    for name, candidates in COLUMNS.items():
        match = next((c for c in candidates if c in header), None)
        if match is None:
            raise ValueError(f"not an Online Retail file: no column {' or '.join(candidates)} in {header}")
        found[name] = match
    return found


def _purchase(row: dict[str, str], columns: dict[str, str], invoice: str, line: int,
              currency: str) -> dict[str, Any]:
    code = (row.get(columns["stock_code"]) or "").strip()
    if not invoice or not code:
        raise Skip("malformed row")
    try:
        quantity = int(float(row[columns["quantity"]]))
        price = Decimal(row[columns["price"]].strip())
        moment = _parse_date(row[columns["invoice_date"]])
    except (ValueError, KeyError, AttributeError, InvalidOperation):
        raise Skip("malformed row") from None
    if invoice.upper().startswith("C") or quantity < 0:
        raise Skip("cancellation")
    customer = _customer_id(row.get(columns["customer"]) or "")
    if not customer:
        raise Skip("no customer")
    if code in NON_PRODUCT_CODES or not re.search(r"\d", code):
        raise Skip("non-product code")
    if quantity == 0:
        raise Skip("bad quantity")
    if price <= 0:
        raise Skip("bad price")
    return {
        "event_id": f"{invoice}-{line}", "user_id": customer, "item_id": code,
        "event_type": "purchase", "timestamp": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "quantity": quantity, "price": float(price), "currency": currency, "channel": "web",
        "order_id": invoice,
    }


def _parse_date(text: str) -> datetime:
    text = text.strip()
    for layout in DATE_FORMATS:
        try:
            local = datetime.strptime(text, layout)
        except ValueError:
            continue
        return local.replace(tzinfo=SHOP_TIMEZONE).astimezone(timezone.utc)
    raise ValueError(f"unknown date format: {text!r}")


def _customer_id(text: str) -> str:
    """'17850.0' -> '17850' (the UCI file writes ids as floats)."""
    text = text.strip()
    return text[:-2] if text.endswith(".0") else text


def _item(code: str, product: _Product, currency: str) -> dict[str, Any]:
    title = product.title or code
    words = re.findall(r"[A-Za-z]+", title)
    return {
        "item_id": code, "title": title[:512],
        "category": words[-1].lower() if words else "general",
        "price": float(median(product.prices)), "currency": currency, "in_stock": True,
        "created_at": product.first_seen.strftime("%Y-%m-%dT%H:%M:%SZ") if product.first_seen else None,
    }
