"""A campaign job: read the shop once, pick the audience, write one line per reachable customer.

What the Campaigns function runs in the background after POST /campaigns answers 202 (the local
stack runs it in a thread). Steps, each visible in GET /campaigns/{id}:
1. read every customer (profiles, newest events), the catalog and the active model, once: the
   nightly segments' parallel Scans, never a read per customer;
2. the segment, computed now with the request path's own function (`segment_customer`), so a
   custom segment the marketer has just defined has its members at once;
3. reachable: consent for the channel and under its contact cap (`contact_block`), each customer
   left out counted by reason;
4. the lines: each customer's top items with reasons (shared/campaigns/batch.py) or, for an
   item, the customers most likely to want it (shared/campaigns/audience.py), written as JSON
   Lines and CSV, the progress saved after every block.
A fault marks the campaign CREATE FAILED with its reason; it is never retried behind the
marketer's back (the template sets no retry for the asynchronous invocation). A job that could
not save even that (storage down), or that the function's time limit stopped, is shown as failed
once it can no longer be running (Campaign.as_of).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from shared.campaigns import output
from shared.campaigns.audience import item_audience
from shared.campaigns.batch import BLOCK, BatchRecommender, Shop, SnapshotCatalog
from shared.campaigns.spec import Campaign, CampaignRequest, Status
from shared.config import Settings
from shared.contact import ContactCaps, contact_block
from shared.errors import DomainError, NotFound
from shared.observability import logger
from shared.segments.tags import segment_customer
from shared.serving.model import ServingModel
from shared.serving.recommender import Mix
from shared.storage.campaigns import CampaignStore
from shared.storage.catalog import catalog_snapshot
from shared.storage.customers import Customers, load_customers
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore
from shared.users import may_profile

DEFAULT_AUDIENCE = 10_000


@dataclass(frozen=True)
class ShopData:
    customers: Customers
    catalog: dict[str, Any]
    model: ServingModel | None
    statistics: dict[str, Any]


def read_shop(settings: Settings, models: ModelStore) -> ShopData:
    customers = load_customers(settings.events_table, settings.users_table, settings.items_table)
    pointer = models.active()
    model = ServingModel(pointer.version, models.load(models.manifest(pointer.version))) if pointer else None
    # Read only: a version without statistics.json gets it from the nightly run; until then, no RFM or value tags.
    statistics = (models.statistics(pointer.version) or {}) if pointer else {}
    return ShopData(customers, catalog_snapshot(settings.items_table), model, statistics)


def start_campaign(store: CampaignStore, request: CampaignRequest, now: datetime) -> Campaign:
    campaign = Campaign.new(request, now)
    store.save(campaign)
    return campaign


def run_campaign(campaign_id: str, store: CampaignStore, settings: Settings, read: Callable[[], ShopData],
                 definitions: Callable[[], list] | None = None, now: datetime | None = None) -> Campaign:
    now = now or datetime.now(timezone.utc)
    try:
        campaign = store.get(campaign_id)
        if campaign.status != Status.PENDING:  # failed already: its POST answered 503, and may be retried
            logger.warning("campaign job not run", extra={"campaign_id": campaign_id, "status": campaign.status})
            return campaign
        campaign = _saved(store, campaign, status=Status.IN_PROGRESS)
        data = read()
        custom = (definitions or SegmentStore(settings.segments_table).definitions)()
        return _run(campaign, store, data, settings.contact_caps, custom,
                    Mix(settings.seen_items_share, settings.new_items_share), now)
    except DomainError as error:
        logger.warning("campaign failed", extra={"campaign_id": campaign_id, "reason": error.message})
        return fail_campaign(store, campaign_id, error.message)
    except Exception:
        logger.exception("campaign failed", extra={"campaign_id": campaign_id})
        return fail_campaign(store, campaign_id, "an internal error stopped the job; see the Campaigns function's logs")


def fail_campaign(store: CampaignStore, campaign_id: str, reason: str) -> Campaign:
    return _saved(store, store.get(campaign_id), status=Status.FAILED, failure_reason=reason)


def _run(campaign: Campaign, store: CampaignStore, data: ShopData, caps: ContactCaps, custom: list,
         mix: Mix, now: datetime) -> Campaign:
    request = campaign.request
    customers = data.customers
    profiles = customers.users
    # Customers with a profile: a contact channel needs a recorded consent, which only a profile holds.
    # A visitor id linked to a customer is that customer's device, not a second recipient.
    considered = sorted(u for u, user in profiles.items() if user.linked_to is None)
    members = [u for u in considered if _in_segment(request.segment_id, u, customers, data.statistics, custom, now)] \
        if request.segment_id else considered
    left_out: Counter[str] = Counter()
    reachable = []
    for user_id in members:
        why = contact_block(profiles.get(user_id), request.channel, caps, now)
        if why is None:
            reachable.append(user_id)
        else:
            left_out[why.split(":")[0]] += 1  # "cap reached: 2 emails in the last 7 days" counts as "cap reached"
    counts = campaign.counts.model_copy(update={"considered": len(considered), "in_segment": len(members),
                                                "reachable": len(reachable), "left_out": dict(left_out)})
    model_version = data.model.version if data.model else None
    campaign = _saved(store, campaign, counts=counts, model_version=model_version)
    if request.dry_run:
        return _saved(store, campaign, status=Status.ACTIVE)

    shop = Shop(profiles, customers.histories, SnapshotCatalog(data.catalog))
    batch = BatchRecommender(data.model, shop, mix)
    if request.item_id is not None:
        return _write_audience(campaign, store, batch, reachable, now)
    return _write_recommendations(campaign, store, batch, reachable, now)


def _write_recommendations(campaign: Campaign, store: CampaignStore, batch: BatchRecommender,
                           reachable: list[str], now: datetime) -> Campaign:
    request = campaign.request
    chosen = reachable[:request.max_customers] if request.max_customers else reachable
    campaign = _saved(store, campaign, progress=campaign.progress.model_copy(update={"customers_total": len(chosen)}))
    written = 0
    with store.output(campaign.campaign_id, "recommendations.jsonl") as (jsonl, jsonl_at), \
            store.output(campaign.campaign_id, "recommendations.csv") as (table, table_at):
        table.write(output.recommendation_header(request.num_results))
        for line in batch.recommend(chosen, request.num_results, now):
            jsonl.write(output.recommendation_line(line, request.channel))
            table.write(output.recommendation_row(line, request.channel, request.num_results))
            written += 1
            if written % BLOCK == 0:
                campaign = _saved(store, campaign, progress=campaign.progress.model_copy(
                    update={"customers_done": written}))
    return _finished(store, campaign, written, {"jsonl": jsonl_at, "csv": table_at})


def _write_audience(campaign: Campaign, store: CampaignStore, batch: BatchRecommender, reachable: list[str],
                    now: datetime) -> Campaign:
    request = campaign.request
    item = batch.shop.catalog.items.get(request.item_id or "")
    if item is None:
        raise NotFound(f"item {request.item_id!r} is not in the catalog", field="item_id")
    campaign = _saved(store, campaign, progress=campaign.progress.model_copy(update={"customers_total": len(reachable)}))
    members = item_audience(batch, item, reachable, request.max_customers or DEFAULT_AUDIENCE, now)
    with store.output(campaign.campaign_id, "audience.jsonl") as (jsonl, jsonl_at), \
            store.output(campaign.campaign_id, "audience.csv") as (table, table_at):
        table.write(output.audience_header())
        for member in members:
            jsonl.write(output.audience_line(member, item.item_id, request.channel))
            table.write(output.audience_row(member, item.item_id, request.channel))
    campaign = campaign.model_copy(update={"progress": campaign.progress.model_copy(
        update={"customers_done": len(reachable)})})
    return _finished(store, campaign, len(members), {"jsonl": jsonl_at, "csv": table_at})


def _finished(store: CampaignStore, campaign: Campaign, written: int, where: dict[str, str]) -> Campaign:
    progress = campaign.progress.model_copy(update={"customers_done": campaign.progress.customers_total})
    counts = campaign.counts.model_copy(update={"written": written})
    return _saved(store, campaign, status=Status.ACTIVE, progress=progress, counts=counts, output=where)


def _in_segment(segment_id: str | None, user_id: str, customers: Customers, statistics: dict[str, Any],
                custom: list, now: datetime) -> bool:
    user = customers.users.get(user_id)
    history = customers.histories.get(user_id, []) if may_profile(user) else []
    _, _, tags = segment_customer(user, history, customers.categories, statistics, now, custom)
    return any(tag.segment_id == segment_id for tag in tags)


def _saved(store: CampaignStore, campaign: Campaign, **changes: Any) -> Campaign:
    campaign = campaign.model_copy(update={**changes, "updated_at": datetime.now(timezone.utc)})
    store.save(campaign)
    return campaign
