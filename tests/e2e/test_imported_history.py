"""A shop's history from years ago, imported through the API with its real dates, is served at
once: training and evaluation count back from `as_of`, and popular items need no model."""

from __future__ import annotations

import csv
import gzip
import io
import random
from datetime import datetime, timedelta, timezone

import pytest

from devstack.api_client import ApiClient
from devstack.retail_csv import detect_mapping, read_order_lines
from tests.e2e.test_local_stack import running_stack  # noqa: F401 - the module's stack

pytestmark = pytest.mark.e2e

HEADER = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]
AS_OF = datetime(2011, 6, 1, tzinfo=timezone.utc)


def old_shop_csv(path) -> None:
    """Orders from January to August 2011 (the end after AS_OF), some lines cancelled."""
    rng = random.Random(11)
    rows, invoice = [], 540000
    for customer in range(120):
        taste = rng.sample(range(60), 8)
        for _ in range(rng.choice([1, 2, 3, 5])):
            invoice += 1
            when = datetime(2011, 1, 3, 9) + timedelta(days=rng.uniform(0, 230))
            for code in rng.sample(taste, rng.choice([1, 2, 4])):
                rows.append([str(invoice), f"2{code:04d}", f"THING NUMBER {code}", str(rng.randint(1, 6)),
                             when.strftime("%Y-%m-%d %H:%M:%S"), "2.55", f"{14000 + customer}.0", "United Kingdom"])
            if rng.random() < 0.1:
                rows.append([f"C{invoice}", rows[-1][1], rows[-1][2], f"-{rows[-1][3]}",
                             (when + timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"), "2.55", rows[-1][6],
                             "United Kingdom"])
    text = io.StringIO()
    csv.writer(text).writerows([HEADER, *sorted(rows, key=lambda row: row[4])])
    path.write_bytes(gzip.compress(text.getvalue().encode()))


@pytest.fixture(scope="module")
def imported(running_stack, tmp_path_factory):  # noqa: F811 - the fixture imported above
    _, state_dir = running_stack
    api = ApiClient.for_stack(state_dir)
    path = tmp_path_factory.mktemp("csv") / "old_shop.csv.gz"
    old_shop_csv(path)
    data = read_order_lines(path, detect_mapping(path))
    assert api.put_items(data.items).rejected == []
    api.put_users(data.users)
    assert api.send_events(data.all_events()).rejected == []
    return api, data


def test_a_backtest_on_imported_history_trains_as_of_its_date_without_shifting_it(imported):
    api, data = imported

    manifest = api.train_and_wait({"as_of": AS_OF.isoformat(), "holdout_days": 30}, timeout=300)

    assert manifest["window"]["end"].startswith("2011-06-01T00:00:00")
    before = [e for e in data.events if datetime.fromisoformat(e["timestamp"]) <= AS_OF]
    assert 0 < manifest["counts"]["interactions"] <= len(before) < len(data.events)  # later events ignored
    assert manifest["artifact"] is not None and manifest["strategy"]


def test_imported_history_is_served_popular_items_and_recommendations_not_an_empty_list(imported):
    api, data = imported
    api.train_and_wait({"as_of": AS_OF.isoformat(), "holdout_days": 30}, timeout=300)
    buyer = data.events[0]["user_id"]

    popular = api.request("GET", "/popular?limit=5").body
    answer = api.request("GET", f"/users/{buyer}/recommendations?limit=5").body
    models = api.request("GET", "/models").body

    assert len(popular["items"]) == 5 and "no_model" not in popular["strategy"]
    assert len(answer["items"]) == 5 and "no_model" not in answer["strategy"]
    assert models["serving"]["strategy"] and models["serving"]["reason"]
