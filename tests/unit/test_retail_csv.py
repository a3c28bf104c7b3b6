"""Online Retail CSV import: what becomes items, customers and purchases, and what is skipped."""

from __future__ import annotations

import gzip
from datetime import datetime, timezone

import json

import pytest

from devstack.retail_csv import (ONLINE_RETAIL, TA_FENG, OrderLines, detect_mapping, read_order_lines,
                                 read_retail_csv)
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
    assert data.skipped == {"non-product code": 1, "no customer": 1, "bad price": 1, "malformed row": 1}
    # the cancellation is a return of the original line, in its order
    assert [(r["event_id"], r["event_type"], r["order_id"], r["quantity"], r["price"]) for r in data.returns] == [
        ("C536379-1", "return", "536367", 1, 1.85)]
    assert (data.returns_matched, data.returns_unmatched) == (1, 0)
    assert [e["event_id"] for e in data.all_events()] == ["536365-1", "536365-2", "536367-1", "C536379-1"]


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


def test_what_it_produces_is_accepted_by_the_api_models_returns_too(tmp_path):
    data = read_retail_csv(write(tmp_path, "retail.csv", UCI))
    for event in data.all_events():
        Event.model_validate(event, context={"now": datetime.now(timezone.utc)})


NETTING = """InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country
1001,22633,HAND WARMER,6,2011-01-03 10:00:00,1.85,5.0,France
1002,22633,HAND WARMER,2,2011-01-05 10:00:00,1.85,5.0,France
C1003,22633,HAND WARMER,-3,2011-01-06 10:00:00,1.85,5.0,France
C1004,22633,HAND WARMER,-4,2011-01-07 10:00:00,1.85,5.0,France
C1005,71053,LANTERN,-1,2011-01-07 10:00:00,3.39,5.0,France
C1006,22633,HAND WARMER,-1,2011-01-01 10:00:00,1.85,6.0,France
"""


def test_cancellations_are_netted_against_the_latest_earlier_lines(tmp_path):
    data = read_retail_csv(write(tmp_path, "netting.csv", NETTING))
    # 3 units: 2 from 1002 (latest) and 1 from 1001; then 4 from 1001; unknown lantern and
    # another customer's cancellation keep their own invoice
    assert [(r["event_id"], r["order_id"], r["quantity"]) for r in data.returns] == [
        ("C1006-1", "C1006", 1), ("C1003-1", "1002", 3), ("C1004-1", "1001", 4), ("C1005-1", "C1005", 1)]
    assert (data.returns_matched, data.returns_unmatched) == (2, 2)
    assert len(data.events) == 2 and data.skipped == {}


TA = """TRANSACTION_DT,CUSTOMER_ID,AGE_GROUP,PIN_CODE,PRODUCT_SUBCLASS,PRODUCT_ID,AMOUNT,ASSET,SALES_PRICE
11/1/2000,01104905,45-49,115,110411,4710199010372,2,24,30
11/1/2000,01104905,45-49,115,100201,4710857472535,1,48,46
11/2/2000,01104905,45-49,115,110411,4710199010372,1,12,15
11/2/2000,00418683,45-49,115,120107,4710857472535,3,60,0
11/2/2000,,45-49,115,120107,4710857472535,3,60,90
"""


def test_ta_feng_lines_of_a_day_are_one_order_and_sales_price_is_the_line_total(tmp_path):
    path = write(tmp_path, "ta_feng.csv.gz", "\ufeff" + TA, gzipped=True)
    assert detect_mapping(path) is TA_FENG
    data = read_order_lines(path, TA_FENG)
    assert [(e["event_id"], e["order_id"], e["quantity"], e["price"], e["currency"]) for e in data.events] == [
        ("01104905@2000-11-01-1", "01104905@2000-11-01", 2, 15.0, "TWD"),
        ("01104905@2000-11-01-2", "01104905@2000-11-01", 1, 46.0, "TWD"),
        ("01104905@2000-11-02-1", "01104905@2000-11-02", 1, 15.0, "TWD"),
    ]
    assert data.events[0]["timestamp"] == "2000-10-31T16:00:00Z"  # midnight in Taipei
    assert data.skipped == {"bad price": 1, "no customer": 1}
    assert {i["item_id"]: i["category"] for i in data.items} == {"4710199010372": "110411", "4710857472535": "100201"}
    assert data.users == [{"user_id": "01104905", "country": "TW"}]
    for event in data.events:
        Event.model_validate(event, context={"now": datetime.now(timezone.utc)})


SHOP_EXPORT = """order;customer;sku;name;qty;total;placed;cat
A-1;c1;s1;Blue mug;2;10.00;03.02.2025 14:00;kitchen
A-1;c1;s2;Red mug;1;4.99;03.02.2025 14:00;kitchen
A-2;c2;s1;Blue mug;-1;-5.00;04.02.2025 09:00;kitchen
"""


def test_any_export_with_a_mapping(tmp_path):
    path = tmp_path / "export.csv"
    path.write_text(SHOP_EXPORT.replace(";", ","))
    mapping = OrderLines.from_dict(json.loads("""{"user": "customer", "item": "sku", "quantity": "qty",
        "timestamp": "placed", "line_total": "total", "order": "order", "title": "name", "category": "cat",
        "date_format": "%d.%m.%Y %H:%M", "timezone": "Europe/Berlin", "currency": "EUR"}"""))
    data = read_order_lines(path, mapping)
    assert [(e["event_id"], e["event_type"], e["quantity"], e["price"]) for e in data.all_events()] == [
        ("A-1-1", "purchase", 2, 5.0), ("A-1-2", "purchase", 1, 4.99), ("A-2-1", "return", 1, 5.0)]
    assert data.events[0]["timestamp"] == "2025-02-03T13:00:00Z"
    assert {i["item_id"]: (i["title"], i["category"]) for i in data.items} == {
        "s1": ("Blue mug", "kitchen"), "s2": ("Red mug", "kitchen")}


def test_a_mapping_is_checked(tmp_path):
    with pytest.raises(ValueError, match="price"):
        OrderLines.from_dict({"user": "u", "item": "i", "quantity": "q", "timestamp": "t"})
    with pytest.raises(ValueError, match="unknown mapping keys"):
        OrderLines.from_dict({"user": "u", "item": "i", "quantity": "q", "timestamp": "t", "price": "p", "x": 1})
    with pytest.raises(ValueError, match="no column CustomerID"):
        read_order_lines(write(tmp_path, "ta.csv", TA), ONLINE_RETAIL)
    with pytest.raises(ValueError, match="Online Retail"):
        read_retail_csv(write(tmp_path, "ta.csv", TA))
