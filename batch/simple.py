"""Simple mode: a folder or glob of images and videos plus one prompt -> one request per file."""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .inputs import BatchRequest
from .media import IMAGE_SUFFIXES, VIDEO_SUFFIXES

CHAT_URL = "/v1/chat/completions"


@dataclass(frozen=True)
class PromptOptions:
    prompt: str
    model: str | None = None
    system: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    max_tiles: int | None = None
    num_frames: int | None = None


def _is_media(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES


def find_media(pattern: str) -> list[tuple[str, Path]]:
    """(custom_id, path) for each media file under a folder (recursively) or matching
    a glob. The custom_id is the path as the folder or glob spells it, so a rerun with
    the same arguments maps each file to the same id (resuming depends on it)."""
    root = Path(pattern).expanduser()
    if root.is_dir():
        found = sorted(root.rglob("*"))
    else:
        found = [Path(match) for match in sorted(glob.glob(str(root), recursive=True))]
    return [(path.as_posix(), path) for path in found if _is_media(path)]


def media_part(path: Path, options: PromptOptions) -> dict[str, Any]:
    # An absolute path: the request no longer depends on the working directory.
    url = str(path.resolve())
    if path.suffix.lower() in VIDEO_SUFFIXES:
        video: dict[str, Any] = {"url": url}
        if options.num_frames is not None:
            video["num_frames"] = options.num_frames
        return {"type": "video_url", "video_url": video}
    image: dict[str, Any] = {"url": url}
    if options.max_tiles is not None:
        image["max_tiles"] = options.max_tiles
    return {"type": "image_url", "image_url": image}


def build_body(path: Path, options: PromptOptions) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if options.system is not None:
        messages.append({"role": "system", "content": options.system})
    messages.append({"role": "user", "content": [media_part(path, options), {"type": "text", "text": options.prompt}]})
    body: dict[str, Any] = {"messages": messages}
    extras = {"model": options.model, "max_tokens": options.max_tokens, "temperature": options.temperature}
    body.update({key: value for key, value in extras.items() if value is not None})
    return body


def build_requests(patterns: list[str], options: PromptOptions) -> list[BatchRequest]:
    requests: dict[str, BatchRequest] = {}
    for pattern in patterns:
        for custom_id, path in find_media(pattern):
            # Overlapping patterns name a file twice; it still gets one request.
            requests.setdefault(custom_id, BatchRequest(custom_id, "POST", CHAT_URL, build_body(path, options)))
    return list(requests.values())
