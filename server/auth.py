"""Bearer API keys.

Keys are compared as SHA-256 digests: every comparison then covers 32 bytes
whatever the lengths of the presented and stored keys, so timing reveals
neither a key's length nor how much of it matched. Checking happens in the
`Admission` middleware (server/admission.py), before any body is read; the
route dependencies below repeat the check for routes mounted without it.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fastapi import Request

from .errors import Unauthorized


def _digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape") if isinstance(key, str) else key).digest()


class ApiKeys:
    """The accepted keys, kept only as digests."""

    def __init__(self, keys: Iterable[str]) -> None:
        self._digests = tuple(_digest(key) for key in keys)

    @property
    def required(self) -> bool:
        return bool(self._digests)

    def accepts(self, presented: str | bytes) -> bool:
        # Compare against every key without stopping early: timing then reveals
        # neither which key matched nor how much of one.
        presented_digest = _digest(presented)
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(presented_digest, digest)
        return matched

    def authorizes(self, authorization: str | bytes | None) -> bool:
        """Whether an `Authorization` header value carries an accepted bearer key."""
        if not self.required:
            return True
        if isinstance(authorization, str):
            authorization = authorization.encode("latin-1", "replace")
        scheme, _, token = (authorization or b"").partition(b" ")
        token = token.strip()
        return scheme.lower() == b"bearer" and bool(token) and self.accepts(token)


def unauthorized() -> Unauthorized:
    return Unauthorized(
        "missing or invalid API key: send `Authorization: Bearer <key>`",
        code="invalid_api_key",
        headers={"WWW-Authenticate": "Bearer"},
    )


def key_accepted(presented: str, keys: list[str]) -> bool:
    return ApiKeys(keys).accepts(presented)


def check_api_key(request: Request) -> None:
    keys: ApiKeys | None = getattr(request.app.state, "api_keys", None)
    if keys is None:
        keys = ApiKeys(request.app.state.settings.api_keys)
    if not keys.authorizes(request.headers.get("authorization")):
        raise unauthorized()


async def require_api_key(request: Request) -> None:
    check_api_key(request)


async def require_metrics_key(request: Request) -> None:
    if request.app.state.settings.metrics_require_key:
        check_api_key(request)
