"""The users table, and the only code that reads or writes it: profile, consent, the purchase
summary kept at ingest (as actions of ingest's own transactions), and the suppression record
that erasure leaves."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from botocore.exceptions import ClientError
from pydantic import BaseModel, ValidationError

from shared.errors import Conflict, DomainError, NotFound, StorageUnavailable
from shared.events import UNKNOWN_ERASURE, Event, EventType, format_timestamp
from shared.observability import logger
from shared.purchases import MAX_ITEM_KEYS, MAX_ORDER_KEYS, PurchasedItems, item_key, order_key
from shared.recent import UNREADABLE, RecentActivity, decode
from shared.storage import dynamo
from shared.storage.scan import parallel_scan, scan_by_key
from shared.consent import HISTORY_LIMIT, Consent, ConsentHistory, ConsentUpdate, Recorder
from shared.contact import ContactLedger
from shared.users import PurchaseSummary, User, UserProfileIn, may_profile, with_linked_objections
from shared.versions import MAX_VERSION, next_version

PartT = TypeVar("PartT", bound=BaseModel)
# An erasure's erasure_status on its suppression record.
COMPLETE, IN_PROGRESS = "complete", "in_progress"
# A condition: no erasure of the customer is under way (a write it would not undo is refused).
NOT_BEING_ERASED = "(attribute_not_exists(erasure_status) OR erasure_status <> :erasing)"
NOT_BEING_ERASED_VALUES = {":erasing": IN_PROGRESS}


class Suppressed(NamedTuple):
    """What a suppression record keeps: the withdrawn purposes, and the linked ids it names."""

    objections_kept: list[str]
    linked: list[str]


class UserStore:
    def __init__(self, users_table: str) -> None:
        self.users_table = users_table

    def put_profile(self, user_id: str, profile: UserProfileIn, recorder: Recorder) -> User:
        """Replace the profile fields; the summary (written at ingest) is never touched here. Consent,
        when sent, is recorded as set_consent records it (the purposes sent, with history).

        Every write is conditional on the customer's erasure as read first: a profile sent while
        the customer is being erased is a 409, and so is one whose erasure completed while the
        request ran (its data is not stored after the erasure that removed it; sent again, it is
        a new profile)."""
        erasure = self.row(user_id) or {}
        if erasure.get("erasure_status") == IN_PROGRESS:
            raise self._erasing(user_id, "update the profile")
        fields = {
            "country": profile.country,
            "region": profile.region,
            "city": profile.city,
            "attributes": profile.attributes,
            "updated_at": format_timestamp(datetime.now(timezone.utc)),
        }
        present = {name: value for name, value in fields.items() if value is not None}
        absent = [name for name, value in fields.items() if value is None]
        expression = "SET " + ", ".join(f"#{name} = :{name}" for name in present)
        if absent:
            expression += " REMOVE " + ", ".join(f"#{name}" for name in absent)
        condition, values = _erasure_as_read(erasure)
        try:
            with dynamo.aws_faults("write user"):
                response = dynamo.client().update_item(
                    TableName=self.users_table,
                    Key=dynamo.serialize({"user_id": user_id}),
                    UpdateExpression=expression, ConditionExpression=condition,
                    ExpressionAttributeNames={f"#{name}": name for name in (*present, *absent)},
                    ExpressionAttributeValues=dynamo.serialize({**{f":{k}": v for k, v in present.items()}, **values}),
                    ReturnValues="ALL_NEW",
                )
        except ClientError as error:
            if dynamo.error_code(error) != "ConditionalCheckFailedException":
                raise
            raise self._erased_meanwhile(user_id) from None
        row = dynamo.deserialize(response["Attributes"])
        if profile.consent is not None:
            row = self.set_consent(user_id, profile.consent, recorder, erasure=erasure, written=row)
        return user_from_row(row)

    def get(self, user_id: str) -> User:
        user = self.find(user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} is unknown", field="user_id")
        return user

    def find(self, user_id: str) -> User | None:
        row = self.row(user_id)
        return user_from_row(row) if row is not None else None

    def row(self, user_id: str) -> dict[str, Any] | None:
        """The stored row as it is (an export shows everything held). Strongly consistent: the
        consent in it decides what the caller may be shown."""
        return dynamo.get_item(self.users_table, {"user_id": user_id}, "read user", consistent=True)

    def purchase_keys(self, user_id: str) -> PurchaseKeys | None:
        """The customer's bought set as stored (None: none), strongly consistent."""
        row = _bought_row(self.users_table, user_id, ("user_id", *PURCHASES_FIELDS))
        return None if row is None else PurchaseKeys.from_row(row)

    def recent_activity(self, user_id: str) -> RecentActivity | None:
        """The customer's recent-activity item (None: none), strongly consistent: one GetItem."""
        with dynamo.aws_faults("read recent activity"):
            response = dynamo.client().get_item(TableName=self.users_table, Key=dynamo.serialize(recent_key(user_id)),
                                                ConsistentRead=True)
        return _recent_of(response["Item"], user_id) if "Item" in response else None

    def consent_history(self, user_id: str) -> ConsentHistory:
        row = dynamo.get_item(self.users_table, consent_key(user_id), "read consent history", consistent=True)
        return _history(row) if row and row.get("consent_of") == user_id else ConsentHistory()

    def set_consent(self, user_id: str, update: ConsentUpdate, recorder: Recorder,
                    erasure: dict[str, Any] | None = None, written: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record the purposes sent: the row's current state and an entry each in the history, in
        one transaction, conditional on both as read (a change or erasure in between: read again).
        `erasure`: the row as a request read it first (put_profile): the customer's erasure must
        still be as it was then, else a 409 (nothing of a request that began before an erasure is
        recorded after it). `written`: the row as the request's own write just returned it, taken
        for the first read (the transaction's conditions catch a change since)."""
        # A grant while the customer is being erased would outlive the erasure (it keeps objections
        # only); a withdrawal is recorded whatever happens: the record keeps it as proof.
        grants = any(purpose.granted for purpose in update.updates().values())
        for delay in dynamo.backoff_delays(6):
            row, written = (written if written is not None else self.row(user_id) or {}), None
            if erasure is not None and _erasure_state(row) != _erasure_state(erasure):
                raise self._erased_meanwhile(user_id)
            if grants and row.get("erasure_status") == IN_PROGRESS:
                raise self._erasing(user_id, "grant consent")
            history_row = dynamo.get_item(self.users_table, consent_key(user_id), "read consent history",
                                          consistent=True)
            at = format_timestamp(datetime.now(timezone.utc))
            changes = update.changes(at, recorder)
            after = user_from_row({**row, "user_id": user_id}).consent.after(changes)
            history = _history(history_row) if history_row else ConsentHistory()
            entries = [*history.changes, *changes]
            kept = entries[-HISTORY_LIMIT:]
            stored_version = (history_row or {}).get("consent_version")
            version = int(stored_version) if _is_count(stored_version) else 0
            condition, values = _consent_is(row.get("consent"))
            if erasure is not None:  # and still so when the transaction runs
                unchanged, as_read = _erasure_as_read(erasure)
                condition, values = f"{condition} AND {unchanged}", {**values, **as_read}
            if grants:
                condition, values = f"{condition} AND {NOT_BEING_ERASED}", {**values, **NOT_BEING_ERASED_VALUES}
            update_row: dict[str, Any] = {
                "TableName": self.users_table, "Key": dynamo.serialize({"user_id": user_id}),
                "UpdateExpression": "SET consent = :consent, consent_updated_at = :at",
                "ConditionExpression": condition,
                "ExpressionAttributeValues": dynamo.serialize({**values, ":consent": after.recorded(), ":at": at})}
            record = {**consent_key(user_id), "consent_of": user_id, "consent_version": version + 1,
                      "dropped": history.dropped + len(entries) - len(kept),
                      "changes": [_compact(change.model_dump(mode="json")) for change in kept]}
            put_history: dict[str, Any] = {"TableName": self.users_table, "Item": dynamo.serialize(record)}
            if history_row is None:
                put_history["ConditionExpression"] = "attribute_not_exists(user_id)"
            elif isinstance(stored_version, (int, Decimal)) and not isinstance(stored_version, bool):
                # a number (a count, or by hand one that is not): still the one read
                put_history["ConditionExpression"] = "consent_version = :version"
                put_history["ExpressionAttributeValues"] = dynamo.serialize({":version": stored_version})
            else:  # none, or not a number (by hand): still so, as read; any write since left a count
                put_history["ConditionExpression"] = ("attribute_exists(user_id) AND (attribute_not_exists(consent_version)"
                                                      " OR NOT attribute_type(consent_version, :number))")
                put_history["ExpressionAttributeValues"] = dynamo.serialize({":number": "N"})
            try:
                with dynamo.aws_faults("record consent"):
                    dynamo.client().transact_write_items(TransactItems=[{"Update": update_row}, {"Put": put_history}])
                return {**row, "user_id": user_id, "consent": after.recorded(), "consent_updated_at": at}
            except ClientError as error:
                if dynamo.error_code(error) != "TransactionCanceledException":
                    raise
            time.sleep(delay)
        raise StorageUnavailable("record consent: the customer's consent kept changing; try again")

    def suppress(self, user_id: str, erased_at: str, status: str, names_links: bool = False,
                 keeps_link: bool = False) -> Suppressed:
        """Replace the row by the suppression record of an erasure: the purposes whose withdrawal it
        keeps (the objections, each with when, where, which text and who: the proof of it), and the
        visitor ids it names. `names_links`: a customer's record names their linked visitor ids as
        the row holds them, until those are erased too (forget_links), so that a retry or the sweep
        finds them. `keeps_link`: a visitor id erased on its own stays its customer's (who still
        lists it): linked to another, its next events would be in the first customer's export and
        history.

        The consent history goes with the rest: the record's objections are the proof kept, and
        grants are consent to processing that the erasure ends. The put is conditional on the
        consent and the linked ids read just before, so a consent change or a link recorded in
        between is never lost: the read and the put are tried again."""
        for delay in dynamo.backoff_delays(5):
            row = self.row(user_id) or {}
            consent = row.get("consent")
            kept = user_from_row({**row, "user_id": user_id}).consent.withdrawn() if row else {}
            linked = linked_visitors(row) if names_links else []
            record: dict[str, Any] = {"user_id": user_id, "erased_at": erased_at, "erasure_status": status}
            if linked:
                record["linked_visitors"] = linked
            if keeps_link and row.get("linked_to") is not None:
                record.update(linked_to=row["linked_to"], linked_at=row.get("linked_at"))
            if kept:
                record.update(consent=kept, consent_updated_at=row.get("consent_updated_at"))
            condition, values = _consent_is(consent)
            if names_links:
                stored = row.get("linked_visitors")
                condition += (" AND attribute_not_exists(linked_visitors)" if stored is None
                              else " AND linked_visitors = :links_read")
                values = {**values, **({} if stored is None else {":links_read": stored})}
            request: dict[str, Any] = {"TableName": self.users_table, "Item": dynamo.serialize(record),
                                       "ConditionExpression": condition}
            if values:
                request["ExpressionAttributeValues"] = dynamo.serialize(values)
            # The purchase keys, the recent activity and the consent history go in the same
            # transaction: no ingest or consent change can slip in between. Their keys are the id and
            # a NUL, which no id holds (limits.ID_PATTERN): they are this customer's whoever wrote
            # them, and one without its owner's mark (by hand) goes too, for the erasure to be whole.
            actions = [{"Put": request}, *({"Delete": {"TableName": self.users_table, "Key": dynamo.serialize(key)}}
                                           for key in (purchases_key(user_id), consent_key(user_id),
                                                       recent_key(user_id)))]
            try:
                with dynamo.aws_faults("record the erasure"):
                    dynamo.client().transact_write_items(TransactItems=actions)
                return Suppressed(list(kept), linked)
            except ClientError as error:
                if dynamo.error_code(error) != "TransactionCanceledException":
                    raise
            time.sleep(delay)
        raise StorageUnavailable("erase: the customer's consent or links kept changing; try again")

    def count_client_events(self, user_id: str, count: int, now: float, limit: int, window_seconds: int) -> int:
        """Count `count` events sent with this id's own token in the current window; the seconds to
        wait when that would pass `limit` (0: allowed). Two conditional updates at most: one adds
        to this window's count, the other starts a new window."""
        window = int(now) // window_seconds * window_seconds
        key = dynamo.serialize({"user_id": user_id})
        try:
            with dynamo.aws_faults("count client events"):
                dynamo.client().update_item(
                    TableName=self.users_table, Key=key, UpdateExpression="ADD client_events :n",
                    ConditionExpression="client_window = :window AND client_events <= :room",
                    ExpressionAttributeValues=dynamo.serialize({":n": count, ":window": window, ":room": limit - count}))
            return 0
        except ClientError as error:
            if dynamo.error_code(error) != "ConditionalCheckFailedException":
                raise
        try:
            with dynamo.aws_faults("count client events"):
                dynamo.client().update_item(
                    TableName=self.users_table, Key=key,
                    UpdateExpression="SET client_window = :window, client_events = :n",
                    ConditionExpression="(attribute_not_exists(client_window) OR client_window <> :window) AND :n <= :limit",
                    ExpressionAttributeValues=dynamo.serialize({":n": count, ":window": window, ":limit": limit}))
            return 0
        except ClientError as error:
            if dynamo.error_code(error) != "ConditionalCheckFailedException":
                raise
        return max(1, window + window_seconds - int(now))

    def link_visitor(self, user_id: str, visitor_id: str, linked_at: str, limit: int) -> tuple[str, list[str]]:
        """Link a visitor's id to a customer; when it was first linked, and all the customer's
        linked ids, newest first (export and erasure cover every one of them).

        The visitor's row names its customer, and may name only one: an anonymous trail never
        joins two customers' histories (Conflict). Linking again changes nothing. Past `limit`
        ids a new one is refused (Conflict), before the visitor is touched: dropping an old one
        would hide it from erasure. Links are one level deep: a customer with linked ids of its
        own is no visitor, and a visitor no customer to link to (400), so that erasing one
        customer never reaches another's data."""
        customer = self.row(user_id) or {}
        if customer.get("linked_to") is not None:
            raise DomainError(f"{user_id!r} is a visitor id linked to a customer: link to that customer",
                              field="user_id")
        if customer.get("erasure_status") == IN_PROGRESS:
            raise self._erasing(user_id)
        before = linked_visitors(customer)
        if visitor_id not in before and len(before) >= limit:
            raise self._too_many(user_id, limit)
        with dynamo.aws_faults("link visitor"):
            try:
                response = dynamo.client().update_item(
                    TableName=self.users_table, Key=dynamo.serialize({"user_id": visitor_id}),
                    UpdateExpression="SET linked_to = :customer, linked_at = if_not_exists(linked_at, :at)",
                    ConditionExpression="(attribute_not_exists(linked_to) OR linked_to = :customer) "
                                        "AND attribute_not_exists(linked_visitors)",
                    ExpressionAttributeValues=dynamo.serialize({":customer": user_id, ":at": linked_at}),
                    ReturnValues="UPDATED_NEW")
            except ClientError as error:
                if dynamo.error_code(error) != "ConditionalCheckFailedException":
                    raise
                raise Conflict(f"visitor {visitor_id!r} is already linked to another customer, or is a customer "
                               "with linked ids of its own", field="visitor_token") from None
        first_linked = dynamo.deserialize(response["Attributes"]).get("linked_at", linked_at)
        try:
            return first_linked, self._listed(user_id, visitor_id, limit)
        except Conflict:  # the limit, reached meanwhile by another link: this one leaves no trace
            if first_linked == linked_at:
                self._unlink(visitor_id, user_id, linked_at)
            raise

    def _listed(self, user_id: str, visitor_id: str, limit: int) -> list[str]:
        """The customer's linked ids with `visitor_id` added first (if it is not there)."""
        for delay in dynamo.backoff_delays(5):
            row = self.row(user_id) or {}
            stored = row.get("linked_visitors")
            before = linked_visitors(row)
            if visitor_id in before:
                return before
            if row.get("erasure_status") == IN_PROGRESS:
                raise self._erasing(user_id)
            if len(before) >= limit:
                raise self._too_many(user_id, limit)
            after = [visitor_id, *before]
            # A stored value that is not a list (by hand) is replaced: read as none, never as the
            # characters of a text, which erasure would take for customers. An erasure that
            # started since the read fails the condition too: its record named the ids it read.
            condition, values = (
                ("attribute_not_exists(linked_visitors)", {":after": after}) if stored is None else
                ("(linked_visitors = :before OR NOT attribute_type(linked_visitors, :list))",
                 {":after": after, ":before": stored, ":list": "L"}))
            condition, values = f"{condition} AND {NOT_BEING_ERASED}", {**values, **NOT_BEING_ERASED_VALUES}
            try:
                with dynamo.aws_faults("link visitor"):
                    dynamo.client().update_item(
                        TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}),
                        UpdateExpression="SET linked_visitors = :after", ConditionExpression=condition,
                        ExpressionAttributeValues=dynamo.serialize(values))
                return after
            except ClientError as error:
                if dynamo.error_code(error) != "ConditionalCheckFailedException":
                    raise
            time.sleep(delay)
        raise StorageUnavailable("link visitor: the customer's links kept changing; try again")

    @staticmethod
    def _erasing(user_id: str, action: str = "link") -> Conflict:
        return Conflict(f"customer {user_id!r} is being erased: {action} once the erasure is complete (its "
                        "erasure_status)", field="user_id")

    @staticmethod
    def _erased_meanwhile(user_id: str) -> Conflict:
        return Conflict(f"customer {user_id!r} was erased while this request ran: nothing of it was kept after "
                        "the erasure; send it again to start a new profile", field="user_id")

    @staticmethod
    def _too_many(user_id: str, limit: int) -> Conflict:
        return Conflict(f"customer {user_id!r} has {limit} linked visitor ids, the most kept: erase the "
                        "customer, or link from the shop's systems after merging ids", field="visitor_token")

    def _unlink(self, visitor_id: str, user_id: str, linked_at: str) -> None:
        with dynamo.aws_faults("unlink visitor"):
            try:
                dynamo.client().update_item(
                    TableName=self.users_table, Key=dynamo.serialize({"user_id": visitor_id}),
                    UpdateExpression="REMOVE linked_to, linked_at",
                    ConditionExpression="linked_to = :customer AND linked_at = :at",
                    ExpressionAttributeValues=dynamo.serialize({":customer": user_id, ":at": linked_at}))
            except ClientError as error:
                if dynamo.error_code(error) != "ConditionalCheckFailedException":
                    raise

    def forget_links(self, user_id: str, linked: list[str]) -> None:
        """An erased customer's record stops naming their visitors, once those are erased too (a
        visitor linked since is kept)."""
        try:
            with dynamo.aws_faults("record the erasure"):
                dynamo.client().update_item(
                    TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}),
                    UpdateExpression="REMOVE linked_visitors", ConditionExpression="linked_visitors = :linked",
                    ExpressionAttributeValues=dynamo.serialize({":linked": linked}))
        except ClientError as error:
            if dynamo.error_code(error) != "ConditionalCheckFailedException":
                raise

    def set_erasure_status(self, user_id: str, status: str) -> None:
        with dynamo.aws_faults("record the erasure"):
            dynamo.client().update_item(
                TableName=self.users_table, Key=dynamo.serialize({"user_id": user_id}),
                UpdateExpression="SET erasure_status = :status",
                ExpressionAttributeValues=dynamo.serialize({":status": status}))

    def with_erasure_status(self, status: str) -> list[str]:
        """Users whose erasure has this status (a filtered Scan: for the sweep, never a request)."""
        return sorted(scan_by_key(self.users_table, "user_id", lambda row: row["user_id"],
                                  FilterExpression="erasure_status = :status", ProjectionExpression="user_id",
                                  ExpressionAttributeValues={":status": {"S": status}}))


# A customer's consent history lives in its own item beside the profile row (which every request
# reads, and must stay small): the user id and this suffix; ``consent_of`` names the owner.
CONSENT_SUFFIX = "\x00consent"


def consent_key(user_id: str) -> dict[str, str]:
    return {"user_id": user_id + CONSENT_SUFFIX}


def _compact(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if v is not None}


def user_from_row(row: dict, parts: dict[str, Any] | None = None, logged: bool = True) -> User:
    """A stored row as a User; `parts`, parts of the customer as model instances, which validation
    keeps as they are (User does not revalidate instances).

    A row that does not validate (written by hand, or by a version that checked less) never fails
    the read: each part of the customer that does not read is left out (logged, by name only,
    unless `logged` is False: a read of rows another read has logged already), and a consent that
    does not read counts as every purpose withdrawn (Consent.unreadable), so nothing is done with
    the customer's data that they may have objected to."""
    data = {**row, "summary": row, **(parts or {})}
    try:
        return User.model_validate(data)
    except ValidationError as error:
        unreadable = sorted({str(problem["loc"][0]) for problem in error.errors() if problem["loc"]})
    if logged:
        logger.warning("a customer's stored row does not read: those parts are left out",
                       extra={"parts": unreadable})
    defaults = {"consent": Consent.unreadable(), "summary": PurchaseSummary(),
                "contacts": ContactLedger.unreadable_ledger()}
    kept = {name: value for name, value in data.items() if name not in unreadable}
    kept.update({name: defaults[name] for name in unreadable if name in defaults})
    try:
        return User.model_validate(kept)
    except ValidationError:  # the key itself: nothing of the row reads
        return User.model_validate({"user_id": row["user_id"], "consent": Consent.unreadable()})


# A customer's parts a row may not store at all (no consent given, never contacted, never bought),
# the attributes that store each, and the part a row without them gets.
_UNSTORED_PARTS = (("consent", frozenset({"consent"}), Consent()), ("contacts", frozenset({"contacts"}), ContactLedger()),
                   ("summary", frozenset({*PurchaseSummary.model_fields, "purchase_count"}), PurchaseSummary()))


class _SharedFieldNames(set):
    """The names of the fields a stored row set (pydantic's fields set, which exclude_unset
    reads), shared by the nightly run's customers whose rows set the same ones: a set, as pydantic
    needs, that refuses to change, so that setting a field of one customer cannot change what the
    others' dumps leave out. The refusal is a guard, not a lock: pydantic writes the value before
    it adds the name, so the run must set no field (nothing does), and User must not turn on
    validate_assignment, whose C code adds the name past these methods."""

    def _refuse(self, *_: Any) -> None:
        raise TypeError("the nightly run's customers are read-only: their field names are shared")

    add = discard = remove = pop = clear = update = _refuse
    difference_update = intersection_update = symmetric_difference_update = _refuse
    __ior__ = __iand__ = __isub__ = __ixor__ = _refuse


def users_from_rows(rows: dict[str, dict[str, Any]]) -> dict[str, User]:
    """user_from_row of each row, for the nightly run, which holds every customer at once and
    only reads them (_NightlyUsers says what they share)."""
    read = _NightlyUsers()
    return with_linked_objections({user_id: read.user(row) for user_id, row in rows.items()})


class _NightlyUsers:
    """user_from_row for the nightly run's customers. Two things are shared rather than made per customer:
    - a part the row does not store is one instance (frozen models), not a dozen small pydantic
      models a customer (about 7 KB with all three). It is handed to validation as it is, not
      built and then replaced: at 500,000 customers that took the read 21 s, most of it making
      the parts thrown away;
    - the names of the fields the row set: one _SharedFieldNames for each distinct set of names,
      instead of a set of about 730 bytes a customer, half of what a customer without a stored
      part costs. Swapped as each customer is read, so the next customer's set reuses the memory."""

    def __init__(self, logged: bool = True) -> None:
        self.shared: dict[frozenset[str], _SharedFieldNames] = {}
        self.logged = logged

    def user(self, row: dict[str, Any]) -> User:
        user = user_from_row(row, {part: unstored for part, stored_as, unstored in _UNSTORED_PARTS
                                   if stored_as.isdisjoint(row)}, self.logged)
        names = frozenset(user.__pydantic_fields_set__)
        if names not in self.shared:
            self.shared[names] = _SharedFieldNames(names)
        object.__setattr__(user, "__pydantic_fields_set__", self.shared[names])
        return user


def all_user_rows(users_table: str, segments: int = 4) -> dict[str, dict[str, Any]]:
    """Every stored row, by user id (a parallel Scan: for the nightly run, never a request).
    Customers' companion items (purchase keys, recent activity, consent history) are not rows of customers."""
    return scan_by_key(users_table, "user_id", lambda row: row, segments,
                       FilterExpression=" AND ".join(f"attribute_not_exists({mark})" for mark in COMPANION_MARKS))


def is_user_row(item: dict[str, Any]) -> bool:
    """A stored item (DynamoDB JSON, as a Scan or an export gives it) that is a customer's row."""
    return not any(mark in item for mark in COMPANION_MARKS)


def withheld(users_table: str, user_ids: list[str], since: str, behavioural: bool) -> set[str]:
    """Of `user_ids`, those a list computed at `since` must no longer show: erased after it, or,
    for a list built from behaviour, objecting to profiling now, themselves or (a visitor id
    linked to a customer) through their customer, whose objection covers them. Read strongly
    consistent, as consent decides."""
    rows = dynamo.batch_get(users_table, [{"user_id": user} for user in dict.fromkeys(user_ids)],
                            consistent=True, projection="user_id, consent, erased_at, linked_to")
    objecting: set[str] = set()
    if behavioural:
        customers = {row["linked_to"] for row in rows if isinstance(row.get("linked_to"), str)}
        linked = dynamo.batch_get(users_table, [{"user_id": user} for user in customers], consistent=True,
                                  projection="user_id, consent") if customers else []
        objecting = {row["user_id"] for row in [*rows, *linked] if not may_profile(user_from_row(row))}
    return {row["user_id"] for row in rows
            if (erasure_read(row.get("erased_at")) or "") > since
            or row["user_id"] in objecting or (isinstance(row.get("linked_to"), str) and row["linked_to"] in objecting)}


def current_users(users_table: str, user_ids: list[str]) -> dict[str, User]:
    """The consent, erasure and contact ledger of each of `user_ids` as stored now, read strongly
    consistent: what a job that read the shop minutes ago checks before it writes a customer's
    line. An id without a row is left out."""
    rows = dynamo.batch_get(users_table, [{"user_id": user} for user in dict.fromkeys(user_ids)],
                            consistent=True, projection=f"user_id, consent, erased_at, {CONTACTS_FIELD}")
    return {row["user_id"]: user_from_row(row) for row in rows}


# --- what ingest writes: the purchase summary, in the same transaction as the events ---

SUMMARY_FIELDS = ("orders", "lines", "units", "spend", "returned", "returns", "first_purchase_at", "last_purchase_at")
# Rows written before orders were counted: read so that they load (PurchaseSummary maps it).
LEGACY_SUMMARY_FIELDS = ("purchase_count",)
# The contact ledger (shared/contact.py): sends and responses per contact channel, one map.
CONTACTS_FIELD = "contacts"

# A customer's purchase keys (already-bought items, seen orders) live in their own item of the
# users table, beside the profile row: the profile row is read on every request and must stay
# small (DynamoDB charges a read by the whole item's size, whatever the projection).
# Its key is the user id and this suffix; ``purchases_of`` names the owner, so a profile row
# whose id happens to end so is never taken for one.
PURCHASES_SUFFIX = "\x00purchases"
PURCHASES_FIELDS = ("purchases_of", "item_keys", "order_keys", "items_truncated", "orders_truncated",
                    "purchases_version")


def _consent_is(stored: Any) -> tuple[str, dict[str, Any]]:
    """A condition: the row's consent is still `stored`, as read. A value that is not a map (by
    hand) is matched by its type, so that it can be replaced: any write since left a map. So is a
    map that holds a list (by hand: no writer of consent writes one), which may have been read from
    a set, and would never equal itself written back as a list."""
    if stored is None:
        return "attribute_not_exists(consent)", {}
    if isinstance(stored, dict) and not _holds_list(stored):
        return "consent = :consent_read", {":consent_read": dynamo.AsRead(stored)}
    if isinstance(stored, dict):
        return "attribute_type(consent, :map)", {":map": "M"}
    return "attribute_exists(consent) AND NOT attribute_type(consent, :map)", {":map": "M"}


def _holds_list(value: Any) -> bool:
    if isinstance(value, dict):
        return any(_holds_list(item) for item in value.values())
    return isinstance(value, list)


def _is_count(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool) and value >= 0 and value == int(value)


def _history(row: dict[str, Any]) -> ConsentHistory:
    """The consent history row; one that does not read (by hand) as none kept, logged, so that
    consent can still be recorded (the customer's right to object must never be stuck)."""
    try:
        return ConsentHistory(**{k: v for k, v in row.items() if k in ConsentHistory.model_fields})
    except (ValidationError, TypeError):
        logger.error("a customer's consent history does not read: recorded anew from the next change")
        return ConsentHistory()


def linked_visitors(row: dict[str, Any] | None) -> list[str]:
    """The visitor ids a customer's row links, each once (none when the stored value is not a list)."""
    stored = (row or {}).get("linked_visitors")
    return list(dict.fromkeys(v for v in stored if isinstance(v, str))) if isinstance(stored, list) else []


def purchases_key(user_id: str) -> dict[str, str]:
    return {"user_id": user_id + PURCHASES_SUFFIX}


def is_purchases_row(row: dict[str, Any]) -> bool:
    """The row is a bought set (a profile's own attribute of that name, or a number there written
    by hand, is not)."""
    owner = row.get("purchases_of")
    return isinstance(owner, str) and row["user_id"] == owner + PURCHASES_SUFFIX


KEY_SETS = ("item_keys", "order_keys")


def _keys(value: Any) -> frozenset[bytes]:
    return frozenset(value or ())


# A row's key sets stored as another type than binary (by hand): read as empty and named here,
# so that ingest replaces them (an ADD to them would fail every transaction of the customer).
UNREADABLE_SETS = "\x00unreadable_sets"


def _from_raw(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw item as a row, its key sets as frozensets of bytes (kept apart from deserialize)."""
    sets = {name: frozenset(raw[name].get("BS", ())) for name in KEY_SETS if name in raw}
    row = {**dynamo.deserialize({k: v for k, v in raw.items() if k not in KEY_SETS}), **sets}
    unreadable = tuple(name for name in KEY_SETS if name in raw and "BS" not in raw[name])
    if unreadable:
        row[UNREADABLE_SETS] = unreadable
    return row


def _batch_get_raw(table: str, keys: list[dict[str, Any]], projection: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        spec = {"Keys": [dynamo.serialize(key) for key in keys[start:start + 100]], "ConsistentRead": True,
                "ProjectionExpression": ", ".join(f"#{name}" for name in projection),
                "ExpressionAttributeNames": {f"#{name}": name for name in projection}}
        for response in dynamo.with_leftovers(lambda request: dynamo.client().batch_get_item(**request),
                                              {"RequestItems": {table: spec}}, "UnprocessedKeys", "batch get"):
            found.extend(_from_raw(item) for item in response["Responses"].get(table, []))
    return found


@dataclass(frozen=True)
class PurchaseKeys:
    """A customer's stored purchase keys, with the version ingest conditions its update on."""

    items: frozenset[bytes] = frozenset()
    orders: frozenset[bytes] = frozenset()
    items_truncated: bool = False
    orders_truncated: bool = False
    version: Any = None  # as stored (version_is, next_version); None: no purchases item yet
    unreadable: tuple[str, ...] = ()  # key sets stored as another type (_from_raw): replaced, not added to
    # False: the item at the customer's purchases key lacks its owner mark (by hand). Ids hold no
    # NUL, so it is theirs all the same: its update writes the mark, not conditioned on it.
    marked: bool = True

    @classmethod
    def from_row(cls, row: dict[str, Any] | None) -> PurchaseKeys:
        if not row:
            return cls()
        unreadable = row.get(UNREADABLE_SETS, ())
        # What such a set held is lost: the keys kept from now on are marked as not all of them.
        return cls(_keys(row.get("item_keys")), _keys(row.get("order_keys")),
                   bool(row.get("items_truncated")) or "item_keys" in unreadable,
                   bool(row.get("orders_truncated")) or "order_keys" in unreadable,
                   row.get("purchases_version"), unreadable, is_purchases_row(row))

    def adding(self, events: Iterable[Event]) -> tuple[PurchaseKeys, frozenset[bytes], frozenset[bytes]]:
        """The keys after storing `events`' purchases, and the item and order keys to ADD (new
        ones only, as many as the caps allow; past a cap the set is marked truncated)."""
        purchases = [event for event in events if event.event_type is EventType.PURCHASE]
        new_items = list(dict.fromkeys(k for k in (item_key(e.item_id) for e in purchases) if k not in self.items))
        new_orders = list(dict.fromkeys(
            k for k in (order_key(e.order_id, e.timestamp) for e in purchases) if k not in self.orders))
        item_room, order_room = MAX_ITEM_KEYS - len(self.items), MAX_ORDER_KEYS - len(self.orders)
        add_items, add_orders = frozenset(new_items[:max(item_room, 0)]), frozenset(new_orders[:max(order_room, 0)])
        after = PurchaseKeys(
            self.items | add_items, self.orders | add_orders,
            self.items_truncated or len(new_items) > item_room,
            self.orders_truncated or len(new_orders) > order_room,
            next_version(self.version),
        )
        return after, add_items, add_orders


@dataclass
class SummaryState:
    """A user's purchase summary as ingest last read it, with its version and last erasure, their
    purchase keys (the orders already counted, the items already bought) and their contact ledger."""

    summary: PurchaseSummary
    version: Any  # as stored (version_is, next_version); None: the user has no summary yet
    erased_at: str | None = None  # the user's last erasure (erasure_read); older events are refused
    purchases: PurchaseKeys = field(default_factory=PurchaseKeys)
    contacts: ContactLedger = field(default_factory=ContactLedger)


def erasure_unchanged(users_table: str, user_id: str, erased_at: str) -> dict[str, Any]:
    """A transaction action: the user's last erasure is still `erased_at` ("": none), the one read
    (``erased_at`` uses the events' fixed-width stamps, so events compare with it as strings)."""
    condition, values = _erasure_is(erased_at)
    check: dict[str, Any] = {"TableName": users_table, "Key": dynamo.serialize({"user_id": user_id}),
                             "ConditionExpression": condition}
    if values:
        check["ExpressionAttributeValues"] = dynamo.serialize(values)
    return {"ConditionCheck": check}


def _erasure_state(row: dict[str, Any]) -> tuple[Any, Any]:
    return row.get("erased_at"), row.get("erasure_status")


def _erasure_as_read(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A condition: the customer's erasure is still as in `row` (none, or the same one, stamp and
    status). A value that is not a text (by hand: a set, a null, a map) is matched by its being
    there and not a text, as a value read back does not always match itself (a null in a map is
    not written back); any erasure since wrote texts."""
    parts, values = [], {}
    for name in ("erased_at", "erasure_status"):
        if name not in row:
            parts.append(f"attribute_not_exists({name})")
        elif isinstance(row[name], str):
            parts.append(f"{name} = :{name}_read")
            values[f":{name}_read"] = row[name]
        else:
            parts.append(f"attribute_exists({name}) AND NOT attribute_type({name}, :text)")
            values[":text"] = "S"
    return " AND ".join(parts), values


def _erasure_is(erased_at: str) -> tuple[str, dict[str, str]]:
    if not erased_at:  # none: no stamp, or an empty one (by hand), which erasure_read reads as none
        return "attribute_not_exists(erased_at) OR erased_at = :no_erasure", {":no_erasure": ""}
    return "erased_at = :erased_at", {":erased_at": erased_at}


def erasure_read(stored: Any) -> str | None:
    """A stored erasure stamp as ingest and lists compare it with events' stamps (None: no erasure;
    "": none, as a recent-activity item records it)."""
    if stored is None or stored == "" or _is_time(stored):
        return stored
    logger.warning("a customer's erasure stamp does not read: taken as later than any event",
                   extra={"stored_type": type(stored).__name__})
    return UNKNOWN_ERASURE


def _is_time(stored: Any) -> bool:
    try:
        datetime.fromisoformat(stored)
        return True
    except (TypeError, ValueError):
        return False


def version_is(name: str, stored: Any) -> tuple[str, dict[str, Any]]:
    """The condition that the version attribute `name` is still `stored`, the one read (None:
    absent). A number compares as read, whole or not; any other type (written by hand) only as still
    not a number, since every rewrite writes one (next_version)."""
    if stored is None:
        return f"attribute_not_exists({name})", {}
    if isinstance(stored, (int, Decimal)) and not isinstance(stored, bool):
        return f"{name} = :expected", {":expected": stored}
    return f"attribute_exists({name}) AND NOT attribute_type({name}, :number_type)", {":number_type": "N"}


def summary_update(
    users_table: str, user_id: str, expected_version: Any, state: SummaryState, write_contacts: bool = False,
) -> dict[str, Any]:
    """A transaction action: the new summary (and, with `write_contacts`, the contact ledger), if
    the version and the last erasure are the ones read."""
    fields = [name for name in SUMMARY_FIELDS if getattr(state.summary, name) is not None]  # no purchase yet
    # Those without a value are removed: what a summary that did not read left of them goes too.
    removed = [*LEGACY_SUMMARY_FIELDS, *(name for name in SUMMARY_FIELDS if name not in fields)]
    erasure, values = _erasure_is(state.erased_at or "")
    values.update({":version": state.version, **{f":{name}": getattr(state.summary, name) for name in fields}})
    if write_contacts:
        fields.append(CONTACTS_FIELD)
        values[f":{CONTACTS_FIELD}"] = state.contacts.stored()
    version, expected = version_is("summary_version", expected_version)
    condition = f"{version} AND ({erasure})"
    values.update(expected)
    assignments = ", ".join(f"#{name} = :{name}" for name in fields)
    return {
        "Update": {
            "TableName": users_table,
            "Key": dynamo.serialize({"user_id": user_id}),
            "UpdateExpression": f"SET {assignments}, summary_version = :version REMOVE "
                                + ", ".join(f"#{name}" for name in removed),
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {f"#{name}": name for name in [*fields, *removed]},
            "ExpressionAttributeValues": dynamo.serialize(values),
        }
    }


def purchases_update(users_table: str, user_id: str, expected: PurchaseKeys, after: PurchaseKeys,
                     add_items: frozenset[bytes], add_orders: frozenset[bytes]) -> dict[str, Any]:
    """A transaction action: ADD the new item and order keys (a retry adds nothing twice), if the
    purchases item is the one read (its version), so that orders are never counted twice."""
    values: dict[str, Any] = {":of": user_id, ":version": after.version,
                              ":items_truncated": after.items_truncated, ":orders_truncated": after.orders_truncated}
    sets, removes, adds = [], [], []
    for name, placeholder, added, whole in (("item_keys", ":items", add_items, after.items),
                                            ("order_keys", ":orders", add_orders, after.orders)):
        if name in expected.unreadable:  # replaced by the keys known now (an empty set is no value)
            if whole:
                sets.append(f"{name} = {placeholder}")
                values[placeholder] = set(whole)
            else:
                removes.append(name)
        elif added:
            adds.append(f"{name} {placeholder}")
            values[placeholder] = set(added)
    condition, expected_values = version_is("purchases_version", expected.version)
    if expected.version is not None and expected.marked:
        condition += " AND purchases_of = :of"
    values.update(expected_values)
    expression = ", ".join(["SET purchases_of = :of, purchases_version = :version, items_truncated = :items_truncated, "
                            "orders_truncated = :orders_truncated", *sets])
    if removes:
        expression += " REMOVE " + ", ".join(removes)
    if adds:
        expression += " ADD " + ", ".join(adds)
    return {
        "Update": {
            "TableName": users_table,
            "Key": dynamo.serialize(purchases_key(user_id)),
            "UpdateExpression": expression,
            "ConditionExpression": condition,
            "ExpressionAttributeValues": dynamo.serialize(values),
        }
    }


# A customer's recent activity (shared/recent.py: their newest events, compressed) lives in its own
# item beside the profile row, keyed by the user id and this suffix; ``recent_of`` names the owner.
# Ingest rewrites it in the same transaction as the events, conditional on ``recent_version``.
RECENT_SUFFIX = "\x00recent"
# The attribute that marks each companion item of a customer (and names its owner): a Scan of
# customers leaves them out, an erasure deletes them.
RECENT_MARK = "recent_of"
COMPANION_MARKS = ("purchases_of", "consent_of", RECENT_MARK)


def recent_key(user_id: str) -> dict[str, str]:
    return {"user_id": user_id + RECENT_SUFFIX}


def _recent_of(raw: dict[str, Any], user_id: str) -> RecentActivity:
    """The recent activity in the raw item at this customer's recent key. An item that does not
    read (not the customer's, or not what ingest writes) is `unreadable`, logged, not raised: serving
    reads the customer's events instead, and ingest replaces it."""
    try:
        found = recent_payload(raw)
        if found is None or found[0] != user_id:
            raise ValueError("not the customer's recent-activity item")
        payload = found[1]
        erased_at = raw["erased_at"]["S"] if "erased_at" in raw else None
        # The item only repeats the profile row's erasure: one that does not read is the item's fault.
        if erased_at not in (None, "") and not _is_time(erased_at):
            raise ValueError("an erasure that is not a time")
        # A version that is not a whole number does not read (ValueError), nor one that is not a
        # number, nor one the next rewrite could not store (DynamoDB keeps 38 digits): by hand.
        version = int(raw["recent_version"]["N"])
        if not -MAX_VERSION < version < MAX_VERSION:
            raise ValueError(f"a version out of range: {str(version)[:50]}")
        return RecentActivity(tuple(decode(payload)), version, erased_at)
    except UNREADABLE as error:
        logger.warning("unreadable recent-activity item: the events are read instead, ingest replaces it",
                       extra={"error": f"{type(error).__name__}: {error}"[:200]})
        return RecentActivity(version=_stored_version(raw), unreadable=True)


def _stored_version(raw: dict[str, Any]) -> Any:
    """An unreadable recent-activity item's version as stored, whatever its type (version_is compares it)."""
    return dynamo.deserialize({"version": raw["recent_version"]})["version"] if "recent_version" in raw else None


def recent_payload(raw: dict[str, Any]) -> tuple[str, bytes | None] | None:
    """The owner and stored events (compressed, shared/recent.py) of a raw recent-activity item
    (DynamoDB JSON: a Scan's bytes, or an export line's base64), if it is one; None otherwise. Events
    that are not stored as binary are None, which no reading decodes."""
    owner = raw.get("recent_of", {}).get("S")
    if not isinstance(owner, str) or raw.get("user_id", {}).get("S") != owner + RECENT_SUFFIX:
        return None
    payload = raw.get("events", {}).get("B")
    if isinstance(payload, str):
        try:
            return owner, base64.b64decode(payload, validate=True)
        except ValueError:
            return owner, None
    return owner, payload if isinstance(payload, bytes) else None


def rows_and_recent(items: Iterable[dict[str, Any]]) -> tuple[dict[str, dict[str, Any]], dict[str, bytes | None]]:
    """Of raw items of the users table (a Scan's page, an export's lines): the customers' rows, by
    user id, and their recent-activity payloads, by owner; the other companion items left out."""
    rows: dict[str, dict[str, Any]] = {}
    recent: dict[str, bytes | None] = {}
    for item in items:
        if is_user_row(item):
            rows[item["user_id"]["S"]] = dynamo.deserialize(item)
        elif (found := recent_payload(item)) is not None:
            recent[found[0]] = found[1]
    return rows, recent


@dataclass
class UsersRead:
    """Every stored customer (as users_from_rows makes them), and the `erasure_status` of those
    whose row has one: what the nightly run reads of the users table or its export."""

    users: dict[str, User]
    erasure_status: dict[str, Any]

    @classmethod
    def of_rows(cls, rows: dict[str, dict[str, Any]]) -> UsersRead:
        """Of stored rows, by user id (a Scan's, deserialized)."""
        return cls(users_from_rows(rows), {user_id: row["erasure_status"] for user_id, row in rows.items()
                                           if "erasure_status" in row})


def read_users(items: Iterable[dict[str, Any]], logged: bool = True) -> UsersRead:
    """The customers of raw items of the users table, as users_from_rows makes them, a row at a
    time: each row is let go once it is a User, so the read never holds every row and every
    customer at once (at 500,000 customers the rows alone were 700 MB). `logged`: False for a
    second read of items whose first read logged each row that does not read."""
    read, erasure_status = _NightlyUsers(logged), {}
    users: dict[str, User] = {}
    for item in items:
        if is_user_row(item):
            user_id, row = item["user_id"]["S"], dynamo.deserialize(item)
            users[user_id] = read.user(row)
            if "erasure_status" in row:
                erasure_status[user_id] = row["erasure_status"]
    return UsersRead(with_linked_objections(users), erasure_status)


def recent_payloads(items: Iterable[dict[str, Any]]) -> dict[str, bytes | None]:
    """The recent-activity payloads of raw items of the users table, by owner."""
    return dict(found for item in items if (found := recent_payload(item)) is not None)


def all_rows_and_recent(users_table: str, segments: int = 4
                        ) -> tuple[dict[str, dict[str, Any]], dict[str, bytes | None]]:
    """rows_and_recent of the whole table, from one parallel Scan (for the nightly run)."""
    rows: dict[str, dict[str, Any]] = {}
    recent: dict[str, bytes | None] = {}
    lock = threading.Lock()

    def add_page(items: list[dict[str, Any]]) -> None:
        page_rows, page_recent = rows_and_recent(items)
        with lock:
            rows.update(page_rows)
            recent.update(page_recent)

    # The other companion items (a bought set can be 40 KB) stay on the server.
    parallel_scan(users_table, segments, add_page, FilterExpression=" AND ".join(
        f"attribute_not_exists({mark})" for mark in COMPANION_MARKS if mark != RECENT_MARK))
    return rows, recent


def read_recent(users_table: str, user_ids: list[str]) -> dict[str, RecentActivity]:
    """The recent-activity items of these ids that have one (or an unreadable one), strongly
    consistent (an event stored a moment ago must count): one BatchGetItem, at most 100 ids a call."""
    found: dict[str, RecentActivity] = {}
    unique = list(dict.fromkeys(user_ids))
    for start in range(0, len(unique), 100):
        spec = {"Keys": [dynamo.serialize(recent_key(user)) for user in unique[start:start + 100]],
                "ConsistentRead": True}
        for response in dynamo.with_leftovers(lambda request: dynamo.client().batch_get_item(**request),
                                              {"RequestItems": {users_table: spec}}, "UnprocessedKeys",
                                              "read recent activity"):
            for raw in response["Responses"].get(users_table, []):
                owner = raw["user_id"]["S"].removesuffix(RECENT_SUFFIX)  # the key asked for
                found[owner] = _recent_of(raw, owner)
    return found


@dataclass(frozen=True)
class CustomerItems:
    """A customer's items as serving reads them: the profile row, the recent activity (None: no
    item yet) and the already-bought set."""

    row: dict[str, Any] | None
    recent: RecentActivity | None
    purchased: PurchasedItems


def customer_items(users_table: str, user_id: str) -> CustomerItems:
    """The profile row, recent activity and bought set of one customer in one strongly consistent
    BatchGetItem: one round trip instead of three, at the same read units (each item is charged
    on its own, as by a GetItem)."""
    keys = [{"user_id": user_id}, recent_key(user_id), purchases_key(user_id)]
    spec = {"Keys": [dynamo.serialize(key) for key in keys], "ConsistentRead": True}
    raws: list[dict[str, Any]] = []
    for response in dynamo.with_leftovers(lambda request: dynamo.client().batch_get_item(**request),
                                          {"RequestItems": {users_table: spec}}, "UnprocessedKeys", "read customer"):
        raws.extend(response["Responses"].get(users_table, []))
    by_key = {raw["user_id"]["S"]: raw for raw in raws}
    profile = by_key.get(user_id)
    bought = by_key.get(purchases_key(user_id)["user_id"])
    bought_row = _from_raw(bought) if bought else None
    purchased = (_purchased(bought_row)
                 if bought_row and _bought_by(bought_row, user_id)
                 else PurchasedItems())
    recent_raw = by_key.get(recent_key(user_id)["user_id"])
    return CustomerItems(dynamo.deserialize(profile) if profile else None,
                         _recent_of(recent_raw, user_id) if recent_raw else None, purchased)


def consent_of(users_table: str, user_id: str) -> Consent:
    """The customer's consent, strongly consistent (defaults for a customer not stored)."""
    row = dynamo.get_item(users_table, {"user_id": user_id}, "read consent", consistent=True,
                          projection="user_id, consent, consent_updated_at")
    return user_from_row(row).consent if row is not None else Consent()


def erased_since(users_table: str, user_ids: list[str]) -> dict[str, str]:
    """The last erasure of each of these users that has one, strongly consistent."""
    rows = dynamo.batch_get(users_table, [{"user_id": user} for user in dict.fromkeys(user_ids)],
                            consistent=True, projection="user_id, erased_at")
    return {row["user_id"]: erasure_read(row["erased_at"]) for row in rows if row.get("erased_at")}


def recent_put(users_table: str, user_id: str, expected: RecentActivity, after: RecentActivity,
               payload: bytes) -> dict[str, Any]:
    """A transaction action: the customer's recent activity rewritten, if it is the one read."""
    item = {**recent_key(user_id), "recent_of": user_id, "recent_version": after.version,
            "count": len(after.events), "events": payload, "erased_at": after.erased_at}
    action: dict[str, Any] = {"TableName": users_table, "Item": dynamo.serialize(item)}
    if expected.unreadable:  # replaced while it is still the one read
        condition, values = version_is("recent_version", expected.version)
        action["ConditionExpression"] = f"attribute_exists(user_id) AND {condition}"
        if values:
            action["ExpressionAttributeValues"] = dynamo.serialize(values)
    elif expected.version is None:
        action["ConditionExpression"] = "attribute_not_exists(user_id)"
    else:
        action["ConditionExpression"] = "recent_version = :expected AND recent_of = :of"
        action["ExpressionAttributeValues"] = dynamo.serialize({":expected": expected.version, ":of": user_id})
    return {"Put": action}


def read_summaries(users_table: str, user_ids: list[str]) -> dict[str, SummaryState]:
    """The summary states of these users, strongly consistent (those with a summary, an erasure
    or purchase keys), each with their purchase keys and contact ledger: both items in one BatchGetItem."""
    if not user_ids:
        return {}
    keys = [{"user_id": user} for user in user_ids] + [purchases_key(user) for user in user_ids]
    fields = ["user_id", "summary_version", "erased_at", *SUMMARY_FIELDS, *LEGACY_SUMMARY_FIELDS, CONTACTS_FIELD,
              *PURCHASES_FIELDS]
    rows = _batch_get_raw(users_table, keys, fields)
    # By their keys: an item at a purchases key is that customer's, with its owner mark or not
    # (without it, the update that replaces it must not be conditioned on it, or it never succeeds).
    profiles = {row["user_id"]: row for row in rows if not row["user_id"].endswith(PURCHASES_SUFFIX)}
    purchases = {row["user_id"].removesuffix(PURCHASES_SUFFIX): row for row in rows
                 if row["user_id"].endswith(PURCHASES_SUFFIX)}
    for user, row in purchases.items():
        if not is_purchases_row(row):
            logger.warning("a customer's purchase keys lack their owner mark: it is written again",
                           extra={"user_id": user})
    states = {}
    for user in user_ids:
        row = profiles.get(user) or {}
        if "summary_version" in row or "erased_at" in row or user in purchases:
            states[user] = SummaryState(
                _part_or_default(PurchaseSummary, row), row.get("summary_version"), erasure_read(row.get("erased_at")),
                PurchaseKeys.from_row(purchases.get(user)),
                _part_or_default(ContactLedger, row.get(CONTACTS_FIELD) or {}),
            )
    return states


def _part_or_default(model: type[PartT], stored: Any) -> PartT:
    """A stored part ingest folds events into; one that does not read starts again from these events
    (logged): the customer's events are never refused for what an earlier write left."""
    try:
        return model.model_validate(stored)
    except ValidationError:
        logger.warning("a customer's stored part does not read: it starts again from these events",
                       extra={"part": model.__name__})
        return model()


# --- what serving reads: the already-bought set ---


def purchased_items(users_table: str, user_id: str) -> PurchasedItems:
    """Every item the customer ever bought (as keys), kept at ingest: one strongly consistent GetItem."""
    row = _bought_row(users_table, user_id, ("user_id", "purchases_of", "item_keys", "items_truncated"))
    return PurchasedItems() if row is None else _purchased(row)


def _bought_row(users_table: str, user_id: str, fields: tuple[str, ...]) -> dict[str, Any] | None:
    """The customer's bought-set row (these fields), None without one."""
    with dynamo.aws_faults("read purchased items"):
        response = dynamo.client().get_item(
            TableName=users_table, Key=dynamo.serialize(purchases_key(user_id)), ConsistentRead=True,
            ProjectionExpression=", ".join(f"#{name}" for name in fields),
            ExpressionAttributeNames={f"#{name}": name for name in fields},
        )
    row = _from_raw(response["Item"]) if "Item" in response else None
    return row if row and _bought_by(row, user_id) else None


def _bought_by(row: dict[str, Any], user_id: str) -> bool:
    """The row is this customer's bought set."""
    return is_purchases_row(row) and row["purchases_of"] == user_id


def _purchased(row: dict[str, Any]) -> PurchasedItems:
    keys = PurchaseKeys.from_row(row)
    return PurchasedItems(keys.items, keys.items_truncated)
