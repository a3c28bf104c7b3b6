"""The nightly run's customer profiles: what user_from_row reads, with the parts a row does not
store shared between customers (the run holds every customer at once)."""

from __future__ import annotations

import pickle
from decimal import Decimal

import pytest

from shared.storage.users import user_from_row, users_from_rows

ROWS = {
    "plain": {"user_id": "plain", "country": "DE"},
    "buyer": {"user_id": "buyer", "orders": 2, "lines": 3, "units": 4, "spend": {"EUR": Decimal("12.50")},
              "first_purchase_at": "2026-01-01T00:00:00.000000Z", "last_purchase_at": "2026-02-01T00:00:00.000000Z"},
    "legacy": {"user_id": "legacy", "purchase_count": 5},
    "consented": {"user_id": "consented", "consent": {"personalization": {"granted": False}},
                  "consent_updated_at": "2026-01-01T00:00:00.000000Z"},
    "contacted": {"user_id": "contacted", "contacts": {"email": {"sends": 3, "responses": 1}}},
    "also plain": {"user_id": "also plain", "city": "Köln", "attributes": {"likes": "tea"}},
}


def test_each_profile_is_what_user_from_row_reads():
    users = users_from_rows(ROWS)
    assert list(users) == list(ROWS)
    assert all(users[user_id] == user_from_row(row) for user_id, row in ROWS.items())
    assert users["buyer"].summary.orders == 2 and users["legacy"].summary.lines == 5
    assert not users["consented"].consent.personalization.granted and users["contacted"].contacts.email.sends == 3


def test_parts_no_row_stores_are_one_instance_and_stored_parts_each_their_own():
    users = users_from_rows(ROWS)
    plain, other = users["plain"], users["also plain"]
    assert plain.summary is other.summary and plain.consent is other.consent and plain.contacts is other.contacts
    assert users["buyer"].summary is not plain.summary and users["legacy"].summary is not plain.summary
    assert users["consented"].consent is not plain.consent and users["contacted"].contacts is not plain.contacts
    assert users["buyer"].consent is plain.consent  # what the buyer's row does not store, they share
    assert plain.attributes is not other.attributes  # not a part: each row's own


def test_profiles_dump_what_their_rows_set_and_refuse_to_change():
    users = users_from_rows(ROWS)
    for user_id, row in ROWS.items():
        dumped = users[user_id].model_dump(exclude_unset=True)
        assert {"user_id", *({"country", "city", "attributes"} & row.keys())} <= dumped.keys()
        assert not {"region", "updated_at", "erased_at", "linked_to"} & dumped.keys()
    # Customers whose rows set the same fields share one set of names: a change to one would
    # change what the others' dumps leave out, so none is allowed.
    plain, other = users["plain"], users["consented"]
    alike = users_from_rows({"a": {"user_id": "a", "country": "FR"}, "b": {"user_id": "b", "country": "DE"}})
    assert alike["a"].model_fields_set is alike["b"].model_fields_set  # one set, not one each (memory)
    with pytest.raises(TypeError, match="read-only"):
        plain.region = "Bavaria"
    with pytest.raises(TypeError, match="read-only"):
        plain.model_fields_set.add("region")
    assert "region" not in users_from_rows({"x": ROWS["plain"]})["x"].model_dump(exclude_unset=True)
    assert "region" not in other.model_dump(exclude_unset=True)


def test_profiles_survive_a_trip_to_another_process():
    users = users_from_rows(ROWS)
    again = pickle.loads(pickle.dumps(users))
    assert again == users
    assert all(again[u].model_dump(exclude_unset=True) == users[u].model_dump(exclude_unset=True) for u in users)
