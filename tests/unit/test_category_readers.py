"""Every reader of the items' categories takes a stored row alike: the nightly scan path, the
export path, and the segments function's snapshot and its reads by key. So the nightly run and a
request tag a customer from the same categories, and a row without a category (written by hand,
or damaged) fails none of them: before, the nightly read stopped at it with a KeyError."""

from __future__ import annotations

from shared.storage import dynamo
from shared.storage.catalog import catalog_categories, categories_by_key
from shared.storage.customers import catalog_labels, catalog_labels_of

ROWS = {
    "ok": {"category": {"S": "kitchen"}, "title": {"S": "Pan"}},
    "no-category": {"title": {"S": "Lost"}},
    "bad-price": {"category": {"S": "garden"}, "price": {"S": "cheap"}},
    "retired": {"category": {"S": "toys"}, "retired": {"BOOL": True}},
}


def test_every_reader_takes_the_same_categories_and_none_fails_on_a_damaged_row(moto_tables):
    table = moto_tables["ItemsTable"]
    for item_id, row in ROWS.items():
        dynamo.client().put_item(TableName=table, Item={"item_id": {"S": item_id}, **row})
    scanned = dynamo.client().scan(TableName=table)["Items"]

    # (A category that is not text, or empty, is refused by DynamoDB: it keys the by_category index.)
    expected = {"ok": "kitchen", "bad-price": "garden", "retired": "toys"}
    assert catalog_categories(table) == expected
    assert catalog_labels(table)[0] == expected
    assert catalog_labels_of(scanned)[0] == expected  # an export's rows
    assert categories_by_key(table, [*ROWS, "never-stored"]) == expected
    assert catalog_labels(table)[1]["no-category"] == "Lost"  # its title still reads
