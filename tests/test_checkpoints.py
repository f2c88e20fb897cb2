"""Generated checkpoints: config, tokenizer, weights layout and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer, LlamaConfig, Phi3Config, Qwen2Config

from model_plugin.configuration import (
    InternLM2Config,
    InternVisionConfig,
    InternVLChatConfig,
    register_configs,
)
from model_plugin.families import FAMILIES, INTERNVL_TOKENS, get_family
from model_plugin.make_checkpoint import ensure_checkpoint, make_checkpoint, random_weights

REPO = Path(__file__).resolve().parents[1]
NAMES = list(FAMILIES)
LLM_CLASSES = {
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
        head_dim = text.hidden_size // text.num_attention_heads
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


# --- tokenizer --------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer(cache: Path, name: str) -> None:
    spec = get_family(name)
    path = tiny(cache, name)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    assert len(tokenizer) == config.llm_config.vocab_size
    required = set(INTERNVL_TOKENS) | set(spec.template_spec.chat_tokens) | set(spec.tokens.base_tokens)
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


def test_tokenizer_is_deterministic(tmp_path: Path) -> None:
    a = make_checkpoint("InternVL2-2B", "full", tmp_path / "a")
    b = make_checkpoint("InternVL2-2B", "full", tmp_path / "b")
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


# --- weights ----------------------------------------------------------------


def expected_names(config: InternVLChatConfig) -> dict[str, tuple[int, ...]]:
    """Independent statement of the released tensor layout."""
    vc, lc = config.vision_config, config.llm_config
    c, ff = vc.hidden_size, vc.intermediate_size
    out = {
        "vision_model.embeddings.class_embedding": (1, 1, c),
        "vision_model.embeddings.patch_embedding.weight": (c, 3, 14, 14),
        "vision_model.embeddings.patch_embedding.bias": (c,),
        "vision_model.embeddings.position_embedding": (1, 1 + 32 * 32, c),
    }
    for i in range(vc.num_hidden_layers):
        p = f"vision_model.encoder.layers.{i}."
        out |= {p + "attn.qkv.weight": (3 * c, c), p + "attn.proj.weight": (c, c), p + "attn.proj.bias": (c,),
                p + "mlp.fc1.weight": (ff, c), p + "mlp.fc1.bias": (ff,), p + "mlp.fc2.weight": (c, ff),
                p + "mlp.fc2.bias": (c,), p + "norm1.weight": (c,), p + "norm2.weight": (c,),
                p + "ls1": (c,), p + "ls2": (c,)}
        if vc.qkv_bias:
            out[p + "attn.qkv.bias"] = (3 * c,)
        if vc.qk_normalization:
            out |= {p + "attn.q_norm.weight": (c,), p + "attn.k_norm.weight": (c,)}
        if vc.norm_type == "layer_norm":
            out |= {p + "norm1.bias": (c,), p + "norm2.bias": (c,)}
    h, v, ffl = lc.hidden_size, lc.vocab_size, lc.intermediate_size
    q, kv = h, lc.num_key_value_heads * (h // lc.num_attention_heads)
    out |= {"mlp1.0.weight": (4 * c,), "mlp1.0.bias": (4 * c,), "mlp1.1.weight": (h, 4 * c),
            "mlp1.1.bias": (h,), "mlp1.3.weight": (h, h), "mlp1.3.bias": (h,)}
    lm = "language_model."
    arch = lc.architectures[0]
    if arch == "InternLM2ForCausalLM":
        out |= {lm + "model.tok_embeddings.weight": (v, h), lm + "model.norm.weight": (h,),
                lm + "output.weight": (v, h)}
        for i in range(lc.num_hidden_layers):
            p = f"{lm}model.layers.{i}."
            out |= {p + "attention.wqkv.weight": (q + 2 * kv, h), p + "attention.wo.weight": (h, h),
                    p + "feed_forward.w1.weight": (ffl, h), p + "feed_forward.w3.weight": (ffl, h),
                    p + "feed_forward.w2.weight": (h, ffl), p + "attention_norm.weight": (h,),
                    p + "ffn_norm.weight": (h,)}
        return out
    out |= {lm + "model.embed_tokens.weight": (v, h), lm + "model.norm.weight": (h,)}
    if not lc.tie_word_embeddings:
        out[lm + "lm_head.weight"] = (v, h)
    for i in range(lc.num_hidden_layers):
        p = f"{lm}model.layers.{i}."
        out |= {p + "self_attn.o_proj.weight": (h, h), p + "mlp.down_proj.weight": (h, ffl),
                p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,)}
        if arch == "Phi3ForCausalLM":
            out |= {p + "self_attn.qkv_proj.weight": (q + 2 * kv, h), p + "mlp.gate_up_proj.weight": (2 * ffl, h)}
            continue
        out |= {p + "self_attn.q_proj.weight": (q, h), p + "self_attn.k_proj.weight": (kv, h),
                p + "self_attn.v_proj.weight": (kv, h), p + "mlp.gate_proj.weight": (ffl, h),
                p + "mlp.up_proj.weight": (ffl, h)}
        if arch == "Qwen2ForCausalLM":
            out |= {p + "self_attn.q_proj.bias": (q,), p + "self_attn.k_proj.bias": (kv,),
                    p + "self_attn.v_proj.bias": (kv,)}
    return out


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
    expected = expected_names(config)
    assert set(tensors) == set(expected)
    for key, tensor in tensors.items():
        assert tuple(tensor.shape) == expected[key], key
        assert tensor.dtype == torch.float32
        assert torch.isfinite(tensor).all()

    index = load_json(path / "model.safetensors.index.json")
    shards = sorted(p.name for p in path.glob("*.safetensors"))
    assert len(shards) >= 2
    assert set(index["weight_map"]) == set(tensors)
    assert sorted(set(index["weight_map"].values())) == shards
    for file in shards:
        with safe_open(str(path / file), framework="pt") as handle:
            assert all(index["weight_map"][k] == file for k in handle.keys())
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for t in tensors.values())


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


def test_unknown_family() -> None:
    with pytest.raises(ValueError, match="InternVL2-8B"):
        get_family("InternVL9-1T")


def test_single_shard_when_small_enough(tmp_path: Path) -> None:
    path = make_checkpoint("InternVL2-1B", "tiny", tmp_path, max_shard_bytes=10**9)
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
    bad = subprocess.run(
        [sys.executable, "-m", "model_plugin.make_checkpoint", "--family", "nope", "--scale", "tiny",
         "--out", str(tmp_path / "x")],
        cwd=REPO, capture_output=True, text=True,
    )
    assert bad.returncode != 0
