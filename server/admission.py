"""Authenticate and admit requests before their bodies are read.

A route dependency runs only after FastAPI has received and parsed the body, so
a client with no key could make the server buffer and parse a large body for
nothing. This middleware answers 401 (wrong or missing key) and 429 (no free
slot) from the headers alone, and holds the request's concurrency slot until
its response, a stream included, has ended or the client has gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from contextvars import ContextVar

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import ApiKeys, unauthorized
from .errors import APIError, TooManyRequests, error_response
from .limits import ConcurrencyLimit

# Never need a key: probes, the (static) API description and the playground page,
# whose API calls then send the key typed into it.
PUBLIC_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/"})
PUBLIC_PREFIXES = ("/playground/",)  # the playground's static assets
METRICS_PATH = "/metrics"
# Requests that do work worth limiting (generation, or fetching and decoding media):
# each holds one concurrency slot.
ADMITTED_ROUTES = frozenset({("POST", "/v1/chat/completions"), ("POST", "/tokenize")})
# nginx's status for "client closed request"; only ever seen in our metrics.
CLIENT_CLOSED = 499

_CLIENT_GONE: ContextVar[asyncio.Event | None] = ContextVar("client_gone", default=None)


def client_gone() -> asyncio.Event | None:
    """Set once the client of the current admitted request has disconnected.

    Work that cannot notice a disconnect by itself (fetching and decoding media)
    waits on this to stop early.
    """
    return _CLIENT_GONE.get()


class ClientClosed(APIError):
    """The client went away before its answer was ready: nobody will read this."""

    status = CLIENT_CLOSED

    def __init__(self) -> None:
        super().__init__("the client closed the connection", code="client_closed")


class Admission:
    """ASGI middleware: the key check and the concurrency slot, from the headers alone.

    Paths that match no route pass through, so unknown paths stay 404 with or
    without a key (the app's own routes are looked up on every request).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        keys: ApiKeys,
        limiter: ConcurrencyLimit,
        routes: Callable[[], Iterable],
        metrics_require_key: bool,
    ) -> None:
        self.app = app
        self.keys = keys
        self.limiter = limiter
        self.routes = routes
        self.metrics_require_key = metrics_require_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._needs_key(scope) and not self.keys.authorizes(_header(scope, b"authorization")):
            await self._refuse(unauthorized(), scope, receive, send)
            return
        if (scope["method"], scope["path"]) not in ADMITTED_ROUTES:
            await self.app(scope, receive, send)
            return
        try:
            self.limiter.acquire()
        except TooManyRequests as error:
            await self._refuse(error, scope, receive, send)
            return
        watch = _DisconnectWatch(receive)
        token = _CLIENT_GONE.set(watch.gone)
        try:
            # Returns once the response has been sent in full, a stream has
            # ended, or the client has gone and the app has given up on it.
            await self.app(scope, watch.receive, send)
        finally:
            _CLIENT_GONE.reset(token)
            self.limiter.release()
            await watch.close()

    def _needs_key(self, scope: Scope) -> bool:
        if not self.keys.required:
            return False
        path = scope["path"]
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES):
            return False
        if path == METRICS_PATH:
            return self.metrics_require_key
        return any(route.matches(scope)[0] is not Match.NONE for route in self.routes())

    @staticmethod
    async def _refuse(error: APIError, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(error)
        if _may_have_body(scope):
            # The body stays unread, which leaves the connection unusable.
            response.headers["Connection"] = "close"
        await response(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def _may_have_body(scope: Scope) -> bool:
    length = _header(scope, b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return _header(scope, b"transfer-encoding") is not None


class _DisconnectWatch:
    """Passes the body through, then listens for the client leaving.

    Once the body is complete only a disconnect can arrive, so a background
    task waits for it and sets `gone`; the app's own receive calls then wait on
    that event instead of competing for the same messages.
    """

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self.gone = asyncio.Event()
        self._listener: asyncio.Task | None = None

    async def receive(self) -> Message:
        if self._listener is not None:
            await self.gone.wait()
            return {"type": "http.disconnect"}
        message = await self._receive()
        if message["type"] == "http.disconnect":
            self.gone.set()
        elif not message.get("more_body", False):
            self._listener = asyncio.create_task(self._listen())
        return message

    async def _listen(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass
        self.gone.set()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
