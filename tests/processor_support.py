"""vLLM's multimodal processor for the plugin's model, built without an engine."""

from functools import cache
from pathlib import Path

from PIL import Image

TOKENS_PER_TILE = 256  # the tiny InternVL2-1B: 448 px tiles, 14 px patches, pixel shuffle 0.5


@cache
def _plugins_loaded() -> bool:
    from vllm.plugins import load_general_plugins

    load_general_plugins()
    return True


def make_processor(model: Path, *, limit_mm_per_prompt=None, **mm_processor_kwargs):
    """The processor vLLM would build for an engine with these settings."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    _plugins_loaded()
    config = ModelConfig(
        model=str(model),
        dtype="float32",
        max_model_len=16384,
        limit_mm_per_prompt=limit_mm_per_prompt or {"image": 2, "video": 1},
        mm_processor_kwargs=mm_processor_kwargs,
    )
    return MULTIMODAL_REGISTRY.create_processor(config)


def process(processor, images=(), videos=(), **request_kwargs):
    """Run one request's multimodal data through `processor` as vLLM's input path does."""
    data = {}
    if images:
        data["image"] = list(images)
    if videos:
        data["video"] = list(videos)
    prompt = "<image>" * len(images) + "<video>" * len(videos) + "Describe."
    items = processor.info.parse_mm_data(data)
    return processor(prompt, items, hf_processor_mm_kwargs=request_kwargs)


def image_tiles(output) -> list[int]:
    """Tiles per image, counted from the placeholder tokens the prompt got."""
    return [p.get_num_embeds() // TOKENS_PER_TILE for p in output["mm_placeholders"].get("image", [])]


def strip(tiles: int, tile_size: int = 448) -> Image.Image:
    """An image that tiles into `tiles` tiles (plus thumbnail) under a budget of at least `tiles`."""
    return Image.new("RGB", (tile_size * tiles, tile_size), "teal")
