"""Official InternVL conversation templates and image placeholder helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# The system message the official InternVL2 `chat()` installs for every template.
DEFAULT_SYSTEM_MESSAGE = (
    "你是由上海人工智能实验室联合商汤科技开发的书生多模态大模型，英文名叫InternVL, 是一个有用无害的人工智能助手。"
)

# The `internvl2_5` template's system message (InternVL2.5, InternVL3 and InternVL3.5).
INTERNVL2_5_SYSTEM_MESSAGE = (
    "你是书生·万象，英文名是InternVL，是由上海人工智能实验室、清华大学及多家合作单位联合开发的多模态大语言模型。"
)
# InternVL3.5's thinking mode is this system message (the model card's
# R1_SYSTEM_PROMPT): the answer then opens with <think>...</think>.
THINKING_SYSTEM_MESSAGE = (
    "You are an AI assistant that rigorously follows this response protocol:\n\n"
    "1. First, conduct a detailed analysis of the question. Consider different angles, potential solutions, "
    "and reason through the problem step-by-step. Enclose this entire thinking process within <think> and "
    "</think> tags.\n\n"
    "2. After the thinking section, provide a clear, concise, and direct answer to the user's question. "
    "Separate the answer from the think section with a newline.\n\n"
    "Ensure that the thinking process is thorough but remains focused on the query. The final answer should "
    "be standalone and not reference the thinking section."
)
GPT_OSS_SYSTEM_MESSAGE = (
    "You are InternVL, a large language model trained by Shanghai AI Laboratory.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-08-06\n\nReasoning: low\n\n"
    "# Valid channels: final. Channel must be included for every message."
)

IMAGE_PLACEHOLDER = "<image>"
IMG_START_TOKEN = "<img>"
IMG_END_TOKEN = "</img>"
IMG_CONTEXT_TOKEN = "<IMG_CONTEXT>"
TOKENS_PER_TILE = 256


@dataclass(frozen=True)
class ChatTemplate:
    """An MPT-separator-style template (every InternVL template is one).

    `final_sep` is MPT_TWO's second separator: it ends an answer that closes the
    conversation (the GPT-OSS member's `<|return|>`), where MPT uses `sep`.
    """

    name: str
    system_template: str
    roles: tuple[str, str]
    sep: str
    stop_strings: tuple[str, ...]
    default_system_message: str = DEFAULT_SYSTEM_MESSAGE
    final_sep: str | None = None

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
            is_last = position == len(turns) - 1
            prompt += _mpt_message(assistant_role, assistant_text, (is_last and self.final_sep) or self.sep)
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
        ChatTemplate(
            name="internvl2_5",
            system_template="<|im_start|>system\n{system_message}",
            roles=_CHATML_ROLES,
            sep="<|im_end|>\n",
            # chat() stops on the separator without its newline.
            stop_strings=("<|im_end|>",),
            default_system_message=INTERNVL2_5_SYSTEM_MESSAGE,
        ),
        ChatTemplate(
            name="internvl3_5_gpt_oss",
            system_template="<|start|>system<|message|>{system_message}",
            roles=("<|start|>user<|message|>", "<|start|>assistant"),
            sep="<|end|>",
            final_sep="<|return|>",
            stop_strings=("<|return|>",),
            default_system_message=GPT_OSS_SYSTEM_MESSAGE,
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
