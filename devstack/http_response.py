"""An HTTP answer of the local stack: the gateway's, and its pages'."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes
