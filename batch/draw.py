"""--draw-boxes: each grounded answer's boxes and labels drawn onto a copy of its image.

A result's `choices[i].message.grounding` lists {label, box: [x1, y1, x2, y2], image_index};
the box is in pixels of the request's image number `image_index` (image_url parts of the
user messages, in order) after EXIF orientation, as the server decodes it. Local paths
and data: URLs are drawn. http(s) images are not fetched: the client never downloads
remote media (the server does), and a second download could differ from what the server
saw; such results are reported as not drawn. Nothing here fails a run: every problem
becomes a DrawFailure for the summary.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import os
import re
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .media import is_local_path
from .output import is_failure

# Saturated colours that stay readable on photos; a box's colour follows its position in the answer.
PALETTE = ((230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (240, 50, 230))
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_STEM = 96


class DrawError(Exception):
    """Why one result's boxes were not drawn."""


@dataclass(frozen=True)
class DrawFailure:
    custom_id: str
    message: str


def safe_stem(custom_id: str) -> str:
    """A file name stem from a custom_id: only [A-Za-z0-9._-] (so no separator and no
    way out of the folder), no leading dot, bounded length (the tail is kept: for a
    path it names the file), and a hash of the whole id so that ids that sanitise
    alike ("a/b", "a_b") still get different files."""
    readable = _UNSAFE.sub("_", custom_id)[-_MAX_STEM:].lstrip(".") or "result"
    digest = hashlib.sha256(custom_id.encode("utf-8")).hexdigest()[:8]
    return f"{readable}-{digest}"


def image_urls(body: dict[str, Any]) -> list[str]:
    """The request's images in the order the server numbers them (image_index)."""
    urls = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) and message.get("role") == "user" else None
        if not isinstance(content, list):
            continue
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url" and isinstance(part.get("image_url"), dict):
                urls.append(str(part["image_url"].get("url") or ""))
    return urls


def _data_url_bytes(url: str) -> bytes:
    header, comma, payload = url.partition(",")
    if not comma:
        raise DrawError("malformed data: URL")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise DrawError(f"bad base64 in data: URL: {exc}") from None
    return urllib.parse.unquote_to_bytes(payload)


def open_image(url: str, media_root: Path) -> Image.Image:
    if url.startswith("data:"):
        source: Any = io.BytesIO(_data_url_bytes(url))
    elif is_local_path(url):
        path = Path(url).expanduser()
        source = path if path.is_absolute() else media_root / path
    else:
        scheme = url.split(":", 1)[0]
        raise DrawError(f"{scheme}: image not drawn (only local files and data: URLs are; "
                        "the client does not fetch remote images)")
    try:
        with Image.open(source) as image:
            upright = ImageOps.exif_transpose(image)  # the server's boxes are in upright pixels
            return upright.convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DrawError(f"cannot open the image: {exc}") from None


def draw_boxes(image: Image.Image, boxes: list[dict[str, Any]]) -> Image.Image:
    """A copy of `image` with each box outlined and its label on a tag at the box's top-left."""
    image = image.copy()
    canvas = ImageDraw.Draw(image)
    width, height = image.size
    line = max(2, round(min(width, height) / 200))
    font = ImageFont.load_default(size=max(12, round(min(width, height) / 40)))
    for number, box in enumerate(boxes):
        try:
            x1, y1, x2, y2 = (float(value) for value in box["box"])
        except (KeyError, TypeError, ValueError):
            raise DrawError(f"box {number} is not [x1, y1, x2, y2]") from None
        # The server's corners may equal the width/height; the last pixel is one less.
        x1, x2 = (min(max(round(v), 0), width - 1) for v in (x1, x2))
        y1, y2 = (min(max(round(v), 0), height - 1) for v in (y1, y2))
        colour = PALETTE[number % len(PALETTE)]
        canvas.rectangle((x1, y1, x2, y2), outline=colour, width=line)
        label = box.get("label")
        if label:
            left, top, right, bottom = canvas.textbbox((0, 0), str(label), font=font)
            pad = 2
            tag_h = bottom - top + 2 * pad
            # Above the box where there is room, else just inside its top edge.
            tag_y = y1 - tag_h if y1 >= tag_h else y1
            canvas.rectangle((x1, tag_y, x1 + right - left + 2 * pad, tag_y + tag_h - 1), fill=colour)
            canvas.text((x1 + pad - left, tag_y + pad - top), str(label), fill=(255, 255, 255), font=font)
    return image


def _grounded_choices(record: dict[str, Any]) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    body = (record.get("response") or {}).get("body")
    if not isinstance(body, dict):
        return
    for position, choice in enumerate(body.get("choices") or []):
        message = choice.get("message") if isinstance(choice, dict) else None
        boxes = message.get("grounding") if isinstance(message, dict) else None
        if boxes:
            yield (choice.get("index", position) if isinstance(choice.get("index"), int) else position), boxes


def _save(image: Image.Image, path: Path) -> None:
    # Through a temp name, so a killed run never leaves a half-written PNG under the real one.
    temp = path.with_name("." + path.name + ".tmp")
    image.save(temp, format="PNG")
    os.replace(temp, path)


def draw_result(record: dict[str, Any], body: dict[str, Any], media_root: Path, folder: Path) -> list[Path]:
    """Draw every grounded choice of one result line; the files written.

    Files: FOLDER/<stem>.png for choice 0, <stem>-choiceN.png for choice N; a choice whose
    boxes fall on more than one image gets one file per image, -imageK appended."""
    urls = image_urls(body)
    written = []
    for choice, boxes in _grounded_choices(record):
        if not isinstance(boxes, list) or not all(isinstance(b, dict) for b in boxes):
            raise DrawError(f"choice {choice}: grounding is not a list of boxes")
        by_image: dict[int, list[dict[str, Any]]] = {}
        for box in boxes:
            image_index = box.get("image_index", len(urls) - 1)  # the server's default: the last image
            if not isinstance(image_index, int) or not 0 <= image_index < len(urls):
                raise DrawError(f"choice {choice}: image_index {image_index!r} but the request has {len(urls)} images")
            by_image.setdefault(image_index, []).append(box)
        for image_index, image_boxes in sorted(by_image.items()):
            name = safe_stem(record["custom_id"])
            if choice:
                name += f"-choice{choice}"
            if len(by_image) > 1:
                name += f"-image{image_index}"
            target = folder / f"{name}.png"
            _save(draw_boxes(open_image(urls[image_index], media_root), image_boxes), target)
            written.append(target)
    return written


def _draw_one(record: dict[str, Any], body: dict[str, Any], media_root: Path, folder: Path) -> list[Path] | DrawFailure:
    try:
        return draw_result(record, body, media_root, folder)
    except DrawError as exc:
        return DrawFailure(record["custom_id"], str(exc))
    except Exception as exc:  # a drawing must never end the run, whatever Pillow raises
        return DrawFailure(record["custom_id"], f"{type(exc).__name__}: {exc}")


def draw_output(output: Path, bodies: dict[str, dict[str, Any]], media_root: Path, folder: Path,
                workers: int = 4) -> tuple[int, list[DrawFailure]]:
    """Draw every successful grounded result in `output` whose custom_id is in `bodies`
    (the requests of this input): (images written, failures). Redrawing from the whole
    file means a resumed or retried run ends with every image, not only its own."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = output.read_bytes()
    except OSError as exc:
        return 0, [DrawFailure("", f"cannot draw into {folder}: {exc}")]
    jobs = []
    for raw in data[: data.rfind(b"\n") + 1].splitlines():
        if not raw.strip():
            continue
        record = json.loads(raw)
        body = bodies.get(record.get("custom_id"))
        if body is not None and not is_failure(record) and any(True for _ in _grounded_choices(record)):
            jobs.append((record, body))
    written, failures = 0, []
    # Pillow releases the GIL while decoding and encoding, so threads overlap.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for result in pool.map(lambda job: _draw_one(*job, media_root, folder), jobs):
            if isinstance(result, DrawFailure):
                failures.append(result)
            else:
                written += len(result)
    return written, failures
