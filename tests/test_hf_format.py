"""Checkpoints in transformers' own InternVL format (`*-hf` repos) are served by the same model.

The `-hf` checkpoint is written by transformers itself: the oracle (tests/oracle.py,
its own conversion of the released names) is saved with `save_pretrained`, so its
config and tensor names are what transformers produces. The engine serves it with
the config mapping the server passes (`hf_overrides`), and its log-probabilities
must equal the oracle's, as for the released format (tests/test_plugin_parity.py).
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from model_plugin.hf_format import chat_config_dict, from_hf_config, is_hf_format, released_names
from preprocessing import get_template
from tests.conftest import make_llm, shutdown_llm
from tests.oracle import load_oracle
from tests.test_plugin_parity import CASES, Engine, assert_matches_oracle

# A Qwen3 member with the 300M tower, and an InternLM2 member (converted to Llama
# names by transformers) with the 6B tower's q/k norms.
FAMILIES = ["InternVL3_5-1B", "InternVL2_5-26B"]
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                    "special_tokens_map.json", "tokenizer_config.json")


@pytest.fixture(scope="module", params=FAMILIES)
def hf_checkpoint(request, checkpoint, tmp_path_factory):
    released = checkpoint(request.param)
    config = json.loads((released / "config.json").read_text())
    tokenizer_config = json.loads((released / "tokenizer_config.json").read_text())
    context_id = next(int(i) for i, entry in tokenizer_config["added_tokens_decoder"].items()
                      if entry["content"] == "<IMG_CONTEXT>")
    oracle = load_oracle(released, context_id)
    out = tmp_path_factory.mktemp("hf") / f"{request.param}-hf"
    oracle.save_pretrained(out)
    for name in _TOKENIZER_FILES:
        if (released / name).exists():
            shutil.copy(released / name, out / name)
    return request.param, released, out, config, oracle


def test_the_checkpoint_is_transformers_format(hf_checkpoint):
    _, _, path, _, _ = hf_checkpoint
    saved = json.loads((path / "config.json").read_text())
    assert is_hf_format(saved) and saved["architectures"] == ["InternVLForConditionalGeneration"]
    from safetensors import safe_open

    names = set()
    for shard in path.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            names |= set(handle.keys())
    # transformers 5 writes its checkpoint names (model.* in memory).
    assert "vision_tower.encoder.layer.0.attention.q_proj.weight" in names
    assert "multi_modal_projector.linear_1.weight" in names


def test_the_config_maps_onto_the_released_one(hf_checkpoint):
    family, _, path, released_config, _ = hf_checkpoint
    mapped = chat_config_dict(json.loads((path / "config.json").read_text()))
    assert mapped["template"] == released_config["template"]
    vision, released_vision = mapped["vision_config"], released_config["vision_config"]
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "qkv_bias", "qk_normalization", "norm_type"):
        assert vision[key] == released_vision[key], key
    assert (mapped["select_layer"], mapped["downsample_ratio"], mapped["force_image_size"]) == (-1, 0.5, 448)


@pytest.fixture(scope="module")
def engine(hf_checkpoint):
    family, released, path, config, oracle = hf_checkpoint
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        llm = make_llm(path, hf_overrides=from_hf_config)
        yield Engine(family, path, llm, get_template(config["template"]), config), oracle
        shutdown_llm(llm)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_serves_like_the_oracle(engine, case):
    served, oracle = engine
    assert_matches_oracle(served, oracle, case)


def test_released_names_pass_and_split_qkv_is_joined():
    q, k, v = (torch.full((4, 4), float(i)) for i in range(3))
    prefix = "vision_tower.encoder.layer.3.attention."
    renamed = dict(released_names([
        ("language_model.model.norm.weight", torch.ones(2)),  # released name: unchanged
        (prefix + "k_proj.weight", k), (prefix + "q_proj.weight", q), (prefix + "v_proj.weight", v),
        ("model.vision_tower.encoder.layer.3.lambda_1", torch.ones(4)),  # transformers' module names
        ("model.multi_modal_projector.linear_2.bias", torch.ones(2)),
        ("lm_head.weight", torch.ones(2, 2)),
    ]))
    assert set(renamed) == {
        "language_model.model.norm.weight", "vision_model.encoder.layers.3.attn.qkv.weight",
        "vision_model.encoder.layers.3.ls1", "mlp1.3.bias", "language_model.lm_head.weight",
    }
    assert torch.equal(renamed["vision_model.encoder.layers.3.attn.qkv.weight"], torch.cat([q, k, v]))
    with pytest.raises(ValueError, match="only part of the vision q/k/v"):
        list(released_names([(prefix + "q_proj.bias", q[0])]))


def test_the_server_maps_an_hf_checkpoint(hf_checkpoint):
    """What `internvl-serve --model DIR` does with a transformers-format directory."""
    from server.engine import engine_args, model_info, read_model_config
    from server.settings import Settings

    family, _, path, released_config, _ = hf_checkpoint
    settings = Settings(model=str(path))
    raw = read_model_config(str(path))
    info = model_info(settings, str(path), chat_config_dict(raw))
    assert info.template.name == released_config["template"]
    args = engine_args(settings, str(path), hf_format=is_hf_format(raw))
    assert args.hf_overrides is from_hf_config
    assert engine_args(settings, str(path)).hf_overrides in (None, {})
    with pytest.raises(ValueError, match="hf-overrides"):
        engine_args(Settings(model=str(path), engine_args={"hf_overrides": {"x": 1}}), str(path), hf_format=True)
