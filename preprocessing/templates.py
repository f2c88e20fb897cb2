"""Official InternVL2 conversation templates and image placeholder helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The system message the official InternVL2 `chat()` installs for every template.
DEFAULT_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
TOKENS_PER_TILE = 256


@dataclass(frozen=True)
class ChatTemplate:
    """An MPT-separator-style template (the only style InternVL2 uses)."""

    name: str
    system_template: str
    roles: tuple[str, str]
    sep: str
    stop_strings: tuple[str, ...]
    default_system_message: str = DEFAULT_SYSTEM_MESSAGE

    def render(self, turns: Sequence[tuple[str, str | None]], system_message: str | None = None) -> str:
        """Prompt text for (user, assistant) turns; a final None answer asks for generation."""
        if not turns:
            raise ValueError("a prompt needs at least one turn")
        if system_message is None:
            system_message = self.default_system_message
        user_role, assistant_role = self.roles
        prompt = self.system_template.format(system_message=system_message) + self.sep
        for position, (user_text, assistant_text) in enumerate(turns):
            if assistant_text is None and position != len(turns) - 1:
                raise ValueError("only the last turn may lack an assistant answer")
            prompt += _mpt_message(user_role, user_text, self.sep)
            prompt += _mpt_message(assistant_role, assistant_text, self.sep)
        return prompt


def _mpt_message(role: str, message: str | None, sep: str) -> str:
    # Upstream leaves an empty message open (role only): that is the
    # generation prompt, and it also applies to an empty user message.
    return role + message + sep if message else role


_CHATML_ROLES = ("<|im_start|>user\n", "<|im_start|>assistant\n")

_TEMPLATES = {
    template.name: template
    for template in (
        ChatTemplate(
            name="Hermes-2",
            system_template="<|im_start|>system\n{system_message}",
            roles=_CHATML_ROLES,
            sep="<|im_end|>",
            stop_strings=("<|im_end|>", "<|endoftext|>"),
        ),
        ChatTemplate(
            name="internlm2-chat",
            system_template="<|im_start|>system\n{system_message}",
            roles=_CHATML_ROLES,
            sep="<|im_end|>",
            stop_strings=("<|im_end|>",),
        ),
        ChatTemplate(
            name="phi3-chat",
            system_template="<|system|>\n{system_message}",
            roles=("<|user|>\n", "<|assistant|>\n"),
            sep="<|end|>",
            stop_strings=("<|end|>",),
        ),
    )
}

TEMPLATE_NAMES = tuple(_TEMPLATES)


def get_template(name: str) -> ChatTemplate:
    """The template a checkpoint's config.json `template` field names."""
    try:
        return _TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown chat template {name!r}; known templates: {', '.join(TEMPLATE_NAMES)}") from None


def image_prefix(n_images: int) -> str:
    """Placeholders put before the question, as the official `chat()` does."""
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if n_images == 1:
        return IMAGE_PLACEHOLDER + "\n"
    return "".join(f"Image-{number}: {IMAGE_PLACEHOLDER}\n" for number in range(1, n_images + 1))


def video_prefix(n_frames: int) -> str:
    if n_frames < 0:
        raise ValueError(f"n_frames must be >= 0, got {n_frames}")
    return "".join(f"Frame{number}: {IMAGE_PLACEHOLDER}\n" for number in range(1, n_frames + 1))


def expand_image_placeholders(
    prompt: str, tiles_per_image: Sequence[int], tokens_per_tile: int = TOKENS_PER_TILE
) -> str:
    """Replace each `<image>`, in order, with its image's context tokens."""
    pieces = prompt.split(IMAGE_PLACEHOLDER)
    if len(pieces) - 1 != len(tiles_per_image):
        raise ValueError(
            f"prompt has {len(pieces) - 1} {IMAGE_PLACEHOLDER} placeholders but {len(tiles_per_image)} images were given"
        )
    expanded = [pieces[0]]
    for tiles, text_after in zip(tiles_per_image, pieces[1:]):
        if tiles < 1:
            raise ValueError(f"every image needs at least one tile, got {tiles}")
        expanded.append(IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (tokens_per_tile * tiles) + IMG_END_TOKEN)
        expanded.append(text_after)
    return "".join(expanded)
