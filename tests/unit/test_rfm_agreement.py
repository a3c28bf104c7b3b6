"""RFM computed independently, in plain Python straight from an Online Retail CSV, agrees with the
service's tags (customer_statistics + segment_customer over the imported events folded into
purchase summaries) for every customer.

The independent side follows the definitions of docs/segments.md, not the service's code:
F = distinct invoices, R = days since the last purchase, M = spend net of cancellations, each
scored 1..5 by quintile edges (linear interpolation, statistics.quantiles 'inclusive'), a value
on an edge in the quintile below, fewer days scoring higher. A purchase is a row with a customer
id, a positive quantity and price, and a product's stock code (UCI product codes start with five
digits); a cancellation is an invoice starting with C.
"""

from __future__ import annotations

import csv
import gzip
import io
import random
import statistics as stats
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from devstack.retail_csv import read_retail_csv
from shared.events import Event
from shared.segments.tags import RFM_GRID, segment_customer
from shared.training.customers import customer_statistics
from shared.users import PurchaseSummary, User, fold_purchases

ONLINE_RETAIL = Path(__file__).resolve().parents[3] / "shared" / "data" / "online_retail_2010-12_2011-08.csv.gz"
LONDON = ZoneInfo("Europe/London")
HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def _open(path: Path):
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode("utf-8", "replace") if raw[:2] == b"\x1f\x8b" else raw.decode("utf-8", "replace")
    return csv.DictReader(io.StringIO(text))


def _moment(text: str) -> datetime:
    return datetime.strptime(text.strip(), "%Y-%m-%d %H:%M:%S").replace(tzinfo=LONDON).astimezone(timezone.utc)


def _is_product(code: str) -> bool:
    return len(code) >= 5 and code[:5].isdigit()


def independent_rfm(path: Path, before: datetime) -> tuple[dict[str, str], int]:
    """customer -> 'R{r}F{f}M{m}', from the rows dated before `before` (UTC); and how many rows of
    the file go up to the last of them (the importer need read no further)."""
    rows_needed = 0
    invoices: dict[str, set[str]] = defaultdict(set)
    last: dict[str, datetime] = {}
    net: dict[str, float] = defaultdict(float)
    for number, row in enumerate(_open(path), start=1):
        customer = row["CustomerID"].strip().removesuffix(".0")
        moment = _moment(row["InvoiceDate"])
        rows_needed = number if moment < before else rows_needed
        quantity, price = int(float(row["Quantity"])), float(row["UnitPrice"])
        if not customer or moment >= before or not _is_product(row["StockCode"].strip()) or price <= 0:
            continue
        invoice = row["InvoiceNo"].strip()
        if invoice.startswith("C"):
            net[customer] -= abs(quantity) * price
        elif quantity > 0:
            invoices[customer].add(invoice)
            last[customer] = max(last.get(customer, moment), moment)
            net[customer] += quantity * price
    customers = sorted(invoices)
    recency = {c: (before - last[c]).days for c in customers}  # whole days since the last purchase
    frequency = {c: len(invoices[c]) for c in customers}
    monetary = {c: net[c] for c in customers}

    def edges(values):
        return stats.quantiles(values, n=5, method="inclusive")

    def quintile(value, cuts):
        return 1 + sum(value > cut for cut in cuts)

    r_edges, f_edges, m_edges = edges(list(recency.values())), edges(list(frequency.values())), \
        edges(list(monetary.values()))
    return {c: f"R{6 - quintile(recency[c], r_edges)}F{quintile(frequency[c], f_edges)}"
               f"M{quintile(monetary[c], m_edges)}" for c in customers}, rows_needed


def service_rfm(path: Path, before: datetime, limit_rows: int) -> dict[str, str]:
    """customer -> the service's R?F?M? tag, from the importer's events (purchases and the returns
    it makes of cancellations) before `before`."""
    imported = read_retail_csv(path, limit_rows=limit_rows)
    context = {"now": before + timedelta(days=1), "max_future_seconds": 86_400}
    by_user: dict[str, list[Event]] = defaultdict(list)
    for raw in imported.all_events():
        event = Event.model_validate(raw, context=context)
        if event.timestamp < before:
            by_user[event.user_id].append(event)
    summaries = {user: fold_purchases(PurchaseSummary(), events) for user, events in by_user.items()}
    summaries = {user: s for user, s in summaries.items() if s.orders}
    statistics = customer_statistics(list(summaries.values()), before)
    codes = {}
    for user, summary in summaries.items():
        _, _, tags = segment_customer(User(user_id=user, summary=summary), [], {}, statistics, before)
        codes[user] = next((t.name for t in tags if t.family == "rfm" and t.name.startswith("R")
                            and t.name[1:2].isdigit()), "none")
    return codes


def grid_name(code: str) -> str:
    r, f = int(code[1]), int(code[3])
    return next(name for name, rule in RFM_GRID.items() if rule(r, f))


def agreement(path: Path, before: datetime) -> tuple[float, float, int, list]:
    ours, rows = independent_rfm(path, before)
    theirs = service_rfm(path, before, rows)
    customers = ours.keys() | theirs.keys()
    same_code = sum(ours.get(c) == theirs.get(c) for c in customers)
    same_name = sum(c in ours and c in theirs and theirs[c] != "none" and grid_name(ours[c]) == grid_name(theirs[c])
                    for c in customers)
    differ = sorted((c, ours.get(c), theirs.get(c)) for c in customers if ours.get(c) != theirs.get(c))
    return same_code / len(customers), same_name / len(customers), len(customers), differ


def test_rfm_agrees_with_an_independent_count_on_generated_invoices(tmp_path):
    """Always runs: a shop of 300 customers, many lines per invoice, cancellations and non-products."""
    rng = random.Random(3)
    rows, invoice = [], 600000
    start = datetime(2011, 1, 3, 9, 0)
    for customer in range(300):
        for _ in range(rng.choice([1, 1, 1, 2, 3, 5, 8, 20])):
            invoice += 1
            when = start + timedelta(days=rng.uniform(0, 140), minutes=rng.randint(0, 600))
            lines = [(f"{rng.randint(20000, 23999)}{rng.choice(['', 'A'])}", rng.randint(1, 24),
                      round(rng.uniform(0.3, 15), 2)) for _ in range(rng.choice([1, 2, 5, 15]))]
            if rng.random() < 0.2:
                lines.append(("POST", 1, 18.0))
            rows += [[str(invoice), code, "THING", str(q), when.strftime("%Y-%m-%d %H:%M:%S"), str(p),
                      f"{13000 + customer}.0", "United Kingdom"] for code, q, p in lines]
            if rng.random() < 0.1:  # a cancellation of the first line, the next day
                code, q, p = lines[0]
                rows.append([f"C{invoice}", code, "THING", str(-q), (when + timedelta(days=1)).strftime(
                    "%Y-%m-%d %H:%M:%S"), str(p), f"{13000 + customer}.0", "United Kingdom"])
    rows.sort(key=lambda row: row[4])
    text = io.StringIO()
    csv.writer(text).writerows([HEADER, *rows])
    path = tmp_path / "shop.csv.gz"
    path.write_bytes(gzip.compress(text.getvalue().encode()))

    same_code, same_name, customers, differ = agreement(path, datetime(2011, 6, 1, tzinfo=timezone.utc))

    assert customers == 300
    assert same_name == 1.0, differ[:10]
    assert same_code >= 0.99, (same_code, differ[:10])  # M is net of the cancellations


@pytest.mark.skipif(not ONLINE_RETAIL.exists(), reason=f"{ONLINE_RETAIL} is absent (../shared/data, not in the repo)")
def test_rfm_agrees_with_an_independent_count_on_online_retail():
    """Every customer of Online Retail's first six months (Dec 2010 to May 2011)."""
    same_code, same_name, customers, differ = agreement(
        ONLINE_RETAIL, datetime(2011, 6, 1, tzinfo=timezone.utc))

    assert customers > 2500
    assert same_name >= 0.99, (same_name, differ[:10])
    assert same_code >= 0.99, (same_code, differ[:10])  # M is net of the cancellations
