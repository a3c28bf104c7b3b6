"""What API Gateway's authorizers do on AWS, done locally: the same rules, local keys.

On AWS the public API's JWT authorizer checks a customer's token against the shop's OIDC
issuer, and the trusted API's IAM authorizer checks a SigV4 signature. The local stack has
its own issuer (an RSA key made when the stack starts) and one trusted access key, both kept
in the state folder so the demo, the tests and `devstack token` can use them, with the secret
that opens the stack's own /dev/ helpers (which mint tokens and call as the backend):

    LocalAuth.create()            new keys (the stack, a test session)
    auth.issue_token(user_id)     a customer's token, RS256, as a Cognito user pool would sign it
    auth.sign(method, url, ...)   headers of a request signed as the shop's backend
    auth.authorizer_context(...)  what the authorizer puts in requestContext.authorizer, or Rejected
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from shared.sam_local import claims_problem

LOCAL_ISSUER = "https://issuer.shop-recs.local"
LOCAL_AUDIENCE = "shop-recs-local"
LOCAL_REGION = "us-east-1"
LOCAL_ACCOUNT = "000000000000"
SIGNATURE_MAX_AGE_SECONDS = 300  # API Gateway refuses signatures more than 5 minutes off


class Rejected(Exception):
    """The authorizer said no. status and message are what API Gateway answers."""

    def __init__(self, status: int, message: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.message, self.detail = status, message, detail


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _unauthorized(detail: str) -> Rejected:
    return Rejected(401, "Unauthorized", detail)


@dataclass(frozen=True)
class LocalAuth:
    signing_key: rsa.RSAPrivateKey
    key_id: str
    access_key_id: str
    secret_access_key: str
    dev_secret: str
    issuer: str = LOCAL_ISSUER
    audience: str = LOCAL_AUDIENCE

    @classmethod
    def create(cls) -> LocalAuth:
        return cls(
            signing_key=rsa.generate_private_key(public_exponent=65537, key_size=2048),
            key_id=secrets.token_hex(8),
            access_key_id="LOCAL" + secrets.token_hex(8).upper(),
            secret_access_key=secrets.token_urlsafe(30),
            dev_secret=secrets.token_urlsafe(32),
        )

    # --- persistence: the stack writes it, clients on the same machine read it ---

    def save(self, path: Path) -> None:
        pem = self.signing_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        data = {"signing_key_pem": pem, "key_id": self.key_id, "access_key_id": self.access_key_id,
                "secret_access_key": self.secret_access_key, "dev_secret": self.dev_secret}
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as file:
            json.dump(data, file)

    @classmethod
    def load(cls, path: Path) -> LocalAuth:
        data = json.loads(path.read_text())
        key = serialization.load_pem_private_key(data.pop("signing_key_pem").encode(), password=None)
        assert isinstance(key, rsa.RSAPrivateKey)
        return cls(signing_key=key, **data)

    # --- customers: JWTs ---

    def issue_token(self, user_id: str, expires_in: int = 3600, now: float | None = None,
                    **claims: Any) -> str:
        issued = int(time.time() if now is None else now)
        payload = {"iss": self.issuer, "aud": self.audience, "sub": user_id, "iat": issued,
                   "nbf": issued, "exp": issued + expires_in, "token_use": "id", **claims}
        header = {"alg": "RS256", "typ": "JWT", "kid": self.key_id}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
        signature = self.signing_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64(signature)}"

    def jwks(self) -> dict[str, Any]:
        """The issuer's public key as a JWK Set, with the issuer and audience it signs for: what
        the functions check tokens against under sam local (LOCAL_ISSUER_JWKS)."""
        numbers = self.signing_key.public_key().public_numbers()

        def b64_int(value: int) -> str:
            return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))

        return {"issuer": self.issuer, "audience": self.audience,
                "keys": [{"kty": "RSA", "alg": "RS256", "use": "sig", "kid": self.key_id,
                          "n": b64_int(numbers.n), "e": b64_int(numbers.e)}]}

    def verify_token(self, token: str, now: float | None = None) -> dict[str, Any]:
        """The claims, if API Gateway's JWT authorizer would accept the token."""
        moment = time.time() if now is None else now
        try:
            header_b64, payload_b64, signature_b64 = token.split(".")
            header = json.loads(_unb64(header_b64))
            claims = json.loads(_unb64(payload_b64))
            signature = _unb64(signature_b64)
        except (ValueError, TypeError):
            raise _unauthorized("the token is not a JWT") from None
        if not isinstance(header, dict) or not isinstance(claims, dict):
            raise _unauthorized("the token is not a JWT")
        if header.get("alg") != "RS256" or header.get("kid") != self.key_id:
            raise _unauthorized("the token is not signed by a key of the issuer")
        try:
            self.signing_key.public_key().verify(
                signature, f"{header_b64}.{payload_b64}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            raise _unauthorized("the token's signature is invalid") from None
        problem = claims_problem(claims, self.issuer, self.audience, moment)  # the rules sam local checks too
        if problem:
            raise _unauthorized(problem)
        return claims

    # --- trusted callers: SigV4 ---

    def sign(self, method: str, url: str, headers: dict[str, str], body: bytes,
             now: datetime | None = None) -> dict[str, str]:
        """headers plus X-Amz-Date and Authorization, as botocore signs for execute-api."""
        request = AWSRequest(method=method, url=url, headers=dict(headers), data=body)
        signer = SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), "execute-api",
                           LOCAL_REGION)
        if now is None:
            signer.add_auth(request)
        else:  # a signature from another moment: tests of clock skew
            request.context["timestamp"] = now.strftime(SIGV4_TIMESTAMP)
            request.headers["X-Amz-Date"] = request.context["timestamp"]
            signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
            signer._inject_signature_to_request(request, signature)  # noqa: SLF001 - botocore's own step
        return dict(request.headers.items())

    def verify_signature(self, method: str, url: str, headers: dict[str, str], body: bytes,
                         now: float | None = None) -> dict[str, Any]:
        """The caller's identity, if API Gateway's IAM authorizer would accept the signature."""
        lowered = {name.lower(): value for name, value in headers.items()}
        fields = _sigv4_fields(lowered.get("authorization", ""))
        credential = fields.get("Credential", "").split("/")
        if len(credential) != 5 or credential[3:] != ["execute-api", "aws4_request"]:
            raise Rejected(403, "Forbidden", "the Authorization header is not a SigV4 signature for execute-api")
        access_key_id, date, region = credential[0], credential[1], credential[2]
        if region != LOCAL_REGION:
            raise Rejected(403, "Forbidden", f"Credential should be scoped to a valid region: {LOCAL_REGION}")
        if access_key_id != self.access_key_id:
            raise Rejected(403, "Forbidden", "the security token included in the request is invalid")
        # botocore signs the declared hash when there is one; it must be the body actually sent.
        declared = lowered.get("x-amz-content-sha256")
        if declared is not None and declared != hashlib.sha256(body).hexdigest():
            raise Rejected(403, "Forbidden", "x-amz-content-sha256 is not the SHA-256 of the body sent "
                                             "(unsigned payloads are refused)")
        timestamp = lowered.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(timestamp, SIGV4_TIMESTAMP).replace(tzinfo=timezone.utc)
        except ValueError:
            raise Rejected(403, "Forbidden", "X-Amz-Date is missing or malformed") from None
        moment = time.time() if now is None else now
        if abs(signed_at.timestamp() - moment) > SIGNATURE_MAX_AGE_SECONDS or date != timestamp[:8]:
            raise Rejected(403, "Forbidden", "Signature expired: the request was signed more than 5 minutes away from now")
        signed_names = fields.get("SignedHeaders", "").split(";")
        missing = [name for name in ("host", "x-amz-date") if name not in signed_names]
        if missing:
            raise Rejected(403, "Forbidden", f"the signature must cover {', '.join(missing)}")
        request = AWSRequest(method=method, url=url, data=body,
                             headers={name: lowered.get(name, "") for name in signed_names})
        request.context["timestamp"] = timestamp
        signer = SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), "execute-api", region)
        expected = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            raise Rejected(403, "Forbidden", "the request signature we calculated does not match the signature you provided")
        return trusted_identity(self.access_key_id)

    # --- what the authorizers hand to the functions ---

    def authorizer_context(self, method: str, url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
        """requestContext.authorizer for this request, or Rejected as API Gateway would answer."""
        authorization = {k.lower(): v for k, v in headers.items()}.get("authorization", "")
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials:
            claims = self.verify_token(credentials.strip())
            scopes = str(claims.get("scope", "")).split() or None
            return {"jwt": {"claims": {k: _claim_text(v) for k, v in claims.items()}, "scopes": scopes}}
        if scheme == "AWS4-HMAC-SHA256":
            return {"iam": self.verify_signature(method, url, headers, body)}
        raise _unauthorized("no bearer token and no SigV4 signature")


def trusted_identity(access_key_id: str) -> dict[str, Any]:
    return {"accessKey": access_key_id, "accountId": LOCAL_ACCOUNT, "callerId": access_key_id,
            "principalOrgId": None, "userArn": f"arn:aws:iam::{LOCAL_ACCOUNT}:user/local-shop-backend",
            "userId": access_key_id, "cognitoIdentity": None}


def trusted_context() -> dict[str, Any]:
    """requestContext.authorizer of a request the IAM authorizer accepted (benches, dev proxy)."""
    return {"iam": trusted_identity("local-shop-backend")}


def customer_context(user_id: str) -> dict[str, Any]:
    """requestContext.authorizer of a customer's request the JWT authorizer accepted."""
    return {"jwt": {"claims": {"sub": user_id, "iss": LOCAL_ISSUER, "aud": LOCAL_AUDIENCE}, "scopes": None}}


def _claim_text(value: Any) -> str:
    """HTTP API hands claims to functions as strings (lists as "[a b]")."""
    if isinstance(value, list):
        return "[" + " ".join(map(str, value)) + "]"
    return str(value)


def _sigv4_fields(authorization: str) -> dict[str, str]:
    scheme, _, rest = authorization.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return {}
    fields = {}
    for part in rest.split(","):
        name, _, value = part.strip().partition("=")
        fields[name] = value
    return fields


def host_url(headers: dict[str, str], target: str) -> str:
    """The URL a client signed: its Host header and the path with query it sent."""
    host = {k.lower(): v for k, v in headers.items()}.get("host", "127.0.0.1")
    parts = urlsplit(target)
    return f"http://{host}{parts.path}" + (f"?{parts.query}" if parts.query else "")
