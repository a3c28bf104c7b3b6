"""Sticky, deterministic assignment by a hash of the id; objectors never in a personalized variant."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.experiments.assignment import Share, assign

SPLIT = [Share("model", 0.5, True), Share("popular", 0.5, False)]


def test_the_same_customer_gets_the_same_variant_every_time():
    first = [assign("exp-1", f"u-{n}", SPLIT, True) for n in range(1000)]
    assert first == [assign("exp-1", f"u-{n}", SPLIT, True) for n in range(1000)]


@pytest.mark.parametrize("shares", [(0.5, 0.5), (0.9, 0.1), (0.2, 0.3, 0.5)])
def test_traffic_follows_the_shares(shares):
    variants = [Share(f"v{k}", share, True) for k, share in enumerate(shares)]
    counts = Counter(assign("exp-2", f"visitor-{n}", variants, True) for n in range(40_000))
    for k, share in enumerate(shares):
        assert counts[f"v{k}"] / 40_000 == pytest.approx(share, abs=0.01)


def test_a_new_experiment_reshuffles_everyone():
    one = [assign("exp-a", f"u-{n}", SPLIT, True) for n in range(4000)]
    two = [assign("exp-b", f"u-{n}", SPLIT, True) for n in range(4000)]
    same = sum(a == b for a, b in zip(one, two)) / 4000
    assert same == pytest.approx(0.5, abs=0.03)  # independent, not the same halves again


def test_objectors_are_never_in_an_experiment_with_a_personalized_variant():
    assert {assign("exp-1", f"u-{n}", SPLIT, False) for n in range(500)} == {None}
    baselines = [Share("popular", 0.5, False), Share("new", 0.5, False)]
    assert {assign("exp-1", f"u-{n}", baselines, False) for n in range(500)} == {"popular", "new"}
