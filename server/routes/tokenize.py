"""POST /tokenize and /detokenize, with the request and response shapes of vLLM's own endpoints.

A `messages` request goes through the chat route's own steps (prompt planning,
media loading) and then vLLM's input processing, so its `count` is the
`usage.prompt_tokens` the same chat request would report.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ..auth import require_api_key
from ..errors import documented_errors
from ..pipeline import load_chat_inputs, plan_chat, serving_engine
from ..schemas import (
    DetokenizeRequest,
    DetokenizeResponse,
    TokenizeChatRequest,
    TokenizeRequest,
    TokenizeResponse,
)

router = APIRouter(tags=["tokenize"], dependencies=[Depends(require_api_key)])

_ERRORS = documented_errors({
    400: "Invalid fields; bad content (media, prompt, token ids)",
    401: "Missing or wrong API key",
    404: "Unknown model",
    503: "Engine not available",
})


@router.post(
    "/tokenize",
    response_model=TokenizeResponse,
    summary="Tokenize a prompt, or a conversation as /v1/chat/completions would (media tokens included)",
    responses=_ERRORS,
)
async def tokenize(body: TokenizeRequest, request: Request) -> TokenizeResponse:
    state = request.app.state
    engine = serving_engine(state, body.model)
    if isinstance(body, TokenizeChatRequest):
        plan = plan_chat(state, engine, body)
        engine_input = await load_chat_inputs(state, engine, plan)
        token_ids = await engine.tokenize(engine_input.prompt, add_special_tokens=body.add_special_tokens)
    else:
        token_ids = await engine.tokenize({"prompt": body.prompt}, add_special_tokens=body.add_special_tokens)
    return TokenizeResponse(
        count=len(token_ids),
        max_model_len=engine.info.max_model_len,
        tokens=token_ids,
        token_strs=engine.token_strings(token_ids) if body.return_token_strs else None,
    )


@router.post(
    "/detokenize",
    response_model=DetokenizeResponse,
    summary="Turn token ids back into text",
    responses=_ERRORS,
)
async def detokenize(body: DetokenizeRequest, request: Request) -> DetokenizeResponse:
    engine = serving_engine(request.app.state, body.model)
    return DetokenizeResponse(prompt=await engine.detokenize(body.tokens))
