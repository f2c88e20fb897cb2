"""Request models for the chat API. Responses are the `openai` package's own types.

Extensions to OpenAI's request (all optional):

- image part: `{"type": "image_url", "image_url": {"url", "detail", "max_tiles"}}`
  where `max_tiles` overrides the tile budget (`detail: "low"` means 1 tile).
- video part by file: `{"type": "video_url", "video_url": {"url", "num_frames", "start", "end"}}`
  (`start`/`end` in seconds bound the sampled range).
- video part by frames: `{"type": "video_frames", "video_frames": {"urls": [image URLs]}}`,
  or equally `{"type": "video_url", "video_url": {"frames": [image URLs]}}`.
- request level: `max_tiles`, `num_frames` (defaults for every part),
  `history_max_tiles` (budget of images in earlier turns; default 1, as the
  official multi-turn demo), `top_k`, `min_p`, `repetition_penalty`,
  `ignore_eos`, and `structured_outputs` / `guided_regex` / `guided_choice` / `guided_json`.

A chat request's top-level fields are checked here, in one place: OpenAI's fields that
only inform (`user`, `metadata`, `store`, ...) are accepted and have no effect, as in
vLLM; those that would change the answer in a way this server cannot honour (`audio`,
`tools`, ...) are a 400 naming the field; a name that is in neither list, nor an
extension above, is a 400 "Unrecognized request argument", as at OpenAI. Nested
objects (messages, parts) ignore fields they do not know.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, StringConstraints, Tag, model_validator
from pydantic_core import PydanticCustomError

from preprocessing import MAX_FRAMES, MAX_TILES

from .errors import UNSUPPORTED_PARAMETER


class _Model(BaseModel):
    # Clients (the official SDK included) send fields we have no use for.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Model):
    type: Literal["text"]
    text: str


class ImageURL(_Model):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high"] = "auto"
    max_tiles: int | None = Field(None, ge=1, le=MAX_TILES)


class ImagePart(_Model):
    type: Literal["image_url"]
    image_url: ImageURL


class VideoURL(_Model):
    url: str | None = Field(None, min_length=1)
    frames: list[Annotated[str, Field(min_length=1)]] | None = Field(None, min_length=1, max_length=MAX_FRAMES)
    num_frames: int | None = Field(None, ge=1, le=MAX_FRAMES)
    start: float | None = Field(None, ge=0)
    end: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> VideoURL:
        if (self.url is None) == (self.frames is None):
            raise ValueError("give exactly one of `url` (a video file) or `frames` (image URLs)")
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError("`start` must not be after `end`")
        return self


class VideoPart(_Model):
    type: Literal["video_url"]
    video_url: VideoURL


class VideoFrames(_Model):
    urls: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, max_length=MAX_FRAMES)


class VideoFramesPart(_Model):
    type: Literal["video_frames"]
    video_frames: VideoFrames


UserPart = Annotated[TextPart | ImagePart | VideoPart | VideoFramesPart, Field(discriminator="type")]


class SystemMessage(_Model):
    role: Literal["system", "developer"]
    content: str | list[TextPart]


class UserMessage(_Model):
    role: Literal["user"]
    content: str | list[UserPart]


class AssistantMessage(_Model):
    role: Literal["assistant"]
    content: str | list[TextPart] | None = None


class ToolMessage(_Model):
    role: Literal["tool", "function"]
    content: Any = None


Message = Annotated[SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")]


class StreamOptions(_Model):
    include_usage: bool = False
    # include_obfuscation (OpenAI pads its chunks) is ignored: we add no padding.


class JSONSchemaFormat(_Model):
    name: str = "response"
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JSONSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("`json_schema` is required when type is 'json_schema'")
        return self


class StructuredOutputs(_Model):
    """vLLM's structured outputs: one constraint, and/or options for `response_format`'s."""

    regex: str | None = None
    choice: list[str] | None = Field(None, min_length=1)
    json_: dict[str, Any] | str | None = Field(None, alias="json")
    grammar: str | None = None
    # Passed on to vLLM, whose xgrammar/guidance backends honour it only engine-wide
    # (see --structured-outputs-disable-any-whitespace).
    disable_any_whitespace: bool = False

    @model_validator(mode="after")
    def _at_most_one(self) -> StructuredOutputs:
        if len(self.constraint()) > 1:
            raise ValueError("give at most one of regex, choice, json, grammar")
        return self

    def constraint(self) -> dict[str, Any]:
        given = {"regex": self.regex, "choice": self.choice, "json": self.json_, "grammar": self.grammar}
        return {name: value for name, value in given.items() if value is not None}


class ChatTemplateKwargs(BaseModel):
    """vLLM's `chat_template_kwargs`, as far as InternVL's templates have switches."""

    model_config = ConfigDict(extra="forbid")

    enable_thinking: bool = Field(
        False,
        description="InternVL3.5 (Qwen3 backbones): answer in thinking mode, which is the model card's "
        "thinking system prompt; a system message of the request's own takes its place.",
    )


class ChatPrompt(_Model):
    """What decides a chat request's prompt: the messages and the media extensions.

    Shared by /v1/chat/completions and /tokenize, so both plan the same prompt.
    """

    messages: list[Message] = Field(min_length=1)

    # Media extensions.
    max_tiles: int | None = Field(None, ge=1, le=MAX_TILES)
    history_max_tiles: int | None = Field(None, ge=1, le=MAX_TILES)
    num_frames: int | None = Field(None, ge=1, le=MAX_FRAMES)
    chat_template_kwargs: ChatTemplateKwargs | None = None


# How much work one request's bias may ask of every decoding step.
MAX_LOGIT_BIAS_ENTRIES = 1024

TokenId = Annotated[str, StringConstraints(pattern=r"^[0-9]{1,10}$")]
Bias = Annotated[float, Field(ge=-100, le=100)]

_TOOLS = "tools are not supported by this server (only `tool_choice: \"none\"`)"
# OpenAI's fields that would change the answer and that this server cannot honour:
# using one is a 400 naming it. `_asks_for` says when a value asks for something
# (a null, `modalities: ["text"]`, or tools with `tool_choice: "none"` ask nothing).
_UNSUPPORTED: dict[str, str] = {
    "audio": "audio output is not supported",
    "modalities": 'only text output is supported (`modalities: ["text"]`)',
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "reasoning_effort": "this model has no reasoning mode",
    "verbosity": "`verbosity` is not supported",
    "moderation": "moderation is not supported",
    "tools": _TOOLS,
    "tool_choice": _TOOLS,
    "functions": _TOOLS,
    "function_call": _TOOLS,
}


class ChatCompletionRequest(ChatPrompt):
    # Unknown top-level fields are refused rather than silently ignored.
    model_config = ConfigDict(extra="forbid")

    model: str

    stream: bool = False
    stream_options: StreamOptions | None = None

    # Sampling.
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=-1)
    min_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repetition_penalty: float | None = Field(None, gt=0, le=10)
    logit_bias: dict[TokenId, Bias] | None = Field(
        None,
        max_length=MAX_LOGIT_BIAS_ENTRIES,
        description="Token id (a string) -> bias in [-100, 100] added to its logit; ids must be in the vocabulary.",
    )
    stop: str | list[str] | None = None
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    ignore_eos: bool = False
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_json: dict[str, Any] | str | None = None

    # Informational: accepted, no effect on the answer (as in vLLM).
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    service_tier: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None

    # Not supported: a 400 naming the field when it asks for something (see _UNSUPPORTED).
    audio: Any = Field(None, description="Not supported.")
    modalities: list[str] | None = Field(None, description='Only ["text"].')
    prediction: Any = Field(None, description="Not supported.")
    web_search_options: Any = Field(None, description="Not supported.")
    reasoning_effort: Any = Field(None, description="Not supported.")
    verbosity: Any = Field(None, description="Not supported.")
    moderation: Any = Field(None, description="Not supported.")
    tools: list[Any] | None = Field(None, description='Only with tool_choice "none".')
    tool_choice: Any = Field(None, description='Only "none" or "auto" (no tool is ever called).')
    functions: list[Any] | None = Field(None, description='Only with function_call "none".')
    function_call: Any = Field(None, description='Only "none" or "auto".')

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("`top_logprobs` requires `logprobs: true`")
        if isinstance(self.stop, list) and len(self.stop) > 16:
            raise ValueError("at most 16 stop sequences")
        return self

    @model_validator(mode="after")
    def _supported(self) -> ChatCompletionRequest:
        for name, reason in _UNSUPPORTED.items():
            if self._asks_for(name):
                raise PydanticCustomError(
                    UNSUPPORTED_PARAMETER,
                    "Unsupported parameter: '{param}': {reason}",
                    {"param": name, "reason": reason},
                )
        return self

    def _asks_for(self, name: str) -> bool:
        value = getattr(self, name)
        if name == "modalities":
            return any(modality != "text" for modality in value or ())
        if name == "tools":
            return bool(value) and self.tool_choice != "none"
        if name == "functions":
            return bool(value) and self.function_call != "none"
        if name in ("tool_choice", "function_call"):
            return value not in (None, "none", "auto")
        return value is not None

    @property
    def token_bias(self) -> dict[int, float] | None:
        """`logit_bias` with token ids as ints, as vLLM takes it."""
        if not self.logit_bias:
            return None
        return {int(token): bias for token, bias in self.logit_bias.items()}

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)


# /tokenize and /detokenize: the shapes of vLLM's own endpoints.


class TokenizeCompletionRequest(_Model):
    """Tokenize plain text."""

    model: str | None = None
    prompt: str
    add_special_tokens: bool = Field(True, description="Add the tokenizer's special tokens (e.g. BOS).")
    return_token_strs: bool = Field(False, description="Also return each token as a string.")


class TokenizeChatRequest(ChatPrompt):
    """Tokenize a conversation exactly as /v1/chat/completions would prompt the model.

    `count` includes every image tile's and video frame's tokens, so it equals the
    `usage.prompt_tokens` of the same chat request.
    """

    model: str | None = None
    add_generation_prompt: bool = Field(True, description="Only true: the prompt ends with the assistant's turn.")
    continue_final_message: bool = Field(False, description="Only false (not supported).")
    add_special_tokens: bool | None = Field(
        None, description="Default: as /v1/chat/completions does (the tokenizer's special tokens, as the official chat)."
    )
    return_token_strs: bool = Field(False, description="Also return each token as a string.")
    chat_template: str | None = Field(None, description="Not supported: the model's own template is used.")

    @model_validator(mode="after")
    def _supported(self) -> TokenizeChatRequest:
        if not self.add_generation_prompt or self.continue_final_message:
            raise ValueError(
                "the prompt always ends with the assistant's turn, as for /v1/chat/completions: "
                "`add_generation_prompt` must be true and `continue_final_message` false"
            )
        if self.chat_template is not None:
            raise ValueError("`chat_template` is not supported: the model's own InternVL template is used")
        return self


def _tokenize_kind(body: Any) -> str:
    return "chat" if isinstance(body, dict) and "messages" in body else "completion"


TokenizeRequest = Annotated[
    Annotated[TokenizeCompletionRequest, Tag("completion")] | Annotated[TokenizeChatRequest, Tag("chat")],
    Discriminator(_tokenize_kind),
]


class TokenizeResponse(BaseModel):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Model):
    model: str | None = None
    tokens: list[Annotated[int, Field(ge=0, le=2**63 - 1)]]


class DetokenizeResponse(BaseModel):
    prompt: str
