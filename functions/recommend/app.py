"""Recommend function: recommendations with reasons, similar items, items bought together (one item's
or a cart's), personalized ranking, popular."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Annotated

from aws_lambda_powertools.event_handler.openapi.params import Query
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field

from shared.api import create_app, resolve
from shared.catalog import Item
from shared.config import get_settings
from shared.events import Identifier
from shared.http_params import PathId
from shared.observability import logger, metrics, tracer
from shared.serving.active_model import ActiveModel, CachedPopular
from shared.serving.model import ServingModel
from shared.serving.answers import (BasketRecommendations, BoughtTogether, PopularItems, Ranking, Recommendations,
                                    Similar)
from shared.serving.complements import BoughtTogetherRules, ComplementData, ComplementSources, ModelComplements
from shared.serving.catalog_snapshot import CatalogSnapshot
from shared.serving.experiments import AnswerIds, RunningExperiments, VersionModels, serves_popular, variant_version
from shared.serving.recommender import Mix, Recommender, Sources
from shared.storage.catalog import (CatalogStore, catalog_details, catalog_snapshot, newest_ids_in_category,
                                    newest_in_category)
from shared.storage.history import CustomerReads
from shared.storage.models import ModelStore
from shared.storage.experiments import ExperimentStore
from shared.storage.secrets import configured_recommendation_key
from shared.storage.secrets import configured_visitor_tokens as visitor_tokens

settings = get_settings()
catalog = CatalogStore(settings.items_table)
model_store = ModelStore.from_settings(settings.model_bucket, settings.local_model_dir)
active_model = ActiveModel(model_store, settings.model_refresh_seconds, ServingModel)
cached_popular = CachedPopular(model_store, settings.model_refresh_seconds)
app = create_app()

Limit = Annotated[int, Query(ge=1, le=100, description="How many items, 1 to 100")]
InCategory = Annotated[str | None, Query(min_length=1, max_length=256)]
Excluded = Annotated[str | None, Query(max_length=10_000, description="Comma-separated item ids to leave out "
                                                                     "(each as written and without edge spaces)")]
MAX_RANKED_ITEMS = 500
MAX_CART_ITEMS = 100


class CatalogReader:
    def details(self, item_ids: Sequence[str]) -> dict[str, Item]:
        return catalog_details(settings.items_table, item_ids)

    def newest(self, category: str, limit: int) -> list[Item]:
        return newest_in_category(settings.items_table, category, limit)


# Recommendations, similar and popular items read the catalog from a snapshot in memory, loaded
# in the background, with the items of each answer read again by key (catalog_snapshot.py).
catalog_view = CatalogSnapshot(
    load_all=lambda: catalog_snapshot(settings.items_table),
    read=lambda item_ids: catalog_details(settings.items_table, item_ids),
    newest_ids=lambda category, limit: newest_ids_in_category(settings.items_table, category, limit),
)

# A customer's profile, recent activity and bought set: one BatchGetItem a request.
customer_reads = CustomerReads(settings.events_table, settings.users_table)

recommender = Recommender(Sources(
    model=active_model.get, catalog=catalog_view, history=customer_reads.history, profile=customer_reads.profile,
    cached_popular=cached_popular.get, purchased=customer_reads.purchased,
), Mix(settings.seen_items_share, settings.new_items_share))

model_complements = ModelComplements()

# Experiments (docs/experiments.md): which run, the versions their variants serve, and the signed
# recommendation id of every answer that lists items.
RECOMMENDATIONS = "recommendations"
running_experiments = RunningExperiments(ExperimentStore(model_store.blobs), settings.model_refresh_seconds)
version_models = VersionModels(model_store, ServingModel)
answer_ids = AnswerIds(configured_recommendation_key)


def active_complements() -> ComplementData | None:
    """The complements of the model that serves (none until its artifact carries them)."""
    return model_complements.get(recommender.model())


bought_together_rules = BoughtTogetherRules(ComplementSources(
    complements=active_complements, catalog=CatalogReader(),
    popular=lambda limit, category: recommender.popular(limit, category, None),
    # The profile with a linked customer's objections (a visitor id's cart alone decides then), and
    # the bought set from the same round trip.
    profile=customer_reads.profile, purchased=customer_reads.purchased,
))


class RankRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[Identifier] = Field(min_length=1, max_length=MAX_RANKED_ITEMS)


class CartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    item_ids: list[Identifier] = Field(min_length=1, max_length=MAX_CART_ITEMS,
                                       description="The items in the cart (1 to 100)")


class BasketRequest(CartRequest):
    user_id: Identifier | None = Field(
        default=None, description="The customer whose cart it is: what they bought is left out")


def left_out(exclude: str | None) -> list[str]:
    """The ids of `exclude`: each as written and without its edge spaces, so that "a, b" leaves out
    "b" (what a client writing it means) and an id that does start with a space is still left out."""
    parts = (exclude or "").split(",")
    return list(dict.fromkeys(i for part in parts for i in (part, part.strip()) if i.strip()))


def count(answer_strategy: str, personalized: bool, started: float) -> None:
    metrics.add_metric(f"Strategy_{answer_strategy.replace(':', '_')}", MetricUnit.Count, 1)
    if not personalized:
        metrics.add_metric("ColdStartFallback", MetricUnit.Count, 1)
    metrics.add_metric("ServeLatency", MetricUnit.Milliseconds, (time.perf_counter() - started) * 1000)


@app.get(
    "/users/<user_id>/recommendations", tags=["recommendations"],
    summary="Recommendations for a customer, each with a reason",
    description="An unknown customer, or one without history or consent, gets popular items "
                "(personalized: false; strategy says why).",
)
def get_recommendations(
    user_id: PathId, limit: Limit = 10, category: InCategory = None, exclude: Excluded = None,
    include_purchased: Annotated[bool, Query()] = False,
) -> Recommendations:
    started = time.perf_counter()
    assignment = running_experiments.assignment(RECOMMENDATIONS, user_id)
    version = variant_version(assignment)
    answer = recommender.recommend(user_id, limit, category, left_out(exclude),
                                   include_purchased, model=version_models.get(version) if version else None,
                                   popular_only=serves_popular(assignment))
    count(answer.strategy, answer.personalized, started)
    metrics.add_metadata(key="model_version", value=answer.model_version)
    return answer_ids.tag(answer, RECOMMENDATIONS, assignment)


@app.get(
    "/visitors/<visitor_id>/recommendations", tags=["recommendations"],
    summary="Recommendations for a logged-out visitor (their token), from this session's own events",
    description="The same answer as GET /users/{user_id}/recommendations for the visitor's anonymous id: events the "
                "visitor sent a moment ago count; with none yet, popular items.",
)
def get_visitor_recommendations(
    visitor_id: PathId, limit: Limit = 10, category: InCategory = None, exclude: Excluded = None,
) -> Recommendations:
    return get_recommendations(visitor_id, limit, category, exclude)


@app.post(
    "/users/<user_id>/rank", tags=["recommendations"], summary="Order items by a customer's predicted interest",
    description="The same items, best first; items the model does not know come last with known: false.",
)
def rank(user_id: PathId, request: RankRequest) -> Ranking:
    started = time.perf_counter()
    answer = recommender.rank(user_id, request.item_ids)
    count("rank", answer.personalized, started)
    return answer


@app.get("/items/<item_id>/similar", tags=["recommendations"],
         summary="Substitutes: items close to this one in the model (what to show instead of it)")
def similar(item_id: PathId, limit: Limit = 10) -> Similar:
    started = time.perf_counter()
    answer = recommender.similar(catalog.get(item_id), limit)
    count(answer.strategy, True, started)
    return answer_ids.tag(answer, "similar", shared=True)


@app.get(
    "/items/<item_id>/bought-together", tags=["recommendations"],
    summary="Items bought in the same order as this one (complements), each with how many customers did",
    description="Ranked by a log-likelihood ratio over orders, at least 3 customers each; variants of the "
                "same product come last. Without a model or complements: popular items in its category "
                "(strategy says so).",
)
def bought_together(item_id: PathId, limit: Limit = 10) -> BoughtTogether:
    started = time.perf_counter()
    answer = bought_together_rules.bought_together(catalog.get(item_id), limit)
    count(answer.strategy, True, started)
    return answer_ids.tag(answer, "bought_together", shared=True)


@app.post(
    "/recommendations/basket", tags=["recommendations"],
    summary="Items that go with a whole cart (complements of its items), for the shop's systems",
    description="Leaves out the cart's items and, when user_id is given (and the customer has not "
                "objected to personalization), what that customer bought. A signed-in customer calls "
                "POST /users/{user_id}/basket-recommendations.",
)
def basket(request: BasketRequest, limit: Limit = 10) -> BasketRecommendations:
    started = time.perf_counter()
    answer = bought_together_rules.basket(request.item_ids, limit, request.user_id)
    count(answer.strategy, True, started)
    return answer_ids.tag(answer, "basket")


@app.post(
    "/users/<user_id>/basket-recommendations", tags=["recommendations"],
    summary="Items that go with a customer's cart, leaving out what they bought",
    description="The same answer as POST /recommendations/basket for this customer; a signed-in customer "
                "may ask for their own cart only.",
)
def customer_basket(user_id: PathId, request: CartRequest, limit: Limit = 10) -> BasketRecommendations:
    started = time.perf_counter()
    answer = bought_together_rules.basket(request.item_ids, limit, user_id)
    count(answer.strategy, True, started)
    return answer_ids.tag(answer, "basket")


@app.get("/popular", tags=["recommendations"], summary="Popular items, optionally in a category or country")
def popular(
    limit: Limit = 10,
    category: InCategory = None,
    country: Annotated[str | None, Query(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")] = None,
) -> PopularItems:
    started = time.perf_counter()
    answer = recommender.popular(limit, category, country)
    count(answer.strategy, False, started)
    return answer_ids.tag(answer, "popular", shared=True)


@logger.inject_lambda_context(correlation_id_path="requestContext.requestId")
@tracer.capture_lambda_handler
@metrics.log_metrics(capture_cold_start_metric=True)
def lambda_handler(event: dict, context: LambdaContext) -> dict:
    return resolve(app, event, context, settings.max_body_bytes, visitor_tokens)
