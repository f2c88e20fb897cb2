"""The vision tower loads checkpoint tensors through `weight_loader`s only, pads
heads for tensor parallelism, and refuses any tensor it has no parameter for."""

import pytest
import torch

from tests.vit_tower import build_tower, fake_tensor_parallel, vision_checkpoint, vllm_context

STYLES = {"300m": "InternVL2-1B", "6b": "InternVL2-40B"}  # 4 heads / 5 heads (tiny)


@pytest.fixture(scope="module", params=list(STYLES))
def tiny_tower_checkpoint(request, checkpoint):
    return vision_checkpoint(checkpoint(STYLES[request.param]))


@pytest.fixture(autouse=True)
def context():
    with vllm_context():
        yield


def padded(tensor: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    shape = list(tensor.shape)
    shape[dim] = size
    out = tensor.new_zeros(shape)
    out.narrow(dim, 0, tensor.shape[dim]).copy_(tensor)
    return out


@pytest.mark.parametrize("tp_size", [2, 4, 8])
def test_heads_are_padded_and_sharded(tp_size, tiny_tower_checkpoint, monkeypatch):
    """Every rank's shard is its slice of the checkpoint tensor padded with zero
    dummy heads; the shards reassemble to the padded tensor."""
    config, tensors = tiny_tower_checkpoint
    heads, dim = config.num_attention_heads, config.hidden_size
    padded_dim = -(-heads // tp_size) * tp_size * (dim // heads)
    shards = []
    for rank in range(tp_size):
        with fake_tensor_parallel(monkeypatch, tp_size, rank):
            shards.append(build_tower(config, tensors).encoder.layers[1].attn)

    attn = "encoder.layers.1.attn."
    for i, name in enumerate("qkv"):
        rows = [s.qkv.weight.chunk(3)[i] for s in shards]
        expected = padded(tensors[attn + "qkv.weight"].chunk(3)[i], padded_dim, 0)
        torch.testing.assert_close(torch.cat(rows), expected, rtol=0, atol=0, msg=f"{name} rows")
        if config.qkv_bias:
            bias = torch.cat([s.qkv.bias.chunk(3)[i] for s in shards])
            expected = padded(tensors[attn + "qkv.bias"].chunk(3)[i], padded_dim, 0)
            torch.testing.assert_close(bias, expected, rtol=0, atol=0)
    proj = torch.cat([s.proj.weight for s in shards], dim=1)
    torch.testing.assert_close(proj, padded(tensors[attn + "proj.weight"], padded_dim, 1), rtol=0, atol=0)
    if config.qk_normalization:
        q_norm = torch.cat([s.q_norm.weight for s in shards])
        torch.testing.assert_close(q_norm, padded(tensors[attn + "q_norm.weight"], padded_dim, 0), rtol=0, atol=0)


def test_unsharded_tower_loads_every_tensor_unpadded(tiny_tower_checkpoint):
    config, tensors = tiny_tower_checkpoint
    tower = build_tower(config, tensors)
    for name, param in tower.named_parameters():
        torch.testing.assert_close(param.data, tensors[name], rtol=0, atol=0, msg=name)


def test_layers_past_select_layer_are_skipped(tiny_tower_checkpoint):
    config, tensors = tiny_tower_checkpoint
    tower = build_tower(config, tensors, num_layers=1)
    assert len(tower.encoder.layers) == 1
    assert "encoder.layers.1.attn.qkv.weight" in tower.load_weights(tensors.items())


QUANTIZED_SUFFIXES = ["qweight", "qzeros", "scales", "g_idx", "weight_scale", "input_scale", "weight_packed"]


@pytest.mark.parametrize("suffix", QUANTIZED_SUFFIXES)
@pytest.mark.parametrize("module", ["attn.qkv", "attn.proj", "mlp.fc1"])
def test_quantized_tensor_names_are_refused(suffix, module, tiny_tower_checkpoint):
    """A quantized checkpoint's tensor has no parameter in the (unquantized)
    tower: it is refused by name, never loaded into a neighbouring parameter."""
    config, tensors = tiny_tower_checkpoint
    tower = build_tower(config)
    name = f"encoder.layers.0.{module}.{suffix}"
    stray = torch.zeros(3 * config.hidden_size)
    with pytest.raises(ValueError, match=f"Unexpected vision tensor in checkpoint: vision_model.{name}"):
        tower.load_weights([(name, stray)])


def test_stray_tensor_of_a_skipped_layer_is_refused(tiny_tower_checkpoint):
    config, _ = tiny_tower_checkpoint
    tower = build_tower(config, num_layers=1)
    for name in ("encoder.layers.1.attn.qkv.qweight", "encoder.layers.7.attn.qkv.weight"):
        with pytest.raises(ValueError, match=f"vision_model.{name}"):
            tower.load_weights([(name, torch.zeros(1))])


@pytest.mark.parametrize("name", ["encoder.layers.0.attn.qkv.weight", "encoder.layers.0.attn.proj.weight",
                                  "encoder.layers.0.mlp.fc1.weight", "embeddings.position_embedding"])
def test_a_wrongly_shaped_tensor_is_named(name, tiny_tower_checkpoint):
    config, tensors = tiny_tower_checkpoint
    tower = build_tower(config)
    with pytest.raises(ValueError, match=f"Cannot load vision tensor vision_model.{name}"):
        tower.load_weights([(name, tensors[name][..., :-1])])
