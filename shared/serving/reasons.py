"""Every reason text an answer can carry, in one place, so they can be proofread together.

A reason names what it stands on: the customer's own events ("because you bought Oak chopping
board") or declared interests ("because you're interested in cooking"), the shop's figures
("popular in GB right now", "bought together by 136 customers") or the catalog ("new in kitchen,
a category you buy often"). tests/unit/test_reasons.py renders every template and proofreads it.
"""

from __future__ import annotations

from shared.serving.answers import Because

# The strongest kind of event first: a reason names the strongest thing the customer did.
HISTORY_KINDS = ("purchase", "add_to_cart", "click", "view")
_BECAUSE_YOU = {
    "purchase": "because you bought {title}",
    "add_to_cart": "because you added {title} to your cart",
    "click": "because you looked at {title}",
    "view": "because you viewed {title}",
}
# The recommended item is itself one the customer viewed or carted (a bounded share of a list).
_YOU_SAW_THIS = {
    "purchase": "you bought this before",
    "add_to_cart": "in your cart, not bought yet",
    "click": "you looked at this recently",
    "view": "you viewed this recently",
}


def from_history(item_id: str, contributors: list[str], kinds: set[str], title: str) -> Because:
    """`contributors`: history items behind the score, strongest first; `kinds`: what the
    customer did with the strongest one; `title`: its title."""
    return Because(text=history_text(item_id, contributors[0] if contributors else None, kinds, title),
                   items=contributors)


def history_text(item_id: str, top: str | None, kinds: set[str], title: str) -> str:
    """The text alone (campaign lines carry no contributor list): `top` is the strongest contributor."""
    if top is None:
        return "recommended for you"
    kind = None
    for strongest in HISTORY_KINDS:  # a loop, not next(generator): a campaign calls this millions of times
        if strongest in kinds:
            kind = strongest
            break
    if top == item_id:
        return _YOU_SAW_THIS.get(kind or "", "recommended for you")
    return _BECAUSE_YOU[kind].format(title=title) if kind else f"because of your interest in {title}"


def popular(country: str | None = None) -> Because:
    return Because(text=f"popular in {country} right now" if country else "popular right now", items=[])


def popular_in_category(category: str | None) -> Because:
    return Because(text=f"popular in {category}" if category else "popular right now", items=[])


def bought_together(item_id: str, count: int) -> Because:
    """Complements: the count is distinct customers who bought both in one order."""
    return Because(text=f"bought together by {customers(count)}", items=[item_id])


def often_bought_with(title: str, count: int, contributors: list[str]) -> Because:
    return Because(text=f"often bought with {title} ({customers(count)})", items=contributors)


def new_in_category(category: str) -> Because:
    return Because(text=f"new in {category}, a category you buy often", items=[])


def interested_in(interest: str) -> Because:
    """A cold start's items from an interest the customer declared in their profile, in their words."""
    return Because(text=f"because you're interested in {interest}", items=[])


def similar_to(item_id: str, title: str) -> Because:
    """Substitutes: items close to this one in the model's taste space, not proof of co-purchase."""
    return Because(text=f"similar to {title}", items=[item_id])


def customers(count: int) -> str:
    return f"{count:,} customer" + ("" if count == 1 else "s")
