"""Every reason text, rendered and proofread: what a customer reads under a recommendation."""

from __future__ import annotations

import inspect
import re

import pytest

from shared.serving import reasons

TITLE = "Oak chopping board"

# Each template as a customer reads it. A new template must be added here (the last test checks).
RENDERED = {
    "bought": (reasons.from_history("x", ["oak"], {"purchase", "view"}, TITLE), "because you bought Oak chopping board"),
    "carted": (reasons.from_history("x", ["oak"], {"add_to_cart", "view"}, TITLE),
               "because you added Oak chopping board to your cart"),
    "viewed": (reasons.from_history("x", ["oak"], {"view"}, TITLE), "because you viewed Oak chopping board"),
    "clicked": (reasons.from_history("x", ["oak"], {"click", "view"}, TITLE), "because you looked at Oak chopping board"),
    "clicked this": (reasons.from_history("oak", ["oak"], {"click"}, TITLE), "you looked at this recently"),
    "other kind": (reasons.from_history("x", ["oak"], {"remove_from_cart"}, TITLE),
                   "because of your interest in Oak chopping board"),
    "no contributor": (reasons.from_history("x", [], set(), ""), "recommended for you"),
    # A campaign line's text: the same words from the strongest contributor alone.
    "campaign line": (reasons.Because(text=reasons.history_text("x", "oak", {"purchase"}, TITLE), items=[]),
                      "because you bought Oak chopping board"),
    "bought this": (reasons.from_history("oak", ["oak"], {"purchase"}, TITLE), "you bought this before"),
    "carted this": (reasons.from_history("oak", ["oak"], {"add_to_cart"}, TITLE), "in your cart, not bought yet"),
    "viewed this": (reasons.from_history("oak", ["oak"], {"view"}, TITLE), "you viewed this recently"),
    "popular": (reasons.popular(), "popular right now"),
    "popular in a country": (reasons.popular("GB"), "popular in GB right now"),
    "new": (reasons.new_in_category("kitchen"), "new in kitchen, a category you buy often"),
    "similar": (reasons.similar_to("oak", TITLE), "similar to Oak chopping board"),
    "interested in": (reasons.interested_in("cooking"), "because you're interested in cooking"),
    "interested in, their words": (reasons.interested_in("Slow Food"), "because you're interested in Slow Food"),
    "popular in a category": (reasons.popular_in_category("kitchen"), "popular in kitchen"),
    "popular in no category": (reasons.popular_in_category(None), "popular right now"),
    "bought together": (reasons.bought_together("oak", 136), "bought together by 136 customers"),
    "bought together by one": (reasons.bought_together("oak", 1), "bought together by 1 customer"),
    "often bought with": (reasons.often_bought_with(TITLE, 1136, ["oak"]),
                          "often bought with Oak chopping board (1,136 customers)"),
}


@pytest.mark.parametrize("name", RENDERED)
def test_each_reason_reads_as_written(name):
    because, expected = RENDERED[name]
    assert because.text == expected


@pytest.mark.parametrize("name", RENDERED)
def test_each_reason_is_proofread(name):
    text = RENDERED[name][0].text
    assert text == text.strip() and "  " not in text
    assert not re.search(r"[{}]|\bNone\b|\bit$|\bit\b to your cart", text)  # no placeholder, no dangling "it"
    assert text[0].islower() and not text.endswith((".", ","))  # a fragment shown under a title
    assert not re.search(r"\b1 customers\b|\b(\w+) \1\b", text)  # agreement, no doubled word


def test_counts_of_customers_agree_in_number():
    assert (reasons.customers(1), reasons.customers(2), reasons.customers(1136)) == (
        "1 customer", "2 customers", "1,136 customers")


def test_every_kind_of_history_event_has_both_of_its_texts():
    assert set(reasons.HISTORY_KINDS) == set(reasons._BECAUSE_YOU) == set(reasons._YOU_SAW_THIS)


def test_every_template_function_is_proofread_here():
    public = {name for name, f in inspect.getmembers(reasons, inspect.isfunction)
              if f.__module__ == reasons.__name__ and not name.startswith("_")}
    assert public == {"from_history", "history_text", "popular", "popular_in_category", "new_in_category", "similar_to",
                      "bought_together", "often_bought_with", "customers", "interested_in"}
