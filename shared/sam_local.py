"""Customer tokens under `sam local start-api`, which emulates no authorizer.

On AWS, API Gateway's JWT authorizer checks a customer's token and the function reads the claims
it left in requestContext.authorizer. The SAM CLI's local API passes requests through with no
authorizer context, so every customer route would answer 401. Under SAM local only (the SAM CLI
sets AWS_SAM_LOCAL=true in the function's environment; nothing else switches this on), the
function checks a bearer token itself: RS256, against the local stack's issuer key given in
LOCAL_ISSUER_JWKS (`./dev sam-env` writes it), with the issuer, audience and expiry rules of the
JWT authorizer. It never runs on AWS: Lambda does not set AWS_SAM_LOCAL.

RS256 is checked with integer arithmetic (RFC 8017, RSASSA-PKCS1-v1_5) rather than a crypto
library, which the functions do not ship.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

SAM_LOCAL_VARIABLE = "AWS_SAM_LOCAL"
JWKS_VARIABLE = "LOCAL_ISSUER_JWKS"
# DER of DigestInfo for SHA-256 (RFC 8017, section 9.2, note 1)
SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class LocalTokenRefused(Exception):
    pass


def under_sam_local(environ: dict[str, str] | None = None) -> bool:
    return (os.environ if environ is None else environ).get(SAM_LOCAL_VARIABLE) == "true"


def local_issuer_jwks() -> str:
    return os.environ.get(JWKS_VARIABLE, "")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int(text: str) -> int:
    return int.from_bytes(_unb64(text), "big")


def rs256_valid(signing_input: bytes, signature: bytes, modulus: int, exponent: int) -> bool:
    size = (modulus.bit_length() + 7) // 8
    if len(signature) != size or int.from_bytes(signature, "big") >= modulus:
        return False
    encoded = pow(int.from_bytes(signature, "big"), exponent, modulus).to_bytes(size, "big")
    digest = SHA256_DIGEST_INFO + hashlib.sha256(signing_input).digest()
    expected = b"\x00\x01" + b"\xff" * (size - len(digest) - 3) + b"\x00" + digest
    return hmac.compare_digest(encoded, expected)


def verify_local_token(token: str, jwks_text: str, now: float) -> dict[str, Any]:
    """The claims of a token the local issuer signed, as the JWT authorizer would accept it."""
    try:
        issuer = json.loads(jwks_text)
        header_b64, claims_b64, signature_b64 = token.split(".")
        header = json.loads(_unb64(header_b64))
        claims = json.loads(_unb64(claims_b64))
        signature = _unb64(signature_b64)
    except (ValueError, TypeError, RecursionError):
        raise LocalTokenRefused("the token is not a JWT (or LOCAL_ISSUER_JWKS is not JSON)") from None
    if not isinstance(header, dict) or header.get("alg") != "RS256" or not isinstance(claims, dict):
        raise LocalTokenRefused("the token is not an RS256 JWT")
    keys = [k for k in issuer.get("keys", []) if isinstance(k, dict) and k.get("kid") == header.get("kid")]
    if not keys:
        raise LocalTokenRefused("the token is not signed by a key of the local issuer (./dev sam-env)")
    key = keys[0]
    if not rs256_valid(f"{header_b64}.{claims_b64}".encode(), signature, _int(key["n"]), _int(key["e"])):
        raise LocalTokenRefused("the token's signature is invalid")
    problem = claims_problem(claims, issuer.get("issuer"), issuer.get("audience"), now)
    if problem:
        raise LocalTokenRefused(problem)
    return claims


def claims_problem(claims: dict[str, Any], issuer: Any, audience: Any, now: float) -> str | None:
    """What API Gateway's JWT authorizer refuses in a signed token's claims, or None."""
    if not _registered_claims_typed(claims):
        return "the token's iss, sub, aud, exp, nbf or iat claim has the wrong type"
    if claims.get("iss") != issuer:
        return "the token is from another issuer"
    audiences = claims.get("aud") or claims.get("client_id")
    if audience not in (audiences if isinstance(audiences, list) else [audiences]):
        return "the token is for another audience"
    if not isinstance(claims.get("exp"), (int, float)) or claims["exp"] <= now:
        return "the token has expired"
    if isinstance(claims.get("nbf"), (int, float)) and claims["nbf"] > now:
        return "the token is not valid yet"
    return None


def _registered_claims_typed(claims: dict[str, Any]) -> bool:
    """RFC 7519's types for the claims read here: strings, a string or strings, numbers."""
    audience = claims.get("aud", "")
    return (all(isinstance(claims.get(name, ""), str) for name in ("iss", "sub"))
            and all(isinstance(a, str) for a in (audience if isinstance(audience, list) else [audience]))
            and all(isinstance(claims.get(name, 0), (int, float)) for name in ("exp", "nbf", "iat")))
