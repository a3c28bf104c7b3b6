"""Who is calling, and what they may do.

API Gateway authenticates: the public API's JWT authorizer checks a signed-in customer's token
(issuer, audience, signature, expiry), the trusted API's IAM authorizer checks a SigV4 signature
(the shop's backend, data pipeline and marketers' tools). Functions only authorise, from what the
authorizer left in the request context; that check lives here and nowhere else.

Customers are denied by default: a route a customer may call must be listed in CUSTOMER_ROUTES,
so a new route is for trusted callers only until someone decides otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any


class CustomerAccess(Enum):
    OWN = "own"  # only the route's {user_id} that is the caller's own
    ANY = "any"  # not personal data: catalog and popularity


CUSTOMER_ROUTES: dict[str, CustomerAccess] = {
    "GET /users/{user_id}": CustomerAccess.OWN,
    "GET /users/{user_id}/recommendations": CustomerAccess.OWN,
    "POST /users/{user_id}/rank": CustomerAccess.OWN,
    "POST /users/{user_id}/basket-recommendations": CustomerAccess.OWN,
    "GET /users/{user_id}/segments": CustomerAccess.OWN,
    "PUT /users/{user_id}/consent": CustomerAccess.OWN,
    "GET /users/{user_id}/export": CustomerAccess.OWN,
    "DELETE /users/{user_id}": CustomerAccess.OWN,
    "GET /items/{item_id}": CustomerAccess.ANY,
    "GET /items/{item_id}/similar": CustomerAccess.ANY,
    "GET /items/{item_id}/bought-together": CustomerAccess.ANY,
    "GET /popular": CustomerAccess.ANY,
}


class AccessDenied(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Caller:
    principal: str  # an IAM ARN, or the customer's user_id
    customer_id: str | None  # set for a signed-in customer, None for a trusted system

    @property
    def trusted(self) -> bool:
        return self.customer_id is None


def caller_of(event: dict[str, Any], user_id_claim: str) -> Caller:
    """The caller the API Gateway authorizer vouched for; AccessDenied(401) if none did."""
    authorizer = (event.get("requestContext") or {}).get("authorizer") or {}
    iam = authorizer.get("iam")
    if iam:
        return Caller(principal=iam.get("userArn") or iam.get("callerId") or "iam", customer_id=None)
    claims = (authorizer.get("jwt") or {}).get("claims") or {}
    if not claims:
        raise AccessDenied(401, "unauthenticated",
                           "sign in (a bearer token) or sign the request with AWS credentials")
    customer_id = claims.get(user_id_claim)
    if not customer_id:
        raise AccessDenied(403, "forbidden", f"the token has no '{user_id_claim}' claim naming the customer")
    return Caller(principal=str(customer_id), customer_id=str(customer_id))


def authorize(event: dict[str, Any], user_id_claim: str) -> Caller:
    """The caller, if they may call this route for this user; AccessDenied otherwise."""
    caller = caller_of(event, user_id_claim)
    if caller.trusted:
        return caller
    access = CUSTOMER_ROUTES.get(event.get("routeKey", ""))
    if access is None:
        raise AccessDenied(403, "forbidden", "this route is for the shop's own systems, not for customers")
    if access is CustomerAccess.OWN:
        requested = (event.get("pathParameters") or {}).get("user_id")
        if requested != caller.customer_id:
            raise AccessDenied(403, "forbidden", "a customer may only read and change their own data")
    return caller
