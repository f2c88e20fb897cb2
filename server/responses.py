"""Engine outputs -> OpenAI response objects (the `openai` package's own types)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessage, ChatCompletionTokenLogprob
from openai.types.chat.chat_completion import Choice, ChoiceLogprobs
from openai.types.chat.chat_completion_chunk import Choice as ChunkChoice
from openai.types.chat.chat_completion_chunk import ChoiceDelta
from openai.types.chat.chat_completion_chunk import ChoiceLogprobs as ChunkLogprobs
from openai.types.chat.chat_completion_token_logprob import TopLogprob
from openai.types.completion_usage import CompletionUsage, PromptTokensDetails

from preprocessing import parse_grounding

# JSON has no -inf; OpenAI reports impossible tokens as -9999.
_MIN_LOGPROB = -9999.0
# vLLM's "abort" and "error" are not answers: server/routes/chat.py turns them into
# errors before anything is encoded, so they have no entry here.
_FINISH_REASONS = {"stop": "stop", "length": "length"}


def finish_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    return _FINISH_REASONS[reason]


def grounding(text: str, image_sizes: list[tuple[int, int]]) -> list[dict[str, Any]] | None:
    """Boxes in `text`, in pixels of the last image (the one a grounding question is about)."""
    if "<box>" not in text or not image_sizes:
        return None
    width, height = image_sizes[-1]
    index = len(image_sizes) - 1
    return [
        {"label": box.label, "box": [box.x1, box.y1, box.x2, box.y2], "image_index": index}
        for box in parse_grounding(text, width, height)
    ]


def token_logprobs(token_ids: Iterable[int], steps: Iterable[dict] | None, top_n: int) -> list[ChatCompletionTokenLogprob] | None:
    if steps is None:
        return None
    content = []
    for token_id, step in zip(token_ids, steps):
        chosen = step.get(token_id)
        ranked = sorted(step.values(), key=lambda lp: lp.rank if lp.rank is not None else 0)[:top_n]
        content.append(
            ChatCompletionTokenLogprob(
                token=_token_text(chosen),
                logprob=_clamp(chosen.logprob if chosen else _MIN_LOGPROB),
                bytes=list(_token_text(chosen).encode()),
                top_logprobs=[
                    TopLogprob(token=_token_text(lp), logprob=_clamp(lp.logprob), bytes=list(_token_text(lp).encode()))
                    for lp in ranked
                ],
            )
        )
    return content


def _token_text(logprob: Any) -> str:
    return (logprob.decoded_token if logprob is not None else None) or ""


def _clamp(value: float) -> float:
    return max(float(value), _MIN_LOGPROB)


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> CompletionUsage:
    """OpenAI's usage; `cached_tokens`: prompt tokens whose KV came from vLLM's prefix cache."""
    return CompletionUsage(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        total_tokens=prompt_tokens + completion_tokens,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=cached_tokens),
    )


def chat_completion(
    *,
    request_id: str,
    model: str,
    created: int,
    completions: list[Any],
    prompt_tokens: int,
    cached_tokens: int,
    image_sizes: list[tuple[int, int]],
    top_logprobs: int | None,
) -> ChatCompletion:
    choices = []
    for completion in sorted(completions, key=lambda c: c.index):
        message = ChatCompletionMessage(role="assistant", content=completion.text)
        boxes = grounding(completion.text, image_sizes)
        if boxes is not None:
            message.grounding = boxes  # extension field; the SDK keeps unknown fields
        logprobs = None
        if top_logprobs is not None:
            logprobs = ChoiceLogprobs(content=token_logprobs(completion.token_ids, completion.logprobs, top_logprobs))
        choices.append(
            Choice(
                index=completion.index,
                message=message,
                finish_reason=finish_reason(completion.finish_reason),
                logprobs=logprobs,
            )
        )
    completion_tokens = sum(len(c.token_ids) for c in completions)
    return ChatCompletion(
        id=request_id,
        object="chat.completion",
        created=created,
        model=model,
        choices=choices,
        usage=usage(prompt_tokens, completion_tokens, cached_tokens),
    )


def chunk(
    *, request_id: str, model: str, created: int, choices: list[ChunkChoice], usage_: CompletionUsage | None = None
) -> ChatCompletionChunk:
    return ChatCompletionChunk(
        id=request_id, object="chat.completion.chunk", created=created, model=model, choices=choices, usage=usage_
    )


def chunk_choice(
    index: int,
    *,
    content: str | None = None,
    role: str | None = None,
    finish: str | None = None,
    logprobs: list[ChatCompletionTokenLogprob] | None = None,
    boxes: list[dict[str, Any]] | None = None,
) -> ChunkChoice:
    delta = ChoiceDelta(role=role, content=content)
    if boxes is not None:
        delta.grounding = boxes
    return ChunkChoice(
        index=index,
        delta=delta,
        finish_reason=finish_reason(finish),
        logprobs=ChunkLogprobs(content=logprobs) if logprobs is not None else None,
    )


def to_json(model: Any) -> dict[str, Any]:
    return model.model_dump(mode="json", exclude_unset=False)
