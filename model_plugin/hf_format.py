"""Checkpoints in transformers' own InternVL format (the `*-hf` repositories).

transformers converts InternVL releases to `InternVLForConditionalGeneration`: an
`internvl` config (`vision_config` of type `internvl_vision`, `text_config`) and
other tensor names (q, k and v apart in the vision tower, `multi_modal_projector`,
`model.language_model`). The architecture is the same, so such a checkpoint is
served by the same model: its config is mapped onto `InternVLChatConfig` (vLLM's
`hf_overrides`) and its tensors are renamed to the released names as they load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from transformers import PretrainedConfig

from .configuration import InternVLChatConfig

__all__ = ["chat_config_dict", "from_hf_config", "is_hf_format", "released_names"]

HF_MODEL_TYPE = "internvl"

# `text_config.model_type` -> the architecture vLLM's registry knows it by, for
# text configs saved without `architectures`.
_TEXT_ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "llama": "LlamaForCausalLM",  # also InternLM2-based releases, converted to Llama names
    "phi3": "Phi3ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "gpt_oss": "GptOssForCausalLM",
}


def is_hf_format(config: dict[str, Any]) -> bool:
    """Whether a config.json is transformers' InternVL format."""
    return config.get("model_type") == HF_MODEL_TYPE


def _template_for(text_model_type: str) -> str:
    # transformers converts InternVL2.5 onwards: all of them prompt with
    # `internvl2_5` but the GPT-OSS member.
    return "internvl3_5_gpt_oss" if text_model_type == "gpt_oss" else "internvl2_5"


def _side(value: int | list[int] | tuple[int, ...]) -> int:
    if isinstance(value, (list, tuple)):
        if len(set(value)) != 1:
            raise ValueError(f"InternViT takes square tiles and patches, got {value}")
        return int(value[0])
    return int(value)


def from_hf_config(config: PretrainedConfig) -> PretrainedConfig:
    """An `internvl` config as the `InternVLChatConfig` of the same model (other configs unchanged)."""
    if getattr(config, "model_type", None) != HF_MODEL_TYPE:
        return config
    vision, text = config.vision_config, config.text_config
    if not text.architectures:
        text.architectures = [_TEXT_ARCHITECTURES[text.model_type]]
    if getattr(config, "vision_feature_select_strategy", "default") != "default":
        raise ValueError("InternVL checkpoints drop the CLS token (vision_feature_select_strategy 'default')")
    if getattr(config, "projector_hidden_act", "gelu") != "gelu":
        raise ValueError(f"InternVL's projector uses GELU, got {config.projector_hidden_act!r}")
    tile = _side(vision.image_size)
    return InternVLChatConfig(
        vision_config={
            "hidden_size": vision.hidden_size,
            "num_attention_heads": vision.num_attention_heads,
            "intermediate_size": vision.intermediate_size,
            "num_hidden_layers": vision.num_hidden_layers,
            "num_channels": getattr(vision, "num_channels", 3),
            "image_size": tile,
            "patch_size": _side(vision.patch_size),
            "qkv_bias": vision.attention_bias,
            "qk_normalization": vision.use_qk_norm,
            "norm_type": vision.norm_type,
            "layer_norm_eps": vision.layer_norm_eps,
            "hidden_act": vision.hidden_act,
        },
        llm_config=text,
        select_layer=config.vision_feature_layer,
        force_image_size=tile,
        downsample_ratio=config.downsample_ratio,
        template=_template_for(text.model_type),
        **({"dtype": config.dtype} if getattr(config, "dtype", None) is not None else {}),
    )


def chat_config_dict(config: dict[str, Any]) -> dict[str, Any]:
    """config.json of either format as the `internvl_chat` fields (for the server's own reading)."""
    if not is_hf_format(config):
        return config
    from transformers import InternVLConfig

    fields = {key: value for key, value in config.items() if key not in ("model_type", "transformers_version")}
    return from_hf_config(InternVLConfig(**fields)).to_dict()


# transformers' InternVL names -> the released ones. Both spellings transformers
# has used: its modules' (`model.vision_tower.`, `model.language_model.`,
# `lm_head.`) and the checkpoint names `save_pretrained` writes (`vision_tower.`,
# `multi_modal_projector.`, and the language model already as released).
_PREFIXES = (
    ("model.vision_tower.", "vision_model."),
    ("vision_tower.", "vision_model."),
    ("model.multi_modal_projector.layer_norm.", "mlp1.0."),
    ("model.multi_modal_projector.linear_1.", "mlp1.1."),
    ("model.multi_modal_projector.linear_2.", "mlp1.3."),
    ("multi_modal_projector.layer_norm.", "mlp1.0."),
    ("multi_modal_projector.linear_1.", "mlp1.1."),
    ("multi_modal_projector.linear_2.", "mlp1.3."),
    ("model.language_model.", "language_model.model."),
    ("lm_head.", "language_model.lm_head."),
)
_VISION_RENAMES = (
    ("embeddings.cls_token", "embeddings.class_embedding"),
    ("embeddings.patch_embeddings.projection.", "embeddings.patch_embedding."),
    ("embeddings.position_embeddings", "embeddings.position_embedding"),
    ("encoder.layer.", "encoder.layers."),
    (".attention.projection_layer.", ".attn.proj."),
    (".attention.q_norm.", ".attn.q_norm."),
    (".attention.k_norm.", ".attn.k_norm."),
    (".layernorm_before.", ".norm1."),
    (".layernorm_after.", ".norm2."),
    (".lambda_1", ".ls1"),
    (".lambda_2", ".ls2"),
)
_SPLIT_QKV = re.compile(r"^(vision_model\.encoder\.layers\.\d+)\.attention\.([qkv])_proj\.(weight|bias)$")


def released_names(weights: Iterable[tuple[str, torch.Tensor]]) -> Iterator[tuple[str, torch.Tensor]]:
    """Rename transformers-format tensors to the released names; released names pass as they are.

    The released tower keeps q, k and v in one `attn.qkv` tensor; transformers
    splits it, so the three are held until all have arrived and then joined.
    """
    pending: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for name, tensor in weights:
        for old, new in _PREFIXES:
            if name.startswith(old):
                name = new + name[len(old):]
                break
        if name.startswith("vision_model."):
            for old, new in _VISION_RENAMES:
                name = name.replace(old, new)
            split = _SPLIT_QKV.match(name)
            if split is not None:
                layer, part, kind = split.groups()
                parts = pending.setdefault((layer, kind), {})
                parts[part] = tensor
                if len(parts) == 3:
                    del pending[(layer, kind)]
                    yield f"{layer}.attn.qkv.{kind}", torch.cat([parts["q"], parts["k"], parts["v"]])
                continue
        yield name, tensor
    if pending:
        incomplete = ", ".join(f"{layer}.attention.*_proj.{kind}" for layer, kind in sorted(pending))
        raise ValueError(f"Checkpoint has only part of the vision q/k/v projections: {incomplete}")
