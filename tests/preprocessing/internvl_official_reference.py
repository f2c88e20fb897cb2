"""Independent transcription of the official InternVL2 preprocessing.

Written from the upstream model card code (dynamic_preprocess,
find_closest_aspect_ratio, build_transform) without torchvision: the transform
is PIL resize -> numpy float32 / 255 -> (x - mean) / std, which is what
ToTensor + Normalize compute. Tests compare the package against this.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MEAN = np.array((0.485, 0.456, 0.406), dtype=np.float32)
STD = np.array((0.229, 0.224, 0.225), dtype=np.float32)


def target_ratios(min_num: int, max_num: int) -> list[tuple[int, int]]:
    ratios = set(
        (i, j)
        for n in range(min_num, max_num + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if i * j <= max_num and i * j >= min_num
    )
    return sorted(ratios, key=lambda x: x[0] * x[1])


def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=False):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    ratios = target_ratios(min_num, max_num)
    target_aspect_ratio = find_closest_aspect_ratio(aspect_ratio, ratios, orig_width, orig_height, image_size)
    target_width = image_size * target_aspect_ratio[0]
    target_height = image_size * target_aspect_ratio[1]
    blocks = target_aspect_ratio[0] * target_aspect_ratio[1]
    resized_img = image.resize((target_width, target_height))
    processed_images = []
    for i in range(blocks):
        box = (
            (i % (target_width // image_size)) * image_size,
            (i // (target_width // image_size)) * image_size,
            ((i % (target_width // image_size)) + 1) * image_size,
            ((i // (target_width // image_size)) + 1) * image_size,
        )
        processed_images.append(resized_img.crop(box))
    assert len(processed_images) == blocks
    if use_thumbnail and len(processed_images) != 1:
        processed_images.append(image.resize((image_size, image_size)))
    return processed_images


def transform(tile: Image.Image, input_size: int = 448) -> np.ndarray:
    """build_transform: RGB -> Resize(bicubic) -> ToTensor -> Normalize, as CHW float32."""
    tile = tile.convert("RGB")
    if tile.size != (input_size, input_size):
        tile = tile.resize((input_size, input_size), Image.Resampling.BICUBIC)
    x = np.asarray(tile).astype(np.float32) / np.float32(255)
    x = (x - MEAN) / STD
    return x.transpose(2, 0, 1)


def official_pixel_values(image, min_num=1, max_num=12, use_thumbnail=True, input_size=448) -> np.ndarray:
    tiles = dynamic_preprocess(image, min_num, max_num, input_size, use_thumbnail)
    return np.stack([transform(tile, input_size) for tile in tiles])


def official_grids(widths, heights, min_num, max_num, image_size=448):
    """find_closest_aspect_ratio over arrays, same float64 operations in the same order."""
    widths = np.asarray(widths, dtype=np.int64)
    heights = np.asarray(heights, dtype=np.int64)
    aspect = widths / heights
    area = widths * heights
    best_diff = np.full(aspect.shape, np.inf)
    best_i = np.ones(aspect.shape, dtype=np.int64)
    best_j = np.ones(aspect.shape, dtype=np.int64)
    tie_seen = np.zeros(aspect.shape, dtype=bool)
    for i, j in target_ratios(min_num, max_num):
        diff = np.abs(aspect - i / j)
        smaller = diff < best_diff
        equal = diff == best_diff
        take = smaller | (equal & (area > 0.5 * image_size * image_size * i * j))
        tie_seen = (tie_seen & ~smaller) | equal
        best_diff = np.where(smaller, diff, best_diff)
        best_i[take] = i
        best_j[take] = j
    return best_i, best_j, tie_seen


def get_index(bound, fps, max_frame, first_idx=0, num_segments=32):
    if bound:
        start, end = bound[0], bound[1]
    else:
        start, end = -100000, 100000
    start_idx = max(first_idx, round(start * fps))
    end_idx = min(round(end * fps), max_frame)
    seg_size = float(end_idx - start_idx) / num_segments
    frame_indices = np.array(
        [int(start_idx + (seg_size / 2) + np.round(seg_size * idx)) for idx in range(num_segments)]
    )
    return frame_indices
