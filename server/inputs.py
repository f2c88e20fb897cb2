"""Fetch and decode a planned prompt's media into the engine's input dict.

Fetching is async; decoding and frame sampling are CPU work and run on a
bounded thread pool so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from model_plugin.processing import pretiled_image
from preprocessing import (
    MediaError,
    TILE_SIZE,
    decode_image_bytes,
    decode_image_reduced,
    find_grid,
    load_video,
    tile_image_uint8,
)
from preprocessing.video import DecodeLimits, resize_frame

from .admission import ClientClosed, client_gone
from .errors import BadRequest
from .media import MediaBudget, MediaFetcher
from .prompt import ImageSpec, PromptPlan, VideoSpec
from .settings import Settings
from .tile_cache import TileCache


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

    def bounds(self, budget: int) -> dict[str, int]:
        """`find_grid`'s tile range for an image with this budget: a budget below the model's minimum wins."""
        return {"min_tiles": min(self.min_tiles, budget), "max_tiles": budget}


async def load_inputs(
    plan: PromptPlan,
    fetcher: MediaFetcher,
    executor: Executor,
    settings: Settings,
    rule: TileRule,
    cache: TileCache | None = None,
) -> EngineInput:
    started = time.perf_counter()
    if not plan.images and not plan.videos:
        images, videos = [], []
    else:
        images, videos = await _load_media(plan, fetcher, executor, settings, rule, cache)
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


async def _load_media(
    plan: PromptPlan, fetcher: MediaFetcher, executor: Executor, settings: Settings, rule: TileRule,
    cache: TileCache | None,
) -> tuple[list[TiledImage], list[np.ndarray]]:
    """Fetch and decode every item, within one deadline, stopping early when the client goes.

    Decoding runs on worker threads that cannot be interrupted; `cancelled`
    tells them to stop at their next frame once nobody needs the result (an
    error elsewhere in the request, the deadline, or the client leaving).
    """
    loop = asyncio.get_running_loop()
    budget = fetcher.budget()
    cancelled = threading.Event()
    limits = DecodeLimits(
        max_total_frames=settings.max_video_total_frames,
        max_duration_s=settings.max_video_duration,
        timeout_s=settings.video_decode_timeout,
        cancelled=cancelled,
    )
    timeout_s = settings.media_request_timeout

    async def run(function, *args):
        return await loop.run_in_executor(executor, function, *args)

    async def fetch(url: str, param: str) -> bytes:
        return await fetcher.fetch(url, param=param, budget=budget)

    async def image(spec: ImageSpec) -> TiledImage:
        data = await fetch(spec.url, f"{spec.param}.image_url.url")
        return await run(_tile_image, data, spec, settings, rule, cache)

    async def frame(url: str, param: str) -> np.ndarray:
        # Each frame is shrunk to its tile as soon as it is decoded, and its
        # bytes dropped, so a request never holds many full-size frames.
        return await run(_decode_frame, await fetch(url, param), settings, param)

    async def video(spec: VideoSpec) -> np.ndarray:
        if spec.url is not None:
            data = await fetch(spec.url, f"{spec.param}.video_url.url")
            return await run(_decode_video, data, spec, settings, limits)
        frames = await _all(frame(url, f"{spec.param}.frames.{i}") for i, url in enumerate(spec.frame_urls))
        return np.stack(frames)

    async def everything():
        images = _all(image(spec) for spec in plan.images)
        videos = _all(video(spec) for spec in plan.videos)
        return await _all([images, videos])

    work = asyncio.ensure_future(everything())
    waiters = {work}
    gone = client_gone()
    if gone is not None:
        waiters.add(asyncio.ensure_future(gone.wait()))
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        if work in done:
            return work.result()
        if done:
            raise ClientClosed()
        raise BadRequest(
            f"fetching and decoding this request's media took longer than {timeout_s:g} s",
            code="media_timeout",
        )
    finally:
        for waiter in waiters:
            waiter.cancel()
        if not work.done() or work.cancelled() or work.exception() is not None:
            cancelled.set()
        with contextlib.suppress(BaseException):
            await work


async def _all(coroutines) -> list:
    """Like gather, but the first failure cancels the rest and is raised as itself."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(coroutine) for coroutine in coroutines]
    except BaseExceptionGroup as failures:
        first = failures.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [task.result() for task in tasks]


@dataclass(frozen=True)
class TiledImage:
    size: tuple[int, int]
    tiles: Any  # uint8 [n, 3, 448, 448]
    content_id: str


def _tile_image(data: bytes, spec: ImageSpec, settings: Settings, rule: TileRule, cache: TileCache | None) -> TiledImage:
    """Decode and tile on a worker thread; the engine gets finished uint8 tiles.

    The content id names exactly what the tiles depend on (the bytes, the model's
    rule, the budget, the decode): it keys our cache of tiled images and vLLM's caches alike.
    """
    digest = hashlib.sha256(data).hexdigest()
    bounds = rule.bounds(spec.max_tiles)
    reduced = "-reduced" if settings.fast_jpeg_decode else ""
    content_id = f"{digest}-{rule.min_tiles}-{spec.max_tiles}-{rule.use_thumbnail}{reduced}"
    if cache is not None and (cached := cache.get(content_id)) is not None:
        return cached

    def grid_pixels(size: tuple[int, int]) -> tuple[int, int]:
        cols, rows = find_grid(*size, **bounds)
        return cols * TILE_SIZE, rows * TILE_SIZE

    image, size = _decode_image(data, settings, spec.param, grid_pixels if settings.fast_jpeg_decode else None)
    tiles = tile_image_uint8(image, use_thumbnail=rule.use_thumbnail, grid_for=size, **bounds)
    tiled = TiledImage(size, tiles, content_id)
    if cache is not None:
        cache.put(content_id, tiled, tiles.numel() * tiles.element_size())
    return tiled


def _decode_image(data: bytes, settings: Settings, param: str, needed=None) -> tuple[Image.Image, tuple[int, int]]:
    """The image and its full size (`needed`: the least size wanted, for a reduced JPEG decode)."""
    try:
        if needed is None:
            image = decode_image_bytes(data, max_pixels=settings.max_image_pixels)
            size = image.size
        else:
            image, size = decode_image_reduced(data, needed, max_pixels=settings.max_image_pixels)
    except MediaError as error:
        raise BadRequest(str(error), code=error.code, param=param) from None
    width, height = size
    # A 1x100000 strip would be stretched into a 1x12 grid of pure smear.
    if max(width, height) > settings.max_image_aspect_ratio * min(width, height):
        raise BadRequest(
            f"image is {width}x{height}: its aspect ratio exceeds this server's limit of "
            f"{settings.max_image_aspect_ratio:g}:1",
            code="invalid_image_shape",
            param=param,
        )
    return image, size


def _decode_video(data: bytes, spec: VideoSpec, settings: Settings, limits: DecodeLimits) -> np.ndarray:
    """[T, 448, 448, 3] uint8: the sampled frames, each already at its tile size.

    The plugin resizes every frame to one 448 tile (bicubic) and resizing a
    frame already of that size is a copy, so the engine computes the same
    pixels it would have from the full-size frame.
    """
    try:
        frames = load_video(
            data,
            num_frames=spec.num_frames,
            bound=spec.bound,
            max_frames=settings.max_frames_per_video,
            max_pixels=settings.max_image_pixels,
            limits=limits,
            frame_size=TILE_SIZE,
        )
    except (MediaError, ValueError) as error:
        raise BadRequest(str(error), code=getattr(error, "code", "invalid_video"), param=spec.param) from None
    return np.stack([np.asarray(frame, dtype=np.uint8) for frame in frames])


def _decode_frame(data: bytes, settings: Settings, param: str) -> np.ndarray:
    """One frame of the frames form, at its tile size (see _decode_video)."""
    return np.asarray(resize_frame(_decode_image(data, settings, param)[0], TILE_SIZE), dtype=np.uint8)
