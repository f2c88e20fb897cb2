"""Vision encoder time under tensor parallel 2: weight-sharded vs data-parallel.

`mm_encoder_tp_mode="weights"` (vLLM's default) shards every linear of the tower
across the TP ranks: each rank encodes every tile with a slice of the weights and
all-reduces twice per layer. `"data"` gives each rank the whole tower and a share
of the tiles, with one all-gather at the end. This script builds our InternViT
both ways in two processes (one per rank, one core each, gloo, as vLLM's CPU TP
does), loads the same random checkpoint-layout weights, checks the two agree,
then times them interleaved (the order alternates every round) and prints the
median and spread of the slowest rank's wall time per call.

The tower is a real config (`model_plugin.families`) cut to `--layers` layers so
it runs in seconds on a small machine; `--tiny` uses the test-size tower instead.
On a shared 2-core machine the figures are noisy: compare medians, read the spread.

    .venv/bin/python benchmarks/bench_encoder_tp_modes.py [--family InternVL2-1B] [--layers 4] [--tiles 7] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vision_encoder import random_weights, vision_config  # noqa: E402

MODES = ("weights", "data")
WORLD_SIZE = 2


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def engine_config(checkpoint: Path, mode: str):
    """A VllmConfig whose multimodal config carries `mode` (what the tower reads)."""
    from vllm.config import ModelConfig, VllmConfig

    model_config = ModelConfig(model=str(checkpoint), dtype="float32", mm_encoder_tp_mode=mode)
    return VllmConfig(model_config=model_config)


def build_tower(hf_config, values: dict):
    from model_plugin.intern_vit import InternVisionModel

    tower = InternVisionModel(hf_config, None, prefix="vision_model")
    tower.load_weights(random_weights(values))
    for module in tower.modules():
        quant_method = getattr(module, "quant_method", None)
        if quant_method is not None:
            quant_method.process_weights_after_loading(module)
    return tower.eval()


def slowest_rank_seconds(tower, tiles: torch.Tensor) -> tuple[float, torch.Tensor]:
    import torch.distributed as dist

    dist.barrier()
    start = time.perf_counter()
    out = tower(tiles)
    elapsed = torch.tensor([time.perf_counter() - start], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return elapsed.item(), out


def rank_main(rank: int, args: argparse.Namespace, port: int, result_path: str) -> None:
    os.sched_setaffinity(0, {rank % os.cpu_count()})
    torch.set_num_threads(1)

    from vllm.config import set_current_vllm_config
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment
    from vllm.plugins import load_general_plugins

    from model_plugin.make_checkpoint import ensure_checkpoint

    load_general_plugins()
    # Only its config is read (for the multimodal settings); the tower is built below.
    checkpoint = ensure_checkpoint(args.family, "tiny", Path(args.checkpoints))
    hf_config, values = vision_config(args.family, args.tiny, args.layers)
    configs = {mode: engine_config(checkpoint, mode) for mode in MODES}

    with set_current_vllm_config(configs["weights"]):
        init_distributed_environment(
            world_size=WORLD_SIZE,
            rank=rank,
            local_rank=rank,
            distributed_init_method=f"tcp://127.0.0.1:{port}",
            backend="gloo",
        )
        ensure_model_parallel_initialized(WORLD_SIZE, 1)

    towers = {}
    for mode in MODES:
        with set_current_vllm_config(configs[mode]):
            towers[mode] = build_tower(hf_config, values)
    assert towers["data"].use_data_parallel and not towers["weights"].use_data_parallel
    size = values["image_size"]
    tiles = torch.randn(args.tiles, 3, size, size, generator=torch.Generator().manual_seed(0))

    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    outputs = {}
    with torch.inference_mode():
        for mode in MODES:  # warm-up, and the outputs to compare
            with set_current_vllm_config(configs[mode]):
                _, outputs[mode] = slowest_rank_seconds(towers[mode], tiles)
        for round_index in range(args.rounds):
            order = MODES if round_index % 2 == 0 else MODES[::-1]
            for mode in order:
                with set_current_vllm_config(configs[mode]):
                    seconds, _ = slowest_rank_seconds(towers[mode], tiles)
                times[mode].append(seconds)

    if rank == 0:
        max_diff = (outputs["weights"] - outputs["data"]).abs().max().item()
        Path(result_path).write_text(json.dumps({"times": times, "max_abs_diff": max_diff}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="InternVL2-1B", help="tower config: InternVL2-1B (300M) or InternVL2-26B (6B)")
    parser.add_argument("--layers", type=int, default=4, help="encoder layers to build (default 4)")
    parser.add_argument("--tiny", action="store_true", help="the test-size tower instead of the real width")
    parser.add_argument("--tiles", type=int, default=7, help="tiles per call (odd: exercises the padding)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--checkpoints", default=str(Path(__file__).resolve().parent.parent / ".checkpoints"))
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()

    # vLLM's CPU communicator names its shared-memory group from this (its CPU
    # worker sets it); both ranks inherit the same value.
    os.environ.setdefault("VLLM_DIST_IDENT", f"bench-encoder-tp-{os.getpid()}")
    with tempfile.TemporaryDirectory() as scratch:
        result_path = os.path.join(scratch, "result.json")
        mp.spawn(rank_main, args=(args, free_port(), result_path), nprocs=WORLD_SIZE, join=True)
        result = json.loads(Path(result_path).read_text())

    tower = "tiny" if args.tiny else f"{args.layers} layers"
    print(f"{args.family} vision tower ({tower}), TP {WORLD_SIZE} on the CPU, {args.tiles} tiles/call, "
          f"{args.rounds} interleaved rounds; max |weights - data| = {result['max_abs_diff']:.2e}")
    summary = {}
    for mode, samples in result["times"].items():
        median = statistics.median(samples)
        summary[mode] = {"median_s": median, "min_s": min(samples), "max_s": max(samples),
                         "tiles_per_s": args.tiles / median, "samples_s": samples}
        print(f"  mm_encoder_tp_mode={mode:<8} median {median * 1e3:8.1f} ms  "
              f"spread {min(samples) * 1e3:.1f}-{max(samples) * 1e3:.1f} ms  ({args.tiles / median:.2f} tiles/s)")
    ratio = summary["weights"]["median_s"] / summary["data"]["median_s"]
    print(f"  data-parallel speed-up over weight-sharded: {ratio:.2f}x (median)")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "modes": summary, "speedup": ratio,
                                               "max_abs_diff": result["max_abs_diff"]}, indent=2))


if __name__ == "__main__":
    main()
