"""Tiles/s of the InternViT vision encoder: ours vs vLLM's built-in, at full size, on the CPU.

Both towers are built from the same real config (`model_plugin.families`: InternViT-300M
of InternVL2-1B..8B, InternViT-6B of InternVL2-26B..76B), get the same random
weights through their own `load_weights` (checkpoint names), and run the same
normalised fp32 tiles; the outputs are compared (max abs difference printed) before
timing. vLLM layers are built outside an engine: tp=1 gloo process group and a
default `VllmConfig` context, as vLLM's own layer tests do. The built-in module
does not need torchvision, so this runs in .venv as well as in .venv-bench.

The 6B does not fit twice in this machine's memory in bf16 (5.5 B params, 11 GB
each), so by default only the first --layers-6b of its 45 layers are built and the
full-tower time is extrapolated: t(45) = t_embed + 45 x (t(L) - t_embed) / L, with
t_embed (patch embedding) measured separately. `--layers-6b 45` runs it whole.

Achieved FLOP/s uses `roofline.vit_flops_per_tile` (matmul FLOPs). The CPU peak
is cores x GHz x FLOPs/cycle/core: GHz from /proc/cpuinfo "cpu MHz" (the TSC
rate under KVM; boost is unknown), FLOPs/cycle from lscpu flags: AVX-512F with
two 512-bit FMA pipes = 2 x 16 x 2 = 64 fp32; AVX512_BF16 (VDPBF16PS: 32 bf16
products accumulated into 16 fp32 per instruction, two pipes) = 128 bf16;
AMX-BF16 (Intel only) is reported when present. Zen 4 (family 0x19) executes
512-bit ops in two 256-bit halves, so its figures are halved.

    .venv/bin/python benchmarks/bench_vision_encoder.py [--smoke] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model_plugin.families import FAMILIES  # noqa: E402
from roofline import vit_flops_per_layer, vit_flops_per_tile  # noqa: E402

TOWERS = {"InternViT-300M": "InternVL2-1B", "InternViT-6B": "InternVL2-26B"}


def cpu_info() -> dict:
    info: dict = {"model": "unknown", "mhz": None, "flags": set(), "family": None}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key, value = key.strip(), value.strip()
            if key == "model name":
                info["model"] = value
            elif key == "cpu MHz" and info["mhz"] is None:
                info["mhz"] = float(value)
            elif key == "flags":
                info["flags"] = set(value.split())
            elif key == "cpu family" and info["family"] is None:
                info["family"] = int(value)
    except OSError:
        pass
    return info


def cpu_peak(cores: int, dtype: torch.dtype) -> tuple[float, str]:
    info = cpu_info()
    flags, ghz = info["flags"], (info["mhz"] or 0) / 1000
    if "avx512f" in flags:
        fp32, simd = 64, "AVX-512F, 2 x 512-bit FMA pipes"
    elif "avx2" in flags and "fma" in flags:
        fp32, simd = 32, "AVX2 FMA, 2 x 256-bit pipes"
    else:
        fp32, simd = 8, "SSE"
    bf16, bf16_how = fp32, "no bf16 dot-product instructions: bf16 runs at fp32 rate"
    if "amx_bf16" in flags:
        bf16, bf16_how = 1024, "AMX-BF16 (1024 FLOPs/cycle/core)"
    elif "avx512_bf16" in flags:
        bf16, bf16_how = 2 * fp32, "AVX512_BF16 VDPBF16PS (2x fp32 rate)"
    half = ""
    if info["family"] == 0x19 and "avx512f" in flags:  # Zen 4: 512-bit ops double-pumped
        fp32, bf16, half = fp32 // 2, bf16 // 2, " (Zen 4: 512-bit double-pumped, halved)"
    per_cycle = bf16 if dtype == torch.bfloat16 else fp32
    peak = cores * ghz * 1e9 * per_cycle
    how = (f"{cores} cores x {ghz:.3f} GHz x {per_cycle} FLOPs/cycle ({simd}; {bf16_how}){half} "
           f"= {peak / 1e9:.0f} GFLOP/s {str(dtype).removeprefix('torch.')}")
    return peak, how


def gemm_ceiling(dtype: torch.dtype, n: int = 4096, repeats: int = 3) -> float:
    """Best FLOP/s of one large square torch.matmul: what this CPU really sustains."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def init_vllm_single_process():
    """tp=1 distributed state + a default VllmConfig, as vLLM's layer tests set up."""
    from vllm.config import VllmConfig, set_current_vllm_config
    from vllm.distributed import init_distributed_environment, initialize_model_parallel

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    context = set_current_vllm_config(VllmConfig())
    context.__enter__()
    init_distributed_environment(world_size=1, rank=0, local_rank=0,
                                 distributed_init_method=f"tcp://127.0.0.1:{port}", backend="gloo")
    initialize_model_parallel(tensor_model_parallel_size=1)
    return context


def vision_config(family: str, tiny: bool, layers: int | None):
    from transformers import PretrainedConfig

    spec = FAMILIES[family].tiny() if tiny else FAMILIES[family]
    values = dict(spec.vision)
    if layers is not None:
        values["num_hidden_layers"] = layers
    return PretrainedConfig(**values), values


def random_weights(config: dict, seed: int = 0):
    """Checkpoint-named vision tensors (no `vision_model.` prefix), generated lazily per layer."""
    g = torch.Generator().manual_seed(seed)
    d, f, patch = config["hidden_size"], config["intermediate_size"], config["patch_size"]
    grid = config["image_size"] // patch

    def rnd(*shape, std=0.02):
        return torch.randn(*shape, generator=g) * std

    yield "embeddings.class_embedding", rnd(1, 1, d)
    yield "embeddings.patch_embedding.weight", rnd(d, 3, patch, patch)
    yield "embeddings.patch_embedding.bias", rnd(d)
    yield "embeddings.position_embedding", rnd(1, grid * grid + 1, d)
    layer_norm = config["norm_type"] == "layer_norm"
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layers.{i}."
        yield p + "attn.qkv.weight", rnd(3 * d, d)
        if config["qkv_bias"]:
            yield p + "attn.qkv.bias", rnd(3 * d)
        if config["qk_normalization"]:
            yield p + "attn.q_norm.weight", 1 + rnd(d)
            yield p + "attn.k_norm.weight", 1 + rnd(d)
        yield p + "attn.proj.weight", rnd(d, d)
        yield p + "attn.proj.bias", rnd(d)
        yield p + "mlp.fc1.weight", rnd(f, d)
        yield p + "mlp.fc1.bias", rnd(f)
        yield p + "mlp.fc2.weight", rnd(d, f)
        yield p + "mlp.fc2.bias", rnd(d)
        yield p + "ls1", torch.full((d,), 0.1)
        yield p + "ls2", torch.full((d,), 0.1)
        for norm in ("norm1", "norm2"):
            yield p + f"{norm}.weight", 1 + rnd(d)
            if layer_norm:
                yield p + f"{norm}.bias", rnd(d)


def build(kind: str, hf_config, values: dict, dtype: torch.dtype):
    if kind == "ours":
        from model_plugin.intern_vit import InternVisionModel
        model_factory = lambda: InternVisionModel(hf_config, None, prefix="vision_model")  # noqa: E731
    else:
        from vllm.model_executor.models.intern_vit import InternVisionModel
        model_factory = lambda: InternVisionModel(hf_config, None, prefix="vision_model")  # noqa: E731
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = model_factory()
    finally:
        torch.set_default_dtype(previous)
    model.load_weights((name, tensor.to(dtype)) for name, tensor in random_weights(values))
    # What vLLM's loader does after load_weights: on the CPU this picks the GEMM
    # kernel (oneDNN / packed weights) of every linear layer.
    for module in model.modules():
        quant_method = getattr(module, "quant_method", None)
        if quant_method is not None and hasattr(quant_method, "process_weights_after_loading"):
            quant_method.process_weights_after_loading(module)
    return model.eval()


def run(model, kind: str, tiles: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(tiles) if kind == "ours" else model(pixel_values=tiles)


def embed_seconds(model, kind: str, tiles: torch.Tensor) -> float:
    with torch.inference_mode():
        model.embeddings(tiles)
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            model.embeddings(tiles)
            best = min(best, time.perf_counter() - start)
        return best


def time_forward(model, kind: str, tiles: torch.Tensor, repeats: int, warm: bool = True) -> float:
    if warm:
        run(model, kind, tiles)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(model, kind, tiles)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny towers, one tile (CI)")
    parser.add_argument("--towers", nargs="+", default=list(TOWERS), choices=list(TOWERS))
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--tiles", type=int, default=2, help="tiles per forward (batch)")
    parser.add_argument("--layers-6b", type=int, default=4, help="6B layers built (45 = whole tower)")
    parser.add_argument("--layers-300m", type=int, default=None, help="300M layers built (default all 24)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed forwards, best taken")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default all cores)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    tiles_n = 1 if args.smoke else args.tiles
    init_vllm_single_process()
    peak, how = cpu_peak(args.threads, dtype)
    print(f"cpu: {cpu_info()['model']}; torch {torch.__version__}, threads {args.threads}, dtype {args.dtype}")
    print(f"peak: {how}")
    gemm = gemm_ceiling(dtype, 512 if args.smoke else 4096)
    print(f"measured ceiling: {gemm / 1e9:.0f} GFLOP/s ({args.dtype} {512 if args.smoke else 4096}^3 torch.matmul, best of 3)"
          f" = {gemm / peak:.0%} of the nominal peak; implies >= {gemm / peak * cpu_info()['mhz'] / 1000:.2f} GHz"
          " effective clock if the FLOPs/cycle above hold (boost clocks are not visible under KVM)")
    results = []
    for tower in args.towers:
        family = TOWERS[tower]
        full_layers = FAMILIES[family].vision["num_hidden_layers"]
        if args.smoke:
            full_layers = FAMILIES[family].tiny().vision["num_hidden_layers"]
        built_layers = None if args.smoke else (args.layers_6b if tower == "InternViT-6B" else args.layers_300m)
        if built_layers is not None and built_layers >= full_layers:
            built_layers = None
        hf_config, values = vision_config(family, args.smoke, built_layers)
        layers = values["num_hidden_layers"]
        tiles = torch.randn(tiles_n, 3, values["image_size"], values["image_size"], generator=torch.Generator().manual_seed(1))
        tiles = tiles.to(dtype)

        models = {}
        outputs = {}
        for kind in ("ours", "builtin"):
            try:
                models[kind] = build(kind, hf_config, values, dtype)
                outputs[kind] = run(models[kind], kind, tiles)
            except Exception as exc:  # report, keep ours
                print(f"SKIPPED {tower} {kind}: {type(exc).__name__}: {exc}")
                models.pop(kind, None)
        diff = None
        if len(outputs) == 2:
            diff = (outputs["ours"].float() - outputs["builtin"].float()).abs().max().item()
            scale = outputs["builtin"].float().abs().max().item()
            print(f"{tower}: max |ours - builtin| = {diff:.3g} (max |builtin| = {scale:.3g})")
        del outputs

        flops_layer = vit_flops_per_layer(values)
        flops_full = vit_flops_per_tile(dict(values, num_hidden_layers=full_layers))["total"]
        # Interleaved rounds (ours, builtin, ours, ...), best of each: load from other
        # users of a shared machine then hits both alike.
        best = {kind: float("inf") for kind in models}
        for kind, model in models.items():
            run(model, kind, tiles)  # warm-up
        for _ in range(1 if args.smoke else args.repeats):
            for kind, model in models.items():
                best[kind] = min(best[kind], time_forward(model, kind, tiles, 1, warm=False))
        for kind, model in models.items():
            seconds = best[kind]
            t_embed = embed_seconds(model, kind, tiles)
            per_layer = (seconds - t_embed) / layers
            full_seconds = seconds if layers == full_layers else t_embed + full_layers * per_layer
            tiles_per_s = tiles_n / full_seconds
            achieved = flops_full * tiles_n / full_seconds
            row = {
                "tower": tower, "impl": kind, "dtype": args.dtype, "tiles_per_forward": tiles_n,
                "layers_built": layers, "layers_full": full_layers, "forward_s": seconds, "embed_s": t_embed,
                "layer_s_per_tile": per_layer / tiles_n, "layer_gflop_per_tile": flops_layer / 1e9,
                "full_s_per_tile": full_seconds / tiles_n, "tiles_per_s": tiles_per_s,
                "achieved_gflops": achieved / 1e9, "peak_gflops": peak / 1e9, "fraction_of_peak": achieved / peak,
                "gemm_ceiling_gflops": gemm / 1e9, "fraction_of_gemm": achieved / gemm,
                "extrapolated": layers != full_layers, "max_abs_diff": diff,
            }
            results.append(row)
            print(f"{tower:>15} {kind:>8}: {layers}/{full_layers} layers built, forward of {tiles_n} tiles {seconds:.2f}s "
                  f"(embed {t_embed * 1e3:.0f} ms), {per_layer / tiles_n * 1e3:.0f} ms/layer/tile -> "
                  f"{tiles_per_s:.3f} tiles/s{' (extrapolated)' if row['extrapolated'] else ''}, "
                  f"{achieved / 1e9:.0f} GFLOP/s = {achieved / peak:.0%} of nominal peak, {achieved / gemm:.0%} of GEMM ceiling")
        if len(models) == 2:
            ours, builtin = (r for r in results[-2:])
            print(f"{tower:>15}    ratio: ours/builtin tiles/s = {ours['tiles_per_s'] / builtin['tiles_per_s']:.3f}")
        del models

    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_info()["model"], "peak": how, "gemm_ceiling_gflops": gemm / 1e9, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
