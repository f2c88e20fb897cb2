"""InternVL2 dynamic tiling, value-identical to the official preprocessing.

The official pipeline is `dynamic_preprocess` (pick a cols x rows grid, resize,
crop 448px tiles, add a thumbnail) followed by torchvision's
Resize(448, bicubic) -> ToTensor -> Normalize(ImageNet) on every tile. The
per-tile Resize is a no-op (tiles are already 448x448), so here the resize
happens once, tiles are written straight into one preallocated tensor, and
normalisation runs in place.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from .image import load_image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TILE_SIZE = 448
MAX_TILES = 40


def find_grid(
    width: int, height: int, *, min_tiles: int = 1, max_tiles: int = 12, tile_size: int = TILE_SIZE
) -> tuple[int, int]:
    """The (cols, rows) grid the official `find_closest_aspect_ratio` picks."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    aspect_ratio = width / height
    area = width * height
    best_diff = float("inf")
    best = (1, 1)
    for cols, rows, ratio, tie_min_area in _scored_candidates(min_tiles, max_tiles, tile_size):
        diff = abs(aspect_ratio - ratio)
        if diff < best_diff:
            best_diff = diff
            best = (cols, rows)
        # On an exact tie the official code moves to the later (larger) grid
        # only when the image has enough pixels to fill half of it.
        elif diff == best_diff and area > tie_min_area:
            best = (cols, rows)
    return best


@functools.cache
def candidate_grids(min_tiles: int, max_tiles: int) -> tuple[tuple[int, int], ...]:
    """Candidate grids in the official order.

    Ties between equal-area grids are broken by iteration order, and the
    official code takes that order from a set of int tuples, so the set is
    built with the very same comprehension and then stably sorted by area.
    """
    _check_tile_range(min_tiles, max_tiles)
    target_ratios = set(
        (i, j)
        for n in range(min_tiles, max_tiles + 1)
        for i in range(1, n + 1)
        for j in range(1, n + 1)
        if min_tiles <= i * j <= max_tiles
    )
    return tuple(sorted(target_ratios, key=lambda ratio: ratio[0] * ratio[1]))


@functools.cache
def _scored_candidates(min_tiles: int, max_tiles: int, tile_size: int) -> tuple[tuple[int, int, float, float], ...]:
    # Precomputed with upstream's exact expressions (cols / rows, and
    # 0.5 * T * T * cols * rows evaluated left to right), so the floats match.
    return tuple(
        (cols, rows, cols / rows, 0.5 * tile_size * tile_size * cols * rows)
        for cols, rows in candidate_grids(min_tiles, max_tiles)
    )


def num_tiles(
    width: int, height: int, *, min_tiles: int = 1, max_tiles: int = 12, use_thumbnail: bool = True
) -> int:
    """How many 448px tiles (thumbnail included) an image of this size yields."""
    cols, rows = find_grid(width, height, min_tiles=min_tiles, max_tiles=max_tiles)
    return _tile_count(cols * rows, use_thumbnail)


def tile_image_uint8(
    image,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
    grid_for: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Tiles as uint8 [n, 3, tile_size, tile_size], thumbnail last.

    `grid_for`: the size the grid is chosen for when `image` was decoded reduced
    (`decode_image_reduced`): the grid is the full image's, as without reduction.
    """
    image = _as_rgb(image)
    width, height = grid_for or image.size
    cols, rows = find_grid(width, height, min_tiles=min_tiles, max_tiles=max_tiles, tile_size=tile_size)
    grid_tiles = cols * rows
    tiles = torch.empty((_tile_count(grid_tiles, use_thumbnail), 3, tile_size, tile_size), dtype=torch.uint8)

    # numpy reads PIL's read-only pixel buffer without a copy or a warning.
    out = tiles.numpy()
    resized = np.asarray(image.resize((tile_size * cols, tile_size * rows), Image.Resampling.BICUBIC))
    # Row-major crops of the resized image are exactly a reshape of its pixels:
    # [rows*T, cols*T, 3] -> [rows, T, cols, T, 3] -> [rows, cols, 3, T, T].
    np.copyto(
        out[:grid_tiles].reshape(rows, cols, 3, tile_size, tile_size),
        resized.reshape(rows, tile_size, cols, tile_size, 3).transpose(0, 2, 4, 1, 3),
    )
    if out.shape[0] > grid_tiles:
        # The thumbnail is the whole original image, not a shrink of `resized`.
        thumbnail = np.asarray(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
        np.copyto(out[grid_tiles], thumbnail.transpose(2, 0, 1))
    return tiles


def normalize_tiles(tiles: torch.Tensor) -> torch.Tensor:
    """ToTensor + Normalize(ImageNet) of uint8 [n, 3, H, W] tiles, as float32.

    Runs torchvision's exact float32 operations (x / 255, - mean, / std), so the
    values are bit-identical, but in place in one preallocated tensor and one
    tile at a time so each tile stays in cache: measured ~3x faster than a
    256-entry lookup table (numpy's gather widens indices) and than whole-batch
    arithmetic.
    """
    if tiles.dtype != torch.uint8 or tiles.dim() != 4 or tiles.shape[1] != 3:
        raise ValueError(f"expected uint8 tiles of shape [n, 3, H, W], got {tiles.dtype} {tuple(tiles.shape)}")
    mean, std = _mean_std()
    normalized = torch.empty(tiles.shape, dtype=torch.float32)
    for source, target in zip(tiles, normalized):
        target.copy_(source)
        target.div_(255).sub_(mean).div_(std)
    return normalized


def tile_image(
    image,
    *,
    min_tiles: int = 1,
    max_tiles: int = 12,
    use_thumbnail: bool = True,
    tile_size: int = TILE_SIZE,
) -> torch.Tensor:
    """Official InternVL2 pixel_values for one image: float32 [n, 3, T, T]."""
    return normalize_tiles(
        tile_image_uint8(
            image, min_tiles=min_tiles, max_tiles=max_tiles, use_thumbnail=use_thumbnail, tile_size=tile_size
        )
    )


@functools.cache
def _mean_std() -> tuple[torch.Tensor, torch.Tensor]:
    # float32 [3, 1, 1], as torchvision's Normalize builds them.
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return mean, std


def _tile_count(grid_tiles: int, use_thumbnail: bool) -> int:
    return grid_tiles + 1 if use_thumbnail and grid_tiles > 1 else grid_tiles


def _check_tile_range(min_tiles: int, max_tiles: int) -> None:
    if not 1 <= min_tiles <= max_tiles <= MAX_TILES:
        raise ValueError(f"need 1 <= min_tiles <= max_tiles <= {MAX_TILES}, got min_tiles={min_tiles}, max_tiles={max_tiles}")


def _as_rgb(image) -> Image.Image:
    if isinstance(image, Image.Image) and image.mode == "RGB":
        return image
    return load_image(image)

