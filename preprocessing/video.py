"""Decode videos with PyAV and sample frames the way official InternVL2 does.

Videos come from strangers, and a container's header is only a promise: every
decoded frame's size is checked (not just the stream's), the frames decoded are
counted against a cap whatever the header says, decoding has a deadline and
can be called off, and sampled frames may be shrunk to their tile size as soon
as they are decoded so that a request never holds many full-size frames.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from PIL import Image

from .errors import MediaError
from .image import DEFAULT_MAX_PIXELS, load_image
from .sources import resolve_source
from .tiling import TILE_SIZE, normalize_tiles, tile_image_uint8

DEFAULT_NUM_FRAMES = 8
MAX_FRAMES = 32
# A video's frames (as decoded, not as declared) and its length: 20 minutes at 30 fps.
DEFAULT_MAX_TOTAL_FRAMES = 36_000
DEFAULT_MAX_DURATION_S = 3600.0
# Wall-clock seconds one video may spend in demuxing and decoding.
DEFAULT_DECODE_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DecodeLimits:
    """What decoding one untrusted video may cost.

    `cancelled`, when set from another thread (the client has gone), stops the
    decoder at the next frame.
    """

    max_total_frames: int = DEFAULT_MAX_TOTAL_FRAMES
    max_duration_s: float = DEFAULT_MAX_DURATION_S
    timeout_s: float = DEFAULT_DECODE_TIMEOUT_S
    cancelled: threading.Event | None = None


class _Budget:
    """DecodeLimits applied to one load: one deadline across every pass over the file."""

    def __init__(self, limits: DecodeLimits) -> None:
        self.limits = limits
        self.deadline = time.monotonic() + limits.timeout_s

    def check(self, frames_seen: int) -> None:
        if frames_seen > self.limits.max_total_frames:
            raise MediaError(
                f"video has more than {self.limits.max_total_frames} frames, this server's limit", code="video_too_long"
            )
        if self.limits.cancelled is not None and self.limits.cancelled.is_set():
            raise MediaError("video decoding was cancelled", code="cancelled")
        if time.monotonic() > self.deadline:
            raise MediaError(
                f"video decoding took longer than {self.limits.timeout_s:g} s, this server's limit",
                code="video_decode_timeout",
            )


def sample_frame_indices(
    total_frames: int, fps: float, num_frames: int, bound: tuple[float, float] | None = None
) -> list[int]:
    """Official `get_index`: centres of `num_frames` equal segments of the clip.

    `bound` is (start_s, end_s) in seconds. Indices may repeat when the clip has
    fewer frames than segments, exactly as upstream.
    """
    if total_frames <= 0:
        raise MediaError("video has no frames", code="invalid_video")
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if bound is not None and bound[0] > bound[1]:
        raise ValueError(f"bound start must not exceed its end, got {bound}")
    start, end = bound if bound else (-100000, 100000)
    max_frame = total_frames - 1
    start_idx = max(0, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    if start_idx > end_idx:
        raise MediaError(
            f"bound {bound} selects no frames of a {total_frames}-frame video at {fps:g} fps",
            code="invalid_video",
        )
    seg_size = float(end_idx - start_idx) / num_frames
    return [int(start_idx + seg_size / 2 + np.round(seg_size * idx)) for idx in range(num_frames)]


def load_video(
    source,
    *,
    num_frames: int = DEFAULT_NUM_FRAMES,
    bound: tuple[float, float] | None = None,
    max_frames: int = MAX_FRAMES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    limits: DecodeLimits | None = None,
    frame_size: int | None = None,
) -> list[Image.Image]:
    """Sampled RGB frames of a video given as bytes, base64, a data URL or a path.

    With `frame_size`, each sampled frame is resized (bicubic) to a
    frame_size x frame_size square right after it is decoded: what the model's
    one-tile-per-frame preprocessing does anyway, so the pixels are the same.
    """
    _check_num_frames(num_frames, max_frames)
    budget = _Budget(limits or DecodeLimits())
    resolved = resolve_source(source, code="invalid_video")
    total_frames, fps = _probe(resolved, max_pixels, budget)
    indices = sample_frame_indices(total_frames, fps, num_frames, bound)
    decode = _FrameDecoder(max_pixels, budget, frame_size)
    frames, decoded_count = decode(resolved, set(indices))
    if decoded_count is not None:
        # The stream ended before a wanted frame: the container overstated its
        # length. Sample again against the real count, as a decoder that knew
        # it would have.
        if decoded_count == 0:
            raise MediaError("video has no decodable frames", code="invalid_video")
        indices = sample_frame_indices(decoded_count, fps, num_frames, bound)
        frames, _ = decode(resolved, set(indices))
    return [frames[index] for index in indices]


def resize_frame(frame: Image.Image, frame_size: int = TILE_SIZE) -> Image.Image:
    """One frame as the model's single tile sees it: a bicubic resize to a square.

    Identical to `tile_image_uint8(frame, max_tiles=1)`'s pixels, which is what
    the plugin computes per frame; resizing a frame already of that size is a copy.
    """
    return frame.resize((frame_size, frame_size), Image.Resampling.BICUBIC)


def load_frames(
    sources: Sequence, *, max_frames: int = MAX_FRAMES, max_pixels: int = DEFAULT_MAX_PIXELS
) -> list[Image.Image]:
    """The "frames form" of a video: already-extracted frames, one image each."""
    if isinstance(sources, (str, bytes)) or not isinstance(sources, Sequence):
        raise MediaError("frames must be a list of images", code="invalid_video")
    if not 1 <= len(sources) <= max_frames:
        raise MediaError(f"need 1 to {max_frames} frames, got {len(sources)}", code="invalid_video")
    return [load_image(frame, max_pixels=max_pixels) for frame in sources]


def tile_frames(frames: Sequence[Image.Image]) -> torch.Tensor:
    """pixel_values for video frames: each frame is one 448px tile, no thumbnail."""
    if not frames:
        raise ValueError("no frames to tile")
    tiles = torch.empty((len(frames), 3, TILE_SIZE, TILE_SIZE), dtype=torch.uint8)
    for slot, frame in enumerate(frames):
        tiles[slot] = tile_image_uint8(frame, min_tiles=1, max_tiles=1, use_thumbnail=False)[0]
    return normalize_tiles(tiles)


def _check_num_frames(num_frames: int, max_frames: int) -> None:
    if not 1 <= max_frames <= MAX_FRAMES:
        raise ValueError(f"max_frames must be in 1..{MAX_FRAMES}, got {max_frames}")
    if not 1 <= num_frames <= max_frames:
        raise MediaError(f"num_frames must be in 1..{max_frames}, got {num_frames}", code="invalid_video")


def _open(resolved: bytes | Path) -> av.container.InputContainer:
    try:
        target = str(resolved) if isinstance(resolved, Path) else io.BytesIO(resolved)
        container = av.open(target, mode="r")
    except Exception as exc:  # FFmpeg raises many error types for hostile input
        raise MediaError(f"cannot open video: {exc}", code="invalid_video") from None
    if not container.streams.video:
        container.close()
        raise MediaError("data has no video stream", code="invalid_video")
    return container


def _probe(resolved: bytes | Path, max_pixels: int, budget: _Budget) -> tuple[int, float]:
    """(frame count, fps) without decoding any pixels."""
    with _open(resolved) as container:
        stream = container.streams.video[0]
        _check_frame_size(stream.codec_context.width, stream.codec_context.height, max_pixels)
        total_frames = stream.frames
        if total_frames <= 0:
            # Many containers (webm, some gif) carry no frame count; counting
            # packets needs demuxing only, which is cheap next to decoding.
            total_frames = _count_packets(container, stream, budget)
        budget.check(total_frames)
        fps = _frame_rate(stream, total_frames)
    if total_frames <= 0:
        raise MediaError("video has no frames", code="invalid_video")
    duration = total_frames / fps
    if duration > budget.limits.max_duration_s:
        raise MediaError(
            f"video lasts {duration:.0f} s, over this server's limit of {budget.limits.max_duration_s:g} s",
            code="video_too_long",
        )
    return total_frames, fps


def _check_frame_size(width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise MediaError(f"video frames too large: {width}x{height} exceeds {max_pixels} pixels", code="image_too_large")


def _count_packets(container, stream, budget: _Budget) -> int:
    count = 0
    try:
        for packet in container.demux(stream):
            if packet.size > 0:
                count += 1
                if count % 256 == 0:
                    budget.check(count)
    except MediaError:
        raise
    except Exception as exc:
        raise MediaError(f"corrupt video: {exc}", code="invalid_video") from None
    return count


def _frame_rate(stream, total_frames: int) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and float(rate) > 0:
            return float(rate)
    if stream.duration and stream.time_base and total_frames:
        seconds = float(stream.duration * stream.time_base)
        if seconds > 0:
            return total_frames / seconds
    # Without any timing information, frame indices and seconds coincide.
    return 1.0


@dataclass
class _FrameDecoder:
    max_pixels: int
    budget: _Budget
    frame_size: int | None

    def __call__(self, resolved: bytes | Path, wanted: set[int]) -> tuple[dict[int, Image.Image], int | None]:
        """Decode in order, converting only the wanted frames to images.

        Stops as soon as every wanted frame is in hand and then returns None as
        the count; if the stream ends first, returns how many frames it really has.
        """
        frames: dict[int, Image.Image] = {}
        count = 0
        with _open(resolved) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    # The stream header promised a size; each frame may differ.
                    _check_frame_size(frame.width, frame.height, self.max_pixels)
                    if count in wanted:
                        image = frame.to_image()
                        frames[count] = resize_frame(image, self.frame_size) if self.frame_size else image
                        if len(frames) == len(wanted):
                            return frames, None
                    count += 1
                    self.budget.check(count)
            except MediaError:
                raise
            except Exception as exc:
                raise MediaError(f"corrupt video: {exc}", code="invalid_video") from None
        return frames, count
