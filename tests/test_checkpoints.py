"""Generated checkpoints: config, tokenizer, weights layout and the CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import (
    AutoConfig,
    AutoTokenizer,
    GptOssConfig,
    LlamaConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
    Qwen3MoeConfig,
)

from model_plugin.configuration import (
    InternLM2Config,
    InternLM3Config,
    InternVisionConfig,
    InternVLChatConfig,
    register_configs,
)
from model_plugin.families import FAMILIES, INTERNVL_TOKENS, get_family
from model_plugin.make_checkpoint import ensure_checkpoint, make_checkpoint, random_weights

REPO = Path(__file__).resolve().parents[1]
NAMES = list(FAMILIES)
LLM_CLASSES = {
    "Qwen3ForCausalLM": Qwen3Config,
    "Qwen3MoeForCausalLM": Qwen3MoeConfig,
    "GptOssForCausalLM": GptOssConfig,
    "InternLM3ForCausalLM": InternLM3Config,
    "Qwen2ForCausalLM": Qwen2Config,
    "LlamaForCausalLM": LlamaConfig,
    "Phi3ForCausalLM": Phi3Config,
    "InternLM2ForCausalLM": InternLM2Config,
}
TOP_LEVEL = {
    "architectures": ["InternVLChatModel"],
    "model_type": "internvl_chat",
    "ps_version": "v2",
    "select_layer": -1,
    "downsample_ratio": 0.5,
    "force_image_size": 448,
    "dynamic_image_size": True,
    "use_thumbnail": True,
    "max_dynamic_patch": 12,
    "min_dynamic_patch": 1,
    "use_backbone_lora": 0,
    "use_llm_lora": 0,
}


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    register_configs()
    return tmp_path_factory.mktemp("ckpt")


def tiny(cache: Path, name: str) -> Path:
    return ensure_checkpoint(name, "tiny", cache)


def full(cache: Path, name: str) -> Path:
    return ensure_checkpoint(name, "full", cache)


def load_json(path: Path) -> dict:
    return json.loads(path.read_text())


# --- config ---------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tiny_config_fields_and_autoconfig(cache: Path, name: str) -> None:
    spec = get_family(name)
    path = tiny(cache, name)
    raw = load_json(path / "config.json")
    for key, value in TOP_LEVEL.items():
        assert raw[key] == value, key
    assert raw["template"] == spec.template
    assert raw["torch_dtype"] == "float32"
    assert raw["vision_config"]["model_type"] == "intern_vit_6b"
    assert raw["llm_config"]["architectures"] == spec.llm["architectures"]

    config = AutoConfig.from_pretrained(path)  # no trust_remote_code
    assert isinstance(config, InternVLChatConfig)
    assert isinstance(config.vision_config, InternVisionConfig)
    assert type(config.llm_config) is LLM_CLASSES[spec.llm_architecture]
    assert config.get_text_config() is config.llm_config
    assert config.text_config is config.llm_config
    assert InternVLChatConfig.from_pretrained(path).get_text_config().hidden_size == 128

    vc, lc = config.vision_config, config.llm_config
    assert (vc.image_size, vc.patch_size, vc.num_hidden_layers, vc.intermediate_size) == (448, 14, 2, 128)
    for key in ("norm_type", "qk_normalization", "qkv_bias"):
        assert getattr(vc, key) == spec.vision[key]
    if spec.vision_style == "6b":
        assert (vc.hidden_size, vc.num_attention_heads) == (80, 5)
    else:
        assert (vc.hidden_size, vc.num_attention_heads) == (64, 4)
    assert (lc.hidden_size, lc.num_attention_heads, lc.num_hidden_layers, lc.intermediate_size) == (128, 4, 2, 256)
    real_gqa = spec.llm["num_key_value_heads"] < spec.llm["num_attention_heads"]
    assert lc.num_key_value_heads == (2 if real_gqa else 4)
    assert lc.max_position_embeddings >= 16384
    assert lc.tie_word_embeddings == spec.llm["tie_word_embeddings"]
    real_rope = (spec.llm.get("rope_scaling") or {}).get("type", "default")
    assert lc.rope_parameters["rope_type"] == real_rope


# The file set of each released repository (README, examples and .gitattributes aside).
_INTERNVL_CODE = {"configuration_intern_vit.py", "configuration_internvl_chat.py", "conversation.py",
                  "modeling_intern_vit.py", "modeling_internvl_chat.py"}
_COMMON = {"config.json", "generation_config.json", "special_tokens_map.json", "tokenizer_config.json"} | _INTERNVL_CODE
RELEASED_FILES = {
    "Qwen2ForCausalLM": _COMMON | {"vocab.json", "merges.txt", "added_tokens.json"},
    "InternLM2ForCausalLM": _COMMON | {"tokenizer.model", "added_tokens.json", "configuration_internlm2.py",
                                       "modeling_internlm2.py", "tokenization_internlm2.py",
                                       "tokenization_internlm2_fast.py"},
    "Phi3ForCausalLM": _COMMON | {"tokenizer.model", "tokenizer.json", "added_tokens.json",
                                  "configuration_phi3.py", "modeling_phi3.py"},
    "Yi": _COMMON | {"tokenizer.model", "added_tokens.json"},
    "Llama3": _COMMON | {"tokenizer.json"},
    # InternVL3.5 ships tokenizer.json beside Qwen's vocab.json / merges.txt.
    "Qwen3ForCausalLM": _COMMON | {"vocab.json", "merges.txt", "added_tokens.json", "tokenizer.json"},
    "Qwen3MoeForCausalLM": _COMMON | {"vocab.json", "merges.txt", "added_tokens.json", "tokenizer.json"},
    "InternLM3ForCausalLM": _COMMON | {"tokenizer.model", "added_tokens.json", "configuration_internlm3.py",
                                       "modeling_internlm3.py", "tokenization_internlm3.py"},
    "GptOssForCausalLM": _COMMON | {"tokenizer.json"},
}
INTERNVL_AUTO_MAP = {
    "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
    "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
}


def _file_set_key(name: str) -> str:
    arch = get_family(name).llm_architecture
    if arch == "LlamaForCausalLM":
        return "Llama3" if "Llama3" in name else "Yi"
    return arch


@pytest.mark.parametrize("name", NAMES)
def test_released_layout_files_and_config(cache: Path, name: str) -> None:
    spec = get_family(name)
    path = tiny(cache, name)
    weights = {p.name for p in path.glob("*.safetensors")} | {p.name for p in path.glob("*.index.json")}
    files = {p.name for p in path.iterdir()} - weights
    assert files == RELEASED_FILES[_file_set_key(name)]
    raw = load_json(path / "config.json")
    assert raw["auto_map"] == INTERNVL_AUTO_MAP
    assert raw["_commit_hash"] is None
    llm, vision = raw["llm_config"], raw["vision_config"]
    # transformers 4.37 wrote its generation/task defaults into the sub-configs.
    assert llm["id2label"] == {"0": "LABEL_0", "1": "LABEL_1"} and llm["label2id"] == {"LABEL_0": 0, "LABEL_1": 1}
    assert llm["attn_implementation"] == "flash_attention_2"
    assert llm["transformers_version"] == vision["transformers_version"] == "4.37.2"
    assert "rope_parameters" not in llm and "rope_theta" in llm
    assert vision["use_flash_attn"] is True
    if spec.llm_architecture == "InternLM2ForCausalLM":
        assert llm["auto_map"]["AutoConfig"] == "configuration_internlm2.InternLM2Config"
    for stand_in in path.glob("*.py"):
        # Remote code must never run: every .py is a stand-in that raises.
        with pytest.raises(RuntimeError, match="without trust_remote_code"):
            exec(compile(stand_in.read_text(), str(stand_in), "exec"), {})


def test_loading_released_layout_runs_no_remote_code(cache: Path) -> None:
    # In a fresh interpreter, so no earlier import or registration helps: what
    # internvl-serve does at start (the plugin's config registration, then
    # AutoConfig, vLLM's config loader and tokenizer), on a checkpoint whose .py
    # files all raise when imported.
    path = tiny(cache, "InternVL2-8B")
    code = (
        "import sys\n"
        "from model_plugin import register_config\n"
        "register_config()\n"
        "from transformers import AutoConfig, AutoTokenizer\n"
        "from vllm.transformers_utils.config import get_config\n"
        f"p = {str(path)!r}\n"
        "c = AutoConfig.from_pretrained(p)\n"
        "v = get_config(p, trust_remote_code=False)\n"
        "t = AutoTokenizer.from_pretrained(p)\n"
        "assert type(c).__module__ == 'model_plugin.configuration', type(c).__module__\n"
        "assert not [m for m in sys.modules if 'internvl_chat' in m or 'transformers_modules' in m]\n"
        "print(type(v.get_text_config()).__name__, type(t).__name__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-2] == "InternLM2Config"


def test_minimal_layout_still_loads(tmp_path: Path) -> None:
    path = make_checkpoint("InternVL2-2B", "tiny", tmp_path, layout="minimal")
    raw = load_json(path / "config.json")
    assert "auto_map" not in raw and not list(path.glob("*.py"))
    assert (path / "tokenizer.json").exists() and not (path / "tokenizer.model").exists()
    config = AutoConfig.from_pretrained(path)
    assert type(config.llm_config) is InternLM2Config
    assert len(AutoTokenizer.from_pretrained(path)) == config.llm_config.vocab_size


@pytest.fixture(scope="module")
def vllm_context():
    from vllm.config import VllmConfig, set_current_vllm_config

    # vLLM layers (rope included) may only be built inside a config context.
    with set_current_vllm_config(VllmConfig()):
        yield


@pytest.mark.parametrize("name", NAMES)
def test_vllm_parses_config(cache: Path, name: str, vllm_context: None) -> None:
    from vllm.model_executor.layers.rotary_embedding import get_rope
    from vllm.transformers_utils.config import get_config

    config = get_config(str(tiny(cache, name)), trust_remote_code=False)
    text = config.get_text_config()
    assert text is config.text_config
    assert text.architectures == get_family(name).llm["architectures"]
    # The real-size rope settings must be buildable by vLLM's rope helpers.
    for path in (tiny(cache, name), full(cache, name)):
        text = get_config(str(path), trust_remote_code=False).get_text_config()
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        if text.rope_parameters["rope_type"] == "longrope":
            # vLLM builds LongRoPE only with a full model config; check the
            # shape it relies on instead: one factor per frequency pair.
            assert len(text.rope_parameters["long_factor"]) == head_dim // 2
            assert len(text.rope_parameters["short_factor"]) == head_dim // 2
            continue
        rope = get_rope(head_dim, text.max_position_embeddings, rope_parameters=text.rope_parameters)
        assert type(rope).__name__ != "RotaryEmbedding" or text.rope_parameters["rope_type"] == "default"


@pytest.mark.parametrize(
    "name, vit, llm",
    [
        ("InternVL2-1B", (1024, 16, 24), (896, 14, 2, 24, 151655)),
        ("InternVL2-2B", (1024, 16, 24), (2048, 16, 8, 24, 92553)),
        ("InternVL2-4B", (1024, 16, 24), (3072, 32, 32, 32, 32020)),
        ("InternVL2-8B", (1024, 16, 24), (4096, 32, 8, 32, 92553)),
        ("InternVL2-26B", (3200, 25, 45), (6144, 48, 8, 48, 92553)),
        ("InternVL2-40B", (3200, 25, 45), (7168, 56, 8, 60, 64000)),
        ("InternVL2-Llama3-76B", (3200, 25, 45), (8192, 64, 8, 80, 128265)),
        ("Mini-InternVL-Chat-2B-V1-5", (1024, 16, 24), (2048, 16, 8, 24, 92553)),
        ("Mini-InternVL-Chat-4B-V1-5", (1024, 16, 24), (3072, 32, 32, 32, 32020)),
        ("InternVL-Chat-V1-5", (3200, 25, 45), (6144, 48, 8, 48, 92553)),
        ("InternVL2_5-1B", (1024, 16, 24), (896, 14, 2, 24, 151674)),
        ("InternVL2_5-26B", (3200, 25, 45), (6144, 48, 8, 48, 92553)),
        ("InternVL3-2B", (1024, 16, 24), (1536, 12, 2, 28, 151674)),
        ("InternVL3-9B", (1024, 16, 24), (4096, 32, 2, 48, 128512)),
        ("InternVL3-78B", (3200, 25, 45), (8192, 64, 8, 80, 151674)),
        ("InternVL3_5-8B", (1024, 16, 24), (4096, 32, 8, 36, 151936)),
        ("InternVL3_5-30B-A3B", (1024, 16, 24), (2048, 32, 4, 48, 151936)),
        ("InternVL3_5-241B-A28B", (3200, 25, 45), (4096, 64, 4, 94, 151936)),
        ("InternVL3_5-GPT-OSS-20B-A4B-Preview", (1024, 16, 24), (2880, 64, 8, 24, 201088)),
    ],
)
def test_full_config_has_real_sizes(cache: Path, name: str, vit: tuple, llm: tuple) -> None:
    path = full(cache, name)
    assert not list(path.glob("*.safetensors"))
    config = AutoConfig.from_pretrained(path)
    vc, lc = config.vision_config, config.llm_config
    assert (vc.hidden_size, vc.num_attention_heads, vc.num_hidden_layers) == vit
    assert (lc.hidden_size, lc.num_attention_heads, lc.num_key_value_heads, lc.num_hidden_layers, lc.vocab_size) == llm
    assert load_json(path / "config.json")["torch_dtype"] == "bfloat16"
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert len(tokenizer) <= lc.vocab_size


def test_full_config_spot_values(cache: Path) -> None:
    vit6b = AutoConfig.from_pretrained(full(cache, "InternVL2-26B")).vision_config
    assert (vit6b.intermediate_size, vit6b.norm_type, vit6b.qk_normalization, vit6b.qkv_bias) == (
        12800, "rms_norm", True, False)
    qwen = AutoConfig.from_pretrained(full(cache, "InternVL2-1B")).llm_config
    assert qwen.intermediate_size == 4864 and qwen.rope_parameters["rope_theta"] == 1e6
    internlm = AutoConfig.from_pretrained(full(cache, "InternVL2-8B")).llm_config
    assert internlm.intermediate_size == 14336
    assert internlm.rope_parameters["rope_type"] == "dynamic" and internlm.rope_parameters["factor"] == 2.0
    phi3 = AutoConfig.from_pretrained(full(cache, "InternVL2-4B")).llm_config
    assert phi3.rope_parameters["rope_type"] == "longrope"
    assert len(phi3.rope_parameters["long_factor"]) == len(phi3.rope_parameters["short_factor"]) == 48
    assert phi3.max_position_embeddings == 131072
    llama3 = AutoConfig.from_pretrained(full(cache, "InternVL2-Llama3-76B")).llm_config
    assert (llama3.intermediate_size, llama3.rope_parameters["rope_theta"]) == (28672, 500000.0)
    qwen2_5 = AutoConfig.from_pretrained(full(cache, "InternVL3-1B")).llm_config
    assert qwen2_5.rope_parameters["rope_type"] == "dynamic" and qwen2_5.rope_parameters["factor"] == 2.0
    assert AutoConfig.from_pretrained(full(cache, "InternVL2_5-1B")).llm_config.rope_parameters["rope_type"] == "default"
    qwen3 = AutoConfig.from_pretrained(full(cache, "InternVL3_5-1B")).llm_config
    assert (qwen3.head_dim, qwen3.max_position_embeddings, qwen3.tie_word_embeddings) == (128, 40960, False)
    moe = AutoConfig.from_pretrained(full(cache, "InternVL3_5-30B-A3B")).llm_config
    assert (moe.num_experts, moe.num_experts_per_tok, moe.moe_intermediate_size) == (128, 8, 768)
    oss = AutoConfig.from_pretrained(full(cache, "InternVL3_5-GPT-OSS-20B-A4B-Preview")).llm_config
    assert (oss.num_local_experts, oss.num_experts_per_tok, oss.sliding_window, oss.head_dim) == (32, 4, 128, 64)
    assert oss.rope_parameters["rope_type"] == "yarn" and oss.rope_parameters["factor"] == 32.0
    internlm3 = AutoConfig.from_pretrained(full(cache, "InternVL3-9B")).llm_config
    assert (internlm3.head_dim, internlm3.intermediate_size) == (128, 10240)


# --- tokenizer --------------------------------------------------------------


# The template's control tokens, as the released tokenizers hold them (one id each).
TEMPLATE_TOKENS = {
    "Hermes-2": ("<|im_start|>", "<|im_end|>"),
    "internlm2-chat": ("<|im_start|>", "<|im_end|>"),
    "phi3-chat": ("<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
    "internvl2_5": ("<|im_start|>", "<|im_end|>"),
    "internvl3_5_gpt_oss": ("<|start|>", "<|message|>", "<|channel|>", "<|end|>", "<|return|>"),
}


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer(cache: Path, name: str) -> None:
    spec = get_family(name)
    path = tiny(cache, name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    assert len(tokenizer) == config.llm_config.vocab_size
    backbone = {t for t in (spec.tokens.bos, spec.tokens.eos, spec.tokens.pad, spec.tokens.unk) if t}
    required = set(INTERNVL_TOKENS) | set(TEMPLATE_TOKENS[spec.template]) | backbone
    for token in required:
        ids = tokenizer.encode(token, add_special_tokens=False)
        assert len(ids) == 1 and tokenizer.convert_ids_to_tokens(ids[0]) == token, token
    assert tokenizer.eos_token == spec.eos_token
    assert config.llm_config.eos_token_id == tokenizer.convert_tokens_to_ids(spec.eos_token)
    text = "Describe <img><IMG_CONTEXT></img> this: naïve café, 中文, emoji 🙂\n\ttabs  and  spaces."
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert tokenizer.decode(ids) == text
    generation = load_json(path / "generation_config.json")
    stops = generation["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids(spec.end_token) in stops
    assert tokenizer.convert_tokens_to_ids(spec.eos_token) in stops


@pytest.mark.parametrize("layout, file", [("released", "tokenizer.model"), ("minimal", "tokenizer.json")])
def test_tokenizer_is_deterministic(tmp_path: Path, layout: str, file: str) -> None:
    a = make_checkpoint("InternVL2-2B", "full", tmp_path / "a", layout=layout)
    b = make_checkpoint("InternVL2-2B", "full", tmp_path / "b", layout=layout)
    assert (a / file).read_bytes() == (b / file).read_bytes()


# --- weights ----------------------------------------------------------------


# Tensor names of the released checkpoints, written down from the released
# model.safetensors.index.json files and the official modeling code
# (InternVisionModel, InternLM2ForCausalLM, Phi-3 as vendored by InternVL,
# transformers' Qwen2/Llama), with each tensor's shape. `L` is a layer index;
# `v` the vision config, `t` the LLM config. Held against what the generator
# writes, never derived from it.
def _qkv_rows(t) -> int:
    head_dim = t.hidden_size // t.num_attention_heads
    return (t.num_attention_heads + 2 * t.num_key_value_heads) * head_dim


def _kv_rows(t) -> int:
    return t.num_key_value_heads * (t.hidden_size // t.num_attention_heads)


def _head_dim(t) -> int:  # Qwen3, InternLM3 and GPT-OSS name theirs
    return t.head_dim


def _attention_with_head_dim(t) -> dict:
    return {
        r"language_model\.model\.layers\.L\.self_attn\.q_proj\.weight": lambda t: (t.num_attention_heads * _head_dim(t), t.hidden_size),
        r"language_model\.model\.layers\.L\.self_attn\.k_proj\.weight": lambda t: (t.num_key_value_heads * _head_dim(t), t.hidden_size),
        r"language_model\.model\.layers\.L\.self_attn\.v_proj\.weight": lambda t: (t.num_key_value_heads * _head_dim(t), t.hidden_size),
        r"language_model\.model\.layers\.L\.self_attn\.o_proj\.weight": lambda t: (t.hidden_size, t.num_attention_heads * _head_dim(t)),
    }


_HEAD_DIM_ATTENTION = _attention_with_head_dim(None)
_DENSE_MLP = {
    r"language_model\.model\.layers\.L\.mlp\.gate_proj\.weight": lambda t: (t.intermediate_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.mlp\.up_proj\.weight": lambda t: (t.intermediate_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.mlp\.down_proj\.weight": lambda t: (t.hidden_size, t.intermediate_size),
}
_DECODER_FRAME = {
    r"language_model\.model\.embed_tokens\.weight": lambda t: (t.vocab_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.input_layernorm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.model\.layers\.L\.post_attention_layernorm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.model\.norm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.lm_head\.weight": lambda t: (t.vocab_size, t.hidden_size),
}
_QK_NORM = {
    r"language_model\.model\.layers\.L\.self_attn\.q_norm\.weight": lambda t: (_head_dim(t),),
    r"language_model\.model\.layers\.L\.self_attn\.k_norm\.weight": lambda t: (_head_dim(t),),
}


VISION_PATTERNS = {
    r"vision_model\.embeddings\.class_embedding": lambda v: (1, 1, v.hidden_size),
    r"vision_model\.embeddings\.patch_embedding\.weight": lambda v: (v.hidden_size, 3, 14, 14),
    r"vision_model\.embeddings\.patch_embedding\.bias": lambda v: (v.hidden_size,),
    r"vision_model\.embeddings\.position_embedding": lambda v: (1, 1 + (448 // 14) ** 2, v.hidden_size),
    r"vision_model\.encoder\.layers\.L\.attn\.qkv\.weight": lambda v: (3 * v.hidden_size, v.hidden_size),
    r"vision_model\.encoder\.layers\.L\.attn\.proj\.weight": lambda v: (v.hidden_size, v.hidden_size),
    r"vision_model\.encoder\.layers\.L\.attn\.proj\.bias": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.mlp\.fc1\.weight": lambda v: (v.intermediate_size, v.hidden_size),
    r"vision_model\.encoder\.layers\.L\.mlp\.fc1\.bias": lambda v: (v.intermediate_size,),
    r"vision_model\.encoder\.layers\.L\.mlp\.fc2\.weight": lambda v: (v.hidden_size, v.intermediate_size),
    r"vision_model\.encoder\.layers\.L\.mlp\.fc2\.bias": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.norm1\.weight": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.norm2\.weight": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.ls1": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.ls2": lambda v: (v.hidden_size,),
}
# InternViT-300M (layer norm, qkv bias) and InternViT-6B (RMS norm, q/k norm, no qkv bias).
VISION_300M_PATTERNS = {
    r"vision_model\.encoder\.layers\.L\.attn\.qkv\.bias": lambda v: (3 * v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.norm1\.bias": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.norm2\.bias": lambda v: (v.hidden_size,),
}
VISION_6B_PATTERNS = {
    r"vision_model\.encoder\.layers\.L\.attn\.q_norm\.weight": lambda v: (v.hidden_size,),
    r"vision_model\.encoder\.layers\.L\.attn\.k_norm\.weight": lambda v: (v.hidden_size,),
}
PROJECTOR_PATTERNS = {
    r"mlp1\.0\.weight": lambda v, t: (4 * v.hidden_size,),
    r"mlp1\.0\.bias": lambda v, t: (4 * v.hidden_size,),
    r"mlp1\.1\.weight": lambda v, t: (t.hidden_size, 4 * v.hidden_size),
    r"mlp1\.1\.bias": lambda v, t: (t.hidden_size,),
    r"mlp1\.3\.weight": lambda v, t: (t.hidden_size, t.hidden_size),
    r"mlp1\.3\.bias": lambda v, t: (t.hidden_size,),
}
_DECODER_COMMON = {
    r"language_model\.model\.embed_tokens\.weight": lambda t: (t.vocab_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.self_attn\.o_proj\.weight": lambda t: (t.hidden_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.mlp\.down_proj\.weight": lambda t: (t.hidden_size, t.intermediate_size),
    r"language_model\.model\.layers\.L\.input_layernorm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.model\.layers\.L\.post_attention_layernorm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.model\.norm\.weight": lambda t: (t.hidden_size,),
    r"language_model\.lm_head\.weight": lambda t: (t.vocab_size, t.hidden_size),
}
_SPLIT_QKV_MLP = {
    r"language_model\.model\.layers\.L\.self_attn\.q_proj\.weight": lambda t: (t.hidden_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.self_attn\.k_proj\.weight": lambda t: (_kv_rows(t), t.hidden_size),
    r"language_model\.model\.layers\.L\.self_attn\.v_proj\.weight": lambda t: (_kv_rows(t), t.hidden_size),
    r"language_model\.model\.layers\.L\.mlp\.gate_proj\.weight": lambda t: (t.intermediate_size, t.hidden_size),
    r"language_model\.model\.layers\.L\.mlp\.up_proj\.weight": lambda t: (t.intermediate_size, t.hidden_size),
}
LLM_PATTERNS = {
    "InternLM2ForCausalLM": {
        r"language_model\.model\.tok_embeddings\.weight": lambda t: (t.vocab_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.attention\.wqkv\.weight": lambda t: (_qkv_rows(t), t.hidden_size),
        r"language_model\.model\.layers\.L\.attention\.wo\.weight": lambda t: (t.hidden_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.feed_forward\.w1\.weight": lambda t: (t.intermediate_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.feed_forward\.w3\.weight": lambda t: (t.intermediate_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.feed_forward\.w2\.weight": lambda t: (t.hidden_size, t.intermediate_size),
        r"language_model\.model\.layers\.L\.attention_norm\.weight": lambda t: (t.hidden_size,),
        r"language_model\.model\.layers\.L\.ffn_norm\.weight": lambda t: (t.hidden_size,),
        r"language_model\.model\.norm\.weight": lambda t: (t.hidden_size,),
        r"language_model\.output\.weight": lambda t: (t.vocab_size, t.hidden_size),
    },
    "Qwen2ForCausalLM": {
        **_DECODER_COMMON,
        **_SPLIT_QKV_MLP,
        r"language_model\.model\.layers\.L\.self_attn\.q_proj\.bias": lambda t: (t.hidden_size,),
        r"language_model\.model\.layers\.L\.self_attn\.k_proj\.bias": lambda t: (_kv_rows(t),),
        r"language_model\.model\.layers\.L\.self_attn\.v_proj\.bias": lambda t: (_kv_rows(t),),
    },
    "LlamaForCausalLM": {**_DECODER_COMMON, **_SPLIT_QKV_MLP},
    # transformers' Qwen3 / Qwen3-MoE / GPT-OSS names (InternVL3.5 saves its LLM
    # with them), InternLM3's remote modeling code (Llama names).
    "InternLM3ForCausalLM": {**_DECODER_FRAME, **_HEAD_DIM_ATTENTION, **_DENSE_MLP},
    "Qwen3ForCausalLM": {**_DECODER_FRAME, **_HEAD_DIM_ATTENTION, **_QK_NORM, **_DENSE_MLP},
    "Qwen3MoeForCausalLM": {
        **_DECODER_FRAME,
        **_HEAD_DIM_ATTENTION,
        **_QK_NORM,
        r"language_model\.model\.layers\.L\.mlp\.gate\.weight": lambda t: (t.num_experts, t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.L\.gate_proj\.weight": lambda t: (t.moe_intermediate_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.L\.up_proj\.weight": lambda t: (t.moe_intermediate_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.L\.down_proj\.weight": lambda t: (t.hidden_size, t.moe_intermediate_size),
    },
    "GptOssForCausalLM": {
        **_DECODER_FRAME,
        **_HEAD_DIM_ATTENTION,
        r"language_model\.model\.layers\.L\.self_attn\.q_proj\.bias": lambda t: (t.num_attention_heads * _head_dim(t),),
        r"language_model\.model\.layers\.L\.self_attn\.k_proj\.bias": lambda t: (t.num_key_value_heads * _head_dim(t),),
        r"language_model\.model\.layers\.L\.self_attn\.v_proj\.bias": lambda t: (t.num_key_value_heads * _head_dim(t),),
        r"language_model\.model\.layers\.L\.self_attn\.o_proj\.bias": lambda t: (t.hidden_size,),
        r"language_model\.model\.layers\.L\.self_attn\.sinks": lambda t: (t.num_attention_heads,),
        r"language_model\.model\.layers\.L\.mlp\.router\.weight": lambda t: (t.num_local_experts, t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.router\.bias": lambda t: (t.num_local_experts,),
        r"language_model\.model\.layers\.L\.mlp\.experts\.gate_up_proj": lambda t: (t.num_local_experts, t.hidden_size, 2 * t.intermediate_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.gate_up_proj_bias": lambda t: (t.num_local_experts, 2 * t.intermediate_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.down_proj": lambda t: (t.num_local_experts, t.intermediate_size, t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.experts\.down_proj_bias": lambda t: (t.num_local_experts, t.hidden_size),
    },
    "Phi3ForCausalLM": {
        **_DECODER_COMMON,
        r"language_model\.model\.layers\.L\.self_attn\.qkv_proj\.weight": lambda t: (_qkv_rows(t), t.hidden_size),
        r"language_model\.model\.layers\.L\.mlp\.gate_up_proj\.weight": lambda t: (2 * t.intermediate_size, t.hidden_size),
    },
}
# Weight files of each release (1 = a single model.safetensors without an index).
RELEASED_SHARDS = {
    "InternVL2-1B": 1, "InternVL2-2B": 1, "InternVL2-4B": 2, "InternVL2-8B": 4, "InternVL2-26B": 11,
    "InternVL2-40B": 17, "InternVL2-Llama3-76B": 32, "Mini-InternVL-Chat-2B-V1-5": 1,
    "Mini-InternVL-Chat-4B-V1-5": 2, "InternVL-Chat-V1-5": 11,
    # InternVL2.5 / 3 / 3.5: bf16 size over transformers' 5 GB shards (unverified).
    "InternVL2_5-1B": 1, "InternVL2_5-2B": 1, "InternVL2_5-4B": 2, "InternVL2_5-8B": 4, "InternVL2_5-26B": 11,
    "InternVL2_5-38B": 16, "InternVL2_5-78B": 33, "InternVL3-1B": 1, "InternVL3-2B": 1, "InternVL3-8B": 4,
    "InternVL3-9B": 4, "InternVL3-14B": 7, "InternVL3-38B": 16, "InternVL3-78B": 33, "InternVL3_5-1B": 1,
    "InternVL3_5-2B": 1, "InternVL3_5-4B": 2, "InternVL3_5-8B": 4, "InternVL3_5-14B": 7, "InternVL3_5-38B": 16,
    "InternVL3_5-30B-A3B": 13, "InternVL3_5-241B-A28B": 97, "InternVL3_5-GPT-OSS-20B-A4B-Preview": 9,
}


def released_patterns(name: str, config: InternVLChatConfig) -> dict[str, tuple[int, ...]]:
    """Each released name pattern (a regex; layer indices become a group) with its shape."""
    spec = get_family(name)
    v, t = config.vision_config, config.llm_config
    vision = {**VISION_PATTERNS, **(VISION_6B_PATTERNS if spec.vision_style == "6b" else VISION_300M_PATTERNS)}
    patterns = {p: f(v) for p, f in vision.items()}
    patterns |= {p: f(v, t) for p, f in PROJECTOR_PATTERNS.items()}
    patterns |= {p: f(t) for p, f in LLM_PATTERNS[spec.llm_architecture].items()}
    return {p.replace(r"\.L\.", r"\.(\d+)\."): shape for p, shape in patterns.items()}


def check_against_released(name: str, config: InternVLChatConfig, shapes: dict[str, tuple[int, ...]]) -> None:
    """Every tensor matches exactly one released pattern, with its shape, and every
    pattern is present for every layer (and only for existing layers)."""
    patterns = released_patterns(name, config)
    seen: dict[str, set[int]] = {p: set() for p in patterns}
    for key, shape in shapes.items():
        hits = [(p, m) for p in patterns if (m := re.fullmatch(p, key))]
        assert len(hits) == 1, f"{key}: matches {len(hits)} released name patterns"
        pattern, match = hits[0]
        assert tuple(shape) == patterns[pattern], key
        seen[pattern].add(int(match.group(1)) if match.groups() else -1)
    layers = {"vision_model": config.vision_config.num_hidden_layers, "language_model": config.llm_config.num_hidden_layers}
    for pattern, indices in seen.items():
        if r"(\d+)" in pattern:
            expected = set(range(layers[pattern.split("\\")[0]]))
        else:
            expected = {-1}
        assert indices == expected, f"{pattern}: layers {sorted(indices)}"


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    tensors = {}
    for file in sorted(path.glob("*.safetensors")):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():
                assert key not in tensors, f"{key} stored twice"
                tensors[key] = handle.get_tensor(key)
    return tensors


@pytest.mark.parametrize("name", NAMES)
def test_weights_layout_and_sharding(cache: Path, name: str) -> None:
    path = tiny(cache, name)
    config = AutoConfig.from_pretrained(path)
    tensors = read_weights(path)
    check_against_released(name, config, {k: tuple(t.shape) for k, t in tensors.items()})
    for key, tensor in tensors.items():
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()

    shards = sorted(p.name for p in path.glob("*.safetensors"))
    count = min(RELEASED_SHARDS[name], len(tensors))  # a tiny 241B has fewer tensors than shards
    if count == 1:
        assert shards == ["model.safetensors"]
        assert not (path / "model.safetensors.index.json").exists()
        return
    assert shards == [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]
    index = load_json(path / "model.safetensors.index.json")
    assert set(index["weight_map"]) == set(tensors)
    assert sorted(set(index["weight_map"].values())) == shards
    for file in shards:
        with safe_open(str(path / file), framework="pt") as handle:
            assert all(index["weight_map"][k] == file for k in handle.keys())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())
    # save_pretrained order: the vision tower first, the projector last.
    assert index["weight_map"]["vision_model.embeddings.class_embedding"] == shards[0]
    assert index["weight_map"]["mlp1.3.bias"] == shards[-1]


@pytest.mark.parametrize("name", ["InternVL2-1B", "InternVL2-26B", "InternVL2-4B"])
def test_minimal_layout_weights_match_released_names(tmp_path: Path, name: str) -> None:
    path = make_checkpoint(name, "tiny", tmp_path, layout="minimal", max_shard_bytes=200_000)
    config = AutoConfig.from_pretrained(path)
    tensors = read_weights(path)
    check_against_released(name, config, {k: tuple(t.shape) for k, t in tensors.items()})
    assert len(list(path.glob("*.safetensors"))) >= 2
    assert not list(path.glob("*.py"))


def test_weights_deterministic_by_seed(cache: Path) -> None:
    config = AutoConfig.from_pretrained(tiny(cache, "InternVL2-1B"))
    a, b, c = random_weights(config, 0), random_weights(config, 0), random_weights(config, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["mlp1.1.weight"], c["mlp1.1.weight"])
    stored = read_weights(tiny(cache, "InternVL2-1B"))
    assert all(torch.equal(stored[k], a[k]) for k in a)


@pytest.mark.parametrize("name", ["InternVL2-1B", "InternVL2-8B", "InternVL2-4B", "InternVL2-40B"])
def test_top_logits_are_separated(cache: Path, name: str) -> None:
    # Proxy for greedy stability: final norm + output head on random
    # unit-RMS hidden states must rarely give a near-tie for top-1.
    path = tiny(cache, name)
    tensors = read_weights(path)
    config = AutoConfig.from_pretrained(path)
    lm = "language_model."
    head = tensors.get(lm + "lm_head.weight", tensors.get(lm + "output.weight"))
    if head is None:
        head = tensors[lm + "model.embed_tokens.weight"]
    norm = tensors[lm + "model.norm.weight"]
    hidden = torch.randn(2000, config.llm_config.hidden_size, generator=torch.Generator().manual_seed(0))
    hidden = hidden * torch.rsqrt(hidden.pow(2).mean(-1, keepdim=True) + 1e-6) * norm
    top2 = (hidden @ head.T).topk(2, dim=-1).values
    gaps = top2[:, 0] - top2[:, 1]
    assert (gaps > 1e-2).float().mean() > 0.97
    assert (hidden @ head.T).std() > 2.0


def test_image_path_changes_logits(cache: Path) -> None:
    # The projector must map vision features to LLM-scale vectors, so image
    # tokens actually influence generation instead of vanishing.
    tensors = read_weights(tiny(cache, "InternVL2-2B"))
    feats = torch.randn(16, tensors["mlp1.0.weight"].numel(), generator=torch.Generator().manual_seed(0))
    x = torch.nn.functional.layer_norm(feats, feats.shape[-1:], tensors["mlp1.0.weight"], tensors["mlp1.0.bias"])
    x = torch.nn.functional.gelu(x @ tensors["mlp1.1.weight"].T + tensors["mlp1.1.bias"])
    x = x @ tensors["mlp1.3.weight"].T + tensors["mlp1.3.bias"]
    assert 0.1 < x.std() < 10


# --- helpers and CLI ----------------------------------------------------------


def test_ensure_checkpoint_reuses(tmp_path: Path) -> None:
    first = ensure_checkpoint("InternVL2-1B", "tiny", tmp_path)
    stamp = (first / "config.json").stat().st_mtime_ns
    again = ensure_checkpoint("InternVL2-1B", "tiny", tmp_path)
    assert again == first and (again / "config.json").stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [first.name]
    assert "-released-" in first.name
    minimal = ensure_checkpoint("InternVL2-1B", "tiny", tmp_path, layout="minimal")
    assert minimal != first and "-minimal-" in minimal.name
    assert (first / "vocab.json").exists() and (minimal / "tokenizer.json").exists()


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="InternVL2-8B"):
        get_family("InternVL9-1T")


def test_single_shard_when_small_enough(tmp_path: Path) -> None:
    path = make_checkpoint("InternVL2-8B", "tiny", tmp_path, max_shard_bytes=10**9, layout="minimal")
    assert (path / "model.safetensors").exists()
    assert not (path / "model.safetensors.index.json").exists()


def test_cli(tmp_path: Path) -> None:
    help_run = subprocess.run(
        [sys.executable, "-m", "model_plugin.make_checkpoint", "--help"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert "--family" in help_run.stdout and "InternVL2-Llama3-76B" in help_run.stdout
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "model_plugin.make_checkpoint", "--family", "InternVL2-26B",
         "--scale", "tiny", "--out", str(out), "--seed", "3", "--max-shard-size", "500000"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    index = load_json(out / "model.safetensors.index.json")
    assert len(set(index["weight_map"].values())) > 2
    assert load_json(out / "config.json")["template"] == "internlm2-chat"
    assert len(set(index["weight_map"].values())) == 11  # the release's shard count; --max-shard-size is minimal's
    minimal = tmp_path / "minimal"
    subprocess.run(
        [sys.executable, "-m", "model_plugin.make_checkpoint", "--family", "InternVL2-26B", "--scale", "tiny",
         "--layout", "minimal", "--out", str(minimal), "--max-shard-size", "500000"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert (minimal / "tokenizer.json").exists() and "auto_map" not in load_json(minimal / "config.json")
    bad = subprocess.run(
        [sys.executable, "-m", "model_plugin.make_checkpoint", "--family", "nope", "--scale", "tiny",
         "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert bad.returncode != 0
