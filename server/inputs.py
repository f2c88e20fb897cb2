"""Fetch and decode a planned prompt's media into the engine's input dict.

Fetching is async; decoding and frame sampling are CPU work and run on a
bounded thread pool so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model_plugin.processing import pretiled_image
from preprocessing import MediaError, TILE_SIZE, decode_image_bytes, load_video, tile_image_uint8

from .errors import BadRequest
from .media import MediaFetcher
from .prompt import ImageSpec, PromptPlan, VideoSpec
from .settings import Settings


@dataclass
class EngineInput:
    prompt: dict[str, Any]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    tiles_per_image: list[int] = field(default_factory=list)
    frames_per_video: list[int] = field(default_factory=list)
    preprocess_seconds: float = 0.0


@dataclass(frozen=True)
class TileRule:
    """The model's tiling settings (config.json), applied on the server's threads."""

    min_tiles: int = 1
    use_thumbnail: bool = True


async def load_inputs(
    plan: PromptPlan, fetcher: MediaFetcher, executor: Executor, settings: Settings, rule: TileRule
) -> EngineInput:
    started = time.perf_counter()
    loop = asyncio.get_running_loop()

    async def run(function, *args):
        return await loop.run_in_executor(executor, function, *args)

    async def image(spec: ImageSpec) -> TiledImage:
        data = await fetcher.fetch(spec.url, param=f"{spec.param}.image_url.url")
        return await run(_tile_image, data, spec, settings, rule)

    async def video(spec: VideoSpec) -> np.ndarray:
        if spec.url is not None:
            data = await fetcher.fetch(spec.url, param=f"{spec.param}.video_url.url")
            return await run(_decode_video, data, spec, settings)
        frames = await asyncio.gather(
            *(fetcher.fetch(url, param=f"{spec.param}.frames.{i}") for i, url in enumerate(spec.frame_urls))
        )
        return await run(_decode_frames, frames, settings, spec.param)

    images, videos = await asyncio.gather(
        asyncio.gather(*(image(spec) for spec in plan.images)),
        asyncio.gather(*(video(spec) for spec in plan.videos)),
    )
    prompt: dict[str, Any] = {"prompt": plan.prompt}
    multi_modal_data: dict[str, list] = {}
    if images:
        multi_modal_data["image"] = [pretiled_image(image.tiles) for image in images]
        # Content ids spare vLLM hashing the pixels and let its caches recognise a
        # repeated image at the same budget.
        prompt["multi_modal_uuids"] = {"image": [image.content_id for image in images]}
    if videos:
        multi_modal_data["video"] = list(videos)
    if multi_modal_data:
        prompt["multi_modal_data"] = multi_modal_data
    return EngineInput(
        prompt=prompt,
        image_sizes=[image.size for image in images],
        tiles_per_image=[len(image.tiles) for image in images],
        frames_per_video=[len(v) for v in videos],
        preprocess_seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class TiledImage:
    size: tuple[int, int]
    tiles: Any  # uint8 [n, 3, 448, 448]
    content_id: str


def _tile_image(data: bytes, spec: ImageSpec, settings: Settings, rule: TileRule) -> TiledImage:
    """Decode and tile on a worker thread; the engine gets finished uint8 tiles."""
    image = _decode_image(data, settings, spec.param)
    tiles = tile_image_uint8(
        image,
        min_tiles=min(rule.min_tiles, spec.max_tiles),
        max_tiles=spec.max_tiles,
        use_thumbnail=rule.use_thumbnail,
    )
    digest = hashlib.sha256(data).hexdigest()
    return TiledImage(image.size, tiles, f"{digest}-{rule.min_tiles}-{spec.max_tiles}-{rule.use_thumbnail}")


def _decode_image(data: bytes, settings: Settings, param: str) -> Image.Image:
    try:
        image = decode_image_bytes(data, max_pixels=settings.max_image_pixels)
    except MediaError as error:
        raise BadRequest(str(error), code=error.code, param=param) from None
    width, height = image.size
    # A 1x100000 strip would be stretched into a 1x12 grid of pure smear.
    if max(width, height) > settings.max_image_aspect_ratio * min(width, height):
        raise BadRequest(
            f"image is {width}x{height}: its aspect ratio exceeds this server's limit of "
            f"{settings.max_image_aspect_ratio:g}:1",
            code="invalid_image_shape",
            param=param,
        )
    return image


def _decode_video(data: bytes, spec: VideoSpec, settings: Settings) -> np.ndarray:
    try:
        frames = load_video(
            data,
            num_frames=spec.num_frames,
            bound=spec.bound,
            max_frames=settings.max_frames_per_video,
            max_pixels=settings.max_image_pixels,
        )
    except (MediaError, ValueError) as error:
        raise BadRequest(str(error), code=getattr(error, "code", "invalid_video"), param=spec.param) from None
    return _stack(frames)


def _decode_frames(frames: list[bytes], settings: Settings, param: str) -> np.ndarray:
    return _stack([_decode_image(data, settings, param) for data in frames])


def _stack(frames: list[Image.Image]) -> np.ndarray:
    """[T, H, W, 3] uint8. Frames of mixed sizes are brought to one tile first.

    The plugin resizes every frame to one tile (bicubic) anyway, so doing that
    here for mixed sizes gives the same pixels it would have computed.
    """
    if len({frame.size for frame in frames}) > 1:
        frames = [frame.resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BICUBIC) for frame in frames]
    return np.stack([np.asarray(frame, dtype=np.uint8) for frame in frames])
