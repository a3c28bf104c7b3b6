"""The key that signs visitor tokens: a Secrets Manager secret on AWS, read again every few minutes.

Kept KEY_KEPT_SECONDS, not for the instance's life: a key rotated (after a leak) must stop working
on warm instances too, within a bound the docs can state.

The local stack and `sam local` have no Secrets Manager: they give the key itself in
VISITOR_TOKEN_SECRET. On AWS only the secret's ARN is in the environment, so the key is never in
the function's configuration, where anyone allowed to read that could see it.
"""

from __future__ import annotations

import time

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from shared.config import get_settings
from shared.errors import StorageUnavailable
from shared.observability import logger
from shared.storage.dynamo import CLIENT_CONFIG
from shared.experiments.attribution import signing_key
from shared.visitors import VisitorTokens


KEY_KEPT_SECONDS = 300
REREAD_AFTER_FAULT_SECONDS = 10
_kept: dict[tuple[str, str], tuple[float, VisitorTokens]] = {}


def visitor_tokens(secret_arn: str, local_key: str) -> VisitorTokens:
    """The tokens of this key, read at most KEY_KEPT_SECONDS ago. When a read again fails, the key
    read before goes on serving (tried again shortly): Secrets Manager's fault must not turn every
    visitor's request into a 503."""
    where = (secret_arn, local_key)
    found = _kept.get(where)
    now = time.monotonic()
    if found is None or now - found[0] > KEY_KEPT_SECONDS:
        try:
            found = _kept[where] = (now, _read(secret_arn, local_key))
        except StorageUnavailable:
            if found is None:
                raise
            logger.warning("the visitor token key could not be read again: the one read before signs meanwhile")
            _kept[where] = (now - KEY_KEPT_SECONDS + REREAD_AFTER_FAULT_SECONDS, found[1])
    return found[1]


def _read(secret_arn: str, local_key: str) -> VisitorTokens:
    if secret_arn:
        try:
            value = boto3.client("secretsmanager", config=CLIENT_CONFIG).get_secret_value(SecretId=secret_arn)
        except (ClientError, BotoCoreError) as error:  # not cached: the next request tries again
            raise StorageUnavailable(f"the visitor token key could not be read ({type(error).__name__})") from error
        return VisitorTokens(value["SecretString"].encode())
    if local_key:
        return VisitorTokens(local_key.encode())
    raise StorageUnavailable("visitor tokens are not configured: VISITOR_TOKEN_SECRET_ARN is empty")


def configured_visitor_tokens() -> VisitorTokens:
    """The visitor tokens of this function's settings (the functions that take visitors call this)."""
    settings = get_settings()
    return visitor_tokens(settings.visitor_token_secret_arn, settings.visitor_token_secret)


def configured_recommendation_key() -> bytes:
    """The key this function signs and checks recommendation ids with (shared/experiments/attribution.py)."""
    return signing_key(configured_visitor_tokens().key)
