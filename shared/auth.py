"""Who is calling, and what they may do.

API Gateway authenticates shop systems and signed-in customers: the public API's JWT authorizer
checks a customer's token (issuer, audience, signature, expiry), the trusted API's IAM authorizer
checks a SigV4 signature (the shop's backend, data pipeline and marketers' tools). Visitor
tokens are the service's own (shared/visitors.py): their routes have no authorizer on the public
API, and this module checks the token. Functions authorise here and nowhere else.

Clients are denied by default: a route a browser or app may call must be listed in CLIENT_ROUTES
with the credential it takes, so a new route is for trusted callers only until someone decides
otherwise:

    PUBLIC     no credentials; nothing personal (catalog, popularity, a new visitor id)
    VISITOR    a visitor token, for its own {visitor_id}
    RENEWAL    a visitor token up to 30 days past its expiry, for its own {visitor_id}
    CUSTOMER   a customer's token, for their own {user_id}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any

from shared.sam_local import LocalTokenRefused, local_issuer_jwks, under_sam_local, verify_local_token
from shared.visitors import InvalidVisitorToken, VisitorTokens


class Access(Enum):
    PUBLIC = "public"
    VISITOR = "visitor"
    RENEWAL = "visitor_renewal"
    CUSTOMER = "customer"


CLIENT_ROUTES: dict[str, Access] = {
    "GET /users/{user_id}": Access.CUSTOMER,
    "GET /users/{user_id}/recommendations": Access.CUSTOMER,
    "POST /users/{user_id}/rank": Access.CUSTOMER,
    "POST /users/{user_id}/basket-recommendations": Access.CUSTOMER,
    "GET /users/{user_id}/segments": Access.CUSTOMER,
    "PUT /users/{user_id}/consent": Access.CUSTOMER,
    "GET /users/{user_id}/consent": Access.CUSTOMER,
    "GET /users/{user_id}/export": Access.CUSTOMER,
    "DELETE /users/{user_id}": Access.CUSTOMER,
    "POST /users/{user_id}/events": Access.CUSTOMER,
    "POST /users/{user_id}/visitors": Access.CUSTOMER,
    "GET /items/{item_id}": Access.PUBLIC,
    "GET /items/{item_id}/similar": Access.PUBLIC,
    "GET /items/{item_id}/bought-together": Access.PUBLIC,
    "GET /popular": Access.PUBLIC,
    "POST /visitors": Access.PUBLIC,
    "POST /visitors/{visitor_id}/token": Access.RENEWAL,
    "POST /visitors/{visitor_id}/events": Access.VISITOR,
    "GET /visitors/{visitor_id}/recommendations": Access.VISITOR,
}
# Which path parameter names the caller's own id, per credential.
OWN_ID_PARAMETER = {Access.CUSTOMER: "user_id", Access.VISITOR: "visitor_id", Access.RENEWAL: "visitor_id"}


class CallerKind(StrEnum):
    TRUSTED = "trusted"
    CUSTOMER = "customer"
    VISITOR = "visitor"
    ANONYMOUS = "anonymous"


class AccessDenied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Caller:
    kind: CallerKind
    principal: str  # an IAM ARN, a customer's or visitor's id, or "anonymous"
    user_id: str | None = None  # a customer's or visitor's own id

    @property
    def trusted(self) -> bool:
        return self.kind is CallerKind.TRUSTED


ANONYMOUS = Caller(CallerKind.ANONYMOUS, "anonymous")


def _unauthenticated(message: str) -> AccessDenied:
    return AccessDenied(401, "unauthenticated", message)


def _bearer(event: dict[str, Any]) -> str | None:
    headers = {str(k).lower(): v for k, v in (event.get("headers") or {}).items()}
    scheme, _, credentials = str(headers.get("authorization", "")).partition(" ")
    return (credentials.strip() or None) if scheme.lower() == "bearer" else None


def _map(value: Any) -> dict[str, Any]:
    """A part of the request's context as API Gateway sends it (a map); anything else (a test's or a
    tool's event) as none, so that it is refused as no credentials, not a crash."""
    return value if isinstance(value, dict) else {}


def _customer_claims(event: dict[str, Any], authorizer: dict[str, Any], now: float) -> dict[str, Any]:
    claims = _map(_map(authorizer.get("jwt")).get("claims"))
    if claims or authorizer or not under_sam_local():
        return claims
    # sam local start-api: no authorizer ran, so the function checks the token (shared/sam_local.py)
    token = _bearer(event)
    if token is None:
        return {}
    try:
        return verify_local_token(token, local_issuer_jwks(), now)
    except LocalTokenRefused as refused:
        raise _unauthenticated(f"sam local: {refused}") from None


def _customer(event: dict[str, Any], authorizer: dict[str, Any], user_id_claim: str, now: float) -> Caller | None:
    claims = _customer_claims(event, authorizer, now)
    if not claims:
        return None
    customer_id = claims.get(user_id_claim)
    if not customer_id:
        raise AccessDenied(403, "forbidden", f"the token has no '{user_id_claim}' claim naming the customer")
    return Caller(CallerKind.CUSTOMER, str(customer_id), str(customer_id))


def _visitor(event: dict[str, Any], access: Access, visitor_tokens: Callable[[], VisitorTokens] | None,
             now: float) -> Caller:
    token = _bearer(event)
    if token is None:
        raise _unauthenticated("send the visitor's token: Authorization: Bearer <token> (POST /visitors gives one)")
    if visitor_tokens is None:  # a visitor route wired to a function that does not take visitors
        raise AccessDenied(403, "forbidden", "this route does not take visitor tokens")
    try:
        visitor_id = visitor_tokens().verify(token, now, refresh=access is Access.RENEWAL)
    except InvalidVisitorToken as invalid:
        raise _unauthenticated(str(invalid)) from None
    return Caller(CallerKind.VISITOR, visitor_id, visitor_id)


def caller_of(event: dict[str, Any], user_id_claim: str,
              visitor_tokens: Callable[[], VisitorTokens] | None = None, now: float | None = None) -> Caller:
    """The caller the authorizers (or, for visitors, the token) vouch for; AccessDenied(401) if none."""
    now = time.time() if now is None else now
    authorizer = _map(_map(event.get("requestContext")).get("authorizer"))
    iam = _map(authorizer.get("iam"))
    if iam:
        return Caller(CallerKind.TRUSTED, iam.get("userArn") or iam.get("callerId") or "iam")
    access = CLIENT_ROUTES.get(event.get("routeKey", ""))
    if access is Access.PUBLIC:
        return ANONYMOUS
    if access in (Access.VISITOR, Access.RENEWAL):
        return _visitor(event, access, visitor_tokens, now)
    customer = _customer(event, authorizer, user_id_claim, now)
    if customer is None:
        raise _unauthenticated("sign in (a bearer token) or sign the request with AWS credentials")
    return customer


def authorize(event: dict[str, Any], user_id_claim: str,
              visitor_tokens: Callable[[], VisitorTokens] | None = None, now: float | None = None) -> Caller:
    """The caller, if they may call this route for this id; AccessDenied otherwise."""
    caller = caller_of(event, user_id_claim, visitor_tokens, now)
    if caller.trusted or caller.kind is CallerKind.ANONYMOUS:
        return caller
    access = CLIENT_ROUTES.get(event.get("routeKey", ""))
    if access is None or (access is Access.CUSTOMER) != (caller.kind is CallerKind.CUSTOMER):
        raise AccessDenied(403, "forbidden", "this route is for the shop's own systems, not for customers"
                           if access is None else f"this route takes a {access.value.split('_')[0]}'s token")
    requested = (event.get("pathParameters") or {}).get(OWN_ID_PARAMETER[access])
    if requested != caller.user_id:
        raise AccessDenied(403, "forbidden", "a customer or visitor may only read and change their own data")
    return caller
