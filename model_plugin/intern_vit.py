"""InternViT (300M and 6B-448px-V1-5) on vLLM's parallel layers.

Both kinds share one module tree; the config picks LayerNorm or RMSNorm, qkv bias
and qk-normalisation. Heads are padded with zero "dummy" heads up to a multiple of
the tensor-parallel size, so InternViT-6B's 25 heads shard at TP 2, 4 and 8 instead
of every rank holding a full copy. With `mm_encoder_tp_mode="data"` every rank
holds the whole tower instead and encodes its share of the tiles.

Checkpoint tensors load through the `weight_loader` attribute of each parameter;
the padded ones (qkv, proj, qk-norm) carry loaders that pad the checkpoint's
unpadded tensor before sharding it. A tensor the tower has no parameter for is
refused with its name.
"""

from collections.abc import Callable, Iterable
from functools import cached_property, partial

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import PretrainedConfig

from vllm.compilation.decorators import (
    should_torch_compile_mm_encoder,
    support_torch_compile,
)
from vllm.config import VllmConfig
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
from vllm.model_executor.models.vision import (
    is_vit_use_data_parallel,
    run_dp_sharded_vision_model,
)


def _round_up(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def _norm_layer(config: PretrainedConfig, dim: int) -> nn.Module:
    if config.norm_type == "rms_norm":
        return RMSNorm(dim, eps=config.layer_norm_eps)
    return nn.LayerNorm(dim, eps=config.layer_norm_eps)


def _wrap_weight_loader(param: nn.Parameter, loader: Callable) -> None:
    """Route `param`'s loading through `loader(shard_loader, param, tensor)`,
    where `shard_loader` is the loader the parallel layer gave the parameter."""
    param.weight_loader = partial(loader, param.weight_loader)


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
        if not isinstance(getattr(self.qkv, "weight", None), nn.Parameter):
            # Packed quantized layouts (qweight, qzeros, ...) would need their own
            # dummy-head padding; vLLM keeps InternViT unquantized for such methods.
            raise NotImplementedError(
                f"{prefix}: a quantized InternViT ({type(self.qkv.quant_method).__name__}) "
                "is not supported; leave the vision tower unquantized"
            )
        _wrap_weight_loader(self.qkv.weight, self._load_fused_qkv)
        if self.qkv.bias is not None:
            _wrap_weight_loader(self.qkv.bias, self._load_fused_qkv)
        _wrap_weight_loader(self.proj.weight, self._load_proj_weight)

        self.qk_normalization = config.qk_normalization
        if self.qk_normalization:
            self.eps = config.layer_norm_eps
            self.q_norm = _ShardedRMSNormWeight(self.embed_dim, self.local_dim, self.tp_rank)
            self.k_norm = _ShardedRMSNormWeight(self.embed_dim, self.local_dim, self.tp_rank)
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

    def _load_fused_qkv(
        self, shard_loader: Callable, param: nn.Parameter, tensor: torch.Tensor
    ) -> None:
        """The checkpoint's fused [q; k; v] (weight or bias): split, pad each
        with dummy heads, hand each to the layer's q/k/v shard loader."""
        expected = (3 * self.embed_dim, self.embed_dim)[: param.dim()]
        if tuple(tensor.shape) != expected:
            raise ValueError(f"expected a fused q, k, v of shape {expected}, got {tuple(tensor.shape)}")
        for shard_id, part in zip(("q", "k", "v"), tensor.chunk(3, dim=0)):
            padded = part.new_zeros(self.padded_dim, *part.shape[1:])
            padded[: self.embed_dim] = part
            shard_loader(param, padded, shard_id)

    def _load_proj_weight(
        self, shard_loader: Callable, param: nn.Parameter, tensor: torch.Tensor
    ) -> None:
        """Zero input columns for the dummy heads, then the row-parallel split."""
        if tuple(tensor.shape) != (self.embed_dim, self.embed_dim):
            raise ValueError(
                f"expected shape {(self.embed_dim, self.embed_dim)}, got {tuple(tensor.shape)}"
            )
        padded = tensor.new_zeros(self.embed_dim, self.padded_dim)
        padded[:, : self.embed_dim] = tensor
        shard_loader(param, padded)


class _ShardedRMSNormWeight(nn.Module):
    """The per-rank slice of a full-width qk-norm weight (padded like the heads)."""

    def __init__(self, full_dim: int, local_dim: int, tp_rank: int) -> None:
        super().__init__()
        self.full_dim = full_dim
        self.local_dim = local_dim
        self.tp_rank = tp_rank
        self.weight = nn.Parameter(torch.ones(local_dim))
        self.weight.weight_loader = self._load

    def _load(self, param: nn.Parameter, tensor: torch.Tensor) -> None:
        if tuple(tensor.shape) != (self.full_dim,):
            raise ValueError(f"expected shape {(self.full_dim,)}, got {tuple(tensor.shape)}")
        start = self.tp_rank * self.local_dim
        padded = tensor.new_zeros(max(start + self.local_dim, self.full_dim))
        padded[: self.full_dim] = tensor
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


# One compiled graph per layer, as vLLM's own InternViT: the tile count (dim 0)
# varies per batch, the token count per tile does not. Compiled only when
# `compilation_config.compile_mm_encoder` is set.
@support_torch_compile(
    dynamic_arg_dims={"hidden_states": 0},
    enable_if=should_torch_compile_mm_encoder,
    is_encoder=True,
)
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
    """Embeddings and the first `num_layers` encoder layers; no final norm.

    `vllm_config` feeds the encoder layers' torch.compile switch; without it the
    layers read the config vLLM sets while it builds a model.
    """

    def __init__(
        self,
        config: PretrainedConfig,
        quant_config: QuantizationConfig | None = None,
        *,
        num_layers: int | None = None,
        prefix: str = "",
        vllm_config: VllmConfig | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.prefix = prefix
        self.num_layers = config.num_hidden_layers if num_layers is None else num_layers
        if not 0 < self.num_layers <= config.num_hidden_layers:
            raise ValueError(
                f"num_layers must be in 1..{config.num_hidden_layers}, got {self.num_layers}"
            )
        self.use_data_parallel = is_vit_use_data_parallel()
        self.embeddings = InternVisionEmbeddings(config)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(
            InternVisionEncoderLayer(
                config=config,
                quant_config=quant_config,
                vllm_config=vllm_config,
                prefix=f"{prefix}.encoder.layers.{i}",
            )
            for i in range(self.num_layers)
        )
        # Inference only. nn.Parameter defaults to requires_grad=True (vLLM's layers
        # do not); with it, a compiled encoder layer (compile_mm_encoder) is traced
        # with a backward graph and fails under inference mode at run time.
        self.requires_grad_(False)

    def _encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden_states = self.embeddings(pixel_values)
        for layer in self.encoder.layers:
            hidden_states = layer(hidden_states)
        return hidden_states

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.use_data_parallel:
            # Each TP rank runs the whole tower on its slice of the tiles, then
            # the slices are all-gathered (tiles are independent).
            return run_dp_sharded_vision_model(pixel_values, self._encode)
        return self._encode(pixel_values)

    def _qualified(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def _is_unused_layer_tensor(self, name: str) -> bool:
        """A tensor of a layer past `select_layer`: in the checkpoint, never run.

        Only names a real layer has qualify, so a stray tensor there is still refused."""
        parts = name.split(".", 3)
        if len(parts) < 4 or parts[:2] != ["encoder", "layers"] or not parts[2].isdigit():
            return False
        if not self.num_layers <= int(parts[2]) < self.config.num_hidden_layers:
            return False
        return parts[3] in self._layer_parameter_names

    @cached_property
    def _layer_parameter_names(self) -> set[str]:
        return {name for name, _ in self.encoder.layers[0].named_parameters()}

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        params = dict(self.named_parameters())
        loaded: set[str] = set()
        for name, tensor in weights:
            if self._is_unused_layer_tensor(name):
                loaded.add(name)
                continue
            param = params.get(name)
            if param is None:
                raise ValueError(
                    f"Unexpected vision tensor in checkpoint: {self._qualified(name)} "
                    "(the vision tower has no such parameter)"
                )
            loader = getattr(param, "weight_loader", default_weight_loader)
            try:
                loader(param, tensor)
            except (AssertionError, ValueError, RuntimeError) as error:
                raise ValueError(
                    f"Cannot load vision tensor {self._qualified(name)}: {error}"
                ) from error
            loaded.add(name)
        return loaded
