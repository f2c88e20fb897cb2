"""Local file paths in image/video parts -> base64 data URLs; every URL passes through.

Paths are read when a request is about to be sent, not when the input is loaded,
so a batch of many large videos never sits in memory at once.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import mimetypes
import re
from pathlib import Path
from typing import Any

# Anything with a scheme (http:, https:, data:, file:, s3:...) is the server's business.
_HAS_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpeg", ".mpg"})


class LocalMediaError(Exception):
    """A local path in a request that cannot be read; the request fails without being sent."""


def is_local_path(url: str) -> bool:
    return bool(url) and (not _HAS_SCHEME.match(url) or bool(_WINDOWS_DRIVE.match(url)))


def mime_type(path: Path) -> str:
    guessed, _ = mimetypes.guess_type(path.name)
    if guessed:
        return guessed
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return "video/" + suffix.lstrip(".")
    return "image/" + suffix.lstrip(".") if suffix in IMAGE_SUFFIXES else "application/octet-stream"


def file_data_url(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LocalMediaError(f"cannot read local media {str(path)!r}: {exc.strerror or exc}") from None
    return f"data:{mime_type(path)};base64,{base64.b64encode(data).decode('ascii')}"


def _url_slots(part: dict[str, Any]) -> list[tuple[dict | list, str | int]]:
    """(container, key) for every media URL in one content part."""
    slots: list[tuple[dict | list, str | int]] = []
    kind = part.get("type")
    inner = part.get(kind) if isinstance(kind, str) else None
    if not isinstance(inner, dict):
        return slots
    if kind in ("image_url", "video_url") and isinstance(inner.get("url"), str):
        slots.append((inner, "url"))
    for key in ("frames", "urls"):  # video_url.frames and video_frames.urls
        frames = inner.get(key)
        if kind in ("video_url", "video_frames") and isinstance(frames, list):
            slots.extend((frames, index) for index, value in enumerate(frames) if isinstance(value, str))
    return slots


def _local_slots(body: dict[str, Any]) -> list[tuple[dict | list, str | int]]:
    slots = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict):
                slots.extend(s for s in _url_slots(part) if is_local_path(s[0][s[1]]))
    return slots


def has_local_media(body: dict[str, Any]) -> bool:
    return bool(_local_slots(body))


def inline_local_media_sync(body: dict[str, Any], root: Path) -> dict[str, Any]:
    if not has_local_media(body):
        return body
    body = copy.deepcopy(body)  # the caller's copy stays small (paths, not base64)
    for container, key in _local_slots(body):
        path = Path(container[key]).expanduser()
        container[key] = file_data_url(path if path.is_absolute() else root / path)
    return body


async def inline_local_media(body: dict[str, Any], root: Path) -> dict[str, Any]:
    """`body` with local paths (relative ones under `root`) replaced by data URLs."""
    if not has_local_media(body):
        return body
    # Reading and base64-encoding a video takes long enough to stall other requests.
    return await asyncio.to_thread(inline_local_media_sync, body, root)
