"""The training pipeline on known data: weights, metrics, the gate, artifacts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from shared.training.artifact import CorruptArtifact, ModelArtifact, sha256
from shared.training.config import BlendWeights, TrainingConfig
from shared.training.evaluation import Metrics, best_first, ranking_metrics, top_items, top_items_of_one_row
from shared.training.interactions import InteractionLog, TooManyInteractions
from shared.training.matrix import DAY, confidence_matrix, interaction_weights, purchase_matrix
from shared.training.pipeline import (ACCEPTED, INSUFFICIENT_DATA, REJECTED, History, TrainingData, decide,
                                      popular_scores, train_model)
from tests.training_data import END, interactions_of, shop

NOW = END.timestamp()


def log_of(*rows):
    log = InteractionLog(limit=100)
    for user, item, kind, quantity, age_days in rows:
        log.add(user, item, kind, quantity, NOW - age_days * DAY)
    return log.finish()


def test_a_purchase_outweighs_a_view_and_old_events_fade_by_the_half_life():
    config = TrainingConfig(recency_half_life_days=30)
    weights = interaction_weights(log_of(("u", "a", "purchase", 1, 0), ("u", "b", "view", 1, 0),
                                         ("u", "c", "purchase", 1, 30)), config, NOW)
    assert weights[0] == pytest.approx(1.0)
    assert weights[1] == pytest.approx(config.event_weights["view"])
    assert weights[2] == pytest.approx(0.5)


def test_repeated_events_add_up_in_one_cell_and_removals_do_not_count():
    interactions = log_of(("u", "a", "purchase", 1, 0), ("u", "a", "purchase", 3, 0),
                          ("v", "a", "remove_from_cart", 1, 0))
    matrix = confidence_matrix(interactions, TrainingConfig(), NOW, (2, 1))
    assert matrix.nnz == 1
    assert matrix[0, 0] == pytest.approx(1 + np.log1p(1 + (1 + np.log(3))))


def test_the_log_refuses_more_than_its_limit():
    log = InteractionLog(limit=2)
    log.add("u", "a", "view", 1, NOW)
    log.add("u", "b", "view", 1, NOW)
    with pytest.raises(TooManyInteractions):
        log.add("u", "c", "view", 1, NOW)


def test_ranking_metrics_match_a_hand_computation():
    relevant = csr_matrix(np.array([[1, 0, 0, 1, 0], [0, 0, 1, 0, 0]], dtype=np.float32))
    metrics = ranking_metrics(np.array([[0, 1], [1, 2]]), relevant, n_items=5)
    # user 0 hits at rank 1 of 2 relevant; user 1 hits at rank 2 of 1 relevant.
    assert metrics.precision == pytest.approx(0.5)
    assert metrics.map == pytest.approx((0.5 + 0.5) / 2)
    assert metrics.ndcg == pytest.approx((1 / (1 + 1 / np.log2(3)) + 1 / np.log2(3)) / 2)
    assert metrics.coverage == pytest.approx(3 / 5)


def test_top_items_never_returns_excluded_items():
    scores = lambda users: np.tile([5.0, 4, 3, 2, 1], (len(users), 1))  # noqa: E731
    exclude = csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 0, 0, 0, 0]]))
    assert top_items(scores, np.array([0, 1]), exclude, 2).tolist() == [[2, 3], [0, 1]]


def test_equal_scores_rank_in_item_order_however_deep_the_list():
    rng = np.random.default_rng(3)
    scores = rng.integers(0, 4, size=(50, 40)).astype(np.float32)  # many ties, also at the cut
    scores[0, 5] = np.nan
    for depth in (1, 3, 10, 40):
        ranked = best_first(scores, depth)
        for row, columns in zip(scores, ranked):
            safe = np.where(np.isnan(row), -np.inf, row)
            expected = sorted(range(len(row)), key=lambda j: (-safe[j], j))[:depth]
            assert columns.tolist() == expected
    # A short list is the head of a long one, so a batch job and a single request agree.
    assert (best_first(scores, 30)[:, :7] == best_first(scores, 7)).all()


def test_a_wide_catalogue_ranks_as_a_full_sort_would():
    # Thousands of columns: only the columns near each row's k-th best are sorted, which must not
    # change the list, with ties at the cut, excluded (-inf) and NaN scores, and flat rows.
    rng = np.random.default_rng(5)
    scores = rng.integers(0, 50, size=(40, 3001)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[1] = 7.0
    scores[2] = -np.inf
    scores[3, ::5] = np.nan
    scores[4, 2000:] = 100.0  # the best all sit in the last columns
    for depth in (1, 10, 64, 200):
        safe = np.where(np.isnan(scores), -np.inf, scores)
        expected = [np.lexsort((np.arange(row.size), -row))[:depth].tolist() for row in safe]
        assert best_first(scores, depth).tolist() == expected


def test_one_ranking_for_everyone_gives_each_user_the_lists_a_full_ranking_would():
    rng = np.random.default_rng(11)
    n_users, n_items = 700, 3000  # more users than one chunk
    popularity = rng.integers(0, 30, size=n_items).astype(np.float32)  # ties everywhere
    excluded = (rng.random((n_users, n_items)) < rng.random((n_users, 1)) ** 4 * 0.9).astype(np.float32)
    excluded[3, popularity.argsort()[-50:]] = 1  # the most popular items all bought
    exclude = csr_matrix(excluded)
    users = np.r_[0, rng.permutation(np.arange(1, n_users))[:600]]

    def full(scores):
        return top_items(lambda chunk: np.broadcast_to(scores, (len(chunk), n_items)), users, exclude, 10)

    assert (top_items_of_one_row(popularity, users, exclude, 10) == full(popularity)).all()
    flat = np.zeros(n_items, np.float32)
    assert (top_items_of_one_row(flat, users, exclude, 10) == full(flat)).all()
    # A user with fewer than 10 items left, and NaN scores, rank as best_first ranks them.
    exclude = csr_matrix(np.vstack([np.r_[np.zeros(5), np.ones(n_items - 5)], excluded[1:]]).astype(np.float32))
    with_nan = popularity.copy()
    with_nan[::7] = np.nan
    for scores in (popularity, with_nan):
        assert (top_items_of_one_row(scores, users, exclude, 10) == full(scores)).all()


@pytest.mark.parametrize(("model", "baseline", "active", "status"), [
    (0.20, 0.10, None, ACCEPTED),
    (0.10, 0.10, None, REJECTED),  # a tie does not beat popularity
    (0.20, 0.10, 0.21, ACCEPTED),  # within 10 % of the active version
    (0.20, 0.10, 0.30, REJECTED),  # far below what serves now
])
def test_the_activation_gate(model, baseline, active, status):
    as_metrics = lambda ndcg: Metrics(0, 0, ndcg, 0, 10)  # noqa: E731
    assert decide(as_metrics(model), as_metrics(baseline), active, TrainingConfig())[0] == status


def test_on_a_shop_with_taste_the_model_beats_popularity_and_is_accepted():
    outcome = train_model(TrainingData(interactions_of(shop().events), NOW), TrainingConfig())

    assert outcome.status == ACCEPTED, outcome.reason
    assert outcome.metrics["model"]["ndcg"] > 1.5 * outcome.metrics["popularity"]["ndcg"]
    assert outcome.artifact.item_factors.shape == (outcome.counts["items"], 64)
    assert outcome.artifact.popular_items[:3]


def test_training_is_reproducible_for_a_seed():
    data = TrainingData(interactions_of(shop().events), NOW)
    first, again = (train_model(data, TrainingConfig()) for _ in range(2))
    assert first.metrics == again.metrics


def test_a_large_holdout_is_scored_on_a_seeded_draw_of_its_customers_the_same_for_model_and_popularity():
    data = TrainingData(interactions_of(shop().events), NOW)
    everyone = train_model(data, TrainingConfig(blend={"als": 1, "knn": 1, "popularity": 1}))
    holdout = everyone.counts["evaluated_users"]
    assert everyone.metrics["model"]["users"] == everyone.metrics["popularity"]["users"] == holdout > 20

    capped = TrainingConfig(blend={"als": 1, "knn": 1, "popularity": 1}, max_holdout_users=holdout // 2)
    drawn, again = (train_model(data, capped) for _ in range(2))
    assert drawn.metrics["model"]["users"] == drawn.metrics["popularity"]["users"] == holdout // 2
    assert drawn.metrics == again.metrics and drawn.metrics != everyone.metrics


def test_no_interactions_or_too_few_buyers_is_insufficient_data_not_a_crash():
    empty = train_model(TrainingData(interactions_of([]), NOW), TrainingConfig())
    one_user = train_model(TrainingData(log_of(("u", "a", "purchase", 1, 1), ("u", "b", "purchase", 1, 30)), NOW),
                           TrainingConfig())
    assert (empty.status, empty.artifact) == (INSUFFICIENT_DATA, None)
    assert "no interactions" in empty.reason
    assert one_user.status == INSUFFICIENT_DATA
    assert "at least 5" in one_user.reason


def test_an_artifact_survives_a_round_trip_and_a_damaged_one_is_refused():
    artifact = ModelArtifact(["a", "b"], np.ones((2, 3), np.float32), ["b", "a"], {"DE": ["a"]},
                             {"customers": 1}, {"factors": 3})
    data = artifact.to_bytes()

    again = ModelArtifact.from_bytes(data, sha256(data))

    assert (again.item_ids, again.popular_by_country, again.parameters) == (["a", "b"], {"DE": ["a"]}, {"factors": 3})
    with pytest.raises(CorruptArtifact, match="checksum"):
        ModelArtifact.from_bytes(data[:-10] + b"x" * 10, sha256(data))
    with pytest.raises(CorruptArtifact):
        ModelArtifact.from_bytes(data[: len(data) // 2])


def test_items_only_ever_viewed_are_in_the_model_but_never_listed_as_popular():
    events = [e for e in shop().events]
    viewed_only = {**events[-1], "event_id": "v-new", "item_id": "sku-never-bought", "event_type": "view"}
    viewed_only.pop("price", None), viewed_only.pop("currency", None), viewed_only.pop("order_id", None)

    outcome = train_model(TrainingData(interactions_of(events + [viewed_only]), NOW), TrainingConfig())

    assert "sku-never-bought" in outcome.artifact.item_ids
    assert "sku-never-bought" not in outcome.artifact.popular_items


def customer_ids_in(data: bytes, user_ids: set[str]) -> set[str]:
    """Ids found in an artifact's bytes (numpy stores strings as UTF-32) or in any of its arrays."""
    found = {u for u in user_ids if u.encode() in data or u.encode("utf-32-le") in data}
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        for name in arrays.files:
            values = arrays[name]
            text = values.tobytes().decode() if name == "meta" else json.dumps(values.tolist())
            found |= {u for u in user_ids if u in text}
    return found


def test_a_model_holds_no_customer_id_and_no_customer_row():
    # Ids that no item id or statistic could contain by chance.
    events = [{**e, "user_id": f"customer-{e['user_id']}"} for e in shop().events]
    user_ids = {e["user_id"] for e in events}
    countries = {user: "DE" for user in user_ids}

    # Every part of the blend, so every array a model can hold is written and searched; a chosen
    # blend may leave the neighbours out.
    every_part = TrainingConfig(blend=BlendWeights(als=1, knn=1, popularity=1))
    outcome = train_model(TrainingData(interactions_of(events), NOW, countries), every_part)
    data = outcome.artifact.to_bytes()

    assert outcome.artifact.popular_by_country["DE"]  # the per-country aggregate is still there
    assert customer_ids_in(data, user_ids) == set()
    with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
        # Complements are pair counts per item: how many customers bought both, never who.
        assert sorted(arrays.files) == [
            "complements_baskets", "complements_customers", "complements_indices", "complements_indptr",
            "complements_scores", "complements_variant", "item_factors", "item_ids", "item_popularity", "meta",
            "neighbours_data", "neighbours_indices", "neighbours_indptr", "neighbours_shape", "popular_items"]


def legacy_artifact(user_ids: list[str]) -> bytes:
    """An artifact as versions before this one wrote it, with a row per customer."""
    buffer = io.BytesIO()
    meta = {"popular_by_country": {}, "customer_statistics": {"customers": 2}, "parameters": {"factors": 3}}
    np.savez(buffer, item_ids=np.array(["a", "b"]), user_ids=np.array(user_ids),
             item_factors=np.ones((2, 3), np.float32), user_factors=np.ones((len(user_ids), 3), np.float32),
             popular_items=np.array(["b"]), meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8))
    return buffer.getvalue()


def test_an_older_artifact_with_customer_rows_still_loads_and_is_never_written_back_with_them():
    old = legacy_artifact(["customer-1", "customer-2"])

    artifact = ModelArtifact.from_bytes(old, sha256(old))

    assert (artifact.item_ids, artifact.popular_items, artifact.parameters) == (["a", "b"], ["b"], {"factors": 3})
    assert customer_ids_in(artifact.to_bytes(), {"customer-1", "customer-2"}) == set()


def test_a_history_counts_the_events_before_its_moment_as_a_copy_of_them_would():
    """History.before reads the run's columns through a mask instead of copying the events before
    its moment: the matrices and popular scores must be those of the copy."""
    interactions = interactions_of(shop(n_users=300, n_items=120).events)
    config = TrainingConfig()
    shape = (len(interactions.user_ids), len(interactions.item_ids))
    until = float(np.median(interactions.timestamps))
    history = History.before(interactions, until, config, shape)
    earlier = interactions.select(interactions.timestamps < until)
    assert 0 < len(earlier) < len(interactions)
    for made, copied in ((history.rows, confidence_matrix(earlier, config, until, shape)),
                         (history.bought, purchase_matrix(earlier, shape))):
        assert made.dtype == copied.dtype and made.nnz == copied.nnz > 0
        assert (made != copied).nnz == 0
    assert np.array_equal(history.popularity, popular_scores(earlier, until, config, shape[1]))
