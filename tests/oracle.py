"""An independent oracle: transformers' InternVLForConditionalGeneration.

Converts an original-layout InternVL checkpoint (as released on the hub, and as
`internvl-make-checkpoint` writes) to transformers' own InternVL layout. Only the
test suite uses this; nothing here is shared with the plugin's code.
"""

import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    GptOssConfig,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLVisionConfig,
    LlamaConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

_VISION_RENAMES = [
    ("vision_model.embeddings.class_embedding", "model.vision_tower.embeddings.cls_token"),
    ("vision_model.embeddings.patch_embedding.", "model.vision_tower.embeddings.patch_embeddings.projection."),
    ("vision_model.embeddings.position_embedding", "model.vision_tower.embeddings.position_embeddings"),
    ("vision_model.encoder.layers.", "model.vision_tower.encoder.layer."),
    (".attn.proj.", ".attention.projection_layer."),
    (".attn.q_norm.", ".attention.q_norm."),
    (".attn.k_norm.", ".attention.k_norm."),
    (".norm1.", ".layernorm_before."),
    (".norm2.", ".layernorm_after."),
    (".ls1", ".lambda_1"),
    (".ls2", ".lambda_2"),
    ("mlp1.0.", "model.multi_modal_projector.layer_norm."),
    ("mlp1.1.", "model.multi_modal_projector.linear_1."),
    ("mlp1.3.", "model.multi_modal_projector.linear_2."),
]

_INTERNLM2_RENAMES = [
    (".tok_embeddings.", ".embed_tokens."),
    (".attention.wo.", ".self_attn.o_proj."),
    (".feed_forward.w1.", ".mlp.gate_proj."),
    (".feed_forward.w3.", ".mlp.up_proj."),
    (".feed_forward.w2.", ".mlp.down_proj."),
    (".attention_norm.", ".input_layernorm."),
    (".ffn_norm.", ".post_attention_layernorm."),
]


def load_original_state_dict(checkpoint: Path) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for shard in sorted(checkpoint.glob("*.safetensors")):
        state.update(load_file(shard))
    return state


def _llama_like(llm: dict, **extra) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=llm["vocab_size"],
        hidden_size=llm["hidden_size"],
        intermediate_size=llm["intermediate_size"],
        num_hidden_layers=llm["num_hidden_layers"],
        num_attention_heads=llm["num_attention_heads"],
        num_key_value_heads=llm["num_key_value_heads"],
        hidden_act=llm.get("hidden_act", "silu"),
        max_position_embeddings=llm["max_position_embeddings"],
        rms_norm_eps=llm["rms_norm_eps"],
        rope_parameters=llm.get("rope_parameters")
        or {"rope_type": "default", "rope_theta": llm.get("rope_theta", 10000.0)},
        tie_word_embeddings=llm.get("tie_word_embeddings", False),
        **extra,
    )


def _text_config(llm: dict):
    llm = {k: v for k, v in llm.items() if k not in ("architectures", "auto_map", "_name_or_path")}
    arch_type = llm.pop("model_type")
    if arch_type == "qwen2":
        return Qwen2Config(**llm)
    if arch_type == "llama":
        return LlamaConfig(**llm)
    if arch_type == "phi3":
        return Phi3Config(**llm)
    if arch_type == "qwen3":
        return Qwen3Config(**llm)
    if arch_type == "qwen3_moe":
        return Qwen3MoeConfig(**llm)
    if arch_type == "gpt_oss":
        return GptOssConfig(**llm)
    if arch_type == "internlm2":
        # InternLM2 is a Llama with fused, grouped qkv: the same maths.
        return _llama_like(llm, attention_bias=llm.get("bias", False))
    if arch_type == "internlm3":
        # InternLM3's modeling code is a Llama with its own head_dim.
        return _llama_like(llm, head_dim=llm["head_dim"], attention_bias=llm.get("qkv_bias", False))
    raise ValueError(f"No oracle mapping for LLM model_type {arch_type!r}")


def hf_config_from_original(config: dict, image_token_id: int) -> InternVLConfig:
    vision = config["vision_config"]
    text = _text_config(config["llm_config"])
    select_layer = config["select_layer"]
    return InternVLConfig(
        vision_config=InternVLVisionConfig(
            hidden_size=vision["hidden_size"],
            num_hidden_layers=vision["num_hidden_layers"],
            num_attention_heads=vision["num_attention_heads"],
            intermediate_size=vision["intermediate_size"],
            attention_bias=vision["qkv_bias"],
            use_qk_norm=vision["qk_normalization"],
            norm_type=vision["norm_type"],
            layer_norm_eps=vision["layer_norm_eps"],
            hidden_act=vision["hidden_act"],
            image_size=vision["image_size"],
            patch_size=vision["patch_size"],
            use_mean_pooling=True,  # InternViT has no final norm
        ),
        text_config=text,
        image_token_id=image_token_id,
        downsample_ratio=config["downsample_ratio"],
        projector_hidden_act="gelu",
        vision_feature_layer=select_layer,
        vision_feature_select_strategy="default",
        tie_word_embeddings=text.tie_word_embeddings,
    )


def _split_internlm2_wqkv(wqkv: torch.Tensor, llm: dict) -> tuple[torch.Tensor, ...]:
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim = llm["hidden_size"] // heads
    q_per_kv = heads // kv_heads
    grouped = wqkv.reshape(kv_heads, q_per_kv + 2, head_dim, -1)
    q = grouped[:, :q_per_kv].reshape(heads * head_dim, -1)
    k = grouped[:, q_per_kv].reshape(kv_heads * head_dim, -1)
    v = grouped[:, q_per_kv + 1].reshape(kv_heads * head_dim, -1)
    return q, k, v


_EXPERT = re.compile(r"(.*\.mlp\.experts)\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def _fuse_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Qwen3-MoE's per-expert tensors (as released) -> transformers 5's fused
    `experts.gate_up_proj` [E, 2I, H] (gate rows first) and `experts.down_proj` [E, H, I]."""
    per_layer: dict[str, dict[int, dict[str, torch.Tensor]]] = {}
    out = {}
    for name, tensor in state.items():
        match = _EXPERT.match(name)
        if match is None:
            out[name] = tensor
            continue
        prefix, expert, proj = match.group(1), int(match.group(2)), match.group(3)
        per_layer.setdefault(prefix, {}).setdefault(expert, {})[proj] = tensor
    for prefix, experts in per_layer.items():
        order = sorted(experts)
        out[f"{prefix}.gate_up_proj"] = torch.stack(
            [torch.cat([experts[e]["gate_proj"], experts[e]["up_proj"]]) for e in order]
        )
        out[f"{prefix}.down_proj"] = torch.stack([experts[e]["down_proj"] for e in order])
    return out


def convert_state_dict(state: dict[str, torch.Tensor], config: dict) -> dict[str, torch.Tensor]:
    llm = config["llm_config"]
    is_internlm2 = llm["model_type"] == "internlm2"
    if llm["model_type"] == "qwen3_moe":
        state = _fuse_experts(state)
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("language_model."):
            name = name.removeprefix("language_model.")
            if is_internlm2:
                for old, new in _INTERNLM2_RENAMES:
                    name = name.replace(old, new)
                if name == "output.weight":
                    name = "lm_head.weight"
                if name.endswith(".attention.wqkv.weight"):
                    prefix = "model.language_model." + name.removeprefix("model.").removesuffix(
                        "attention.wqkv.weight"
                    )
                    for proj, part in zip("qkv", _split_internlm2_wqkv(tensor, llm)):
                        out[f"{prefix}self_attn.{proj}_proj.weight"] = part
                    continue
            if name.startswith("model."):
                name = "model.language_model." + name.removeprefix("model.")
            out[name] = tensor
            continue
        if ".attn.qkv." in name:
            for proj, part in zip("qkv", tensor.chunk(3, dim=0)):
                renamed = name.replace(".attn.qkv.", f".attention.{proj}_proj.")
                for old, new in _VISION_RENAMES:
                    renamed = renamed.replace(old, new)
                out[renamed] = part
            continue
        for old, new in _VISION_RENAMES:
            name = name.replace(old, new)
        out[name] = tensor
    return out


def load_oracle(checkpoint: Path, image_token_id: int) -> InternVLForConditionalGeneration:
    config = json.loads((checkpoint / "config.json").read_text())
    hf_config = hf_config_from_original(config, image_token_id)
    hf_config._attn_implementation = "eager"
    model = InternVLForConditionalGeneration(hf_config).float().eval()
    state = convert_state_dict(load_original_state_dict(checkpoint), config)
    if hf_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [m for m in missing if not (hf_config.tie_word_embeddings and m == "lm_head.weight")]
    if missing or unexpected:
        raise AssertionError(f"oracle conversion: missing={missing} unexpected={unexpected}")
    if hf_config.tie_word_embeddings:
        model.tie_weights()
    return model


@torch.no_grad()
def oracle_logprobs(
    model: InternVLForConditionalGeneration,
    token_ids: list[int],
    pixel_values: torch.Tensor | None,
) -> torch.Tensor:
    """Log-probabilities [len(token_ids), vocab] after each position (teacher forced)."""
    input_ids = torch.tensor([token_ids])
    kwargs = {"pixel_values": pixel_values} if pixel_values is not None else {}
    logits = model(input_ids=input_ids, **kwargs).logits[0].float()
    return torch.log_softmax(logits, dim=-1)
