"""POST /v1/chat/completions: plan the prompt, load media, generate, answer (or stream)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from openai.types.chat import ChatCompletion

from .. import responses
from ..auth import require_api_key
from ..engine import Engine
from ..errors import APIError, EngineUnavailable, ModelNotFound, error_body
from ..inputs import EngineInput, TileRule, load_inputs
from ..prompt import plan_prompt
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
    engine: Engine | None = state.engine
    if engine is None or not engine.is_alive():
        raise EngineUnavailable()
    info = engine.info
    if body.model not in (info.name, info.source):
        raise ModelNotFound(body.model)
    settings = state.settings
    started = time.perf_counter()
    plan = plan_prompt(body, info.template, settings)
    sampling = sampling_kwargs(body, info.template, max_n=settings.max_n)

    state.limiter.acquire()
    handed_over = False
    try:
        engine_input = await load_inputs(
            plan, state.fetcher, state.executor, settings, TileRule(info.min_tiles, info.use_thumbnail)
        )
        _record_media(state.metrics, engine_input)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        call = _Call(engine, body, engine_input, sampling, request_id, info.name, started, state.metrics)
        if body.stream:
            response = await call.stream(release=state.limiter.release)
            handed_over = True
            return response
        return await call.complete(request)
    finally:
        if not handed_over:
            state.limiter.release()


def _record_media(metrics: Any, engine_input: EngineInput) -> None:
    metrics.images.inc(len(engine_input.tiles_per_image))
    metrics.tiles.inc(sum(engine_input.tiles_per_image))
    metrics.frames.inc(sum(engine_input.frames_per_video))
    metrics.preprocess_seconds.observe(engine_input.preprocess_seconds)


class _Call:
    """One generation: the engine stream and how to answer with it."""

    def __init__(
        self,
        engine: Engine,
        body: ChatCompletionRequest,
        engine_input: EngineInput,
        sampling: dict[str, Any],
        request_id: str,
        model: str,
        started: float,
        metrics: Any,
    ) -> None:
        self.engine = engine
        self.body = body
        self.input = engine_input
        self.sampling = sampling
        self.request_id = request_id
        self.model = model
        self.started = started
        self.metrics = metrics
        self.created = int(time.time())
        self.top_logprobs = (body.top_logprobs or 0) if body.logprobs else None

    def _outputs(self, *, stream: bool) -> AsyncIterator[Any]:
        return self.engine.generate(self.input.prompt, self.sampling, self.request_id, stream=stream)

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
        completion = responses.chat_completion(
            request_id=self.request_id,
            model=self.model,
            created=self.created,
            completions=completions,
            prompt_tokens=prompt_tokens,
            image_sizes=self.input.image_sizes,
            top_logprobs=self.top_logprobs,
        )
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

    async def stream(self, release) -> StreamingResponse:
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
                await outputs.aclose()  # aborts in the engine if it had not finished
            finally:
                release()

        return _ClosingStreamingResponse(
            events,
            on_close=close,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _events(self, first: Any, outputs: AsyncIterator[Any]) -> AsyncIterator[str]:
        texts: dict[int, str] = {}
        token_counts: dict[int, int] = {}
        prompt_tokens = 0
        try:
            roles = [responses.chunk_choice(i, role="assistant", content="") for i in range(self.body.n)]
            yield self._sse(responses.chunk(request_id=self.request_id, model=self.model, created=self.created, choices=roles))
            output = first
            while output is not None:
                if output.prompt_token_ids is not None:
                    prompt_tokens = len(output.prompt_token_ids)
                choices = []
                for completion in output.outputs:
                    index = completion.index
                    texts[index] = texts.get(index, "") + completion.text
                    token_counts[index] = token_counts.get(index, 0) + len(completion.token_ids)
                    if not completion.text and not completion.token_ids and completion.finish_reason is None:
                        continue
                    logprobs = None
                    if self.top_logprobs is not None:
                        logprobs = responses.token_logprobs(completion.token_ids, completion.logprobs, self.top_logprobs)
                    boxes = None
                    if completion.finish_reason is not None:
                        boxes = responses.grounding(texts[index], self.input.image_sizes)
                    choices.append(
                        responses.chunk_choice(
                            index,
                            content=completion.text,
                            finish=completion.finish_reason,
                            logprobs=logprobs,
                            boxes=boxes,
                        )
                    )
                if choices:
                    yield self._sse(
                        responses.chunk(request_id=self.request_id, model=self.model, created=self.created, choices=choices)
                    )
                output = await anext(outputs, None)
            completion_tokens = sum(token_counts.values())
            self._count_tokens(prompt_tokens, completion_tokens)
            if self.body.stream_options and self.body.stream_options.include_usage:
                yield self._sse(
                    responses.chunk(
                        request_id=self.request_id,
                        model=self.model,
                        created=self.created,
                        choices=[],
                        usage_=responses.usage(prompt_tokens, completion_tokens),
                    )
                )
        except APIError as error:
            # Headers are gone; the error travels as an SSE event, as OpenAI does.
            yield "data: " + json.dumps(error_body(error.message, error.type, param=error.param, code=error.code)) + "\n\n"
        yield "data: [DONE]\n\n"

    @staticmethod
    def _sse(chunk: Any) -> str:
        return f"data: {chunk.model_dump_json()}\n\n"


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
