"""Request body size limit and the concurrent-request cap."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import PayloadTooLarge, TooManyRequests, error_response


class BodySizeLimit:
    """Answers 413 before the app sees a body over `max_bytes`.

    A declared Content-Length is judged up front; a chunked body is read
    (never more than the limit) and then replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._reject(scope, receive, send)
                return
            if not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(
            f"request body exceeds the limit of {self.max_bytes} bytes", code="request_too_large"
        )
        response = error_response(error)
        response.headers["Connection"] = "close"  # the unread body makes the connection unusable
        await response(scope, receive, send)


class ConcurrencyLimit:
    """At most `limit` requests at once; the next one is refused at once, not queued.

    Single-threaded asyncio needs no lock: acquire and release never await.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> None:
        if self.active >= self.limit:
            raise TooManyRequests(
                f"the server is at its limit of {self.limit} concurrent requests; retry shortly", retry_after_s=1
            )
        self.active += 1

    def release(self) -> None:
        self.active -= 1
