"""Images/s of JPEG decode + tiling (+ normalisation): ours vs the official way vs vLLM's built-in.

Implementations, all starting from the same JPEG bytes:

- ours-uint8: what our vLLM plugin's processor does on the CPU: `load_image`
  (decode, EXIF, RGB) + `tile_image_uint8`. Normalisation to fp32 happens later
  on the encoder's device (`normalize_tiles` semantics), so it is not here.
- ours-f32:   the same plus `normalize_tiles` on the CPU (= `tile_image`), the
  figure to compare with implementations that output normalised fp32.
- official:   the InternVL2 model card code (PIL decode, `dynamic_preprocess`,
  per-tile ToTensor + Normalize), with torch ops identical to torchvision's so it
  runs without torchvision.
- builtin:    vLLM 0.32's own `InternVLImageProcessor` (the processor vLLM's
  built-in InternVL model uses, torchvision transforms per tile) after a PIL
  decode + RGB conversion. Needs torchvision: run from .venv-bench with the
  CPU shim (benchmarks/setup_bench_env.sh); without it this column is skipped
  with a printed reason.

Before timing, every configuration checks that ours-f32, official and builtin
are bit-identical fp32 tensors, and that normalising ours-uint8 gives the same.
Timings are single-core (torch.set_num_threads(1)), best of --repeats rounds
(the machine may be shared). A second table gives multi-image throughput with
a thread pool of 1 and 2 workers, as the server's preprocessing workers run.

    .venv/bin/python benchmarks/bench_preprocessing.py [--quick|--smoke] [--json OUT]
    PYTHONPATH=/work/shared/tools/torchvision-cpu-shim \\
        .venv-bench/bin/python benchmarks/bench_preprocessing.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# Runnable from a checkout without installing the project.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from preprocessing import (  # noqa: E402
    IMAGENET_MEAN,
    IMAGENET_STD,
    find_grid,
    load_image,
    normalize_tiles,
    tile_image,
    tile_image_uint8,
)

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


def ours_uint8(data: bytes, max_tiles: int) -> torch.Tensor:
    return tile_image_uint8(load_image(data), max_tiles=max_tiles)


def ours_f32(data: bytes, max_tiles: int) -> torch.Tensor:
    return tile_image(load_image(data), max_tiles=max_tiles)


# Kept for callers of the previous version of this script.
ours = ours_f32


def builtin_processor_or_reason():
    """vLLM's built-in InternVL image processor call, or why it cannot run here."""
    try:
        import torchvision  # noqa: F401
        from vllm.transformers_utils.processors.internvl import InternVLImageProcessor
    except Exception as exc:  # ImportError, or torchvision's native-op RuntimeError
        return None, (
            f"vLLM built-in InternVL processor unavailable ({type(exc).__name__}: {str(exc)[:120]}); "
            "it needs torchvision: run benchmarks/setup_bench_env.sh and use "
            "PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python"
        )
    from vllm.multimodal.image import convert_image_mode

    processors: dict[int, InternVLImageProcessor] = {}

    def builtin(data: bytes, max_tiles: int) -> torch.Tensor:
        # vLLM's media connector decodes to PIL; the processor converts to RGB.
        image = convert_image_mode(Image.open(io.BytesIO(data)), "RGB")
        processor = processors.get(max_tiles)
        if processor is None:
            processor = processors[max_tiles] = InternVLImageProcessor(
                image_size=448, min_dynamic_patch=1, max_dynamic_patch=max_tiles,
                dynamic_image_size=True, use_thumbnail=True,
            )
        return processor(image)["pixel_values_flat"]

    return builtin, None


def images_per_second(function, data: bytes, max_tiles: int, min_seconds: float, repeats: int) -> float:
    function(data, max_tiles)  # warm caches and lazy imports
    best = 0.0
    for _ in range(repeats):
        runs, start = 0, time.perf_counter()
        while True:
            function(data, max_tiles)
            runs += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and runs >= 2:
                break
        best = max(best, runs / elapsed)
    return best


def pool_images_per_second(function, jobs: list[tuple[bytes, int]], workers: int, rounds: int) -> float:
    best = 0.0
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda job: function(*job), jobs[:workers]))  # warm the threads
        for _ in range(rounds):
            start = time.perf_counter()
            list(pool.map(lambda job: function(*job), jobs))
            best = max(best, len(jobs) / (time.perf_counter() - start))
    return best


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short timing runs, every configuration")
    size.add_argument("--smoke", action="store_true", help="one small configuration, minimal timing (CI)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: single-core figure)")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds, best taken (default 3)")
    parser.add_argument("--pool-workers", type=int, default=2, help="largest thread pool in the throughput table")
    parser.add_argument("--no-builtin", action="store_true", help="skip vLLM's built-in processor")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        sizes, budgets, min_seconds, repeats = ((640, 480),), (6,), 0.02, 1  # pool: 2 copies
    elif args.quick:
        sizes, budgets, min_seconds, repeats = SIZES, MAX_TILES, 0.2, 1
    else:
        sizes, budgets, min_seconds, repeats = SIZES, MAX_TILES, 1.0, 3
    repeats = args.repeats or repeats

    builtin, reason = (None, "disabled by --no-builtin") if args.no_builtin else builtin_processor_or_reason()
    implementations = {"ours-uint8": ours_uint8, "ours-f32": ours_f32, "official": official_pixel_values}
    if builtin is not None:
        implementations["builtin"] = builtin
    else:
        print(f"SKIPPED builtin: {reason}")

    print(f"cpu: {cpu_model()}, {os.cpu_count()} logical CPUs; torch threads: {args.threads}; "
          f"torch {torch.__version__}; best of {repeats} x {min_seconds}s")
    header = f"{'image':>10} {'max_tiles':>9} {'tiles':>5} " + " ".join(f"{name + ' img/s':>16}" for name in implementations)
    header += f" {'u8/official':>11} {'f32/official':>12}"
    if builtin is not None:
        header += f" {'u8/builtin':>10} {'f32/builtin':>11}"
    print(header)
    single = []
    for width, height in sizes:
        data = make_jpeg(width, height)
        for max_tiles in budgets:
            expected = official_pixel_values(data, max_tiles)
            outputs = {name: fn(data, max_tiles) for name, fn in implementations.items()}
            outputs["ours-uint8"] = normalize_tiles(outputs["ours-uint8"])
            for name, got in outputs.items():
                if got.dtype != torch.float32 or not torch.equal(got, expected):
                    raise SystemExit(f"{name} differs from official for {width}x{height} max_tiles={max_tiles}")
            # Interleaved rounds, best of each: a shared machine's load hits all alike.
            rates = dict.fromkeys(implementations, 0.0)
            for _ in range(repeats):
                for name, fn in implementations.items():
                    rates[name] = max(rates[name], images_per_second(fn, data, max_tiles, min_seconds, 1))
            row = {"image": f"{width}x{height}", "max_tiles": max_tiles, "tiles": int(expected.shape[0]),
                   "images_per_s": rates, "identical_fp32": True}
            line = f"{width}x{height:<5} {max_tiles:>9} {expected.shape[0]:>5} "
            line += " ".join(f"{rates[name]:>16.2f}" for name in implementations)
            line += f" {rates['ours-uint8'] / rates['official']:>10.2f}x {rates['ours-f32'] / rates['official']:>11.2f}x"
            if builtin is not None:
                line += f" {rates['ours-uint8'] / rates['builtin']:>9.2f}x {rates['ours-f32'] / rates['builtin']:>10.2f}x"
            print(line)
            single.append(row)
    print("all outputs bit-identical fp32 (ours-uint8 after normalize_tiles)")

    # Multi-image throughput: a mixed batch (every size at max_tiles 12) on a
    # thread pool, as the server's --preprocess-workers run it.
    pool_budget = 12 if 12 in budgets else budgets[0]
    copies = 2 if args.smoke or args.quick else 4
    jobs = [(make_jpeg(w, h), pool_budget) for w, h in sizes] * copies
    worker_counts = sorted({1, args.pool_workers})
    print(f"\nthroughput, {len(jobs)} images ({', '.join(f'{w}x{h}' for w, h in sizes)} x{copies}, "
          f"max_tiles {pool_budget}), thread pool, torch threads {args.threads}:")
    print(f"{'implementation':>16} " + " ".join(f"{f'{n} worker img/s':>17}" for n in worker_counts) + f" {'scaling':>8}")
    pool = {name: dict.fromkeys(worker_counts, 0.0) for name in implementations}
    for _ in range(max(repeats, 1)):
        for name, fn in implementations.items():
            for n in worker_counts:
                pool[name][n] = max(pool[name][n], pool_images_per_second(fn, jobs, n, 1))
    for name in implementations:
        rates = pool[name]
        print(f"{name:>16} " + " ".join(f"{rates[n]:>17.2f}" for n in worker_counts)
              + f" {rates[worker_counts[-1]] / rates[worker_counts[0]]:>7.2f}x")

    if args.json:
        args.json.write_text(json.dumps({
            "cpu": cpu_model(), "logical_cpus": os.cpu_count(), "torch_threads": args.threads,
            "builtin_skipped": reason, "single": single, "pool_jobs": len(jobs), "pool": pool,
        }, indent=2))


if __name__ == "__main__":
    main()
