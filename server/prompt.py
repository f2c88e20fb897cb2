"""Turn chat messages into the plugin's prompt contract, before any media is fetched.

The prompt is the model's own template text with one `<image>` per image, in
the official labelled form (`<image>\\n` for a turn's only image, otherwise
`Image-k: <image>\\n` numbered across the conversation), and one `<video>` per
video where the official `Frame1: <image>\\n...` lines go; the plugin expands
both. Media stay URLs here so this step is pure and cheap to test.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from preprocessing import IMAGE_PLACEHOLDER, IMG_CONTEXT_TOKEN, IMG_END_TOKEN, IMG_START_TOKEN, ChatTemplate

from .errors import BadRequest
from .schemas import (
    AssistantMessage,
    ChatPrompt,
    ImagePart,
    SystemMessage,
    TextPart,
    ToolMessage,
    UserMessage,
    VideoFramesPart,
    VideoPart,
)
from .settings import Settings

VIDEO_PLACEHOLDER = "<video>"
_RESERVED_TEXT = (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER, IMG_CONTEXT_TOKEN, IMG_START_TOKEN, IMG_END_TOKEN)


@dataclass(frozen=True)
class ImageSpec:
    url: str
    max_tiles: int
    param: str


@dataclass(frozen=True)
class VideoSpec:
    param: str
    num_frames: int
    url: str | None = None
    frame_urls: tuple[str, ...] = ()
    bound: tuple[float, float] | None = None


@dataclass
class PromptPlan:
    prompt: str
    images: list[ImageSpec] = field(default_factory=list)
    videos: list[VideoSpec] = field(default_factory=list)


@dataclass
class _Turn:
    parts: list[tuple[str, object]] = field(default_factory=list)  # (param path, part)
    answer: str | None = None


def plan_prompt(request: ChatPrompt, template: ChatTemplate, settings: Settings) -> PromptPlan:
    system, turns = _group_turns(request)
    plan = PromptPlan(prompt="")
    rendered_turns = []
    for position, turn in enumerate(turns):
        is_current = position == len(turns) - 1
        rendered_turns.append((_render_user_turn(turn, is_current, request, settings, plan), turn.answer))
    if len(plan.images) > settings.max_images_per_request:
        raise BadRequest(
            f"{len(plan.images)} images in the request; the limit is {settings.max_images_per_request}",
            code="too_many_images",
            param="messages",
        )
    if len(plan.videos) > settings.max_videos_per_request:
        raise BadRequest(
            f"{len(plan.videos)} videos in the request; the limit is {settings.max_videos_per_request}",
            code="too_many_videos",
            param="messages",
        )
    plan.prompt = template.render(rendered_turns, system_message=system)
    return plan


def _group_turns(request: ChatPrompt) -> tuple[str | None, list[_Turn]]:
    """(system message, user turns each with the assistant answer after it)."""
    system_texts: list[str] = []
    turns: list[_Turn] = []
    for index, message in enumerate(request.messages):
        param = f"messages.{index}"
        if isinstance(message, SystemMessage):
            system_texts.append(_plain_text(message.content, param))
        elif isinstance(message, ToolMessage):
            raise BadRequest("tool messages are not supported", code="unsupported_message", param=f"{param}.role")
        elif isinstance(message, UserMessage):
            if not turns or turns[-1].answer is not None:
                turns.append(_Turn())
            content = message.content
            if isinstance(content, str):
                turns[-1].parts.append((f"{param}.content", TextPart(type="text", text=content)))
            else:
                turns[-1].parts.extend((f"{param}.content.{i}", part) for i, part in enumerate(content))
        elif isinstance(message, AssistantMessage):
            if not turns:
                raise BadRequest("an assistant message must follow a user message", code="invalid_messages", param=param)
            answer = _plain_text(message.content or "", param)
            # Consecutive assistant messages continue one answer.
            turns[-1].answer = answer if turns[-1].answer is None else turns[-1].answer + "\n" + answer
    if not turns:
        raise BadRequest("the conversation needs a user message", code="invalid_messages", param="messages")
    if turns[-1].answer is not None:
        raise BadRequest("the last message must be from the user", code="invalid_messages", param="messages")
    system = "\n".join(system_texts) if system_texts else None
    return system, turns


def _plain_text(content: str | list[TextPart], param: str) -> str:
    text = content if isinstance(content, str) else "\n".join(part.text for part in content)
    _check_text(text, param)
    return text


def _check_text(text: str, param: str) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            # JSON may escape lone surrogates ("\\ud800"); no tokenizer can take them.
            raise BadRequest("message text is not valid Unicode (lone surrogate)", code="invalid_content", param=param) from None
    for reserved in _RESERVED_TEXT:
        if reserved in text:
            raise BadRequest(
                f"message text must not contain {reserved!r}; send media as content parts",
                code="invalid_content",
                param=param,
            )


def _render_user_turn(
    turn: _Turn, is_current: bool, request: ChatPrompt, settings: Settings, plan: PromptPlan
) -> str:
    texts: list[str] = []
    media: list[tuple[str, object]] = []
    for param, part in turn.parts:
        if isinstance(part, TextPart):
            _check_text(part.text, param)
            texts.append(part.text)
        else:
            media.append((param, part))
    images_in_turn = sum(isinstance(part, ImagePart) for _, part in media)
    prefix = []
    for param, part in media:
        if isinstance(part, ImagePart):
            plan.images.append(ImageSpec(part.image_url.url, _tile_budget(part, is_current, request, settings, param), param))
            label = "" if images_in_turn == 1 else f"Image-{len(plan.images)}: "
            prefix.append(f"{label}{IMAGE_PLACEHOLDER}\n")
        else:
            plan.videos.append(_video_spec(part, request, settings, param))
            prefix.append(VIDEO_PLACEHOLDER)
    return "".join(prefix) + "\n".join(texts)


def _tile_budget(
    part: ImagePart, is_current: bool, request: ChatPrompt, settings: Settings, param: str
) -> int:
    image = part.image_url
    if image.max_tiles is not None:
        budget = image.max_tiles
    elif image.detail == "low":
        budget = 1
    elif is_current or image.detail == "high":
        budget = request.max_tiles or settings.default_max_tiles
    else:
        # Earlier turns' images get one tile, as in the official multi-turn demo.
        budget = request.history_max_tiles or 1
    if budget > settings.max_tiles_per_image:
        raise BadRequest(
            f"max_tiles {budget} exceeds this server's limit of {settings.max_tiles_per_image}",
            code="too_many_tiles",
            param=f"{param}.image_url.max_tiles" if image.max_tiles is not None else "max_tiles",
        )
    return budget


def _video_spec(part: VideoPart | VideoFramesPart, request: ChatPrompt, settings: Settings, param: str) -> VideoSpec:
    limit = settings.max_frames_per_video
    if isinstance(part, VideoFramesPart) or part.video_url.frames is not None:
        urls = part.video_frames.urls if isinstance(part, VideoFramesPart) else part.video_url.frames
        if len(urls) > limit:
            raise BadRequest(f"{len(urls)} frames; the limit is {limit}", code="too_many_frames", param=param)
        return VideoSpec(param=param, num_frames=len(urls), frame_urls=tuple(urls))
    video = part.video_url
    num_frames = video.num_frames or request.num_frames or settings.default_num_frames
    if num_frames > limit:
        raise BadRequest(f"num_frames {num_frames} exceeds the limit of {limit}", code="too_many_frames", param=param)
    bound = None
    if video.start is not None or video.end is not None:
        bound = (video.start or 0.0, video.end if video.end is not None else 100_000.0)
    return VideoSpec(param=param, num_frames=num_frames, url=video.url, bound=bound)
