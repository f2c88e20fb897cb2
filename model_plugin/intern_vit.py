"""InternViT (300M and 6B-448px-V1-5) on vLLM's parallel layers.

Both kinds share one module tree; the config picks LayerNorm or RMSNorm, qkv bias
and qk-normalisation. Heads are padded with zero "dummy" heads up to a multiple of
the tensor-parallel size, so InternViT-6B's 25 heads shard at TP 2, 4 and 8 instead
of every rank holding a full copy.
"""

from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig

from vllm.distributed import (
    get_tensor_model_parallel_rank,
    get_tensor_model_parallel_world_size,
    tensor_model_parallel_all_reduce,
)
from vllm.model_executor.layers.activation import get_act_fn
from vllm.model_executor.layers.attention import MMEncoderAttention
from vllm.model_executor.layers.conv import Conv2dLayer
from vllm.model_executor.layers.layernorm import RMSNorm
from vllm.model_executor.layers.linear import (
    ColumnParallelLinear,
    QKVParallelLinear,
    RowParallelLinear,
)
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.model_loader.weight_utils import default_weight_loader
from vllm.model_executor.models.vision import is_vit_use_data_parallel


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _norm_layer(config: PretrainedConfig, dim: int) -> nn.Module:
    if config.norm_type == "rms_norm":
        return RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


class InternVisionEmbeddings(nn.Module):
    def __init__(self, config: PretrainedConfig):
        super().__init__()
        self.embed_dim = config.hidden_size
        self.grid = config.image_size // config.patch_size
        self.class_embedding = nn.Parameter(torch.empty(1, 1, self.embed_dim))
        self.patch_embedding = Conv2dLayer(
            in_channels=3,
            out_channels=self.embed_dim,
            kernel_size=config.patch_size,
            stride=config.patch_size,
        )
        self.position_embedding = nn.Parameter(
            torch.empty(1, self.grid * self.grid + 1, self.embed_dim)
        )

    def _position_embedding(self, height: int, width: int) -> torch.Tensor:
        if (height, width) == (self.grid, self.grid):
            return self.position_embedding
        # A different input size: resample the learned grid, as the original does.
        cls_pos, patch_pos = self.position_embedding[:, :1], self.position_embedding[:, 1:]
        patch_pos = patch_pos.float().reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(height, width), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.reshape(1, -1, height * width).transpose(1, 2)
        return torch.cat([cls_pos, patch_pos.to(cls_pos.dtype)], dim=1)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embedding.weight.dtype
        patches = self.patch_embedding(pixel_values.to(dtype))
        batch, _, height, width = patches.shape
        patches = patches.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(dtype).expand(batch, 1, -1)
        embeddings = torch.cat([cls, patches], dim=1)
        return embeddings + self._position_embedding(height, width).to(dtype)


class InternVisionAttention(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        *,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.embed_dim = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = self.embed_dim // self.num_heads
        if self.head_dim * self.num_heads != self.embed_dim:
            raise ValueError(
                f"hidden_size {self.embed_dim} is not divisible by "
                f"num_attention_heads {self.num_heads}"
            )

        data_parallel = is_vit_use_data_parallel()
        self.tp_size = 1 if data_parallel else get_tensor_model_parallel_world_size()
        self.tp_rank = 0 if data_parallel else get_tensor_model_parallel_rank()
        self.padded_heads = _round_up(self.num_heads, self.tp_size)
        self.padded_dim = self.padded_heads * self.head_dim
        self.local_heads = self.padded_heads // self.tp_size
        self.local_dim = self.local_heads * self.head_dim

        self.qkv = QKVParallelLinear(
            self.embed_dim,
            self.head_dim,
            self.padded_heads,
            bias=config.qkv_bias,
            quant_config=quant_config,
            prefix=f"{prefix}.qkv",
            disable_tp=data_parallel,
        )
        self.proj = RowParallelLinear(
            self.padded_dim,
            self.embed_dim,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.proj",
            disable_tp=data_parallel,
        )
        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.eps = config.layer_norm_eps
            self.q_norm = _ShardedRMSNormWeight(self.local_dim, self.tp_rank)
            self.k_norm = _ShardedRMSNormWeight(self.local_dim, self.tp_rank)
        self.attn = MMEncoderAttention(
            self.local_heads, self.head_dim, self.head_dim**-0.5, prefix=f"{prefix}.attn"
        )

    def _full_width_rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # The 6B normalises q and k over the whole hidden width before the head
        # split. Each rank holds a slice of the heads, so the sum of squares is
        # all-reduced (one float per token) rather than gathering q and k.
        # Dummy heads are zero and add nothing; the mean is over the real width.
        x32 = x.float()
        sum_sq = x32.pow(2).sum(dim=-1, keepdim=True)
        if self.tp_size > 1:
            sum_sq = tensor_model_parallel_all_reduce(sum_sq)
        normed = x32 * torch.rsqrt(sum_sq / self.embed_dim + self.eps)
        return weight * normed.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        qkv, _ = self.qkv(x)
        q, k, v = qkv.chunk(3, dim=-1)
        if self.qk_normalization:
            q = self._full_width_rms_norm(q, self.q_norm.weight)
            k = self._full_width_rms_norm(k, self.k_norm.weight)
        out = self.attn(q, k, v)
        out, _ = self.proj(out)
        return out

    def load_qkv(self, name: str, tensor: torch.Tensor) -> None:
        """Split the checkpoint's fused [q; k; v], pad each with dummy heads."""
        param = self.qkv.weight if name == "weight" else self.qkv.bias
        for shard_id, part in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
            param.weight_loader(param, self._pad_rows(part), shard_id)

    def load_proj_weight(self, tensor: torch.Tensor) -> None:
        padded = tensor.new_zeros(tensor.shape[0], self.padded_dim)
        padded[:, : self.embed_dim] = tensor
        self.proj.weight.weight_loader(self.proj.weight, padded)

    def _pad_rows(self, tensor: torch.Tensor) -> torch.Tensor:
        padded = tensor.new_zeros(self.padded_dim, *tensor.shape[1:])
        padded[: self.embed_dim] = tensor
        return padded


class _ShardedRMSNormWeight(nn.Module):
    """The per-rank slice of a full-width qk-norm weight (padded like the heads)."""

    def __init__(self, local_dim: int, tp_rank: int) -> None:
        super().__init__()
        self.local_dim = local_dim
        self.tp_rank = tp_rank
        self.weight = nn.Parameter(torch.ones(local_dim))
        self.weight.weight_loader = self._load

    def _load(self, param: nn.Parameter, tensor: torch.Tensor) -> None:
        start = self.tp_rank * self.local_dim
        padded = tensor.new_zeros(max(start + self.local_dim, tensor.shape[0]))
        padded[: tensor.shape[0]] = tensor
        param.data.copy_(padded[start : start + self.local_dim])


class InternVisionMLP(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        *,
        prefix: str = "",
    ) -> None:
        super().__init__()
        data_parallel = is_vit_use_data_parallel()
        self.fc1 = ColumnParallelLinear(
            config.hidden_size,
            config.intermediate_size,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.fc1",
            disable_tp=data_parallel,
        )
        self.act = get_act_fn(config.hidden_act)
        self.fc2 = RowParallelLinear(
            config.intermediate_size,
            config.hidden_size,
            bias=True,
            quant_config=quant_config,
            prefix=f"{prefix}.fc2",
            disable_tp=data_parallel,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, _ = self.fc1(x)
        x, _ = self.fc2(self.act(x))
        return x


class InternVisionEncoderLayer(nn.Module):
    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        *,
        prefix: str = "",
    ) -> None:
        super().__init__()
        dim = config.hidden_size
        self.attn = InternVisionAttention(config, quant_config, prefix=f"{prefix}.attn")
        self.mlp = InternVisionMLP(config, quant_config, prefix=f"{prefix}.mlp")
        self.norm1 = _norm_layer(config, dim)
        self.norm2 = _norm_layer(config, dim)
        self.ls1 = nn.Parameter(torch.ones(dim))
        self.ls2 = nn.Parameter(torch.ones(dim))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = hidden_states + self.attn(self.norm1(hidden_states)) * self.ls1
        hidden_states = hidden_states + self.mlp(self.norm2(hidden_states)) * self.ls2
        return hidden_states


class InternVisionModel(nn.Module):
    """Embeddings and the first `num_layers` encoder layers; no final norm."""

    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        *,
        num_layers: int | None = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        self.num_layers = config.num_hidden_layers if num_layers is None else num_layers
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            InternVisionEncoderLayer(config, quant_config, prefix=f"{prefix}.encoder.layers.{i}")
            for i in range(self.num_layers)
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            hidden_states = layer(hidden_states)
        return hidden_states

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if name.startswith("encoder.layers."):
                layer_index = int(name.split(".")[2])
                if layer_index >= self.num_layers:
                    # Layers past `select_layer` are never run; the checkpoint
                    # still holds them.
                    loaded.add(name)
                    continue
            module_name, _, leaf = name.rpartition(".")
            if module_name.endswith(".attn.qkv"):
                self.get_submodule(module_name.removesuffix(".qkv")).load_qkv(leaf, tensor)
            elif module_name.endswith(".attn.proj") and leaf == "weight":
                self.get_submodule(module_name.removesuffix(".proj")).load_proj_weight(tensor)
            elif name not in params:
                raise ValueError(f"Unexpected vision tensor in checkpoint: vision_model.{name}")
            else:
                param = params[name]
                getattr(param, "weight_loader", default_weight_loader)(param, tensor)
            loaded.add(name)
        return loaded
