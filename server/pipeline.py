"""From a chat request to the engine's input: the steps /v1/chat/completions and /tokenize share.

Both must turn the same messages into the same prompt and media (and so the same
token count), so neither keeps a copy of these steps.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .engine import Engine
from .errors import BadRequest, EngineUnavailable, ModelNotFound
from .inputs import EngineInput, TileRule, load_inputs
from .prompt import PromptPlan, plan_prompt
from .schemas import ChatPrompt


def serving_engine(state: Any, model: str | None) -> Engine:
    """The live engine, if it serves `model` (None: whatever it serves, as vLLM's /tokenize allows)."""
    engine: Engine | None = state.engine
    if engine is None or not engine.is_alive():
        raise EngineUnavailable()
    if model is not None and model not in (engine.info.name, engine.info.source):
        raise ModelNotFound(model)
    return engine


def plan_chat(state: Any, engine: Engine, body: ChatPrompt) -> PromptPlan:
    """The prompt text and the media it refers to; validates limits, fetches nothing."""
    template = engine.info.template
    if body.chat_template_kwargs is not None and body.chat_template_kwargs.enable_thinking:
        thinking = engine.info.thinking_system_message
        if thinking is None:
            raise BadRequest(
                "this model has no thinking mode (InternVL3.5's Qwen3 members have one)",
                code="unsupported_parameter",
                param="chat_template_kwargs.enable_thinking",
            )
        # The thinking mode is a system message; one the request gives still wins.
        template = replace(template, default_system_message=thinking)
    return plan_prompt(body, template, state.settings)


def tile_rule(engine: Engine) -> TileRule:
    """The served model's tiling settings (its config.json)."""
    return TileRule(engine.info.min_tiles, engine.info.use_thumbnail)


async def load_chat_inputs(state: Any, engine: Engine, plan: PromptPlan) -> EngineInput:
    """Fetch, decode and tile the plan's media (off the event loop) into the engine's input."""
    return await load_inputs(plan, state.fetcher, state.executor, state.settings, tile_rule(engine), state.tile_cache)
