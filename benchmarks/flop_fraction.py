"""How far each A/B workload is from this machine's compute limit.

For every workload of an A/B run (bench_ab.py's JSON): the FLOPs a request
needs from the model (the work no server can skip), times the requests/s our
server reached, over the rate this CPU reaches on a large fp32 matmul. That
fraction is the distance to the limit: 100% would be a worker doing nothing but
the model's matmuls at full speed.

FLOPs a request needs, from the checkpoint's config (roofline.py's formulas:
matmuls and attention; norms, activations and softmax left out):
- encoder: the distinct tiles of its images (a document's identical blank tiles
  once; in multi-turn, the image on the first turn only, since a resent image
  needs no new encoding), each through the ViT and the projector;
- prefill: the prompt tokens outside the prefix cache: the whole prompt on a first
  turn; on later turns the new text plus the tail of the last 128-token KV block
  (vLLM's CPU block size), counted as 128 + the new tokens;
- decode: `max_tokens` tokens through every layer and the lm_head, each attending
  to the whole context.
Tiles are counted by tiling the workload's own images (preprocessing's tiler and
the plugin's tile digests); prompt lengths come from the A/B JSON (ours).

    .venv/bin/python benchmarks/flop_fraction.py benchmarks/results/ab_cache.json [more.json ...]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_ab  # noqa: E402
from benchmarks.bench_e2e import IMAGE_SIZES, make_jpeg  # noqa: E402
from benchmarks.roofline import llm_layer_params, llm_shapes, projector_flops_per_tile, vit_flops_per_tile  # noqa: E402
from model_plugin.tile_embedding_cache import tile_digests  # noqa: E402
from preprocessing import tile_image_uint8  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
KV_BLOCK = 128  # vLLM's CPU KV-cache block: a prefix-cache hit ends on one


def matmul_peak_gflops(size: int = 2048, repeats: int = 20) -> float:
    """Best fp32 GEMM rate of this process's torch threads (the engine's kernels are the same oneDNN/MKL)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


class Model:
    def __init__(self, config: dict) -> None:
        self.vision, self.llm = config["vision_config"], config["llm_config"]
        self.tile_gflop = (vit_flops_per_tile(self.vision)["total"] + projector_flops_per_tile(self.vision, self.llm)) / 1e9
        self.shape = llm_shapes(self.llm)
        self.layer_params = llm_layer_params(self.llm)

    def prefill_gflop(self, new: int, context: int) -> float:
        """`new` tokens after `context` cached ones: matmuls plus causal attention."""
        s = self.shape
        per_pair = 4 * s["layers"] * s["heads"] * s["head_dim"]
        pairs = new * context + new * (new + 1) / 2
        return (2 * self.layer_params * s["layers"] * new + per_pair * pairs) / 1e9

    def decode_gflop(self, tokens: int, context: int) -> float:
        s = self.shape
        head = 2 * s["hidden"] * s["vocab"]
        return sum(self.prefill_gflop(1, context + i) * 1e9 + head for i in range(tokens)) / 1e9


def distinct_tiles(jpeg: bytes, budget: int) -> tuple[int, int]:
    tiles = tile_image_uint8(Image.open(io.BytesIO(jpeg)).convert("RGB"), max_tiles=budget)
    return len(tiles), len({row.numpy().tobytes() for row in tile_digests(tiles)})


def request_gflop(model: Model, workload: str, prompts: list[int], max_tokens: int) -> dict:
    """Mean GFLOP per request of a workload, by part."""
    parts = {"encoder": [], "prefill": [], "decode": []}
    if workload == "multiturn":
        # Conversation i shows IMAGE_SIZES[i % 4]; its 4 prompts are the ones of its tile count
        # (a turn adds ~45 tokens, so a conversation's prompts share floor(tokens / 256)).
        for size in IMAGE_SIZES:
            count, distinct = distinct_tiles(make_jpeg(*size, seed=1), bench_ab.BUDGET)
            first, *later = sorted(p for p in prompts if p // 256 == count)
            turns = [(distinct, first, 0)]
            turns += [(0, KV_BLOCK + p - q, q - KV_BLOCK) for q, p in zip([first, *later], later)]
            for tiles, new, context in turns:
                parts["encoder"].append(tiles * model.tile_gflop)
                parts["prefill"].append(model.prefill_gflop(new, context))
                parts["decode"].append(model.decode_gflop(max_tokens, new + context))
    else:
        if workload == "documents":
            samples = [distinct_tiles(bench_ab.make_document(seed), bench_ab.BUDGET) for seed in range(8)]
        elif workload == "video":
            samples = [(bench_ab.FRAMES, bench_ab.FRAMES)]
        else:  # fresh: the sizes cycle, one request each
            samples = [distinct_tiles(make_jpeg(*size, seed=1), bench_ab.BUDGET) for size in IMAGE_SIZES]
        text = round(statistics.mean(p % 256 for p in prompts))  # the prompt beyond its 256-token tiles
        for count, distinct in samples:
            prompt = count * 256 + text
            parts["encoder"].append(distinct * model.tile_gflop)
            parts["prefill"].append(model.prefill_gflop(prompt, 0))
            parts["decode"].append(model.decode_gflop(max_tokens, prompt))
    means = {part: statistics.mean(values) for part, values in parts.items()}
    means["total"] = sum(means.values())
    return means


def checkpoint(path: Path) -> Path:
    """The run's checkpoint; on another machine, bench_ab.py's default one generated here."""
    if (path / "config.json").exists():
        return path
    from model_plugin.make_checkpoint import ensure_checkpoint

    return ensure_checkpoint("InternVL2-1B", "tiny", REPO / ".checkpoints")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", type=Path, nargs="+", help="bench_ab.py --json outputs")
    parser.add_argument("--model", type=Path, help="checkpoint dir (default: the one the run recorded)")
    parser.add_argument("--server", default="ours")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    peak = matmul_peak_gflops()
    print(f"fp32 matmul peak of this CPU ({torch.get_num_threads()} threads): {peak:.0f} GFLOP/s\n")
    rows = []
    for path in args.reports:
        report = json.loads(path.read_text())
        settings = report["settings"]
        model = Model(json.loads((checkpoint(args.model or Path(settings["model"])) / "config.json").read_text()))
        for row in report["table"]:
            rate = row["requests_per_s"][args.server]
            flops = request_gflop(model, row["workload"], row["prompt_tokens"][args.server], settings["max_tokens"])
            rows.append({"report": path.name, "workload": row["workload"], "concurrency": row["concurrency"],
                         "tp": settings.get("tp", 1), "requests_per_s": rate, "gflop_per_request": flops,
                         "achieved_gflops": rate * flops["total"], "fraction_of_peak": rate * flops["total"] / peak})
    print(f"{'workload':<10} {'c':>3} {'tp':>2} {'req/s':>6} {'GFLOP/req (enc+prefill+decode)':>34} "
          f"{'GFLOP/s':>8} {'of peak':>8}")
    for row in rows:
        f = row["gflop_per_request"]
        split = f"{f['total']:.1f} ({f['encoder']:.1f}+{f['prefill']:.1f}+{f['decode']:.2f})"
        print(f"{row['workload']:<10} {row['concurrency']:>3} {row['tp']:>2} {row['requests_per_s']:>6.2f} {split:>34} "
              f"{row['achieved_gflops']:>8.1f} {row['fraction_of_peak']:>8.1%}")
    if args.json:
        args.json.write_text(json.dumps({"peak_gflops": peak, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
