"""Generate InternVL2 checkpoints that are real in everything but weight values.

`tiny` writes a test-size model with random weights under the released
parameter names; `full` writes the real-size config, tokenizer and generation
config only, for vLLM's `load_format="dummy"`.

Two layouts:
- `released` (default): the file set and formats of the hub repository
  (`released_layout.py`): remote-code `auto_map` and stand-in `.py` files, the
  4.x-era config fields, the released tokenizer kind and files, weights in as
  many shards as the release, named as released;
- `minimal`: our own compact form (one byte-level BPE `tokenizer.json`,
  transformers-5 config spelling, shards cut at `max_shard_bytes`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from safetensors.torch import save_file

from .configuration import InternVLChatConfig
from .families import FAMILIES, FamilySpec, get_family
from .released_layout import (
    release_for,
    released_config,
    released_generation_config,
    released_shard_names,
    write_remote_code_stand_ins,
)
from .tokenizer import build_tokenizer, save_tokenizer

__all__ = [
    "GENERATOR_VERSION",
    "LAYOUTS",
    "build_config",
    "ensure_checkpoint",
    "expected_weight_shapes",
    "main",
    "make_checkpoint",
    "random_weights",
]

Scale = Literal["tiny", "full"]
Layout = Literal["released", "minimal"]
LAYOUTS: tuple[str, ...] = ("released", "minimal")

# Bump when the output of make_checkpoint changes, so cached checkpoints from
# an older generator are not reused by ensure_checkpoint.
GENERATOR_VERSION = 3
DEFAULT_MAX_SHARD_BYTES = 2_000_000
# Target standard deviation of the logits: wide enough that random weights
# rarely produce near-ties between the top two tokens, which would make
# greedy outputs flip on rounding noise between two implementations.
LOGIT_STD = 4.0


def _spec_for(family: str, scale: Scale) -> FamilySpec:
    spec = get_family(family)
    if scale == "tiny":
        return spec.tiny()
    if scale == "full":
        return spec
    raise ValueError(f"scale must be 'tiny' or 'full', got {scale!r}")


def build_config(spec: FamilySpec, token_ids: dict[str, int], vocab_size: int | None = None) -> InternVLChatConfig:
    """The composite config, with LLM token ids taken from our tokenizer."""
    llm = dict(spec.llm)
    if vocab_size is not None:
        llm["vocab_size"] = vocab_size
    tokens = spec.tokens
    llm["bos_token_id"] = token_ids[tokens.bos] if tokens.bos else None
    llm["eos_token_id"] = token_ids[tokens.eos]
    llm["pad_token_id"] = token_ids[tokens.pad] if tokens.pad else None
    dtype = "float32" if spec.is_tiny else "bfloat16"
    llm["torch_dtype"] = dtype
    vision = dict(spec.vision, torch_dtype=dtype)
    return InternVLChatConfig(
        vision_config=vision,
        llm_config=llm,
        use_backbone_lora=0,
        use_llm_lora=0,
        select_layer=-1,
        force_image_size=448,
        downsample_ratio=0.5,
        template=spec.template,
        dynamic_image_size=True,
        use_thumbnail=True,
        ps_version="v2",
        min_dynamic_patch=1,
        max_dynamic_patch=12,
        torch_dtype=dtype,
        architectures=["InternVLChatModel"],
    )


def _config_json(config: InternVLChatConfig) -> dict[str, Any]:
    data = config.to_dict()
    dtype = str(data.get("dtype") or config.vision_config.dtype).removeprefix("torch.")
    # transformers 5 writes `dtype`; released configs and 4.x read `torch_dtype`.
    data["torch_dtype"] = data["dtype"] = dtype
    for sub in ("vision_config", "llm_config"):
        data[sub]["torch_dtype"] = data[sub]["dtype"] = dtype
    llm = data["llm_config"]
    rope = llm.get("rope_parameters")
    if isinstance(rope, dict):
        # Legacy spelling next to the new one, as transformers 4.x expects it.
        llm["rope_theta"] = rope.get("rope_theta")
        if rope.get("rope_type", "default") == "default":
            llm["rope_scaling"] = None
        else:
            legacy = {k: v for k, v in rope.items() if k not in ("rope_type", "rope_theta", "type")}
            llm["rope_scaling"] = {"type": rope["rope_type"], **legacy}
    return data


def expected_weight_shapes(config: InternVLChatConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor name of the released checkpoint format, with its shape."""
    shapes: dict[str, tuple[int, ...]] = {}
    shapes.update(_vision_shapes(config.vision_config))
    vit = config.vision_config.hidden_size
    llm_hidden = config.llm_config.hidden_size
    merged = vit * int(1 / config.downsample_ratio) ** 2
    shapes.update({
        "mlp1.0.weight": (merged,),
        "mlp1.0.bias": (merged,),
        "mlp1.1.weight": (llm_hidden, merged),
        "mlp1.1.bias": (llm_hidden,),
        "mlp1.3.weight": (llm_hidden, llm_hidden),
        "mlp1.3.bias": (llm_hidden,),
    })
    shapes.update({f"language_model.{k}": v for k, v in _llm_shapes(config.llm_config).items()})
    return shapes


def _vision_shapes(vc: Any) -> dict[str, tuple[int, ...]]:
    c = vc.hidden_size
    patches = (vc.image_size // vc.patch_size) ** 2
    shapes: dict[str, tuple[int, ...]] = {
        "vision_model.embeddings.class_embedding": (1, 1, c),
        "vision_model.embeddings.patch_embedding.weight": (c, vc.num_channels, vc.patch_size, vc.patch_size),
        "vision_model.embeddings.patch_embedding.bias": (c,),
        "vision_model.embeddings.position_embedding": (1, patches + 1, c),
    }
    has_norm_bias = vc.norm_type == "layer_norm"
    for i in range(vc.num_hidden_layers):
        p = f"vision_model.encoder.layers.{i}."
        shapes[p + "attn.qkv.weight"] = (3 * c, c)
        if vc.qkv_bias:
            shapes[p + "attn.qkv.bias"] = (3 * c,)
        if vc.qk_normalization:
            shapes[p + "attn.q_norm.weight"] = (c,)
            shapes[p + "attn.k_norm.weight"] = (c,)
        shapes[p + "attn.proj.weight"] = (c, c)
        shapes[p + "attn.proj.bias"] = (c,)
        shapes[p + "mlp.fc1.weight"] = (vc.intermediate_size, c)
        shapes[p + "mlp.fc1.bias"] = (vc.intermediate_size,)
        shapes[p + "mlp.fc2.weight"] = (c, vc.intermediate_size)
        shapes[p + "mlp.fc2.bias"] = (c,)
        for norm in ("norm1", "norm2"):
            shapes[p + f"{norm}.weight"] = (c,)
            if has_norm_bias:
                shapes[p + f"{norm}.bias"] = (c,)
        shapes[p + "ls1"] = (c,)
        shapes[p + "ls2"] = (c,)
    return shapes


def _llm_shapes(lc: Any) -> dict[str, tuple[int, ...]]:
    arch = lc.architectures[0]
    h, inter, vocab = lc.hidden_size, lc.intermediate_size, lc.vocab_size
    heads, kv = lc.num_attention_heads, lc.num_key_value_heads
    d = getattr(lc, "head_dim", None) or h // heads
    shapes: dict[str, tuple[int, ...]] = {}
    if arch == "InternLM2ForCausalLM":
        shapes["model.tok_embeddings.weight"] = (vocab, h)
        for i in range(lc.num_hidden_layers):
            p = f"model.layers.{i}."
            # Packed per KV group as [q_0..q_{g-1}, k, v]; same total rows.
            shapes[p + "attention.wqkv.weight"] = ((heads + 2 * kv) * d, h)
            shapes[p + "attention.wo.weight"] = (h, heads * d)
            shapes[p + "feed_forward.w1.weight"] = (inter, h)
            shapes[p + "feed_forward.w3.weight"] = (inter, h)
            shapes[p + "feed_forward.w2.weight"] = (h, inter)
            shapes[p + "attention_norm.weight"] = (h,)
            shapes[p + "ffn_norm.weight"] = (h,)
        shapes["model.norm.weight"] = (h,)
        shapes["output.weight"] = (vocab, h)
        return shapes
    shapes["model.embed_tokens.weight"] = (vocab, h)
    for i in range(lc.num_hidden_layers):
        p = f"model.layers.{i}."
        if arch == "GptOssForCausalLM":
            shapes.update(_gpt_oss_layer_shapes(p, lc, d))
        elif arch == "Phi3ForCausalLM":
            shapes[p + "self_attn.qkv_proj.weight"] = ((heads + 2 * kv) * d, h)
            shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
            shapes[p + "mlp.gate_up_proj.weight"] = (2 * inter, h)
            shapes[p + "mlp.down_proj.weight"] = (h, inter)
        else:
            qkv_bias = arch == "Qwen2ForCausalLM" or getattr(lc, "attention_bias", False)
            for name, rows in (("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)):
                shapes[p + f"self_attn.{name}.weight"] = (rows, h)
                if qkv_bias:
                    shapes[p + f"self_attn.{name}.bias"] = (rows,)
            shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
            if arch in ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM"):
                shapes[p + "self_attn.q_norm.weight"] = (d,)
                shapes[p + "self_attn.k_norm.weight"] = (d,)
            if arch == "Qwen3MoeForCausalLM" and _is_sparse_layer(lc, i):
                shapes.update(_qwen3_moe_shapes(p, lc))
            else:
                shapes[p + "mlp.gate_proj.weight"] = (inter, h)
                shapes[p + "mlp.up_proj.weight"] = (inter, h)
                shapes[p + "mlp.down_proj.weight"] = (h, inter)
        shapes[p + "input_layernorm.weight"] = (h,)
        shapes[p + "post_attention_layernorm.weight"] = (h,)
    shapes["model.norm.weight"] = (h,)
    if not lc.tie_word_embeddings:
        shapes["lm_head.weight"] = (vocab, h)
    return shapes


def _is_sparse_layer(lc: Any, layer: int) -> bool:
    step = lc.decoder_sparse_step
    return layer not in lc.mlp_only_layers and lc.num_experts > 0 and (layer + 1) % step == 0


def _qwen3_moe_shapes(p: str, lc: Any) -> dict[str, tuple[int, ...]]:
    """Qwen3-MoE's router and experts, one tensor set per expert as released."""
    h, inter = lc.hidden_size, lc.moe_intermediate_size
    shapes: dict[str, tuple[int, ...]] = {p + "mlp.gate.weight": (lc.num_experts, h)}
    for e in range(lc.num_experts):
        shapes[p + f"mlp.experts.{e}.gate_proj.weight"] = (inter, h)
        shapes[p + f"mlp.experts.{e}.up_proj.weight"] = (inter, h)
        shapes[p + f"mlp.experts.{e}.down_proj.weight"] = (h, inter)
    return shapes


def _gpt_oss_layer_shapes(p: str, lc: Any, d: int) -> dict[str, tuple[int, ...]]:
    """GPT-OSS in transformers' bf16 form: biased attention with sinks, fused experts
    (gate and up interleaved along the last axis of `gate_up_proj`)."""
    h, inter, experts = lc.hidden_size, lc.intermediate_size, lc.num_local_experts
    heads, kv = lc.num_attention_heads, lc.num_key_value_heads
    shapes: dict[str, tuple[int, ...]] = {}
    for name, rows in (("q_proj", heads * d), ("k_proj", kv * d), ("v_proj", kv * d)):
        shapes[p + f"self_attn.{name}.weight"] = (rows, h)
        shapes[p + f"self_attn.{name}.bias"] = (rows,)
    shapes[p + "self_attn.o_proj.weight"] = (h, heads * d)
    shapes[p + "self_attn.o_proj.bias"] = (h,)
    shapes[p + "self_attn.sinks"] = (heads,)
    shapes[p + "mlp.router.weight"] = (experts, h)
    shapes[p + "mlp.router.bias"] = (experts,)
    shapes[p + "mlp.experts.gate_up_proj"] = (experts, h, 2 * inter)
    shapes[p + "mlp.experts.gate_up_proj_bias"] = (experts, 2 * inter)
    shapes[p + "mlp.experts.down_proj"] = (experts, inter, h)
    shapes[p + "mlp.experts.down_proj_bias"] = (experts, h)
    return shapes


_NORM_MARKERS = ("norm", "mlp1.0.")
_OUTPUT_NAMES = ("language_model.lm_head.weight", "language_model.output.weight")


def _init_tensor(name: str, shape: tuple[int, ...], gen: torch.Generator, *, is_output: bool, lm_hidden: int) -> torch.Tensor:
    """Deterministic values chosen by role so a forward pass stays well-scaled.

    Everything is non-zero (biases too) so a weight that a loader silently
    skips changes the output and gets caught by comparison tests.
    """
    def normal(std: float) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float32) * std

    if is_output:
        return normal(LOGIT_STD / math.sqrt(lm_hidden))
    if name.endswith(("ls1", "ls2")):
        return 0.2 + 0.6 * torch.rand(shape, generator=gen, dtype=torch.float32)
    if any(marker in name for marker in _NORM_MARKERS) and name.endswith(".weight"):
        return 1.0 + normal(0.05)
    if name.endswith(("embed_tokens.weight", "tok_embeddings.weight")):
        return normal(1.0)
    if name.endswith(("class_embedding", "position_embedding")):
        return normal(0.02)
    if name.endswith(".bias") or len(shape) == 1:
        return normal(0.02)
    # Unit-gain init (std 1/sqrt(fan_in)): each sub-layer contributes O(1) to
    # the residual stream, so image features and every layer visibly matter.
    if len(shape) == 3:  # GPT-OSS's fused experts, [experts, in, out]
        return normal(1.0 / math.sqrt(shape[1]))
    return normal(1.0 / math.sqrt(math.prod(shape[1:])))


def random_weights(config: InternVLChatConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Float32 random weights for every expected tensor, deterministic by seed."""
    lm_hidden = config.llm_config.hidden_size
    output_names = set(_OUTPUT_NAMES)
    if config.llm_config.tie_word_embeddings:
        # The embedding doubles as the output projection, so it carries the logit scale.
        output_names.add("language_model.model.embed_tokens.weight")
    weights = {}
    for name, shape in expected_weight_shapes(config).items():
        # Seed per tensor, so one tensor's values don't depend on the others.
        gen = torch.Generator().manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63))
        tensor = _init_tensor(name, shape, gen, is_output=name in output_names, lm_hidden=lm_hidden)
        weights[name] = tensor.contiguous()
    return weights


def _save_weights(weights: dict[str, torch.Tensor], out: Path, max_shard_bytes: int) -> list[str]:
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in weights.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    metadata = {"format": "pt"}
    if len(shards) == 1:
        save_file(shards[0], str(out / "model.safetensors"), metadata=metadata)
        return ["model.safetensors"]
    files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map = {}
    for filename, shard in zip(files, shards):
        save_file(shard, str(out / filename), metadata=metadata)
        weight_map.update(dict.fromkeys(shard, filename))
    total = sum(t.numel() * t.element_size() for t in weights.values())
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def _save_released_weights(weights: dict[str, torch.Tensor], out: Path, shards: int) -> list[str]:
    """Split into the release's shard count, in the released tensor order.

    The releases were written by `save_pretrained` in module order: the vision
    tower, the language model, then the projector `mlp1`, cut into contiguous
    shards; one file has no index.
    """
    def module_rank(name: str) -> int:
        return 0 if name.startswith("vision_model.") else 1 if name.startswith("language_model.") else 2

    names = sorted(weights, key=module_rank)  # stable: keeps layer order within a module
    if len(names) < shards:
        raise ValueError(f"{len(names)} tensors cannot fill {shards} shards")
    sizes = [weights[n].numel() * weights[n].element_size() for n in names]
    files = released_shard_names(shards)
    groups: list[list[str]] = []
    start, left_bytes = 0, sum(sizes)
    for k in range(shards):
        shards_left = shards - k
        target = left_bytes / shards_left
        end, taken = start + 1, sizes[start]
        # Leave at least one tensor for every shard still to fill.
        while end < len(names) - (shards_left - 1) and taken + sizes[end] / 2 <= target:
            taken += sizes[end]
            end += 1
        if k == shards - 1:
            end = len(names)
        groups.append(names[start:end])
        left_bytes -= sum(sizes[start:end])
        start = end
    metadata = {"format": "pt"}
    weight_map = {}
    for filename, group in zip(files, groups):
        save_file({n: weights[n] for n in group}, str(out / filename), metadata=metadata)
        weight_map.update(dict.fromkeys(group, filename))
    if shards > 1:
        index = {"metadata": {"total_size": sum(sizes)}, "weight_map": dict(sorted(weight_map.items()))}
        (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return files


def _clear_old_weights(out: Path) -> None:
    for path in list(out.glob("*.safetensors")) + list(out.glob("model.safetensors.index.json")):
        path.unlink()


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def _write_released_tokenizer(spec: FamilySpec, out: Path) -> tuple[dict[str, int], int]:
    """The release's tokenizer files; returns special-token ids and the tokenizer's size."""
    from .tokenizer import write_released_tokenizer

    ids = write_released_tokenizer(spec, out)
    # Every release appends the InternVL tokens last, so they end the vocabulary.
    return ids, max(ids.values()) + 1


def make_checkpoint(
    family: str,
    scale: Scale,
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    layout: Layout = "released",
) -> Path:
    """Write a checkpoint directory for `family` at `scale`; returns its path.

    `max_shard_bytes` applies to the minimal layout; the released one always
    has the release's shard count.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    spec = _spec_for(family, scale)
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    if layout == "released":
        token_ids, tokenizer_size = _write_released_tokenizer(spec, out_path)
    else:
        tokenizer = build_tokenizer(spec)
        token_ids = save_tokenizer(spec, tokenizer, out_path)
        tokenizer_size = tokenizer.get_vocab_size(with_added_tokens=True)
    config = build_config(spec, token_ids, tokenizer_size if spec.is_tiny else None)
    if config.llm_config.vocab_size < tokenizer_size:
        raise AssertionError("tokenizer larger than the model vocabulary")
    stop_ids = [token_ids[tok] for tok in spec.stop_tokens]
    if layout == "released":
        dtype = "float32" if spec.is_tiny else "bfloat16"
        llm_overrides = {
            "vocab_size": config.llm_config.vocab_size,
            "bos_token_id": config.llm_config.bos_token_id,
            "eos_token_id": config.llm_config.eos_token_id,
            "pad_token_id": config.llm_config.pad_token_id,
        }
        _write_json(out_path / "config.json", released_config(spec, llm_overrides, dtype))
        _write_json(out_path / "generation_config.json", released_generation_config(stop_ids))
        write_remote_code_stand_ins(spec, out_path)
    else:
        _write_json(out_path / "config.json", _config_json(config))
        generation = {
            "bos_token_id": config.llm_config.bos_token_id,
            "eos_token_id": stop_ids,
            "pad_token_id": config.llm_config.pad_token_id,
            "transformers_version": "5.0.0",
        }
        _write_json(out_path / "generation_config.json", {k: v for k, v in generation.items() if v is not None})
    _clear_old_weights(out_path)
    if spec.is_tiny:
        weights = random_weights(config, seed)
        if layout == "released":
            # A tiny twin of the largest releases has fewer tensors than they have shards.
            _save_released_weights(weights, out_path, min(release_for(spec).shards, len(weights)))
        else:
            _save_weights(weights, out_path, max_shard_bytes)
    return out_path


def ensure_checkpoint(
    family: str,
    scale: Scale,
    cache_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    layout: Layout = "released",
) -> Path:
    """Generate once into `cache_dir` and reuse; safe against concurrent callers.

    Generation happens in a temporary sibling directory that is renamed into
    place, so a directory that exists is always complete.
    """
    get_family(family)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    final = cache / f"{family}-{scale}-{layout}-seed{seed}-v{GENERATOR_VERSION}"
    if final.is_dir():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache))
    try:
        make_checkpoint(family, scale, tmp, seed=seed, layout=layout)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process won the race; its copy is equivalent.
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="internvl-make-checkpoint",
        description="Generate an InternVL2 checkpoint (real config/tokenizer, random weights).",
        epilog="families: " + ", ".join(FAMILIES),
    )
    parser.add_argument("--family", required=True, choices=list(FAMILIES), metavar="NAME",
                        help="one of: " + ", ".join(FAMILIES))
    parser.add_argument("--scale", required=True, choices=("tiny", "full"),
                        help="tiny: test-size model with weights; full: real-size config only (for load_format=dummy)")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--layout", choices=LAYOUTS, default="released",
                        help="released (default): the hub repository's file set, config fields, tokenizer "
                             "files and shard names; minimal: one tokenizer.json, compact config")
    parser.add_argument("--max-shard-size", type=int, default=DEFAULT_MAX_SHARD_BYTES, metavar="BYTES",
                        help=f"minimal layout: shard size limit in bytes (default {DEFAULT_MAX_SHARD_BYTES})")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    path = make_checkpoint(
        args.family, args.scale, args.out, seed=args.seed, max_shard_bytes=args.max_shard_size, layout=args.layout
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
