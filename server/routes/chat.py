"""POST /v1/chat/completions: plan the prompt, load media, generate, answer (or stream)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion

from .. import responses
from ..auth import require_api_key
from ..chat_encoding import DONE_EVENT, ChatEncoder
from ..engine import Engine
from ..errors import APIError, GenerationAborted, GenerationFailed, documented_errors
from ..inputs import EngineInput
from ..pipeline import load_chat_inputs, plan_chat, serving_engine
from ..request_ids import request_id as request_id_of
from ..sampling import sampling_kwargs
from ..schemas import ChatCompletionRequest

router = APIRouter(tags=["chat"])
logger = logging.getLogger(__name__)

# How often a non-streaming request checks whether its client has gone.
_DISCONNECT_POLL_S = 0.5
# nginx's status for "client closed request"; only ever seen in our metrics.
_CLIENT_CLOSED = 499
# vLLM finish reasons that end a generation without an answer.
_FAILURES = {"abort": GenerationAborted, "error": GenerationFailed}


@router.post(
    "/v1/chat/completions",
    dependencies=[Depends(require_api_key)],
    response_model=ChatCompletion,
    summary="Create a chat completion (OpenAI-compatible; streams SSE when `stream` is true)",
    responses=documented_errors({
        400: "Invalid, unsupported or unknown fields; bad content (media, prompt, parameters)",
        401: "Missing or wrong API key",
        404: "Unknown model",
        413: "Request body or media too large",
        429: "Too many concurrent requests (see Retry-After)",
        500: "The engine failed the generation (`generation_failed`)",
        503: "Engine not available, or the generation was aborted (`generation_aborted`, e.g. at shutdown)",
    }),
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
    # Also vLLM's request id: the X-Request-Id ties the answer, our logs and the engine's together.
    completion_id = f"chatcmpl-{request_id_of(request)}"
    encoder = ChatEncoder(body, completion_id, info.name, engine_input.image_sizes)
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

    async def _outputs(self, *, stream: bool) -> AsyncIterator[Any]:
        """The engine's outputs, up to a finished one; a generation it gave up on is an error, not an answer."""
        generation = self.engine.generate(self.input.prompt, self.sampling, self.encoder.request_id, stream=stream)
        # aclosing: closing this generator must close the engine's at once (that aborts it there).
        async with contextlib.aclosing(generation) as outputs:
            finished = False
            async for output in outputs:
                for completion in output.outputs:
                    failure = _FAILURES.get(completion.finish_reason)
                    if failure is not None:
                        raise failure()
                finished = output.finished
                yield output
            if not finished:
                raise GenerationAborted()

    def _record_answer(self, prompt_tokens: int, completion_tokens: int) -> None:
        self.metrics.prompt_tokens.inc(prompt_tokens)
        self.metrics.completion_tokens.inc(completion_tokens)
        # One line per answered request; the log format adds its X-Request-Id.
        logger.info(
            "chat completion: %d prompt + %d completion tokens, %d images (%d tiles), %d videos, %.2f s",
            prompt_tokens, completion_tokens, len(self.input.tiles_per_image),
            sum(self.input.tiles_per_image), len(self.input.frames_per_video), time.perf_counter() - self.started,
        )

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
        collected = task.result()
        if collected.first_token_latency:
            self.metrics.time_to_first_token.observe(submitted - self.started + collected.first_token_latency)
        completion = self.encoder.completion(
            collected.prompt_tokens, collected.cached_tokens, list(collected.completions.values())
        )
        self._record_answer(collected.prompt_tokens, completion.usage.completion_tokens)
        return JSONResponse(responses.to_json(completion))

    async def _collect(self) -> _Collected:
        collected = _Collected()
        async for output in self._outputs(stream=False):
            collected.add(output)
            stats = getattr(output, "metrics", None)
            if stats is not None and getattr(stats, "first_token_latency", 0):
                collected.first_token_latency = stats.first_token_latency
        return collected

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
        counts = _Collected()
        try:
            yield encoder.opening_event()
            output = first
            while output is not None:
                counts.add(output)
                event = encoder.delta_event(output)
                if event is not None:
                    yield event
                output = await anext(outputs, None)
            self._record_answer(counts.prompt_tokens, counts.completion_tokens)
            usage = encoder.usage_event(counts.prompt_tokens, counts.completion_tokens, counts.cached_tokens)
            if usage is not None:
                yield usage
        except APIError as error:
            yield encoder.error_event(error)
        yield DONE_EVENT


@dataclass
class _Collected:
    """What a generation's outputs add up to: its choices and token counts."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    completions: dict[int, Any] = field(default_factory=dict)
    completion_tokens: int = 0
    first_token_latency: float | None = None

    def add(self, output: Any) -> None:
        # Outputs carry only new tokens: each streamed step's (DELTA), or the one final output.
        if output.prompt_token_ids is not None:
            self.prompt_tokens = len(output.prompt_token_ids)
        # vLLM's count of prompt tokens served from its prefix cache (known after prefill).
        cached = getattr(output, "num_cached_tokens", None)
        if cached is not None:
            self.cached_tokens = cached
        for completion in output.outputs:
            self.completion_tokens += len(completion.token_ids)
            self.completions[completion.index] = completion


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
