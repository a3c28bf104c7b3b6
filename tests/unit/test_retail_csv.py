"""Online Retail CSV import: what becomes items, customers and purchases, and what is skipped."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

from devstack.retail_csv import read_retail_csv
from shared.catalog import ItemUpsert
from shared.events import Event

UCI = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,2010-12-01 08:26:00,2.55,17850.0,United Kingdom
536365,71053,WHITE METAL LANTERN,6,2010-12-01 08:26:00,3.39,17850.0,United Kingdom
536366,POST,POSTAGE,1,2011-06-01 10:00:00,18.00,12583.0,France
536367,22633,HAND WARMER UNION JACK,6,2011-06-01 10:00:00,1.85,12583.0,France
C536379,22633,HAND WARMER UNION JACK,-1,2011-06-02 09:41:00,1.85,12583.0,France
536380,22633,HAND WARMER UNION JACK,2,2011-06-02 09:45:00,1.85,,United Kingdom
536381,71053,WHITE METAL LANTERN,1,2011-06-03 09:00:00,0.00,12583.0,France
536382,71053,WHITE METAL LANTERN,1,not a date,3.39,12583.0,France
"""
RETAIL_II = """Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country
489434,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,12,2009-12-01 07:45:00,6.95,13085.0,EIRE
489434,79323P,PINK CHERRY LIGHTS,12,2009-12-01 07:45:00,6.75,13085.0,EIRE
489435,85048,15CM CHRISTMAS GLASS BALL 20 LIGHTS,1,2009-12-01 09:00:00,7.95,13086.0,Unspecified
"""


def write(tmp_path, name, text, gzipped=False):
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()) if gzipped else text.encode())
    return path


def test_purchases_customers_and_products_come_out_of_the_uci_layout(tmp_path):
    data = read_retail_csv(write(tmp_path, "retail.csv", UCI))

    assert data.rows == 8
    assert [e["event_id"] for e in data.events] == ["536365-1", "536365-2", "536367-1"]
    assert {u["user_id"]: u.get("country") for u in data.users} == {"17850": "GB", "12583": "FR"}
    assert {i["item_id"] for i in data.items} == {"85123A", "71053", "22633"}
    assert data.skipped == {"non-product code": 1, "cancellation": 1, "no customer": 1,
                            "bad price": 1, "malformed row": 1}


def test_uk_local_times_become_utc(tmp_path):
    data = read_retail_csv(write(tmp_path, "retail.csv", UCI))
    times = {e["event_id"]: e["timestamp"] for e in data.events}
    assert times["536365-1"] == "2010-12-01T08:26:00Z"  # winter: GMT
    assert times["536367-1"] == "2011-06-01T09:00:00Z"  # summer: BST is UTC+1


def test_retail_ii_layout_gzipped_under_a_csv_name(tmp_path):
    data = read_retail_csv(write(tmp_path, "retail_ii.csv", RETAIL_II, gzipped=True))

    assert len(data.events) == 3
    assert {u["user_id"]: u.get("country") for u in data.users} == {"13085": "IE", "13086": None}
    ball = next(i for i in data.items if i["item_id"] == "85048")
    assert ball["price"] == 7.45  # the median of what it sold for
    assert ball["created_at"] == "2009-12-01T07:45:00Z"


def test_a_second_read_gives_the_same_event_ids(tmp_path):
    path = write(tmp_path, "retail.csv.gz", UCI, gzipped=True)
    assert read_retail_csv(path).events == read_retail_csv(path).events


def test_what_it_produces_is_accepted_by_the_api_models(tmp_path):
    data = read_retail_csv(write(tmp_path, "retail.csv", UCI))
    for event in data.events:
        Event.model_validate(event, context={"now": datetime.now(timezone.utc)})
    for item in data.items:
        ItemUpsert.model_validate(item)


def test_limit_rows_stops_early(tmp_path):
    assert read_retail_csv(write(tmp_path, "retail.csv", UCI), limit_rows=2).rows == 2
