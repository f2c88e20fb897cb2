"""Roofline model of InternVL2 serving: FLOPs and bytes per image and per token.

For every family member in `model_plugin.families` (real hyper-parameters):

- ViT GFLOP per 448px tile: patch embedding + per layer qkv, QK^T, AV, proj, fc1,
  fc2 (matmuls only; norms, GELU, softmax are < 0.5% and left out). 1025 tokens
  (1024 patches + CLS), all `num_hidden_layers` (select_layer = -1).
- Projector (mlp1) GFLOP per tile: 256 pixel-shuffled tokens x LayerNorm(4d) ->
  Linear(4d, H) -> GELU -> Linear(H, H).
- LLM prefill GFLOP per token: 2 x non-embedding matmul params (q, k, v, o, gated
  MLP); the lm_head is excluded (vLLM computes logits for the last prompt token
  only) and attention's context-dependent part is reported separately
  (4 x L x heads x head_dim FLOPs per (query, key) pair; causal prefill of P
  tokens: 2 x L x heads x head_dim x P^2).
- Decode per token: 2 x (non-embedding + lm_head) params FLOPs; bytes = bf16
  weights read once per step (shared by the whole batch) + the KV cache of the
  sequence (2 x L x kv_heads x head_dim x 2 bytes per context token).

Request = one 12-tile image (+ thumbnail = 13 tiles, 13 x 256 = 3328 image
tokens, plus TEXT_TOKENS of prompt text) and 64 output tokens, on one H100 SXM
(989 TFLOP/s dense bf16, 3.35 TB/s HBM3, 80 GB). Bounds are at 100% of peak:

- images/s (vision + prefill, compute bound) = peak / (13 x (ViT + projector) +
  prefill FLOPs).
- requests/s at large batch = 1 / max(all FLOPs of a request / peak, its
  unshared bytes / bandwidth), where the unshared bytes are the KV cache written
  in prefill and re-read by each of the 64 decode steps (weights are shared by
  the batch and amortise away); output tokens/s = 64 x that. `bound` says which
  term binds. Note a decode step of one sequence with a ~3.4k-token context reads
  more KV bytes than its FLOPs can hide, so decode alone never turns compute
  bound, whatever the batch; the vision + prefill FLOPs dominate instead.
  `kv_fit` is how many such sequences' KV caches fit in 90% of 80 GB after bf16
  weights.
- batch-1 decode tokens/s (bandwidth bound) = bandwidth / bytes per token.

    .venv/bin/python benchmarks/roofline.py [--markdown] [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model_plugin.families import FAMILIES  # noqa: E402

H100_FLOPS = 989e12  # dense bf16 tensor-core peak, SXM
H100_BYTES_PER_S = 3.35e12
H100_MEMORY = 80e9
BYTES_PER_PARAM = 2  # bf16
TILE = 448
TILES = 13  # 12-tile grid + thumbnail
OUTPUT_TOKENS = 64
TEXT_TOKENS = 32  # chat template + question around the image
DOWNSAMPLE = 0.5


def vit_flops_per_tile(vision: dict, image_size: int = TILE) -> dict[str, float]:
    """Matmul FLOPs of one tile through the vision tower, by component."""
    d, f, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    patch = vision["patch_size"]
    patches = (image_size // patch) ** 2
    n = patches + 1  # + CLS
    parts = {
        "patch_embed": 2 * patches * (3 * patch * patch) * d,
        "qkv": layers * 2 * n * d * 3 * d,
        "attention": layers * 2 * 2 * n * n * d,  # QK^T and AV over all heads
        "proj": layers * 2 * n * d * d,
        "mlp": layers * 2 * 2 * n * d * f,
    }
    parts["total"] = sum(parts.values())
    return parts


def vit_flops_per_layer(vision: dict, image_size: int = TILE) -> float:
    one = dict(vision, num_hidden_layers=1)
    parts = vit_flops_per_tile(one, image_size)
    return parts["total"] - parts["patch_embed"]


def vit_params(vision: dict) -> int:
    d, f, layers = vision["hidden_size"], vision["intermediate_size"], vision["num_hidden_layers"]
    return layers * (4 * d * d + 2 * d * f)


def tokens_per_tile(vision: dict, image_size: int = TILE) -> int:
    return int((image_size // vision["patch_size"]) ** 2 * DOWNSAMPLE**2)


def projector_flops_per_tile(vision: dict, llm: dict) -> float:
    shuffled = vision["hidden_size"] * int(1 / DOWNSAMPLE) ** 2
    hidden = llm["hidden_size"]
    return 2 * tokens_per_tile(vision) * (shuffled * hidden + hidden * hidden)


def llm_shapes(llm: dict) -> dict[str, int]:
    hidden, heads = llm["hidden_size"], llm["num_attention_heads"]
    head_dim = llm.get("head_dim") or hidden // heads
    return {
        "hidden": hidden, "heads": heads, "kv_heads": llm["num_key_value_heads"], "head_dim": head_dim,
        "layers": llm["num_hidden_layers"], "intermediate": llm["intermediate_size"], "vocab": llm["vocab_size"],
    }


def llm_layer_params(llm: dict) -> int:
    s = llm_shapes(llm)
    q_dim, kv_dim = s["heads"] * s["head_dim"], s["kv_heads"] * s["head_dim"]
    attention = s["hidden"] * (q_dim + 2 * kv_dim) + q_dim * s["hidden"]
    mlp = 3 * s["hidden"] * s["intermediate"]  # gate, up, down
    return attention + mlp


@dataclass
class Roofline:
    family: str
    vit: str
    vit_params_m: float
    llm_params_b: float  # non-embedding + lm_head
    vit_gflop_per_tile: float
    projector_gflop_per_tile: float
    prefill_gflop_per_token: float  # matmuls, no attention, no lm_head
    attention_flop_per_token_pair: float
    decode_gflop_per_token: float
    decode_weight_gb_per_step: float
    kv_kb_per_token: float
    request_prompt_tokens: int
    request_vision_tflop: float
    request_prefill_tflop: float
    request_decode_tflop: float
    images_per_s: float
    requests_per_s: float
    output_tokens_per_s: float
    batch1_decode_tokens_per_s: float
    request_kv_gb: float
    bound: str
    weights_fit_80gb: bool
    kv_fit: int
    min_latency_ms: float


def roofline(name: str, tiles: int = TILES, output_tokens: int = OUTPUT_TOKENS) -> Roofline:
    spec = FAMILIES[name]
    vision, llm = spec.vision, spec.llm
    s = llm_shapes(llm)
    vit = vit_flops_per_tile(vision)["total"]
    projector = projector_flops_per_tile(vision, llm)
    layer_params = llm_layer_params(llm)
    body_params = s["layers"] * layer_params
    head_params = s["hidden"] * s["vocab"]
    prefill_per_token = 2 * body_params
    pair = 4 * s["layers"] * s["heads"] * s["head_dim"]  # QK^T + AV, one (query, key) pair
    prompt = tiles * tokens_per_tile(vision) + TEXT_TOKENS
    vision_total = tiles * (vit + projector)
    prefill_total = prompt * prefill_per_token + pair * prompt * (prompt + 1) / 2 + 2 * head_params
    decode_per_token = 2 * (body_params + head_params)
    decode_total = sum(decode_per_token + pair * (prompt + i) for i in range(output_tokens))
    request_flops = vision_total + prefill_total + decode_total
    weight_bytes = BYTES_PER_PARAM * (body_params + head_params)
    kv_per_token = 2 * s["layers"] * s["kv_heads"] * s["head_dim"] * BYTES_PER_PARAM
    vit_bytes = BYTES_PER_PARAM * (vit_params(vision) + 2 * 4 * vision["hidden_size"] * s["hidden"])
    embed_bytes = BYTES_PER_PARAM * s["vocab"] * s["hidden"]
    total_weights = weight_bytes + vit_bytes + embed_bytes
    mean_context = prompt + output_tokens / 2
    decode_bytes_batch1 = weight_bytes + kv_per_token * mean_context
    kv_request = kv_per_token * (prompt + sum(prompt + i for i in range(output_tokens)))
    compute_s, memory_s = request_flops / H100_FLOPS, kv_request / H100_BYTES_PER_S
    kv_fit = int(max(0.0, H100_MEMORY * 0.9 - total_weights) // (kv_per_token * (prompt + output_tokens)))
    step = max(decode_per_token / H100_FLOPS, decode_bytes_batch1 / H100_BYTES_PER_S)
    min_latency = (vision_total + prefill_total) / H100_FLOPS + output_tokens * step
    requests = 1 / max(compute_s, memory_s)
    return Roofline(
        family=name,
        vit=f"InternViT-{'6B' if spec.vision_style == '6b' else '300M'}",
        vit_params_m=vit_params(vision) / 1e6,
        llm_params_b=(body_params + head_params) / 1e9,
        vit_gflop_per_tile=vit / 1e9,
        projector_gflop_per_tile=projector / 1e9,
        prefill_gflop_per_token=prefill_per_token / 1e9,
        attention_flop_per_token_pair=pair,
        decode_gflop_per_token=decode_per_token / 1e9,
        decode_weight_gb_per_step=weight_bytes / 1e9,
        kv_kb_per_token=kv_per_token / 1e3,
        request_prompt_tokens=prompt,
        request_vision_tflop=vision_total / 1e12,
        request_prefill_tflop=prefill_total / 1e12,
        request_decode_tflop=decode_total / 1e12,
        images_per_s=H100_FLOPS / (vision_total + prefill_total),
        requests_per_s=requests,
        output_tokens_per_s=requests * output_tokens,
        batch1_decode_tokens_per_s=H100_BYTES_PER_S / decode_bytes_batch1,
        request_kv_gb=kv_request / 1e9,
        bound="compute" if compute_s >= memory_s else "KV bandwidth",
        weights_fit_80gb=total_weights < H100_MEMORY * 0.9,
        kv_fit=kv_fit,
        min_latency_ms=min_latency * 1e3,
    )


def markdown(rows: list[Roofline]) -> str:
    lines = [
        "| family | ViT | ViT GFLOP/tile | proj GFLOP/tile | LLM params (B) | prefill GFLOP/token | "
        "attn FLOP/(q,k) pair | decode GFLOP/token | decode weight GB/step | KV kB/token | "
        "request TFLOP (vision/prefill/decode) | images/s | requests/s = images/s incl. decode | "
        "KV GB/request | output tok/s (batched, bound) | batch-1 tok/s | fits 80 GB (KV seqs) | min latency ms |",
        "|" + "---|" * 19,
    ]
    for r in rows:
        lines.append(
            f"| {r.family} | {r.vit} | {r.vit_gflop_per_tile:.0f} | {r.projector_gflop_per_tile:.1f} | "
            f"{r.llm_params_b:.2f} | {r.prefill_gflop_per_token:.2f} | {r.attention_flop_per_token_pair:,.0f} | "
            f"{r.decode_gflop_per_token:.2f} | {r.decode_weight_gb_per_step:.2f} | {r.kv_kb_per_token:.0f} | "
            f"{r.request_vision_tflop:.2f} / {r.request_prefill_tflop:.2f} / {r.request_decode_tflop:.2f} | "
            f"{r.images_per_s:.1f} | {r.requests_per_s:.1f} | {r.request_kv_gb:.2f} | "
            f"{r.output_tokens_per_s:,.0f} ({r.bound}) | {r.batch1_decode_tokens_per_s:,.0f} | "
            f"{'yes' if r.weights_fit_80gb else 'NO'} ({r.kv_fit}) | {r.min_latency_ms:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--smoke", action="store_true", help="same output (the model is pure arithmetic)")
    args = parser.parse_args()
    rows = [roofline(name) for name in FAMILIES]
    print(f"H100 SXM: {H100_FLOPS / 1e12:.0f} TFLOP/s bf16 dense, {H100_BYTES_PER_S / 1e12:.2f} TB/s; request = "
          f"{TILES} tiles + {TEXT_TOKENS} text tokens, {OUTPUT_TOKENS} output tokens; bounds at 100% of peak")
    if args.markdown:
        print(markdown(rows))
    else:
        print(f"{'family':>28} {'ViT GF/tile':>11} {'proj GF':>8} {'prefill GF/tok':>14} {'decode GB/step':>14} "
              f"{'img/s':>7} {'req/s':>7} {'out tok/s':>9} {'b1 tok/s':>8} {'fits':>5}")
        for r in rows:
            print(f"{r.family:>28} {r.vit_gflop_per_tile:>11.0f} {r.projector_gflop_per_tile:>8.1f} "
                  f"{r.prefill_gflop_per_token:>14.2f} {r.decode_weight_gb_per_step:>14.2f} {r.images_per_s:>7.1f} "
                  f"{r.requests_per_s:>7.1f} {r.output_tokens_per_s:>9.0f} {r.batch1_decode_tokens_per_s:>8.0f} "
                  f"{'yes' if r.weights_fit_80gb else 'NO':>5}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))


if __name__ == "__main__":
    main()
