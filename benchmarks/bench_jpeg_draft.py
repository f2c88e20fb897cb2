"""Reduced JPEG decoding (`--fast-jpeg-decode`) against the exact path: speed and pixel error.

For photo-like JPEGs of several sizes and tile budgets: decode + tile on one
thread, exact (`decode_image_bytes`, the official full decode and bicubic resize)
and reduced (`decode_image_reduced`, libjpeg's DCT scaling to at least the grid),
interleaved over rounds; the median time of each and the median ratio with its
spread. Error: per tile pixel value (0..255) of the reduced tiles against the
exact ones, mean, 99th percentile and max. The images are smooth waves plus
sensor-like noise, JPEG quality 90 (a camera's), so the error is typical of
photos; sharp synthetic edges would show more.

    .venv/bin/python benchmarks/bench_jpeg_draft.py [--rounds 7] [--json benchmarks/results/jpeg_draft.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocessing import TILE_SIZE, decode_image_bytes, decode_image_reduced, find_grid, tile_image_uint8  # noqa: E402

SIZES = ((2048, 1536), (4032, 3024), (6000, 4000), (8064, 6048))  # 3 MP, 12 MP (phone), 24 MP, 48 MP
BUDGETS = (6, 12)


def photo(width: int, height: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32) / max(width, height)
    waves = np.stack([np.sin(2 * np.pi * (3 * x + 2 * y)), np.cos(2 * np.pi * (5 * x * y + y)),
                      np.sin(2 * np.pi * (7 * x - 4 * y))], -1)
    pixels = (waves * 90 + 128 + rng.normal(0, 6, waves.shape).astype(np.float32)).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def exact(data: bytes, budget: int) -> torch.Tensor:
    return tile_image_uint8(decode_image_bytes(data, max_pixels=10**9), max_tiles=budget)


def reduced(data: bytes, budget: int) -> torch.Tensor:
    def needed(size):
        cols, rows = find_grid(*size, max_tiles=budget)
        return cols * TILE_SIZE, rows * TILE_SIZE

    image, full = decode_image_reduced(data, needed, max_pixels=10**9)
    return tile_image_uint8(image, max_tiles=budget, grid_for=full)


def timed(function, *args) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = function(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true", help="the 12 MP size only, 2 rounds (CI)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sizes = SIZES[1:2] if args.smoke else SIZES
    rounds = 2 if args.smoke else args.rounds

    rows = []
    print(f"{'size':>11} {'budget':>6} {'exact ms':>9} {'reduced ms':>10} {'speed-up':>22} {'err mean':>8} {'p99':>4} {'max':>4}")
    for width, height in sizes:
        data = photo(width, height)
        for budget in BUDGETS:
            times = {"exact": [], "reduced": []}
            for index in range(rounds):
                order = (exact, reduced) if index % 2 == 0 else (reduced, exact)
                for function in order:
                    seconds, tiles = timed(function, data, budget)
                    times[function.__name__].append(seconds)
            ratios = [e / r for e, r in zip(times["exact"], times["reduced"])]
            error = (reduced(data, budget).int() - exact(data, budget).int()).abs().flatten().float()
            row = {
                "size": [width, height], "budget": budget, "tiles": int(tiles.shape[0]),
                "exact_ms": statistics.median(times["exact"]) * 1e3, "reduced_ms": statistics.median(times["reduced"]) * 1e3,
                "speedup": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
                "error": {"mean": error.mean().item(), "p99": error.quantile(0.99).item() if error.numel() < 16_000_000
                          else error[:: max(1, error.numel() // 8_000_000)].quantile(0.99).item(), "max": error.max().item()},
            }
            rows.append(row)
            s = row["speedup"]
            print(f"{width:>5}x{height:<5} {budget:>6} {row['exact_ms']:>9.1f} {row['reduced_ms']:>10.1f} "
                  f"{'x%.2f [%.2f..%.2f]' % (s['median'], s['min'], s['max']):>22} "
                  f"{row['error']['mean']:>8.2f} {row['error']['p99']:>4.0f} {row['error']['max']:>4.0f}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
