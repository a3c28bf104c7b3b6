"""Visitors: logged-out people on the shop's website or app, each with an anonymous id.

A visitor gets an id and a short-lived token in one call without credentials; the token lets
the browser or app send that visitor's own events and read that visitor's own recommendations,
and nothing else. Tokens are JWTs signed with HS256 under a key only the service holds (on AWS a
Secrets Manager secret), so any JWT library can read them, and no one else can make one.

A token lives an hour. It can be exchanged for a fresh one, for the same id, up to 30 days after
it expired: a returning device keeps its anonymous history without a long-lived bearer.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from typing import Any

VISITOR_PREFIX = "v_"
TOKEN_SECONDS = 3600
REFRESH_SECONDS = 30 * 24 * 3600
ISSUER = "shop-recs"
TOKEN_TYPE = "visitor"
MIN_KEY_BYTES = 32


class InvalidVisitorToken(Exception):
    """Why a visitor token is refused (said to the caller: nothing in it is secret)."""


def new_visitor_id() -> str:
    """128 random bits: ids no one can guess, so a visitor's events cannot be read by another."""
    return VISITOR_PREFIX + secrets.token_urlsafe(16)


def is_visitor_id(user_id: str) -> bool:
    return user_id.startswith(VISITOR_PREFIX)


@dataclass(frozen=True)
class IssuedToken:
    visitor_id: str
    token: str
    expires_in: int = TOKEN_SECONDS

    def body(self) -> dict[str, Any]:
        return {"visitor_id": self.visitor_id, "token": self.token, "token_type": "Bearer",
                "expires_in": self.expires_in}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" for c in text):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


_HEADER = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())


@dataclass(frozen=True)
class VisitorTokens:
    key: bytes

    def __post_init__(self) -> None:
        if len(self.key) < MIN_KEY_BYTES:
            raise ValueError(f"a visitor token key needs at least {MIN_KEY_BYTES} bytes")

    def issue(self, visitor_id: str, now: float) -> IssuedToken:
        claims = {"iss": ISSUER, "typ": TOKEN_TYPE, "sub": visitor_id, "iat": int(now),
                  "exp": int(now) + TOKEN_SECONDS}
        signing_input = f"{_HEADER}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
        return IssuedToken(visitor_id, f"{signing_input}.{_b64(self._sign(signing_input))}")

    def verify(self, token: str, now: float, *, refresh: bool = False) -> str:
        """The visitor id the token was issued for; InvalidVisitorToken otherwise.

        refresh: accept a token up to REFRESH_SECONDS past its expiry (only to exchange it).
        """
        try:
            header_b64, claims_b64, signature_b64 = token.split(".")
            _unb64(signature_b64)
            header = json.loads(_unb64(header_b64))
            claims = json.loads(_unb64(claims_b64))
        except (ValueError, RecursionError):  # also JSON and UnicodeDecode errors; JSON nested too deep
            raise InvalidVisitorToken("the visitor token is not a JWT") from None
        # The algorithm is fixed here, never read from the token ("alg": "none" and key confusion).
        if not isinstance(header, dict) or header.get("alg") != "HS256":
            raise InvalidVisitorToken("the visitor token is not signed with HS256")
        # The signature's text, not its bytes: base64 decoding ignores the last character's unused
        # bits, so four spellings of one signature would pass, and a token could be altered unseen.
        if not hmac.compare_digest(signature_b64, _b64(self._sign(f"{header_b64}.{claims_b64}"))):
            raise InvalidVisitorToken("the visitor token's signature is invalid")
        if (not isinstance(claims, dict) or claims.get("iss") != ISSUER or claims.get("typ") != TOKEN_TYPE
                or not isinstance(claims.get("sub"), str) or not is_visitor_id(claims["sub"])
                or type(claims.get("exp")) is not int):
            raise InvalidVisitorToken("the token is not a visitor token")
        grace = REFRESH_SECONDS if refresh else 0
        if claims["exp"] + grace <= now:
            raise InvalidVisitorToken("the visitor token has expired"
                                      + ("" if refresh else ": exchange it at POST /visitors/{visitor_id}/token"))
        return claims["sub"]

    def _sign(self, signing_input: str) -> bytes:
        return hmac.new(self.key, signing_input.encode(), hashlib.sha256).digest()
