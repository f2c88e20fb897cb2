"""The prompt ids the server sends equal those of the official `chat()`, for every family.

Official side (tests/official_chat_reference.py, shares no code with the
server): the query string of `InternVLChatModel.chat()` with the model cards'
single-image, multi-image and video questions, the tile counts of the official
`dynamic_preprocess`, tokenized with the semantics of the released tokenizer
class (sentencepiece for InternLM2/Phi-3/Yi, byte-level BPE for Qwen2/Llama-3,
BOS where that class adds it).

Our side, the real path: the server plans the prompt (server/prompt.py with the
template named by config.json), fetches and tiles the media (server/inputs.py),
then vLLM's own multimodal processor for the plugin's model tokenizes the
prompt with the tokenizer vLLM loads and expands `<image>`/`<video>`. Every
family is generated in the released layout.
"""

from __future__ import annotations

import asyncio
import base64
import io
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from model_plugin.families import FAMILIES
from tests.conftest import CHECKPOINT_CACHE
from tests.official_chat_reference import (
    IMG_CONTEXT,
    IMG_END,
    IMG_START,
    NUM_IMAGE_TOKEN,
    ReferenceTokenizer,
    chat_query,
    multi_image_question,
    video_question,
)
from tests.preprocessing.internvl_official_reference import dynamic_preprocess

# The released tokenizer kind of each family (see official_chat_reference.KINDS).
TOKENIZER_KIND = {
    "InternVL2-1B": "qwen2",
    "InternVL2-2B": "internlm2",
    "InternVL2-4B": "phi3",
    "InternVL2-8B": "internlm2",
    "InternVL2-26B": "internlm2",
    "InternVL2-40B": "yi",
    "InternVL2-Llama3-76B": "llama3",
    "Mini-InternVL-Chat-2B-V1-5": "internlm2",
    "Mini-InternVL-Chat-4B-V1-5": "phi3",
    "InternVL-Chat-V1-5": "internlm2",
    "InternVL2_5-1B": "qwen2",
    "InternVL2_5-2B": "internlm2",
    "InternVL2_5-4B": "qwen2",
    "InternVL2_5-8B": "internlm2",
    "InternVL2_5-26B": "internlm2",
    "InternVL2_5-38B": "qwen2",
    "InternVL2_5-78B": "qwen2",
    "InternVL3-1B": "qwen2",
    "InternVL3-2B": "qwen2",
    "InternVL3-8B": "qwen2",
    "InternVL3-9B": "internlm3",
    "InternVL3-14B": "qwen2",
    "InternVL3-38B": "qwen2",
    "InternVL3-78B": "qwen2",
    "InternVL3_5-1B": "qwen2",
    "InternVL3_5-2B": "qwen2",
    "InternVL3_5-4B": "qwen2",
    "InternVL3_5-8B": "qwen2",
    "InternVL3_5-14B": "qwen2",
    "InternVL3_5-38B": "qwen2",
    "InternVL3_5-30B-A3B": "qwen2",
    "InternVL3_5-241B-A28B": "qwen2",
    "InternVL3_5-GPT-OSS-20B-A4B-Preview": "gpt_oss",
}
# The conversation template each release's config.json names.
RELEASED_TEMPLATE = {
    "InternVL2-1B": "Hermes-2",
    "InternVL2-2B": "internlm2-chat",
    "InternVL2-4B": "phi3-chat",
    "InternVL2-8B": "internlm2-chat",
    "InternVL2-26B": "internlm2-chat",
    "InternVL2-40B": "Hermes-2",
    "InternVL2-Llama3-76B": "internlm2-chat",
    "Mini-InternVL-Chat-2B-V1-5": "internlm2-chat",
    "Mini-InternVL-Chat-4B-V1-5": "phi3-chat",
    "InternVL-Chat-V1-5": "internlm2-chat",
    "InternVL2_5-1B": "internvl2_5",
    "InternVL2_5-2B": "internvl2_5",
    "InternVL2_5-4B": "internvl2_5",
    "InternVL2_5-8B": "internvl2_5",
    "InternVL2_5-26B": "internvl2_5",
    "InternVL2_5-38B": "internvl2_5",
    "InternVL2_5-78B": "internvl2_5",
    "InternVL3-1B": "internvl2_5",
    "InternVL3-2B": "internvl2_5",
    "InternVL3-8B": "internvl2_5",
    "InternVL3-9B": "internvl2_5",
    "InternVL3-14B": "internvl2_5",
    "InternVL3-38B": "internvl2_5",
    "InternVL3-78B": "internvl2_5",
    "InternVL3_5-1B": "internvl2_5",
    "InternVL3_5-2B": "internvl2_5",
    "InternVL3_5-4B": "internvl2_5",
    "InternVL3_5-8B": "internvl2_5",
    "InternVL3_5-14B": "internvl2_5",
    "InternVL3_5-38B": "internvl2_5",
    "InternVL3_5-30B-A3B": "internvl2_5",
    "InternVL3_5-241B-A28B": "internvl2_5",
    "InternVL3_5-GPT-OSS-20B-A4B-Preview": "internvl3_5_gpt_oss",
}
QUESTION = "What is shown here? Describe it in detail, please."
IMAGES = {"landscape": (800, 600), "tall": (300, 900), "strip": (1000, 200)}
MAX_TILES = 6
VIDEO_FRAMES = 4


def _png(size: tuple[int, int], colour: str) -> Image.Image:
    image = Image.new("RGB", size, colour)
    image.paste(Image.new("RGB", (size[0] // 3, size[1] // 3), "white"), (size[0] // 4, size[1] // 5))
    return image


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _official_tiles(image: Image.Image, max_num: int) -> int:
    return len(dynamic_preprocess(image, min_num=1, max_num=max_num, image_size=448, use_thumbnail=True))


@cache
def _checkpoint(family: str) -> Path:
    from model_plugin.make_checkpoint import ensure_checkpoint

    return ensure_checkpoint(family, "tiny", CHECKPOINT_CACHE)


@cache
def _processor(family: str):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    config = ModelConfig(
        model=str(_checkpoint(family)),
        dtype="float32",
        max_model_len=16384,
        limit_mm_per_prompt={"image": 4, "video": 1},
        mm_processor_kwargs={"max_tiles_limit": 12, "max_video_frames": 8},
    )
    return MULTIMODAL_REGISTRY.create_processor(config)


def _server_prompt_ids(family: str, messages: list[dict], **request_fields) -> list[int]:
    return list(_server_inputs(family, messages, **request_fields)[1]["prompt_token_ids"])


def _server_inputs(family: str, messages: list[dict], **request_fields) -> tuple[str, dict]:
    """The server's prompt text for this request, and what vLLM's input processor makes of it."""
    from server.engine import model_info, read_model_config
    from server.inputs import TileRule, load_inputs
    from server.media import MediaFetcher
    from server.prompt import plan_prompt
    from server.schemas import ChatCompletionRequest
    from server.settings import Settings

    path = str(_checkpoint(family))
    settings = Settings(model=path)
    info = model_info(settings, path, read_model_config(path))
    request = ChatCompletionRequest(model=path, messages=messages, **request_fields)
    plan = plan_prompt(request, info.template, settings)

    async def load():
        fetcher = MediaFetcher(settings)
        try:
            with ThreadPoolExecutor(2) as executor:
                return await load_inputs(plan, fetcher, executor, settings, TileRule(info.min_tiles, info.use_thumbnail))
        finally:
            await fetcher.aclose()

    prompt = asyncio.run(load()).prompt
    processor = _processor(family)
    items = processor.info.parse_mm_data(prompt.get("multi_modal_data", {}))
    return prompt["prompt"], processor(prompt["prompt"], items, hf_processor_mm_kwargs={})


def _embed_positions(inputs: dict) -> list[tuple[str, list[int]]]:
    """Per media item, in prompt order: its modality and the positions vLLM fills with its encoder output."""
    items = []
    for modality, ranges in inputs["mm_placeholders"].items():
        for r in ranges:
            mask = [True] * r.length if r.is_embed is None else r.is_embed.tolist()
            items.append((modality, [r.offset + i for i, embed in enumerate(mask) if embed]))
    return sorted(items, key=lambda item: item[1])


def _official_embed_positions(
    family: str, official: list[int], items: list[tuple[str, int]]
) -> list[tuple[str, list[int]]]:
    """The `<IMG_CONTEXT>` positions of the official ids, grouped by `<img>...</img>` and then by
    item, for `items` = (modality, number of `<img>` runs) in prompt order."""
    added = ReferenceTokenizer(_checkpoint(family), TOKENIZER_KIND[family]).added
    runs, current = [], None
    for position, token in enumerate(official):
        if token == added[IMG_START]:
            current = []
        elif token == added[IMG_END]:
            runs.append(current)
            current = None
        elif token == added[IMG_CONTEXT]:
            current.append(position)
    assert len(runs) == sum(n for _, n in items)
    grouped = []
    for modality, n in items:
        grouped.append((modality, [position for run in runs[:n] for position in run]))
        runs = runs[n:]
    return grouped


def _assert_same(ours: list[int], official: list[int], family: str) -> None:
    if ours == official:
        return
    at = next((i for i, (a, b) in enumerate(zip(ours, official)) if a != b), min(len(ours), len(official)))
    tokenizer = _processor(family).info.get_tokenizer()
    raise AssertionError(
        f"prompt ids differ at {at} (ours {len(ours)}, official {len(official)} tokens)\n"
        f"ours:     {ours[max(0, at - 5):at + 8]} = {tokenizer.decode(ours[max(0, at - 5):at + 8])!r}\n"
        f"official: {official[max(0, at - 5):at + 8]} = {tokenizer.decode(official[max(0, at - 5):at + 8])!r}"
    )


def _official_ids(family: str, question: str, num_patches: list[int], history=None) -> list[int]:
    query = chat_query(RELEASED_TEMPLATE[family], question, num_patches, history)
    return ReferenceTokenizer(_checkpoint(family), TOKENIZER_KIND[family]).encode(query)


FAMILY_NAMES = list(FAMILIES)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_text_only(family: str) -> None:
    ours = _server_prompt_ids(family, [{"role": "user", "content": QUESTION}])
    _assert_same(ours, _official_ids(family, QUESTION, []), family)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_text_only_with_history(family: str) -> None:
    first, answer, second = "Hello there!", "Hi! How can I help you today?", "Tell me about cats."
    messages = [
        {"role": "user", "content": first},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": second},
    ]
    ours = _server_prompt_ids(family, messages)
    _assert_same(ours, _official_ids(family, second, [], history=[(first, answer)]), family)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_one_image(family: str) -> None:
    image = _png(IMAGES["landscape"], "teal")
    content = [{"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": QUESTION}]
    _, inputs = _server_inputs(family, [{"role": "user", "content": content}], max_tiles=MAX_TILES)
    official = _official_ids(family, QUESTION, [_official_tiles(image, MAX_TILES)])
    _assert_same(list(inputs["prompt_token_ids"]), official, family)
    assert _embed_positions(inputs) == _official_embed_positions(family, official, [("image", 1)])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_several_images(family: str) -> None:
    images = [_png(IMAGES["tall"], "orange"), _png(IMAGES["strip"], "navy"), _png(IMAGES["landscape"], "olive")]
    content = [{"type": "image_url", "image_url": {"url": _data_url(image)}} for image in images]
    content.append({"type": "text", "text": QUESTION})
    _, inputs = _server_inputs(family, [{"role": "user", "content": content}], max_tiles=MAX_TILES)
    official = _official_ids(
        family, multi_image_question(len(images), QUESTION), [_official_tiles(i, MAX_TILES) for i in images]
    )
    _assert_same(list(inputs["prompt_token_ids"]), official, family)
    assert _embed_positions(inputs) == _official_embed_positions(family, official, [("image", 1)] * len(images))


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_video(family: str) -> None:
    frames = [_png((640, 360), colour) for colour in ("red", "green", "blue", "purple")][:VIDEO_FRAMES]
    content = [
        {"type": "video_frames", "video_frames": {"urls": [_data_url(frame) for frame in frames]}},
        {"type": "text", "text": QUESTION},
    ]
    _, inputs = _server_inputs(family, [{"role": "user", "content": content}])
    official = _official_ids(family, video_question(len(frames), QUESTION), [1] * len(frames))
    _assert_same(list(inputs["prompt_token_ids"]), official, family)
    assert _embed_positions(inputs) == _official_embed_positions(family, official, [("video", len(frames))])


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_video_then_one_tile_image(family: str) -> None:
    """A video and then a one-tile image: the image's ids equal a frame's, so only the
    order of the placeholders tells which item is where. No official `chat()` mixes
    them; the expected ids expand the server's prompt text as `chat()` expands its query."""
    frames = [_png((640, 360), colour) for colour in ("red", "green")]
    image = _png(IMAGES["landscape"], "teal")
    content = [
        {"type": "video_frames", "video_frames": {"urls": [_data_url(frame) for frame in frames]}},
        {"type": "image_url", "image_url": {"url": _data_url(image), "max_tiles": 1}},
        {"type": "text", "text": QUESTION},
    ]
    text, inputs = _server_inputs(family, [{"role": "user", "content": content}])
    text = text.replace("<video>", "".join(f"Frame{i + 1}: <image>\n" for i in range(len(frames))), 1)
    while "<image>" in text:
        text = text.replace("<image>", IMG_START + IMG_CONTEXT * NUM_IMAGE_TOKEN + IMG_END, 1)
    expected = ReferenceTokenizer(_checkpoint(family), TOKENIZER_KIND[family]).encode(text)
    _assert_same(list(inputs["prompt_token_ids"]), expected, family)
    assert _embed_positions(inputs) == _official_embed_positions(
        family, expected, [("video", len(frames)), ("image", 1)]
    )
