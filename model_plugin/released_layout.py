"""What a released InternVL2 hub repository looks like, as data, and writers for it.

`internvl-make-checkpoint --layout released` (the default) reproduces the file
set and formats of the OpenGVLab repos: `config.json` as the remote-code
classes saved it under transformers 4.37 (`auto_map`, `_commit_hash`, the
generation defaults 4.x wrote into every sub-config, legacy rope fields,
`attn_implementation`, `use_flash_attn`, ...), `generation_config.json`, the
weights sharded into as many files as the release has, and the remote-code
`.py` files. The `.py` files here are stand-ins that raise when imported, so a
test loading such a directory proves no remote code ran.

Provenance (what could and could not be checked against the releases):

| item | source |
|---|---|
| top-level keys, `auto_map`, `_commit_hash: null` | InternVL2-8B/26B config.json embedded in public test code |
| llm_config 4.37 defaults, `attn_implementation`, llm `auto_map` (InternLM2) | same (8B/26B: `flash_attention_2`) |
| vision_config keys, `use_flash_attn: true`, `transformers_version` 4.37.2 | same |
| `_name_or_path` of each backbone | model cards (InternLM2 ones seen in embedded configs; others unverified) |
| top-level `transformers_version: null` | unverified (memory of the hub files) |
| Phi-3 llm `auto_map` + configuration_phi3.py/modeling_phi3.py | unverified (the official repo vendors `internvl/model/phi3`) |
| Qwen2/Llama backbones have no llm `auto_map` | unverified (native transformers classes) |
| `attn_implementation` for 1B/4B/40B/76B | unverified; set as 8B/26B |
| shard counts (1, 1, 2, 4, 11, 17, 32, 1, 2, 11) | unverified: bf16 size / transformers' 5 GB default shard limit |
| generation_config.json content | unverified; stop ids kept so generation ends as released chat() does |
| InternVL2.5/3/3.5: template `internvl2_5`, top-level fields | InternVL2_5-1B/2B, InternVL3-1B/2B, InternVL3_5-8B configs copied in public repos |
| InternVL2.5/3/3.5: shard counts, `_name_or_path`, 4.37-era fields | unverified (as above); the releases' own `_name_or_path` values are training paths |
| InternVL3-9B llm `auto_map` and remote files (InternLM3) | unverified |
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .families import FamilySpec

__all__ = [
    "INTERNVL_REMOTE_CODE",
    "RELEASES",
    "Release",
    "release_for",
    "released_config",
    "released_generation_config",
    "released_shard_names",
    "write_remote_code_stand_ins",
]

TRANSFORMERS_VERSION = "4.37.2"

INTERNVL_AUTO_MAP = {
    "AutoConfig": "configuration_internvl_chat.InternVLChatConfig",
    "AutoModel": "modeling_internvl_chat.InternVLChatModel",
    "AutoModelForCausalLM": "modeling_internvl_chat.InternVLChatModel",
}
INTERNLM2_AUTO_MAP = {
    "AutoConfig": "configuration_internlm2.InternLM2Config",
    "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
    "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
}
PHI3_AUTO_MAP = {
    "AutoConfig": "configuration_phi3.Phi3Config",
    "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM",
}

INTERNVL_REMOTE_CODE = (
    "configuration_intern_vit.py",
    "configuration_internvl_chat.py",
    "conversation.py",
    "modeling_intern_vit.py",
    "modeling_internvl_chat.py",
)
INTERNLM2_REMOTE_CODE = (
    "configuration_internlm2.py",
    "modeling_internlm2.py",
    "tokenization_internlm2.py",
    "tokenization_internlm2_fast.py",
)
PHI3_REMOTE_CODE = ("configuration_phi3.py", "modeling_phi3.py")
INTERNLM3_AUTO_MAP = {
    "AutoConfig": "configuration_internlm3.InternLM3Config",
    "AutoModel": "modeling_internlm3.InternLM3Model",
    "AutoModelForCausalLM": "modeling_internlm3.InternLM3ForCausalLM",
}
INTERNLM3_REMOTE_CODE = ("configuration_internlm3.py", "modeling_internlm3.py", "tokenization_internlm3.py")

# What transformers 4.37's PretrainedConfig.to_dict() wrote into every
# sub-config of the released InternVL2 configs (generation and task defaults).
_TF437_LLM_DEFAULTS: dict[str, Any] = {
    "add_cross_attention": False,
    "bad_words_ids": None,
    "begin_suppress_tokens": None,
    "chunk_size_feed_forward": 0,
    "cross_attention_hidden_size": None,
    "decoder_start_token_id": None,
    "diversity_penalty": 0.0,
    "do_sample": False,
    "early_stopping": False,
    "encoder_no_repeat_ngram_size": 0,
    "exponential_decay_length_penalty": None,
    "finetuning_task": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
    "is_decoder": False,
    "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1},
    "length_penalty": 1.0,
    "max_length": 20,
    "min_length": 0,
    "no_repeat_ngram_size": 0,
    "num_beam_groups": 1,
    "num_beams": 1,
    "num_return_sequences": 1,
    "output_attentions": False,
    "output_hidden_states": False,
    "output_scores": False,
    "prefix": None,
    "problem_type": None,
    "pruned_heads": {},
    "remove_invalid_values": False,
    "repetition_penalty": 1.0,
    "return_dict": True,
    "return_dict_in_generate": False,
    "sep_token_id": None,
    "suppress_tokens": None,
    "task_specific_params": None,
    "temperature": 1.0,
    "tf_legacy_loss": False,
    "tie_encoder_decoder": False,
    "tokenizer_class": None,
    "top_k": 50,
    "top_p": 1.0,
    "torchscript": False,
    "typical_p": 1.0,
    "use_cache": True,
}
_VISION_KEYS = (
    "architectures", "attention_dropout", "drop_path_rate", "dropout", "hidden_act", "hidden_size",
    "image_size", "initializer_factor", "initializer_range", "intermediate_size", "layer_norm_eps",
    "model_type", "norm_type", "num_attention_heads", "num_channels", "num_hidden_layers", "patch_size",
    "qk_normalization", "qkv_bias",
)


@dataclass(frozen=True)
class Release:
    """One hub repository's packaging (not its hyper-parameters: see families.py)."""

    shards: int
    llm_name_or_path: str
    llm_auto_map: dict[str, str] | None
    remote_code: tuple[str, ...]
    attn_implementation: str = "flash_attention_2"


def _internlm2(shards: int, name: str) -> Release:
    return Release(shards, name, INTERNLM2_AUTO_MAP, INTERNVL_REMOTE_CODE + INTERNLM2_REMOTE_CODE)


def _plain(shards: int, name: str) -> Release:
    """A backbone transformers has natively: no llm `auto_map`, InternVL's remote code only."""
    return Release(shards, name, None, INTERNVL_REMOTE_CODE)


def _phi3(shards: int) -> Release:
    return Release(shards, "microsoft/Phi-3-mini-128k-instruct", PHI3_AUTO_MAP, INTERNVL_REMOTE_CODE + PHI3_REMOTE_CODE)


RELEASES: dict[str, Release] = {
    "InternVL2-1B": Release(1, "Qwen/Qwen2-0.5B-Instruct", None, INTERNVL_REMOTE_CODE),
    "InternVL2-2B": _internlm2(1, "internlm/internlm2-chat-1_8b"),
    "InternVL2-4B": _phi3(2),
    "InternVL2-8B": _internlm2(4, "internlm/internlm2_5-7b-chat"),
    "InternVL2-26B": _internlm2(11, "internlm/internlm2-chat-20b"),
    "InternVL2-40B": Release(17, "NousResearch/Nous-Hermes-2-Yi-34B", None, INTERNVL_REMOTE_CODE),
    "InternVL2-Llama3-76B": Release(32, "NousResearch/Hermes-2-Theta-Llama-3-70B", None, INTERNVL_REMOTE_CODE),
    "Mini-InternVL-Chat-2B-V1-5": _internlm2(1, "internlm/internlm2-chat-1_8b"),
    "Mini-InternVL-Chat-4B-V1-5": _phi3(2),
    "InternVL-Chat-V1-5": _internlm2(11, "internlm/internlm2-chat-20b"),
    "InternVL2_5-1B": _plain(1, "Qwen/Qwen2.5-0.5B-Instruct"),
    "InternVL2_5-2B": _internlm2(1, "internlm/internlm2_5-1_8b-chat"),
    "InternVL2_5-4B": _plain(2, "Qwen/Qwen2.5-3B-Instruct"),
    "InternVL2_5-8B": _internlm2(4, "internlm/internlm2_5-7b-chat"),
    "InternVL2_5-26B": _internlm2(11, "internlm/internlm2_5-20b-chat"),
    "InternVL2_5-38B": _plain(16, "Qwen/Qwen2.5-32B-Instruct"),
    "InternVL2_5-78B": _plain(33, "Qwen/Qwen2.5-72B-Instruct"),
    "InternVL3-1B": _plain(1, "Qwen/Qwen2.5-0.5B"),
    "InternVL3-2B": _plain(1, "Qwen/Qwen2.5-1.5B"),
    "InternVL3-8B": _plain(4, "Qwen/Qwen2.5-7B"),
    "InternVL3-9B": Release(4, "internlm/internlm3-8b-instruct", INTERNLM3_AUTO_MAP, INTERNVL_REMOTE_CODE + INTERNLM3_REMOTE_CODE),
    "InternVL3-14B": _plain(7, "Qwen/Qwen2.5-14B"),
    "InternVL3-38B": _plain(16, "Qwen/Qwen2.5-32B"),
    "InternVL3-78B": _plain(33, "Qwen/Qwen2.5-72B"),
    "InternVL3_5-1B": _plain(1, "Qwen/Qwen3-0.6B"),
    "InternVL3_5-2B": _plain(1, "Qwen/Qwen3-1.7B"),
    "InternVL3_5-4B": _plain(2, "Qwen/Qwen3-4B"),
    "InternVL3_5-8B": _plain(4, "Qwen/Qwen3-8B"),
    "InternVL3_5-14B": _plain(7, "Qwen/Qwen3-14B"),
    "InternVL3_5-38B": _plain(16, "Qwen/Qwen3-32B"),
    "InternVL3_5-30B-A3B": _plain(13, "Qwen/Qwen3-30B-A3B"),
    "InternVL3_5-241B-A28B": _plain(97, "Qwen/Qwen3-235B-A22B"),
    "InternVL3_5-GPT-OSS-20B-A4B-Preview": _plain(9, "openai/gpt-oss-20b"),
}


def release_for(spec: FamilySpec) -> Release:
    return RELEASES[spec.name]


def _legacy_rope(llm: dict[str, Any]) -> None:
    """Released configs spell rope as `rope_theta` + `rope_scaling={"type": ...}`."""
    llm.pop("rope_parameters", None)
    scaling = llm.get("rope_scaling")
    if isinstance(scaling, dict) and "rope_type" in scaling:
        scaling = dict(scaling)
        scaling["type"] = scaling.pop("rope_type")
        llm["rope_scaling"] = scaling


def released_config(spec: FamilySpec, llm_overrides: dict[str, Any], dtype: str) -> dict[str, Any]:
    """config.json as the release ships it, with `llm_overrides` (token ids, vocab) applied."""
    release = release_for(spec)
    use_bf16 = dtype == "bfloat16"
    llm = {**_TF437_LLM_DEFAULTS, **copy.deepcopy(spec.llm), **llm_overrides}
    _legacy_rope(llm)
    llm.update(
        _name_or_path=release.llm_name_or_path,
        attn_implementation=release.attn_implementation,
        torch_dtype=dtype,
        transformers_version=TRANSFORMERS_VERSION,
        use_bfloat16=use_bf16,
    )
    if release.llm_auto_map:
        llm["auto_map"] = dict(release.llm_auto_map)
    vision = {key: copy.deepcopy(spec.vision[key]) for key in _VISION_KEYS}
    vision.update(
        output_attentions=False,
        output_hidden_states=False,
        return_dict=True,
        torch_dtype=dtype,
        transformers_version=TRANSFORMERS_VERSION,
        use_bfloat16=use_bf16,
        use_flash_attn=True,
    )
    return {
        "_commit_hash": None,
        "architectures": ["InternVLChatModel"],
        "auto_map": dict(INTERNVL_AUTO_MAP),
        "downsample_ratio": 0.5,
        "dynamic_image_size": True,
        "force_image_size": 448,
        "llm_config": dict(sorted(llm.items())),
        "max_dynamic_patch": 12,
        "min_dynamic_patch": 1,
        "model_type": "internvl_chat",
        "ps_version": "v2",
        "select_layer": -1,
        "template": spec.template,
        "torch_dtype": dtype,
        "transformers_version": None,
        "use_backbone_lora": 0,
        "use_llm_lora": 0,
        "use_thumbnail": True,
        "vision_config": dict(sorted(vision.items())),
    }


def released_generation_config(stop_ids: list[int]) -> dict[str, Any]:
    return {"_from_model_config": True, "eos_token_id": stop_ids, "transformers_version": TRANSFORMERS_VERSION}


def released_shard_names(shards: int) -> list[str]:
    if shards == 1:
        return ["model.safetensors"]
    return [f"model-{i:05d}-of-{shards:05d}.safetensors" for i in range(1, shards + 1)]


_STAND_IN = '''"""Stand-in for the released `{name}` (remote code) of {repo}.

internvl-serve never executes a checkpoint's remote code; this file exists so
the directory has the released file set. Importing it is a bug.
"""

raise RuntimeError(
    "{name} is a stand-in for the released remote code of {repo}: "
    "internvl-serve must load this checkpoint without trust_remote_code"
)
'''


def write_remote_code_stand_ins(spec: FamilySpec, out: Path) -> list[str]:
    """The release's `.py` files, each raising on import; existing files are kept."""
    written = []
    for name in release_for(spec).remote_code:
        path = out / name
        if not path.exists():
            path.write_text(_STAND_IN.format(name=name, repo=spec.hf_repo_id))
            written.append(name)
    return written
