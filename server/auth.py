"""Bearer API keys."""

from __future__ import annotations

import hmac

from fastapi import Request

from .errors import Unauthorized


def key_accepted(presented: str, keys: list[str]) -> bool:
    # Compare against every key without stopping early: timing then reveals
    # neither which key matched nor how much of one.
    matched = False
    for key in keys:
        matched |= hmac.compare_digest(presented.encode(), key.encode())
    return matched


def check_api_key(request: Request) -> None:
    keys: list[str] = request.app.state.settings.api_keys
    if not keys:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key_accepted(token.strip(), keys):
        raise Unauthorized(
            "missing or invalid API key: send `Authorization: Bearer <key>`",
            code="invalid_api_key",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_api_key(request: Request) -> None:
    check_api_key(request)


async def require_metrics_key(request: Request) -> None:
    if request.app.state.settings.metrics_require_key:
        check_api_key(request)
