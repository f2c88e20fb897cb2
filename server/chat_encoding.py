"""How one chat completion is written out: a `ChatCompletion` body, or SSE chunks.

Encoding only: it never touches the engine, the client connection or the metrics
(server/routes/chat.py orchestrates those). Per-choice text is kept here because
grounding boxes are parsed from a choice's whole answer.
"""

from __future__ import annotations

import json
import time
from typing import Any

from . import responses
from .errors import APIError, error_body
from .schemas import ChatCompletionRequest

DONE_EVENT = "data: [DONE]\n\n"


class ChatEncoder:
    def __init__(self, body: ChatCompletionRequest, request_id: str, model: str, image_sizes: list[tuple[int, int]]):
        self.request_id = request_id
        self.model = model
        self.image_sizes = image_sizes
        self.choices = body.n
        self.include_usage = bool(body.stream_options and body.stream_options.include_usage)
        self.top_logprobs = (body.top_logprobs or 0) if body.logprobs else None
        self.created = int(time.time())
        self._texts: dict[int, str] = {}

    def completion(self, prompt_tokens: int, cached_tokens: int, completions: list[Any]) -> Any:
        """The whole answer, as the openai package's `ChatCompletion`."""
        return responses.chat_completion(
            request_id=self.request_id,
            model=self.model,
            created=self.created,
            completions=completions,
            prompt_tokens=prompt_tokens,
            cached_tokens=cached_tokens,
            image_sizes=self.image_sizes,
            top_logprobs=self.top_logprobs,
        )

    def opening_event(self) -> str:
        roles = [responses.chunk_choice(i, role="assistant", content="") for i in range(self.choices)]
        return self._event(roles)

    def delta_event(self, output: Any) -> str | None:
        """One engine step's new text (None when it carries nothing to send)."""
        choices = []
        for completion in output.outputs:
            index = completion.index
            self._texts[index] = self._texts.get(index, "") + completion.text
            if not completion.text and not completion.token_ids and completion.finish_reason is None:
                continue
            logprobs = None
            if self.top_logprobs is not None:
                logprobs = responses.token_logprobs(completion.token_ids, completion.logprobs, self.top_logprobs)
            boxes = None
            if completion.finish_reason is not None:
                boxes = responses.grounding(self._texts[index], self.image_sizes)
            choices.append(
                responses.chunk_choice(
                    index, content=completion.text, finish=completion.finish_reason, logprobs=logprobs, boxes=boxes
                )
            )
        return self._event(choices) if choices else None

    def usage_event(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> str | None:
        """The final usage chunk, if the client asked for one (`stream_options.include_usage`)."""
        if not self.include_usage:
            return None
        return self._event([], usage_=responses.usage(prompt_tokens, completion_tokens, cached_tokens))

    @staticmethod
    def error_event(error: APIError) -> str:
        # Headers are gone; the error travels as an SSE event, as OpenAI does.
        return "data: " + json.dumps(error_body(error.message, error.type, param=error.param, code=error.code)) + "\n\n"

    def _event(self, choices: list[Any], **extra: Any) -> str:
        chunk = responses.chunk(request_id=self.request_id, model=self.model, created=self.created, choices=choices, **extra)
        return f"data: {chunk.model_dump_json()}\n\n"
