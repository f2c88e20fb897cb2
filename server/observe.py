"""ASGI middleware that counts API requests by status and times them to their last byte."""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .metrics import Metrics


class RequestMetrics:
    def __init__(self, app: ASGIApp, metrics: Metrics, path_prefix: str = "/v1/chat/") -> None:
        self.app = app
        self.metrics = metrics
        self.path_prefix = path_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path_prefix):
            await self.app(scope, receive, send)
            return
        status = 499  # unless a response starts, the client went away first
        started = time.perf_counter()

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_and_note_status)
        except Exception:
            status = 500
            raise
        finally:
            self.metrics.in_flight.dec()
            self.metrics.requests.labels(status=str(status)).inc()
            self.metrics.latency.observe(time.perf_counter() - started)
