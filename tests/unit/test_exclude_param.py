"""`exclude` on GET /users/{id}/recommendations: the ids a client lists, written as people write lists."""

from __future__ import annotations

from tests.unit.test_display_fields import shop_with_model  # noqa: F401 - the fixture


def test_ids_listed_with_spaces_after_the_commas_are_left_out(api, shop_with_model):  # noqa: F811
    first = api.json("GET", "/users/never-seen/recommendations?limit=5")[1]["items"]
    shown = [listed["item_id"] for listed in first]
    assert len(shown) == 5

    spaced = api.json("GET", f"/users/never-seen/recommendations?limit=5&exclude={shown[0]},%20{shown[1]}%20,%20")
    assert spaced[0] == 200, spaced
    answer = [listed["item_id"] for listed in spaced[1]["items"]]

    assert len(answer) == 5 and not {shown[0], shown[1]} & set(answer)
