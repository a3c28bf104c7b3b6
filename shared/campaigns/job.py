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
   Lines and CSV, the progress saved after every block. Each block's customers are read again
   just before it is written (`_Recheck`): one erased, who withdrew the channel's consent,
   reached the cap, or objected since the shop was read gets no line, and is counted left out.
A fault marks the campaign CREATE FAILED with its reason; it is never retried behind the
marketer's back (the template sets no retry for the asynchronous invocation). A job that could
not save even that (storage down), or that the function's time limit stopped, is shown as failed
once it can no longer be running (Campaign.as_of).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

from shared.campaigns import output
from shared.campaigns.audience import item_audience
from shared.campaigns.batch import BLOCK, BatchRecommender, Shop, SnapshotCatalog
from shared.campaigns.spec import Campaign, CampaignRequest, Status
from shared.config import Settings
from shared.contact import ContactCaps, contact_block
from shared.errors import DomainError, NotFound
from shared.observability import logger
from shared.segments.families import needs_consent
from shared.segments.tags import segment_customer
from shared.serving.model import ServingModel
from shared.serving.recommender import Mix
from shared.storage.campaigns import CampaignStore
from shared.storage.catalog import catalog_snapshot
from shared.storage.customers import Customers, load_customers
from shared.storage.models import ModelStore
from shared.storage.segments import SegmentStore
from shared.storage.users import current_users
from shared.users import User, may_personalize, may_profile

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
                 definitions: Callable[[], list] | None = None, now: datetime | None = None,
                 current: Callable[[list[str]], dict[str, User]] | None = None) -> Campaign:
    """`current`: the customers' consent, erasure and contact ledger as stored now (by default
    the users table's), read again before each block of lines is written."""
    now = now or datetime.now(timezone.utc)
    try:
        campaign = store.get(campaign_id)
        if campaign.status != Status.PENDING:  # failed already: its POST answered 503, and may be retried
            logger.warning("campaign job not run", extra={"campaign_id": campaign_id, "status": campaign.status})
            return campaign
        campaign = _saved(store, campaign, status=Status.IN_PROGRESS)
        data = read()
        custom = (definitions or SegmentStore(settings.segments_table).definitions)()
        current = current or partial(current_users, settings.users_table)
        return _run(campaign, store, data, settings.contact_caps, custom,
                    Mix(settings.seen_items_share, settings.new_items_share), now, current)
    except DomainError as error:
        logger.warning("campaign failed", extra={"campaign_id": campaign_id, "reason": error.message})
        return fail_campaign(store, campaign_id, error.message)
    except Exception:
        logger.exception("campaign failed", extra={"campaign_id": campaign_id})
        return fail_campaign(store, campaign_id, "an internal error stopped the job; see the Campaigns function's logs")


def fail_campaign(store: CampaignStore, campaign_id: str, reason: str) -> Campaign:
    return _saved(store, store.get(campaign_id), status=Status.FAILED, failure_reason=reason)


def _run(campaign: Campaign, store: CampaignStore, data: ShopData, caps: ContactCaps, custom: list,
         mix: Mix, now: datetime, current: Callable[[list[str]], dict[str, User]]) -> Campaign:
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
        return _write_audience(campaign, store, batch, reachable, now, current, caps)
    return _write_recommendations(campaign, store, batch, reachable, now, current, caps)


def _write_recommendations(campaign: Campaign, store: CampaignStore, batch: BatchRecommender, reachable: list[str],
                           now: datetime, current: Callable[[list[str]], dict[str, User]], caps: ContactCaps
                           ) -> Campaign:
    request = campaign.request
    chosen = reachable[:request.max_customers] if request.max_customers else reachable
    campaign = _saved(store, campaign, progress=campaign.progress.model_copy(update={"customers_total": len(chosen)}))
    recheck = _Recheck(current, request, caps, now, chosen, batch.shop.profiles)
    written = 0
    with store.output(campaign.campaign_id, "recommendations.jsonl") as (jsonl, jsonl_at), \
            store.output(campaign.campaign_id, "recommendations.csv") as (table, table_at):
        table.write(output.recommendation_header(request.num_results))
        for line in batch.recommend(chosen, request.num_results, now):
            if not recheck.may_write(line.user_id):
                continue
            jsonl.write(output.recommendation_line(line, request.channel))
            table.write(output.recommendation_row(line, request.channel, request.num_results))
            written += 1
            if written % BLOCK == 0:
                campaign = _saved(store, campaign, progress=campaign.progress.model_copy(
                    update={"customers_done": written}))
    return _finished(store, recheck.counted(campaign), written, {"jsonl": jsonl_at, "csv": table_at})


def _write_audience(campaign: Campaign, store: CampaignStore, batch: BatchRecommender, reachable: list[str],
                    now: datetime, current: Callable[[list[str]], dict[str, User]], caps: ContactCaps) -> Campaign:
    request = campaign.request
    item = batch.shop.catalog.items.get(request.item_id or "")
    if item is None:
        raise NotFound(f"item {request.item_id!r} is not in the catalog", field="item_id")
    campaign = _saved(store, campaign, progress=campaign.progress.model_copy(update={"customers_total": len(reachable)}))
    ranked = item_audience(batch, item, reachable, request.max_customers or DEFAULT_AUDIENCE, now)
    recheck = _Recheck(current, request, caps, now, [member.user_id for member in ranked], batch.shop.profiles)
    members = [member for member in ranked if recheck.may_write(member.user_id)]
    campaign = recheck.counted(campaign)
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


class _Recheck:
    """Whether each chosen customer may still get the campaign's line, from their row read again
    (strongly consistent) just before the block of `BLOCK` customers they are in is written: the
    job read the shop once, and an erasure, a withdrawn consent, a send that reached the cap, or
    an objection (to profiling, for a segment built from behaviour; to personalization, by one
    whose line the read let be chosen from their history) can come in the minutes it runs. Those
    it stops are counted left out, by reason, and no longer reachable."""

    def __init__(self, current: Callable[[list[str]], dict[str, User]], request: CampaignRequest, caps: ContactCaps,
                 now: datetime, chosen: list[str], read: Mapping[str, User]) -> None:
        self.current, self.request, self.caps, self.now, self.read = current, request, caps, now, read
        self.chosen, self.place = chosen, {user_id: k for k, user_id in enumerate(chosen)}
        self.behavioural = request.segment_id is not None and needs_consent(request.segment_id)
        self.allowed: dict[str, bool] = {}
        self.left_out: Counter[str] = Counter()

    def may_write(self, user_id: str) -> bool:
        if user_id not in self.allowed:
            start = self.place[user_id]
            self._check(self.chosen[start:start + BLOCK])
        return self.allowed[user_id]

    def _check(self, block: list[str]) -> None:
        stored = self.current(block)
        for user_id in block:
            user = stored.get(user_id)
            why = contact_block(user, self.request.channel, self.caps, self.now)
            if why is None and may_personalize(self.read.get(user_id)) and not may_personalize(user):
                why = "objected to personalization"
            if why is None and self.behavioural and not may_profile(user):
                why = "objected to profiling"
            self.allowed[user_id] = why is None
            if why is not None:
                self.left_out[why.split(":")[0]] += 1

    def counted(self, campaign: Campaign) -> Campaign:
        """The campaign's counts with those stopped here left out."""
        if not self.left_out:
            return campaign
        counts = campaign.counts
        return campaign.model_copy(update={"counts": counts.model_copy(update={
            "reachable": counts.reachable - sum(self.left_out.values()),
            "left_out": dict(Counter(counts.left_out) + self.left_out)})})


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
