"""Send one batch request, retrying what is worth retrying, and shape its output line."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from .inputs import BatchRequest
from .media import LocalMediaError, inline_local_media
from .retry import RetryPolicy, retry_after_seconds, retryable_status

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    record: dict[str, Any]
    ok: bool
    retries: int = 0
    latency_s: float = 0.0
    usage: dict[str, Any] | None = None


def endpoint(base_url: str, url: str) -> str:
    """Join a Batch line's `url` (/v1/chat/completions) onto the base URL, which by
    OpenAI convention (OPENAI_BASE_URL) already ends in /v1."""
    base = base_url.rstrip("/")
    if base.endswith("/v1") and (url == "/v1" or url.startswith("/v1/")):
        base = base[: -len("/v1")]
    return base + url


def result_line(custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": response, "error": error}


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    return result_line(custom_id, None, {"code": code, "message": message})


def _response_part(response: httpx.Response) -> dict[str, Any]:
    try:
        body: Any = response.json()
    except ValueError:
        body = response.text  # e.g. a proxy's HTML error page; keep it readable
    request_id = response.headers.get("x-request-id") or response.headers.get("request-id")
    if not request_id and isinstance(body, dict):
        request_id = body.get("id")
    return {"status_code": response.status_code, "request_id": request_id or "", "body": body}


class Sender:
    def __init__(
        self,
        client: httpx.AsyncClient,
        base_url: str,
        policy: RetryPolicy,
        media_root: Path,
        on_retry: Callable[[BatchRequest, str], None] | None = None,
    ) -> None:
        self.client = client
        self.base_url = base_url
        self.policy = policy
        self.media_root = media_root
        self.on_retry = on_retry or (lambda request, reason: None)

    async def send(self, request: BatchRequest) -> Outcome:
        started = time.monotonic()
        try:
            body = await inline_local_media(request.body, self.media_root)
        except LocalMediaError as exc:
            return Outcome(error_line(request.custom_id, "local_media_error", str(exc)), ok=False)
        url = endpoint(self.base_url, request.url)
        retries = 0
        while True:
            reason, wait_hint, response = None, None, None
            try:
                response = await self.client.post(url, json=body)
            except httpx.TransportError as exc:  # connect/read timeouts, refused, dropped connections
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except httpx.HTTPError as exc:
                return Outcome(error_line(request.custom_id, "request_error", f"{type(exc).__name__}: {exc}"),
                               ok=False, retries=retries, latency_s=time.monotonic() - started)
            else:
                if not retryable_status(response.status_code):
                    return self._finished(request, response, retries, started)
                reason, wait_hint = f"HTTP {response.status_code}", retry_after_seconds(response)
            if retries >= self.policy.max_retries:
                return self._gave_up(request, response, reason, retries, started)
            delay = self.policy.delay(retries, wait_hint)
            logger.debug("%s: %s; retry %d in %.2fs", request.custom_id, reason, retries + 1, delay)
            retries += 1
            self.on_retry(request, reason)
            await asyncio.sleep(delay)

    def _finished(self, request: BatchRequest, response: httpx.Response, retries: int, started: float) -> Outcome:
        part = _response_part(response)
        ok = 200 <= response.status_code < 300
        usage = part["body"].get("usage") if ok and isinstance(part["body"], dict) else None
        return Outcome(result_line(request.custom_id, part, None), ok, retries, time.monotonic() - started, usage)

    def _gave_up(self, request, response: httpx.Response | None, reason: str, retries: int, started: float) -> Outcome:
        message = f"gave up after {retries} retries; last attempt: {reason}"
        if response is None:
            record = error_line(request.custom_id, "connection_error", message)
        else:
            # Keep the server's own last answer beside our verdict.
            record = result_line(request.custom_id, _response_part(response), {"code": "retries_exhausted", "message": message})
        return Outcome(record, ok=False, retries=retries, latency_s=time.monotonic() - started)
