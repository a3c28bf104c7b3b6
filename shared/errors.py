"""Domain errors. shared.api maps each to one HTTP status, in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the API turns into a 4xx/5xx JSON response."""

    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    """The request is valid but the resource's state forbids it (e.g. activating a rejected model)."""

    code = "conflict"


class Forbidden(DomainError):
    """The caller proved who they are, but not a right to this (another customer's visitor token)."""

    code = "forbidden"


class TooManyRequests(DomainError):
    """A client token's event budget for the window is spent."""

    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class PayloadTooLarge(DomainError):
    code = "payload_too_large"


class StorageUnavailable(DomainError):
    """DynamoDB or S3 throttled or unreachable after retries: the client should retry later."""

    code = "storage_unavailable"

    def __init__(self, message: str, *, retry_after_seconds: int = 2) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

