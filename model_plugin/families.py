"""Every released InternVL checkpoint we serve, described as data.

The ten InternVL2-generation checkpoints (with Mini-InternVL and V1-5), and the
InternVL2.5, InternVL3 and InternVL3.5 members. The architecture is one design
throughout (InternViT, pixel shuffle, `mlp1`); what changes between generations
is the language model, the template and the tokens.

Provenance of the newer generations' values (README: "Newer generations"):

| members | source |
|---|---|
| InternVL2_5-1B/2B, InternVL3-1B/2B, InternVL3_5-8B | copies of the release's config.json in public repos |
| InternVL3_5-1B | a transcription of its config.json |
| other Qwen2.5 / Qwen3 / Qwen3-MoE members | the backbone's published config + InternVL's rules (vocab = tokenizer + 9 tokens, 151936 kept by 3.5, untied head, InternVL3's dynamic rope factor 2) |
| InternVL2_5-26B rope factor, InternVL3-9B (InternLM3), InternVL3_5-241B-A28B | unverified (recalled) |
| GPT-OSS member | gpt-oss-20b's published config; the release's own config.json not found |
| Qwen2.5 / Qwen3 added tokens and which are `special: false` | unverified (recalled); ids of `<IMG_CONTEXT>` (151667 / 151671) agree with public dumps |

Hyper-parameters are those of the released `config.json` files (vision tower,
LLM and template). Each spec can also produce a `tiny()` twin with the same
architecture choices at test size, so tests exercise the code paths the real
model takes (norm type, qk-norm, qkv bias, GQA, rope type, tied heads).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

__all__ = [
    "FAMILIES",
    "FamilySpec",
    "GENERATIONS",
    "INTERNVL_TOKENS",
    "TemplateSpec",
    "TokenSpec",
    "get_family",
]

# Added by InternVL on top of every backbone tokenizer, in the released order.
INTERNVL_TOKENS: tuple[str, ...] = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
)

# Tiny twins must fit 40 tiles x 256 tokens plus text in one sequence.
_TINY_MIN_POSITIONS = 16384


@dataclass(frozen=True)
class TemplateSpec:
    """A conversation template: its control tokens and the turn-end token."""

    name: str
    chat_tokens: tuple[str, ...]
    end_token: str


@dataclass(frozen=True)
class TokenSpec:
    """The backbone tokenizer's own special tokens (None = it has none)."""

    base_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str | None
    unk: str | None


CHATML_TOKENS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>")
PHI3_TOKENS = ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|endoftext|>")
# OpenAI's harmony format, as InternVL3.5's GPT-OSS member is prompted.
HARMONY_TOKENS = ("<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>")

TEMPLATES: dict[str, TemplateSpec] = {
    "Hermes-2": TemplateSpec("Hermes-2", CHATML_TOKENS, "<|im_end|>"),
    "internlm2-chat": TemplateSpec("internlm2-chat", CHATML_TOKENS, "<|im_end|>"),
    "phi3-chat": TemplateSpec("phi3-chat", PHI3_TOKENS, "<|end|>"),
    "internvl2_5": TemplateSpec("internvl2_5", CHATML_TOKENS, "<|im_end|>"),
    "internvl3_5_gpt_oss": TemplateSpec("internvl3_5_gpt_oss", HARMONY_TOKENS, "<|return|>"),
}

_QWEN2_TOKENS = TokenSpec(("<|endoftext|>", "<|im_start|>", "<|im_end|>"), None, "<|im_end|>", "<|endoftext|>", None)
_INTERNLM2_TOKENS = TokenSpec(("<unk>", "<s>", "</s>"), "<s>", "</s>", "</s>", "<unk>")
_PHI3_TOKENS = TokenSpec(("<unk>", "<s>", "</s>"), "<s>", "<|endoftext|>", "<|endoftext|>", "<unk>")
_YI_TOKENS = TokenSpec(("<unk>", "<|startoftext|>", "<|endoftext|>"), "<|startoftext|>", "<|im_end|>", "<unk>", "<unk>")
# Qwen2.5's added tokens (ids 151643..151664), then Qwen3's four more: the
# InternVL tokens come after them, so `<IMG_CONTEXT>` is 151667 in Qwen2.5
# releases and 151671 in Qwen3 ones.
QWEN2_5_ADDED = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>", "<|object_ref_end|>",
    "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>", "<tool_call>", "</tool_call>", "<|fim_prefix|>",
    "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>",
)
QWEN3_ADDED = (*QWEN2_5_ADDED, "<tool_response>", "</tool_response>", "<think>", "</think>")
# Added tokens Qwen's tokenizers mark `special: false` (kept in decoded text).
QWEN_PLAIN_TOKENS = frozenset((
    "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "<|fim_pad|>",
    "<|repo_name|>", "<|file_sep|>", "<tool_response>", "</tool_response>", "<think>", "</think>",
))
# o200k_harmony's specials below the InternVL tokens (ids 199998..200012).
GPT_OSS_ADDED = (
    "<|startoftext|>", "<|endoftext|>", "<|reserved_200000|>", "<|reserved_200001|>", "<|return|>",
    "<|constrain|>", "<|reserved_200004|>", "<|channel|>", "<|start|>", "<|end|>", "<|message|>",
    "<|reserved_200009|>", "<|reserved_200010|>", "<|reserved_200011|>", "<|call|>",
)
_QWEN2_5_TOKENS = TokenSpec(QWEN2_5_ADDED, None, "<|im_end|>", "<|endoftext|>", None)
_QWEN3_TOKENS = TokenSpec(QWEN3_ADDED, None, "<|im_end|>", "<|endoftext|>", None)
_INTERNLM3_TOKENS = TokenSpec(("<unk>", "<s>", "</s>"), "<s>", "</s>", "</s>", "<unk>")
_GPT_OSS_TOKENS = TokenSpec(GPT_OSS_ADDED, "<|startoftext|>", "<|return|>", "<|endoftext|>", None)
_LLAMA3_TOKENS = TokenSpec(
    ("<|begin_of_text|>", "<|end_of_text|>"), "<|begin_of_text|>", "<|im_end|>", "<|end_of_text|>", None
)


def _vit_300m() -> dict[str, Any]:
    return {
        "architectures": ["InternVisionModel"],
        "model_type": "intern_vit_6b",
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_channels": 3,
        "image_size": 448,
        "patch_size": 14,
        "qkv_bias": True,
        "qk_normalization": False,
        "norm_type": "layer_norm",
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "initializer_range": 0.02,
        "initializer_factor": 1.0,
        "drop_path_rate": 0.0,
        "dropout": 0.0,
        "attention_dropout": 0.0,
        "use_flash_attn": False,
    }


def _vit_6b() -> dict[str, Any]:
    # InternViT-6B-448px-V1-5 as embedded in the chat models: the last three
    # of its 48 blocks are dropped, leaving 45.
    return {
        **_vit_300m(),
        "hidden_size": 3200,
        "num_attention_heads": 25,
        "intermediate_size": 12800,
        "num_hidden_layers": 45,
        "qkv_bias": False,
        "qk_normalization": True,
        "norm_type": "rms_norm",
        "initializer_range": 1e-10,
        "initializer_factor": 0.1,
    }


def _qwen2_0_5b() -> dict[str, Any]:
    return {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "vocab_size": 151655,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "use_sliding_window": False,
        "sliding_window": 32768,
        "max_window_layers": 24,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }


def _internlm2(hidden: int, inter: int, layers: int, heads: int, factor: float) -> dict[str, Any]:
    return {
        "architectures": ["InternLM2ForCausalLM"],
        "model_type": "internlm2",
        "vocab_size": 92553,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000,
        "rope_scaling": {"type": "dynamic", "factor": factor},
        "bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "initializer_range": 0.02,
    }


# Phi-3-mini-128k LongRoPE rescale factors, one per rotary frequency pair
# (head_dim 96 -> 48 pairs), as shipped with the model InternVL2-4B used.
_PHI3_LONG_FACTOR = [
    1.0299999713897705, 1.0499999523162842, 1.0499999523162842, 1.0799999237060547,
    1.2299998998641968, 1.2299998998641968, 1.2999999523162842, 1.4499999284744263,
    1.5999999046325684, 1.6499998569488525, 1.8999998569488525, 2.859999895095825,
    3.68999981880188, 5.419999599456787, 5.489999771118164, 5.489999771118164,
    9.09000015258789, 11.579999923706055, 15.65999984741211, 15.769999504089355,
    15.789999961853027, 18.360000610351562, 21.989999771118164, 23.079999923706055,
    30.009998321533203, 32.35000228881836, 32.590003967285156, 35.56000518798828,
    39.95000457763672, 53.840003967285156, 56.20000457763672, 57.95000457763672,
    59.29000473022461, 59.77000427246094, 59.920005798339844, 61.190006256103516,
    61.96000671386719, 62.50000762939453, 63.3700065612793, 63.48000717163086,
    63.48000717163086, 63.66000747680664, 63.850006103515625, 64.08000946044922,
    64.760009765625, 64.80001068115234, 64.81001281738281, 64.81001281738281,
]
_PHI3_SHORT_FACTOR = (
    [1.05] * 3 + [1.1] * 3 + [1.2500000000000002] * 2 + [1.4000000000000004, 1.4500000000000004,
    1.5500000000000005, 1.8500000000000008, 1.9000000000000008] + [2.000000000000001] * 19
    + [2.1000000000000005] * 2 + [2.2] + [2.3499999999999996] * 4 + [2.3999999999999995] * 2
    + [2.6499999999999986, 2.6999999999999984, 2.8999999999999977, 2.9499999999999975]
    + [3.049999999999997] * 3
)


def _phi3_mini_128k() -> dict[str, Any]:
    return {
        "architectures": ["Phi3ForCausalLM"],
        "model_type": "phi3",
        "vocab_size": 32020,
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "hidden_act": "silu",
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "rope_scaling": {
            "type": "longrope",
            "long_factor": list(_PHI3_LONG_FACTOR),
            "short_factor": list(_PHI3_SHORT_FACTOR),
        },
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 32000,
        "pad_token_id": 32000,
        "attention_dropout": 0.0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "initializer_range": 0.02,
    }


def _llama(**over: Any) -> dict[str, Any]:
    base = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_scaling": None,
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
        "pretraining_tp": 1,
    }
    base.update(over)
    return base


def _yi_34b() -> dict[str, Any]:
    # Nous-Hermes-2-Yi-34B: Yi's vocabulary, ChatML tokens at ids 6/7.
    return _llama(
        vocab_size=64000, hidden_size=7168, intermediate_size=20480, num_hidden_layers=60,
        num_attention_heads=56, num_key_value_heads=8, max_position_embeddings=4096,
        rope_theta=5000000.0, bos_token_id=1, eos_token_id=7, pad_token_id=0,
    )


def _llama3_70b() -> dict[str, Any]:
    # Hermes-2-Theta-Llama-3-70B: 128256 + the 9 InternVL tokens.
    return _llama(
        vocab_size=128265, hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
        num_attention_heads=64, num_key_value_heads=8, max_position_embeddings=8192,
        rope_theta=500000.0, bos_token_id=128000, eos_token_id=128003, pad_token_id=128001,
    )


def _qwen2_5(
    hidden: int, inter: int, layers: int, heads: int, kv: int, *, dynamic_rope: bool, window_layers: int | None = None
) -> dict[str, Any]:
    """A Qwen2.5 backbone as InternVL releases it: vocab 151674, untied head.

    InternVL3 adds dynamic-NTK rope scaling (factor 2) and ends on id 151643;
    InternVL2.5 keeps Qwen2.5's rope and eos 151645.
    """
    return {
        **_qwen2_0_5b(),
        "vocab_size": 151674,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "max_window_layers": layers if window_layers is None else window_layers,
        "rope_scaling": {"type": "dynamic", "factor": 2.0} if dynamic_rope else None,
        "eos_token_id": 151643 if dynamic_rope else 151645,
    }


def _internlm3_8b() -> dict[str, Any]:
    return {
        "architectures": ["InternLM3ForCausalLM"],
        "model_type": "internlm3",
        "vocab_size": 128512,
        "hidden_size": 4096,
        "intermediate_size": 10240,
        "num_hidden_layers": 48,
        "num_attention_heads": 32,
        "num_key_value_heads": 2,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 32768,
        "rms_norm_eps": 1e-5,
        "rope_theta": 50000000,
        "rope_scaling": {"type": "dynamic", "factor": 6.0},
        "qkv_bias": False,
        "bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 2,
        "initializer_range": 0.02,
    }


def _qwen3(hidden: int, inter: int, layers: int, heads: int, kv: int = 8) -> dict[str, Any]:
    return {
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": 128,
        "hidden_act": "silu",
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": None,
        "attention_bias": False,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": layers,
        "tie_word_embeddings": False,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }


def _qwen3_moe(hidden: int, inter: int, layers: int, heads: int, kv: int, moe_inter: int) -> dict[str, Any]:
    return {
        **_qwen3(hidden, inter, layers, heads, kv),
        "architectures": ["Qwen3MoeForCausalLM"],
        "model_type": "qwen3_moe",
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "moe_intermediate_size": moe_inter,
        "norm_topk_prob": True,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "router_aux_loss_coef": 0.001,
        "output_router_logits": False,
    }


def _gpt_oss_20b() -> dict[str, Any]:
    layers = 24
    return {
        "architectures": ["GptOssForCausalLM"],
        "model_type": "gpt_oss",
        "vocab_size": 201088,
        "hidden_size": 2880,
        "intermediate_size": 2880,
        "num_hidden_layers": layers,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "num_local_experts": 32,
        "num_experts_per_tok": 4,
        "sliding_window": 128,
        "layer_types": ["sliding_attention", "full_attention"] * (layers // 2),
        "hidden_act": "silu",
        "swiglu_limit": 7.0,
        "attention_bias": True,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 150000.0,
        "rope_scaling": {
            "type": "yarn",
            "factor": 32.0,
            "beta_fast": 32.0,
            "beta_slow": 1.0,
            "truncate": False,
            "original_max_position_embeddings": 4096,
        },
        "router_aux_loss_coef": 0.9,
        "output_router_logits": False,
        "tie_word_embeddings": False,
        "bos_token_id": 199998,
        "eos_token_id": 200002,
        "pad_token_id": 199999,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
    }


@dataclass(frozen=True)
class FamilySpec:
    """One released checkpoint: where it lives, its parts and its tokens."""

    name: str
    hf_repo_id: str
    template: str
    vision: dict[str, Any]
    llm: dict[str, Any]
    tokens: TokenSpec
    is_tiny: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def generation(self) -> str:
        return next(name for name, members in GENERATIONS.items() if self.name in members)

    @property
    def template_spec(self) -> TemplateSpec:
        return TEMPLATES[self.template]

    @property
    def llm_architecture(self) -> str:
        return self.llm["architectures"][0]

    @property
    def vision_style(self) -> str:
        """'6b' for the rms-norm/qk-norm tower, '300m' for the layer-norm one."""
        return "6b" if self.vision["norm_type"] == "rms_norm" else "300m"

    @property
    def eos_token(self) -> str:
        return self.tokens.eos

    @property
    def end_token(self) -> str:
        return self.template_spec.end_token

    @property
    def special_tokens(self) -> tuple[str, ...]:
        """Every special token the tokenizer holds, in id order, no repeats."""
        ordered = [*self.tokens.base_tokens, *self.template_spec.chat_tokens, *INTERNVL_TOKENS]
        return tuple(dict.fromkeys(ordered))

    @property
    def stop_tokens(self) -> tuple[str, ...]:
        """Tokens that end generation: the backbone eos and the turn end."""
        return tuple(dict.fromkeys((self.tokens.eos, self.end_token)))

    def tiny(self) -> "FamilySpec":
        """Same architecture at test size; vocab is filled in by the generator."""
        if self.is_tiny:
            return self
        return replace(self, vision=_tiny_vision(self.vision), llm=_tiny_llm(self.llm), is_tiny=True)


def _tiny_vision(vision: dict[str, Any]) -> dict[str, Any]:
    tiny = copy.deepcopy(vision)
    if vision["norm_type"] == "rms_norm":
        # The 6B tower has an odd head count (25), which breaks naive even
        # tensor-parallel splits; keep that property with 5 heads of 16.
        heads, head_dim = 5, 16
    else:
        heads, head_dim = 4, 16
    tiny.update(hidden_size=heads * head_dim, num_attention_heads=heads, intermediate_size=128, num_hidden_layers=2)
    return tiny


def _tiny_llm(llm: dict[str, Any]) -> dict[str, Any]:
    tiny = copy.deepcopy(llm)
    heads = 4
    uses_gqa = llm["num_key_value_heads"] < llm["num_attention_heads"]
    tiny.update(
        hidden_size=128,
        num_attention_heads=heads,
        # head_dim 32: vLLM's CPU paged attention needs head_dim >= 32.
        num_key_value_heads=2 if uses_gqa else heads,
        num_hidden_layers=2,
        intermediate_size=256,
        max_position_embeddings=max(llm["max_position_embeddings"], _TINY_MIN_POSITIONS),
    )
    if "max_window_layers" in tiny:
        tiny["max_window_layers"] = 2
    if "head_dim" in tiny:
        tiny["head_dim"] = 32
    if "num_experts" in tiny:  # Qwen3-MoE: still more experts than are picked
        tiny.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=64)
    if "num_local_experts" in tiny:  # GPT-OSS; its 128-token window stays, images exceed it
        tiny.update(num_local_experts=4, num_experts_per_tok=2)
        tiny["layer_types"] = tiny["layer_types"][:2]
    scaling = tiny.get("rope_scaling")
    if scaling and "long_factor" in scaling:
        # LongRoPE wants one factor per frequency pair: head_dim 32 -> 16.
        # Take every third real factor so the curve keeps its shape.
        scaling["long_factor"] = scaling["long_factor"][::3][:16]
        scaling["short_factor"] = scaling["short_factor"][::3][:16]
    return tiny


def _family(name: str, template: str, vision: dict, llm: dict, tokens: TokenSpec) -> FamilySpec:
    return FamilySpec(name=name, hf_repo_id=f"OpenGVLab/{name}", template=template, vision=vision, llm=llm, tokens=tokens)


FAMILIES: dict[str, FamilySpec] = {
    spec.name: spec
    for spec in (
        _family("InternVL2-1B", "Hermes-2", _vit_300m(), _qwen2_0_5b(), _QWEN2_TOKENS),
        _family("InternVL2-2B", "internlm2-chat", _vit_300m(), _internlm2(2048, 8192, 24, 16, 2.0), _INTERNLM2_TOKENS),
        _family("InternVL2-4B", "phi3-chat", _vit_300m(), _phi3_mini_128k(), _PHI3_TOKENS),
        _family("InternVL2-8B", "internlm2-chat", _vit_300m(), _internlm2(4096, 14336, 32, 32, 2.0), _INTERNLM2_TOKENS),
        _family("InternVL2-26B", "internlm2-chat", _vit_6b(), _internlm2(6144, 16384, 48, 48, 3.0), _INTERNLM2_TOKENS),
        _family("InternVL2-40B", "Hermes-2", _vit_6b(), _yi_34b(), _YI_TOKENS),
        _family("InternVL2-Llama3-76B", "internlm2-chat", _vit_6b(), _llama3_70b(), _LLAMA3_TOKENS),
        _family("Mini-InternVL-Chat-2B-V1-5", "internlm2-chat", _vit_300m(), _internlm2(2048, 8192, 24, 16, 2.0), _INTERNLM2_TOKENS),
        _family("Mini-InternVL-Chat-4B-V1-5", "phi3-chat", _vit_300m(), _phi3_mini_128k(), _PHI3_TOKENS),
        _family("InternVL-Chat-V1-5", "internlm2-chat", _vit_6b(), _internlm2(6144, 16384, 48, 48, 3.0), _INTERNLM2_TOKENS),
        # InternVL2.5: InternViT-300M/6B-448px-V2_5 (same design as before, new weights).
        _family("InternVL2_5-1B", "internvl2_5", _vit_300m(), _qwen2_5(896, 4864, 24, 14, 2, dynamic_rope=False, window_layers=21), _QWEN2_5_TOKENS),
        _family("InternVL2_5-2B", "internvl2_5", _vit_300m(), _internlm2(2048, 8192, 24, 16, 2.0), _INTERNLM2_TOKENS),
        _family("InternVL2_5-4B", "internvl2_5", _vit_300m(), _qwen2_5(2048, 11008, 36, 16, 2, dynamic_rope=False), _QWEN2_5_TOKENS),
        _family("InternVL2_5-8B", "internvl2_5", _vit_300m(), _internlm2(4096, 14336, 32, 32, 2.0), _INTERNLM2_TOKENS),
        _family("InternVL2_5-26B", "internvl2_5", _vit_6b(), _internlm2(6144, 16384, 48, 48, 2.0), _INTERNLM2_TOKENS),
        _family("InternVL2_5-38B", "internvl2_5", _vit_6b(), _qwen2_5(5120, 27648, 64, 40, 8, dynamic_rope=False), _QWEN2_5_TOKENS),
        _family("InternVL2_5-78B", "internvl2_5", _vit_6b(), _qwen2_5(8192, 29568, 80, 64, 8, dynamic_rope=False), _QWEN2_5_TOKENS),
        # InternVL3: Qwen2.5 with dynamic-NTK rope, and InternLM3 for 9B.
        _family("InternVL3-1B", "internvl2_5", _vit_300m(), _qwen2_5(896, 4864, 24, 14, 2, dynamic_rope=True), _QWEN2_5_TOKENS),
        _family("InternVL3-2B", "internvl2_5", _vit_300m(), _qwen2_5(1536, 8960, 28, 12, 2, dynamic_rope=True, window_layers=70), _QWEN2_5_TOKENS),
        _family("InternVL3-8B", "internvl2_5", _vit_300m(), _qwen2_5(3584, 18944, 28, 28, 4, dynamic_rope=True), _QWEN2_5_TOKENS),
        _family("InternVL3-9B", "internvl2_5", _vit_300m(), _internlm3_8b(), _INTERNLM3_TOKENS),
        _family("InternVL3-14B", "internvl2_5", _vit_300m(), _qwen2_5(5120, 13824, 48, 40, 8, dynamic_rope=True), _QWEN2_5_TOKENS),
        _family("InternVL3-38B", "internvl2_5", _vit_6b(), _qwen2_5(5120, 27648, 64, 40, 8, dynamic_rope=True), _QWEN2_5_TOKENS),
        _family("InternVL3-78B", "internvl2_5", _vit_6b(), _qwen2_5(8192, 29568, 80, 64, 8, dynamic_rope=True), _QWEN2_5_TOKENS),
        # InternVL3.5: dense Qwen3, Qwen3-MoE and GPT-OSS.
        _family("InternVL3_5-1B", "internvl2_5", _vit_300m(), _qwen3(1024, 3072, 28, 16), _QWEN3_TOKENS),
        _family("InternVL3_5-2B", "internvl2_5", _vit_300m(), _qwen3(2048, 6144, 28, 16), _QWEN3_TOKENS),
        _family("InternVL3_5-4B", "internvl2_5", _vit_300m(), _qwen3(2560, 9728, 36, 32), _QWEN3_TOKENS),
        _family("InternVL3_5-8B", "internvl2_5", _vit_300m(), _qwen3(4096, 12288, 36, 32), _QWEN3_TOKENS),
        _family("InternVL3_5-14B", "internvl2_5", _vit_300m(), _qwen3(5120, 17408, 40, 40), _QWEN3_TOKENS),
        _family("InternVL3_5-38B", "internvl2_5", _vit_6b(), _qwen3(5120, 25600, 64, 64), _QWEN3_TOKENS),
        _family("InternVL3_5-30B-A3B", "internvl2_5", _vit_300m(), _qwen3_moe(2048, 6144, 48, 32, 4, 768), _QWEN3_TOKENS),
        _family("InternVL3_5-241B-A28B", "internvl2_5", _vit_6b(), _qwen3_moe(4096, 12288, 94, 64, 4, 1536), _QWEN3_TOKENS),
        _family("InternVL3_5-GPT-OSS-20B-A4B-Preview", "internvl3_5_gpt_oss", _vit_300m(), _gpt_oss_20b(), _GPT_OSS_TOKENS),
    )
}

# Checkpoints by generation, in release order (the README's family table).
GENERATIONS: dict[str, tuple[str, ...]] = {
    "InternVL2": tuple(name for name in FAMILIES if not name.startswith("InternVL2_5") and not name.startswith("InternVL3")),
    "InternVL2.5": tuple(name for name in FAMILIES if name.startswith("InternVL2_5")),
    "InternVL3": tuple(name for name in FAMILIES if name.startswith("InternVL3-")),
    "InternVL3.5": tuple(name for name in FAMILIES if name.startswith("InternVL3_5")),
}


def get_family(name: str) -> FamilySpec:
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"Unknown family {name!r}; known: {', '.join(FAMILIES)}") from None
