"""The benches' write units come from item sizes by DynamoDB's documented rules: a number is 1 byte
per two significant digits plus 1 (not 21 bytes, the most any number takes), so that a page
number or a count is not billed as much as a 38-digit one."""

from __future__ import annotations

import base64

import pytest

from bench.item_size import item_bytes, number_bytes, put_units


@pytest.mark.parametrize("number, size", [
    ("0", 2), ("7", 2), ("42", 2), ("123", 3), ("1000", 2), ("-12.50", 3), ("0.001", 2), ("1E+5", 2),
    ("12345678901234567890123456789012345678", 20),
])
def test_a_number_takes_a_byte_for_two_significant_digits_and_one_more(number, size):
    assert number_bytes(number) == size


def test_an_items_size_is_its_names_and_values_as_dynamodb_counts_them():
    item = {"pk": {"S": "ü1"}, "n": {"N": "12345"}, "ok": {"BOOL": True}, "raw": {"B": base64.b64encode(b"abcd").decode()},
            "m": {"M": {"a": {"N": "1"}, "b": {"S": "xy"}}}, "l": {"L": [{"S": "z"}, {"NULL": True}]}}
    # names 2+1+2+3+1+1; "ü1" 3; 12345: 3+1; true 1; 4 raw bytes; map 3 + (1+2+1) + (1+2+1); list 3 + (1+1) + (1+1)
    assert item_bytes(item) == 10 + 3 + 4 + 1 + 4 + 11 + 7


def test_a_page_of_numbers_is_billed_by_their_digits():
    """A customer bucket's entries: a thousand customers, each on page 1 of three segments."""
    entries = {f"u-{n:05d}": {"M": {str(k): {"N": "1"} for k in range(3)}} for n in range(1000)}
    item = {"segment_id": {"S": "#customers#0001"}, "sk": {"S": "r1#0000#01"}, "customers": {"M": entries}}
    # Each entry: its id (7) + a map (3 + 3 x (1 + 2 + 1)) + 1; with 21-byte numbers it took 57 more.
    assert item_bytes(item) == 10 + 15 + 2 + 10 + 9 + 3 + 1000 * (7 + 3 + 12 + 1)
    assert put_units(item) == 23
