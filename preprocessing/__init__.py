"""Exact InternVL2 preprocessing: media decoding, dynamic tiling, prompts.

Importing this package never imports vLLM (or torchvision), so the server and
tests can use it on machines without either.
"""

from .errors import MediaError
from .grounding import COORDINATE_SCALE, GroundedBox, grounding_prompt, parse_grounding
from .image import DEFAULT_MAX_PIXELS, decode_image_bytes, decode_image_reduced, load_image
from .templates import (
    DEFAULT_SYSTEM_MESSAGE,
    IMAGE_PLACEHOLDER,
    INTERNVL2_5_SYSTEM_MESSAGE,
    THINKING_SYSTEM_MESSAGE,
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    TEMPLATE_NAMES,
    TOKENS_PER_TILE,
    ChatTemplate,
    expand_image_placeholders,
    get_template,
    image_prefix,
    video_prefix,
)
from .tiling import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MAX_TILES,
    TILE_SIZE,
    find_grid,
    normalize_tiles,
    num_tiles,
    tile_image,
    tile_image_uint8,
)
from .video import DEFAULT_NUM_FRAMES, MAX_FRAMES, load_frames, load_video, sample_frame_indices, tile_frames

__all__ = [
    "COORDINATE_SCALE",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_NUM_FRAMES",
    "DEFAULT_SYSTEM_MESSAGE",
    "INTERNVL2_5_SYSTEM_MESSAGE",
    "THINKING_SYSTEM_MESSAGE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_PLACEHOLDER",
    "IMG_CONTEXT_TOKEN",
    "IMG_END_TOKEN",
    "IMG_START_TOKEN",
    "MAX_FRAMES",
    "MAX_TILES",
    "TEMPLATE_NAMES",
    "TILE_SIZE",
    "TOKENS_PER_TILE",
    "ChatTemplate",
    "GroundedBox",
    "MediaError",
    "decode_image_bytes",
    "decode_image_reduced",
    "expand_image_placeholders",
    "find_grid",
    "get_template",
    "grounding_prompt",
    "image_prefix",
    "load_frames",
    "load_image",
    "load_video",
    "normalize_tiles",
    "num_tiles",
    "parse_grounding",
    "sample_frame_indices",
    "tile_frames",
    "tile_image",
    "tile_image_uint8",
    "video_prefix",
]
