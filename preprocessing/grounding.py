"""Grounding prompts and parsing of `<ref>`/`<box>` answers into pixel boxes."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

# InternVL2 reports box corners on a 0..1000 grid regardless of image size.
COORDINATE_SCALE = 1000

_TAG = re.compile(r"<ref>(?P<ref>.*?)</ref>|<box>(?P<box>.*?)</box>", re.DOTALL)
_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_BOX = re.compile(r"\[" + ",".join([_NUMBER] * 4) + r"\]")


@dataclass(frozen=True)
class GroundedBox:
    label: str | None
    x1: float
    y1: float
    x2: float
    y2: float

    def to_dict(self) -> dict:
        return asdict(self)


def grounding_prompt(phrase: str) -> str:
    return f"Please provide the bounding box coordinates of the region this sentence describes: <ref>{phrase}</ref>"


def parse_grounding(text: str, image_width: int, image_height: int) -> list[GroundedBox]:
    """Boxes in the answer, in pixels of the original image, in order.

    A `<ref>` labels the `<box>` right after it (several corners may share one
    `<box>`); a `<box>` with no `<ref>` of its own is unlabelled. Anything
    malformed is skipped: model output is never trusted to be well formed.
    """
    boxes: list[GroundedBox] = []
    label: str | None = None
    for match in _TAG.finditer(text):
        if match.group("ref") is not None:
            label = match.group("ref").strip()
            continue
        for corners in _BOX.finditer(match.group("box")):
            box = _to_pixels(label, corners.groups(), image_width, image_height)
            if box is not None:
                boxes.append(box)
        label = None
    return boxes


def _to_pixels(label: str | None, corners: tuple[str, ...], width: int, height: int) -> GroundedBox | None:
    x1, y1, x2, y2 = (float(value) for value in corners)
    if x2 < x1 or y2 < y1:
        return None
    return GroundedBox(
        label=label,
        x1=_scale(x1, width),
        y1=_scale(y1, height),
        x2=_scale(x2, width),
        y2=_scale(y2, height),
    )


def _scale(value: float, size: int) -> float:
    pixels = value * size / COORDINATE_SCALE
    return round(min(max(pixels, 0.0), float(size)), 2)
