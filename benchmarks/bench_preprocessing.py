"""Images/s of decode + tiling + normalisation: this package vs the official way.

"Official" is what the InternVL2 model card does: PIL decode, dynamic_preprocess
(resize, one crop per tile, thumbnail), then per tile ToTensor + Normalize, done
here with torch ops identical to torchvision's (torchvision is not installed).
Both paths must produce identical tensors; the script checks that first.

    .venv/bin/python benchmarks/bench_preprocessing.py [--quick] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Runnable from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocessing import IMAGENET_MEAN, IMAGENET_STD, find_grid, load_image, tile_image  # noqa: E402

SIZES = ((640, 480), (1920, 1080), (4000, 3000))
MAX_TILES = (6, 12, 40)


def make_jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width)
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1)
    pixels = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def official_pixel_values(data: bytes, max_tiles: int) -> torch.Tensor:
    image = Image.open(io.BytesIO(data)).convert("RGB")
    width, height = image.size
    cols, rows = find_grid(width, height, max_tiles=max_tiles)  # grid parity is tested separately
    resized = image.resize((448 * cols, 448 * rows))
    tiles = [
        resized.crop((c * 448, r * 448, (c + 1) * 448, (r + 1) * 448)) for r in range(rows) for c in range(cols)
    ]
    if len(tiles) != 1:
        tiles.append(image.resize((448, 448)))
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    normalized = []
    for tile in tiles:
        # ToTensor then Normalize, one tile at a time, as torchvision runs them.
        tensor = torch.from_numpy(np.array(tile, copy=True)).permute(2, 0, 1).contiguous()
        tensor = tensor.to(torch.float32).div(255)
        normalized.append(tensor.sub_(mean).div_(std))
    return torch.stack(normalized)


def ours(data: bytes, max_tiles: int) -> torch.Tensor:
    return tile_image(load_image(data), max_tiles=max_tiles)


def images_per_second(function, data: bytes, max_tiles: int, min_seconds: float) -> float:
    function(data, max_tiles)  # warm caches and lazy imports
    runs, start = 0, time.perf_counter()
    while True:
        function(data, max_tiles)
        runs += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and runs >= 2:
            return runs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short timing runs (smoke test)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: single-core figure)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    min_seconds = 0.2 if args.quick else 2.0

    print(f"torch threads: {args.threads}")
    print(f"{'image':>10} {'max_tiles':>9} {'tiles':>5} {'ours img/s':>11} {'official img/s':>15} {'speedup':>8}")
    for width, height in SIZES:
        data = make_jpeg(width, height)
        for max_tiles in MAX_TILES:
            expected = official_pixel_values(data, max_tiles)
            got = ours(data, max_tiles)
            if not torch.equal(got, expected):
                raise SystemExit(f"outputs differ for {width}x{height} max_tiles={max_tiles}")
            fast = images_per_second(ours, data, max_tiles, min_seconds)
            slow = images_per_second(official_pixel_values, data, max_tiles, min_seconds)
            print(
                f"{width}x{height:<5} {max_tiles:>9} {got.shape[0]:>5} {fast:>11.2f} {slow:>15.2f} {fast / slow:>7.2f}x"
            )


if __name__ == "__main__":
    main()
