"""POST /v1/chat/completions: plan the prompt, load media, generate, answer (or stream)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion

from .. import responses
from ..auth import require_api_key
from ..chat_encoding import DONE_EVENT, ChatEncoder
from ..engine import Engine
from ..errors import APIError
from ..inputs import EngineInput
from ..pipeline import load_chat_inputs, plan_chat, serving_engine
from ..sampling import sampling_kwargs
from ..schemas import ChatCompletionRequest

router = APIRouter(tags=["chat"])

# How often a non-streaming request checks whether its client has gone.
_DISCONNECT_POLL_S = 0.5
# nginx's status for "client closed request"; only ever seen in our metrics.
_CLIENT_CLOSED = 499


@router.post(
    "/v1/chat/completions",
    dependencies=[Depends(require_api_key)],
    response_model=ChatCompletion,
    summary="Create a chat completion (OpenAI-compatible; streams SSE when `stream` is true)",
    responses={
        400: {"description": "Bad content (media, prompt, parameters)"},
        401: {"description": "Missing or wrong API key"},
        404: {"description": "Unknown model"},
        413: {"description": "Request body or media too large"},
        422: {"description": "Invalid fields"},
        429: {"description": "Too many concurrent requests (see Retry-After)"},
        503: {"description": "Engine not available"},
    },
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = request.app.state
    engine = serving_engine(state, body.model)
    info = engine.info
    started = time.perf_counter()
    plan = plan_chat(state, engine, body)
    sampling = sampling_kwargs(body, info.template, max_n=state.settings.max_n)

    # The concurrency slot was taken before the body was read (server/admission.py).
    engine_input = await load_chat_inputs(state, engine, plan)
    _record_media(state.metrics, engine_input)
    request_id = f"chatcmpl-{uuid.uuid4().hex}"
    encoder = ChatEncoder(body, request_id, info.name, engine_input.image_sizes)
    call = _Call(engine, engine_input, sampling, encoder, started, state.metrics)
    if body.stream:
        return await call.stream()
    return await call.complete(request)


def _record_media(metrics: Any, engine_input: EngineInput) -> None:
    metrics.images.inc(len(engine_input.tiles_per_image))
    metrics.tiles.inc(sum(engine_input.tiles_per_image))
    metrics.frames.inc(sum(engine_input.frames_per_video))
    metrics.preprocess_seconds.observe(engine_input.preprocess_seconds)


class _Call:
    """One generation: drives the engine stream, watches the client, records metrics.

    What the client receives is the encoder's business (server/chat_encoding.py).
    """

    def __init__(
        self,
        engine: Engine,
        engine_input: EngineInput,
        sampling: dict[str, Any],
        encoder: ChatEncoder,
        started: float,
        metrics: Any,
    ) -> None:
        self.engine = engine
        self.input = engine_input
        self.sampling = sampling
        self.encoder = encoder
        self.started = started
        self.metrics = metrics

    def _outputs(self, *, stream: bool) -> AsyncIterator[Any]:
        return self.engine.generate(self.input.prompt, self.sampling, self.encoder.request_id, stream=stream)

    def _count_tokens(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.completion_tokens.inc(completion_tokens)

    async def complete(self, request: Request) -> Response:
        submitted = time.perf_counter()
        task = asyncio.create_task(self._collect())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_DISCONNECT_POLL_S)
                if done:
                    break
                if await request.is_disconnected():
                    task.cancel()  # cancelling the engine stream aborts the request there
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    return Response(status_code=_CLIENT_CLOSED)
        finally:
            if not task.done():
                task.cancel()
        prompt_tokens, completions, first_token_latency = task.result()
        if first_token_latency:
            self.metrics.time_to_first_token.observe(submitted - self.started + first_token_latency)
        completion = self.encoder.completion(prompt_tokens, completions)
        self._count_tokens(prompt_tokens, completion.usage.completion_tokens)
        return JSONResponse(responses.to_json(completion))

    async def _collect(self) -> tuple[int, list[Any], float | None]:
        completions: dict[int, Any] = {}
        prompt_tokens = 0
        first_token_latency = None
        async for output in self._outputs(stream=False):
            if output.prompt_token_ids is not None:
                prompt_tokens = len(output.prompt_token_ids)
            for completion in output.outputs:
                completions[completion.index] = completion
            stats = getattr(output, "metrics", None)
            if stats is not None and getattr(stats, "first_token_latency", 0):
                first_token_latency = stats.first_token_latency
        return prompt_tokens, list(completions.values()), first_token_latency

    async def stream(self) -> StreamingResponse:
        outputs = self._outputs(stream=True)
        try:
            # Errors the engine raises on admission (prompt too long, bad media)
            # still get a proper status: nothing has been sent yet.
            first = await anext(outputs, None)
        except BaseException:
            await outputs.aclose()
            raise
        self.metrics.time_to_first_token.observe(time.perf_counter() - self.started)
        events = self._events(first, outputs)

        async def close() -> None:
            try:
                await events.aclose()
            finally:
                await outputs.aclose()  # aborts in the engine if it had not finished

        return _ClosingStreamingResponse(
            events,
            on_close=close,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, first: Any, outputs: AsyncIterator[Any]) -> AsyncIterator[str]:
        encoder = self.encoder
        token_counts: dict[int, int] = {}
        prompt_tokens = 0
        try:
            yield encoder.opening_event()
            output = first
            while output is not None:
                if output.prompt_token_ids is not None:
                    prompt_tokens = len(output.prompt_token_ids)
                for completion in output.outputs:
                    token_counts[completion.index] = token_counts.get(completion.index, 0) + len(completion.token_ids)
                event = encoder.delta_event(output)
                if event is not None:
                    yield event
                output = await anext(outputs, None)
            completion_tokens = sum(token_counts.values())
            self._count_tokens(prompt_tokens, completion_tokens)
            usage = encoder.usage_event(prompt_tokens, completion_tokens)
            if usage is not None:
                yield usage
        except APIError as error:
            yield encoder.error_event(error)
        yield DONE_EVENT


class _ClosingStreamingResponse(StreamingResponse):
    """Runs `on_close` however the response ends, even if the body never started.

    A client that disconnects before the first chunk leaves the body generator
    unstarted, and its own `finally` would never run.
    """

    def __init__(self, content: AsyncIterator[str], *, on_close, **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await asyncio.shield(self._on_close())
