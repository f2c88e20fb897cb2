"""Config classes for the InternVL2 family, registered without remote code.

The released checkpoints ship these classes as `trust_remote_code` Python
files. We re-declare them here so `AutoConfig.from_pretrained(dir)` works on
a plain transformers install, and so vLLM can read the config of both real and
generated checkpoints.

The classes use an explicit `__init__` (the same shape remote-code configs
have) rather than transformers-5 dataclass fields: that shape is accepted by
transformers 4.57 and 5.x alike, which the project's dependency range spans.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import (
    AutoConfig,
    GptOssConfig,
    LlamaConfig,
    Phi3Config,
    PretrainedConfig,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

__all__ = [
    "InternLM2Config",
    "InternLM3Config",
    "InternVLChatConfig",
    "InternVisionConfig",
    "LLM_CONFIG_CLASSES",
    "register_configs",
]


class InternVisionConfig(PretrainedConfig):
    """InternViT (300M and 6B share one class; fields pick the variant)."""

    model_type = "intern_vit_6b"

    def __init__(
        self,
        num_channels: int = 3,
        patch_size: int = 14,
        image_size: int = 448,
        qkv_bias: bool = False,
        hidden_size: int = 3200,
        num_attention_heads: int = 25,
        intermediate_size: int = 12800,
        qk_normalization: bool = True,
        num_hidden_layers: int = 48,
        use_flash_attn: bool = False,
        hidden_act: str = "gelu",
        norm_type: str = "rms_norm",
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        drop_path_rate: float = 0.0,
        attention_dropout: float = 0.0,
        initializer_range: float = 0.02,
        initializer_factor: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if norm_type not in ("layer_norm", "rms_norm"):
            raise ValueError(f"norm_type must be 'layer_norm' or 'rms_norm', got {norm_type!r}")
        self.num_channels = num_channels
        self.patch_size = patch_size
        self.image_size = image_size
        self.qkv_bias = qkv_bias
        self.hidden_size = hidden_size
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.qk_normalization = qk_normalization
        self.num_hidden_layers = num_hidden_layers
        self.use_flash_attn = use_flash_attn
        self.hidden_act = hidden_act
        self.norm_type = norm_type
        self.layer_norm_eps = layer_norm_eps
        self.dropout = dropout
        self.drop_path_rate = drop_path_rate
        self.attention_dropout = attention_dropout
        self.initializer_range = initializer_range
        self.initializer_factor = initializer_factor
        kwargs.setdefault("architectures", ["InternVisionModel"])
        super().__init__(**kwargs)


def _canonical_rope(
    rope_theta: float,
    rope_scaling: dict[str, Any] | None,
    rope_parameters: dict[str, Any] | None,
) -> dict[str, Any]:
    """One rope dict in the transformers-5 shape, whichever spelling came in.

    Released InternLM2 configs use `rope_theta` + `rope_scaling={"type": ...}`;
    transformers 5 and vLLM 0.32 read `rope_parameters={"rope_type": ...}`.
    """
    params = dict(rope_parameters or rope_scaling or {})
    legacy_type = params.pop("type", None)
    params.setdefault("rope_type", legacy_type or "default")
    params.setdefault("rope_theta", rope_theta)
    return params


class InternLM2Config(PretrainedConfig):
    """InternLM2 decoder config (transformers has no built-in class for it).

    Field names follow the released `configuration_internlm2.py`, which is what
    vLLM's `InternLM2ForCausalLM` reads (plus `rope_parameters`, see above).
    """

    model_type = "internlm2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size: int = 103168,
        hidden_size: int = 4096,
        intermediate_size: int = 11008,
        num_hidden_layers: int = 32,
        num_attention_heads: int = 32,
        num_key_value_heads: int | None = None,
        hidden_act: str = "silu",
        max_position_embeddings: int = 2048,
        initializer_range: float = 0.02,
        rms_norm_eps: float = 1e-6,
        use_cache: bool = True,
        pad_token_id: int | None = 0,
        bos_token_id: int | None = 1,
        eos_token_id: int | list[int] | None = 2,
        tie_word_embeddings: bool = False,
        bias: bool = True,
        rope_theta: float = 10000.0,
        rope_scaling: dict[str, Any] | None = None,
        rope_parameters: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = (
            num_attention_heads if num_key_value_heads is None else num_key_value_heads
        )
        self.hidden_act = hidden_act
        self.max_position_embeddings = max_position_embeddings
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.bias = bias
        params = _canonical_rope(rope_theta, rope_scaling, rope_parameters)
        self.rope_parameters = params
        self.rope_theta = params["rope_theta"]
        # transformers 5 already aliases `rope_scaling` to `rope_parameters`;
        # on 4.x keep a legacy-shaped copy for code written against the
        # released remote config.
        if not isinstance(getattr(type(self), "rope_scaling", None), property):
            self.rope_scaling = _legacy_rope_scaling(params)
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )


class InternLM3Config(InternLM2Config):
    """InternLM3 (InternVL3-9B's LLM): a Llama-style decoder with a set head_dim.

    vLLM runs it as a Llama (`InternLM3ForCausalLM` -> LlamaForCausalLM), which
    reads `head_dim` and `bias`; `qkv_bias` is the release's name for the q/k/v
    projection bias.
    """

    model_type = "internlm3"

    def __init__(self, head_dim: int | None = None, qkv_bias: bool = False, **kwargs: Any) -> None:
        kwargs.setdefault("bias", False)
        super().__init__(**kwargs)
        self.head_dim = head_dim or self.hidden_size // self.num_attention_heads
        self.qkv_bias = qkv_bias
        self.attention_bias = qkv_bias


def _legacy_rope_scaling(params: dict[str, Any]) -> dict[str, Any] | None:
    if params.get("rope_type", "default") == "default":
        return None
    legacy = {k: v for k, v in params.items() if k not in ("rope_type", "rope_theta")}
    legacy["type"] = params["rope_type"]
    return legacy


# Maps `llm_config["architectures"][0]` to the class that parses it, as the
# released InternVLChatConfig does.
LLM_CONFIG_CLASSES: dict[str, type[PretrainedConfig]] = {
    "Qwen2ForCausalLM": Qwen2Config,
    "LlamaForCausalLM": LlamaConfig,
    "Phi3ForCausalLM": Phi3Config,
    "InternLM2ForCausalLM": InternLM2Config,
    "InternLM3ForCausalLM": InternLM3Config,
    "Qwen3ForCausalLM": Qwen3Config,
    "Qwen3MoeForCausalLM": Qwen3MoeConfig,
    "GptOssForCausalLM": GptOssConfig,
}


def _build_llm_config(llm_config: dict[str, Any] | PretrainedConfig | None) -> PretrainedConfig:
    if isinstance(llm_config, PretrainedConfig):
        return llm_config
    data = copy.deepcopy(llm_config) if llm_config else {"architectures": ["InternLM2ForCausalLM"]}
    architectures = data.get("architectures") or ["InternLM2ForCausalLM"]
    cls = LLM_CONFIG_CLASSES.get(architectures[0])
    if cls is None:
        raise ValueError(
            f"Unsupported llm architecture {architectures[0]!r}; "
            f"expected one of {sorted(LLM_CONFIG_CLASSES)}"
        )
    # The class owns model_type; a stale copy in the dict must not fight it.
    data.pop("model_type", None)
    return cls(**data)


class InternVLChatConfig(PretrainedConfig):
    """Composite config: InternViT + MLP projector + a decoder LLM."""

    model_type = "internvl_chat"
    is_composition = True
    sub_configs = {"vision_config": InternVisionConfig, "llm_config": AutoConfig}
    # vLLM and transformers look for `text_config` on multimodal configs; the
    # released checkpoints call it `llm_config`. The map aliases reads/writes.
    attribute_map = {"text_config": "llm_config"}

    def __init__(
        self,
        vision_config: dict[str, Any] | InternVisionConfig | None = None,
        llm_config: dict[str, Any] | PretrainedConfig | None = None,
        use_backbone_lora: int = 0,
        use_llm_lora: int = 0,
        select_layer: int = -1,
        force_image_size: int | None = 448,
        downsample_ratio: float = 0.5,
        template: str | None = None,
        dynamic_image_size: bool = True,
        use_thumbnail: bool = True,
        ps_version: str = "v2",
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        **kwargs: Any,
    ) -> None:
        if isinstance(vision_config, InternVisionConfig):
            self.vision_config = vision_config
        else:
            data = dict(vision_config or {})
            data.pop("model_type", None)
            self.vision_config = InternVisionConfig(**data)
        self.llm_config = _build_llm_config(llm_config)
        self.use_backbone_lora = use_backbone_lora
        self.use_llm_lora = use_llm_lora
        self.select_layer = select_layer
        self.force_image_size = force_image_size
        self.downsample_ratio = downsample_ratio
        self.template = template
        self.dynamic_image_size = dynamic_image_size
        self.use_thumbnail = use_thumbnail
        self.ps_version = ps_version
        self.min_dynamic_patch = min_dynamic_patch
        self.max_dynamic_patch = max_dynamic_patch
        kwargs.setdefault("architectures", ["InternVLChatModel"])
        # Generation and embedding-tying behaviour belong to the LLM.
        kwargs.setdefault("tie_word_embeddings", getattr(self.llm_config, "tie_word_embeddings", False))
        super().__init__(**kwargs)

    def get_text_config(self, decoder: bool | None = None, encoder: bool | None = None) -> PretrainedConfig:
        return self.llm_config

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["vision_config"] = _sub_dict(self.vision_config)
        output["llm_config"] = _sub_dict(self.llm_config)
        output["model_type"] = self.model_type
        return output


def _sub_dict(config: PretrainedConfig) -> dict[str, Any]:
    data = config.to_dict()
    data.pop("transformers_version", None)
    data["model_type"] = config.model_type
    return data


def register_configs() -> None:
    """Make the three model types loadable by AutoConfig; safe to call often.

    Also registers the released checkpoints' tokenizer classes (see
    `tokenization_registry`), which need the same no-remote-code treatment.
    """
    for cls in (InternVLChatConfig, InternVisionConfig, InternLM2Config, InternLM3Config):
        AutoConfig.register(cls.model_type, cls, exist_ok=True)
    from .tokenization_registry import register_tokenizers

    register_tokenizers()
