"""Attributes written by hand with values no request sends (binary values, in a list or a map):
every reader leaves them out, and none fails for the customer or item, nor for anyone else."""

from __future__ import annotations

from datetime import datetime, timezone

import boto3

from shared.config import get_settings
from shared.segments.service import materialize_segments
from shared.storage.segments import SegmentStore
from tests.factories import ago, item, purchase

BINARY = {"B": b"\xff\x00"}


def test_a_binary_attribute_written_by_hand_is_left_out_and_breaks_no_reader(api, moto_tables):
    assert api.json("POST", "/items", {"items": [item("pan", category="kitchen")]})[0] == 200
    for user in ("u-odd", "u-plain"):
        assert api.json("PUT", f"/users/{user}", {"country": "DE", "attributes": {"interests": ["kitchen"]}})[0] == 200
    assert api.json("POST", "/events", {"events": [purchase("p-1", user_id="u-plain", item_id="pan",
                                                            timestamp=ago(days=2))]})[0] == 200
    dynamo = boto3.client("dynamodb")
    by_hand = {"M": {"interests": {"L": [BINARY, {"S": "garden"}]}, "photo": BINARY, "nested": {"M": {"x": BINARY}},
                     "codes": {"BS": [b"\x01"]}}}
    dynamo.update_item(TableName=moto_tables["UsersTable"], Key={"user_id": {"S": "u-odd"}},
                       UpdateExpression="SET attributes = :a", ExpressionAttributeValues={":a": by_hand})
    on_item = {"M": {"colours": {"L": [BINARY, {"S": "red"}]}, "photo": BINARY}}
    dynamo.update_item(TableName=moto_tables["ItemsTable"], Key={"item_id": {"S": "pan"}},
                       UpdateExpression="SET attributes = :a", ExpressionAttributeValues={":a": on_item})

    status, user = api.json("GET", "/users/u-odd")
    assert status == 200 and user["attributes"] == {"interests": ["garden"], "nested": {}, "codes": []}
    status, tags = api.json("GET", "/users/u-odd/segments")
    assert status == 200 and "psychographic:interested-in-garden" in {tag["segment_id"] for tag in tags["tags"]}
    status, found = api.json("GET", "/items/pan")
    assert status == 200 and found["attributes"] == {"colours": ["red"]}

    now = datetime.now(timezone.utc)
    store = SegmentStore(moto_tables["SegmentsTable"])
    materialize_segments(get_settings(), store, {}, now, now.strftime("%Y%m%dT%H%M%S"))  # the nightly run
    assert store.memberships("u-odd") and store.memberships("u-plain")
