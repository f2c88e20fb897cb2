"""One id per request: the client's `X-Request-Id` if usable, else ours.

The id comes back on every response (401, 413, 429, 404 and 500 included), names the
request in our log lines (`RequestIdLogFilter`) and in the engine: the chat completion's
`id`, which is also vLLM's request id, is `chatcmpl-<request id>`.

A client's id is used when it is 1 to 128 printable ASCII characters without spaces;
anything else (too long, control characters that could forge log lines) is replaced
by ours rather than refused: a correlation header should never fail a request, and
the response header says which id was used. Two requests may carry the same id: vLLM
makes its internal ids unique, and a request is only ever aborted by its internal id
(server/engine.py).
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar

from fastapi import FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = "X-Request-Id"
_HEADER_KEY = HEADER.lower().encode()
_USABLE = re.compile(r"[\x21-\x7e]{1,128}")
# "%(request_id)s" in a log format shows it; "-" outside any request.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"

_CURRENT: ContextVar[str | None] = ContextVar("request_id", default=None)


def request_id(request: Request) -> str:
    """The id of `request`, as the middleware chose it."""
    return request.scope["state"]["request_id"]


class RequestIdLogFilter(logging.Filter):
    """Gives every log record a `request_id`: the request being served in this context, or "-"."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _CURRENT.get() or "-"
        return True


def usable_client_id(value: bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("latin-1")
    return text if _USABLE.fullmatch(text) else None


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope["headers"]).get(_HEADER_KEY)
        chosen = usable_client_id(sent) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = chosen
        token = _CURRENT.set(chosen)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)[HEADER] = chosen
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _CURRENT.reset(token)


def install(app: FastAPI) -> None:
    """Wrap the app's whole middleware stack, Starlette's error middleware included.

    `add_middleware` would put us inside that middleware, so its 500s, and the log
    line of the error behind them, would go out without the id.
    """
    build = app.build_middleware_stack
    app.build_middleware_stack = lambda: RequestIdMiddleware(build())
