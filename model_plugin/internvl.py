"""InternVLChatModel: InternViT -> pixel shuffle -> mlp1 -> a vLLM-registered LLM.

The LLM named by `llm_config.architectures` (Qwen2, InternLM2, Phi3, Llama) runs on
vLLM's paged attention; this module only turns tiles into embeddings. Also:
LoRA adapters on the LLM, precomputed `image_embeds` in place of pixels, encoder
CUDA graphs (`cudagraph_mm_encoder`), and checkpoints whose LLM is quantized.
"""

from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

import torch
import torch.nn as nn

from vllm.config import VllmConfig
from vllm.model_executor.layers.quantization import QuantizationConfig
from vllm.model_executor.layers.quantization.kv_cache import BaseKVCacheMethod
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsEncoderCudaGraph,
    SupportsLoRA,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.module_mapping import MultiModelKeys
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from preprocessing import IMAGENET_MEAN, IMAGENET_STD

from .hf_format import released_names
from .intern_vit import InternVisionModel
from .processing import (
    DEFAULT_TILE_EMBEDDING_CACHE_MIB,
    IMAGE_PLACEHOLDER,
    VIDEO_PLACEHOLDER,
    InternVLChatDummyInputsBuilder,
    InternVLChatMultiModalProcessor,
    InternVLChatProcessingInfo,
)
from .tile_embedding_cache import DIGEST_WORDS, TileEmbeddingCache


if TYPE_CHECKING:
    from vllm.v1.worker.encoder_cudagraph_defs import (
        EncoderCudaGraphCaptureInputs,
        EncoderCudaGraphConfig,
        EncoderCudaGraphReplayBuffers,
        EncoderItemSpec,
    )

# Parameters a quantized checkpoint need not carry, by leaf name: built from the
# quantization config itself (mirrors vLLM's loader).
_CONFIG_BUILT_PARAMS = ("input_scale_ub",)


class InternVLTileInputs(TensorSchema):
    """Dimensions:
    - t: tiles of all items in the batch
    - h, w: tile size
    - n: items (images or videos)
    """

    type: Literal["tiles"]
    tiles: Annotated[torch.Tensor, TensorShape("t", 3, "h", "w")]
    tiles_per_item: Annotated[torch.Tensor, TensorShape("n")]
    # Per-tile pixel digests (tile_embedding_cache.py); absent for inputs that must
    # not be cached, such as vLLM's memory-profiling dummies (identical blank tiles).
    digests: Annotated[torch.Tensor | None, TensorShape("t", DIGEST_WORDS)]


def pixel_shuffle_v2(x: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, W, H, C] -> [N, W*scale, H*scale, C/scale^2], InternVL's ps_version v2."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).reshape(n, int(h * scale), int(w * scale), int(c / scale / scale))
    return x.permute(0, 2, 1, 3).contiguous()


class InternVLImageEmbedInputs(TensorSchema):
    """Precomputed embeddings, one [f, llm_hidden] tensor per image.

    Dimensions:
    - n: images
    - f: embedding rows of an image (tiles * tokens per tile)
    - h: the LLM's hidden size
    """

    type: Literal["image_embeds"]
    data: Annotated[torch.Tensor | list[torch.Tensor], TensorShape("n", "f", "h", dynamic_dims={"f"})]


@MULTIMODAL_REGISTRY.register_processor(
    InternVLChatMultiModalProcessor,
    info=InternVLChatProcessingInfo,
    dummy_inputs=InternVLChatDummyInputsBuilder,
)
class InternVLChatModel(
    nn.Module,
    SupportsMultiModal,
    SupportsPP,
    SupportsLoRA,
    SupportsEncoderCudaGraph,
):
    # `mm_encoder_tp_mode="data"`: InternVisionModel then runs whole on every TP
    # rank over its share of the tiles; without this vLLM falls back to "weights".
    supports_encoder_tp_data = True

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality.startswith("image"):
            return IMAGE_PLACEHOLDER
        if modality.startswith("video"):
            return VIDEO_PLACEHOLDER
        raise ValueError(f"Unsupported modality {modality!r}: InternVL2 takes images and video")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config = vllm_config.model_config.hf_config
        quant_config = vllm_config.quant_config
        self.config = config
        if config.ps_version != "v2":
            raise ValueError(f"Only ps_version 'v2' is supported, got {config.ps_version!r}")

        vision_config = config.vision_config
        self.downsample_ratio = config.downsample_ratio
        self.llm_hidden_size = config.llm_config.hidden_size
        self.tile_size = config.force_image_size or vision_config.image_size
        grid = self.tile_size // vision_config.patch_size
        self.tokens_per_tile = int(grid * grid * self.downsample_ratio**2)
        shuffled_dim = vision_config.hidden_size * int(1 / self.downsample_ratio) ** 2
        select_layer = config.select_layer
        num_layers = (
            vision_config.num_hidden_layers + select_layer + 1 if select_layer < 0 else select_layer + 1
        )

        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.vision_model = InternVisionModel(
                vision_config,
                vision_quant_config(config, quant_config),
                num_layers=num_layers,
                prefix=maybe_prefix(prefix, "vision_model"),
                vllm_config=vllm_config,
            )
            self.mlp1 = nn.Sequential(
                nn.LayerNorm(shuffled_dim),
                nn.Linear(shuffled_dim, self.llm_hidden_size),
                nn.GELU(),
                nn.Linear(self.llm_hidden_size, self.llm_hidden_size),
            )
        # Tiles arrive as uint8 and are normalised where the encoder runs. The
        # constants stay fp32 whatever dtype the model is cast to (plain
        # attributes, not buffers), so bf16 models see exactly the official
        # transform: (x / 255 - mean) / std in fp32, then one cast.
        self._pixel_stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.llm_config,
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.tile_cache = self._make_tile_cache(vllm_config)
        # LoRA adapters target the backbone's fused layers (qkv_proj, gate_up_proj,
        # InternLM2's wqkv): its own mapping, per instance since backbones differ.
        self.packed_modules_mapping = dict(getattr(self.language_model, "packed_modules_mapping", {}))
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _make_tile_cache(self, vllm_config: VllmConfig) -> TileEmbeddingCache | None:
        lora = vllm_config.lora_config
        if lora is not None and lora.enable_tower_connector_lora:
            return None  # an embedding would then depend on the request's adapter
        kwargs = vllm_config.model_config.multimodal_config.mm_processor_kwargs or {}
        mib = kwargs.get("tile_embedding_cache_mib", DEFAULT_TILE_EMBEDDING_CACHE_MIB)
        if isinstance(mib, bool) or not isinstance(mib, (int, float)) or mib < 0:
            raise ValueError(f"tile_embedding_cache_mib must be a number >= 0, got {mib!r}")
        return TileEmbeddingCache.sized(
            mib, self.tokens_per_tile, self.llm_hidden_size, vllm_config.model_config.dtype
        )

    def get_mm_mapping(self) -> MultiModelKeys:
        # LoRA applies to the language model; the tower and connector stay as loaded.
        return MultiModelKeys.from_string_field(
            language_model="language_model",
            connector="mlp1",
            tower_model="vision_model",
        )

    def _pixel_mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        # Created on first use per device; the encoder's eager warm-up runs before
        # any CUDA graph capture, so capture never allocates here.
        stats = self._pixel_stats.get(device)
        if stats is None:
            mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            stats = self._pixel_stats[device] = (mean, std)
        return stats

    def _normalize(self, tiles: torch.Tensor) -> torch.Tensor:
        if tiles.dtype == torch.uint8:
            mean, std = self._pixel_mean_std(tiles.device)
            # In place on one fp32 copy: torchvision's ToTensor + Normalize ops.
            tiles = tiles.float().div_(255).sub_(mean).div_(std)
        return tiles.to(self.mlp1[1].weight.dtype)

    def extract_feature(self, tiles: torch.Tensor, *, across_ranks: bool = True) -> torch.Tensor:
        """[t, 3, 448, 448] tiles -> [t, 256, llm_hidden] embeddings.

        With a data-parallel encoder the tower splits the tiles over the TP ranks
        itself; the encoder CUDA-graph manager splits items over the ranks before
        calling in, so its paths encode only the local tiles (`across_ranks=False`).
        """
        pixels = self._normalize(tiles)
        encode = self.vision_model if across_ranks else self.vision_model._encode
        features = encode(pixels)[:, 1:]  # drop CLS
        side = int(features.shape[1] ** 0.5)
        features = features.reshape(features.shape[0], side, side, -1)
        features = pixel_shuffle_v2(features, self.downsample_ratio)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        return self.mlp1(features)

    def _parse_tiles(self, tiles: object, counts: object, digests: object) -> InternVLTileInputs | None:
        if tiles is None:
            return None
        return InternVLTileInputs(
            type="tiles",
            tiles=tiles,
            tiles_per_item=counts,
            digests=digests,
            resolve_bindings={"h": self.tile_size, "w": self.tile_size},
        )

    def _embed_items(self, inputs: InternVLTileInputs) -> tuple[torch.Tensor, ...]:
        digests = inputs.get("digests")
        if self.tile_cache is None or digests is None:
            embeddings = self.extract_feature(inputs["tiles"])
        else:
            embeddings = self.tile_cache.embed(inputs["tiles"], digests, self.extract_feature)
        hidden = embeddings.shape[-1]
        tokens_per_tile = embeddings.shape[1]
        sizes = [int(n) * tokens_per_tile for n in inputs["tiles_per_item"].tolist()]
        return embeddings.reshape(-1, hidden).split(sizes)

    def _image_embeds(self, data: object) -> tuple[torch.Tensor, ...]:
        inputs = InternVLImageEmbedInputs(
            type="image_embeds", data=data, resolve_bindings={"h": self.llm_hidden_size}
        )
        items = tuple(inputs["data"])
        for item in items:
            if item.shape[0] % self.tokens_per_tile:
                raise ValueError(
                    f"image_embeds rows must be a multiple of {self.tokens_per_tile} "
                    f"(tokens per tile), got {item.shape[0]}"
                )
        return items

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        embeddings: tuple[torch.Tensor, ...] = ()
        # Keep the modality order of kwargs: the runner matches outputs to items in it.
        for key in kwargs:
            if key == "pixel_values_flat":
                images = self._parse_tiles(
                    kwargs["pixel_values_flat"], kwargs["image_num_patches"], kwargs.get("image_tile_digests")
                )
                embeddings += self._embed_items(images)
            elif key == "image_embeds":
                embeddings += self._image_embeds(kwargs["image_embeds"])
            elif key == "pixel_values_flat_video":
                videos = self._parse_tiles(
                    kwargs["pixel_values_flat_video"],
                    kwargs["video_num_patches"],
                    kwargs.get("video_tile_digests"),
                )
                embeddings += self._embed_items(videos)
        return embeddings

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(
            input_ids=input_ids,
            positions=positions,
            intermediate_tensors=intermediate_tensors,
            inputs_embeds=inputs_embeds,
        )

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        # Released names or transformers' InternVL names (hf_format.py), one model.
        # Strict both ways. AutoWeightsLoader raises on a tensor no module claims;
        # a parameter the checkpoint lacks is caught here, because vLLM's own check
        # exempts every unquantized linear layer.
        loaded = AutoWeightsLoader(self).load_weights(released_names(weights))
        missing = sorted(
            {name for name, _ in self.named_parameters()} - loaded - self._not_in_checkpoints()
        )
        if missing:
            raise ValueError(f"Checkpoint is missing tensors for: {', '.join(missing)}")
        return loaded

    def _not_in_checkpoints(self) -> set[str]:
        """Parameters quantization creates that no checkpoint has to carry.

        The same exemptions as vLLM's loader for quantized models: online
        quantization's parameters (the weights are quantized as they load),
        KV-cache scales (defaults when absent), empty placeholders, and
        parameters built from the quantization config.
        """
        exempt: set[str] = set()
        for module_name, module in self.named_modules():
            quant_method = getattr(module, "quant_method", None)
            whole_module = getattr(quant_method, "uses_meta_device", False) or isinstance(
                quant_method, BaseKVCacheMethod
            )
            for param_name, param in module.named_parameters(recurse=False):
                if (
                    whole_module
                    or param.numel() == 0
                    or param_name in _CONFIG_BUILT_PARAMS
                ):
                    exempt.add(f"{module_name}.{param_name}" if module_name else param_name)
        return exempt

    # -- Encoder CUDA graphs (SupportsEncoderCudaGraph) --
    # One graph per token budget over a uint8 tile buffer: normalisation, the ViT,
    # pixel shuffle and mlp1 are all captured. Video frames are tiles too, so both
    # modalities replay through the same buffer. Precomputed image embeddings
    # bypass the graphs (their items report no encoder tokens).

    def get_encoder_cudagraph_config(self) -> "EncoderCudaGraphConfig":
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphConfig

        return EncoderCudaGraphConfig(
            modalities=["image", "video"],
            buffer_keys=["pixel_values_flat"],
            out_hidden_size=self.llm_hidden_size,
        )

    def get_input_modality(self, mm_kwargs: dict[str, Any]) -> str:
        if "pixel_values_flat" in mm_kwargs or "image_embeds" in mm_kwargs:
            return "image"
        return "video"

    def get_encoder_cudagraph_budget_range(self, vllm_config: VllmConfig) -> tuple[int, int]:
        largest = min(
            vllm_config.scheduler_config.max_num_batched_tokens,
            vllm_config.model_config.max_model_len,
        )
        return self.tokens_per_tile, max(largest, self.tokens_per_tile)

    @staticmethod
    def _tile_keys(mm_kwargs: dict[str, Any]) -> tuple[str, str] | None:
        if "pixel_values_flat" in mm_kwargs:
            return "pixel_values_flat", "image_num_patches"
        if "pixel_values_flat_video" in mm_kwargs:
            return "pixel_values_flat_video", "video_num_patches"
        return None

    def get_encoder_cudagraph_item_specs(self, mm_kwargs: dict[str, Any]) -> list["EncoderItemSpec"]:
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderItemSpec

        keys = self._tile_keys(mm_kwargs)
        if keys is None:  # image_embeds: nothing to encode
            return [
                EncoderItemSpec(input_size=0, output_tokens=len(item), path_output_tokens={"default": 0})
                for item in mm_kwargs["image_embeds"]
            ]
        return [
            EncoderItemSpec(input_size=n, output_tokens=n * self.tokens_per_tile)
            for n in _as_ints(mm_kwargs[keys[1]])
        ]

    def select_encoder_cudagraph_items(
        self, mm_kwargs: dict[str, Any], indices: list[int]
    ) -> dict[str, Any]:
        keys = self._tile_keys(mm_kwargs)
        if keys is None:
            return {"image_embeds": [mm_kwargs["image_embeds"][i] for i in indices]}
        tiles_key, counts_key = keys
        tiles = mm_kwargs[tiles_key]
        counts = _as_ints(mm_kwargs[counts_key])
        starts = [0]
        for n in counts:
            starts.append(starts[-1] + n)
        selected = [tiles[starts[i] : starts[i + 1]] for i in indices]
        return {
            tiles_key: torch.cat(selected) if selected else tiles[:0],
            counts_key: torch.tensor([counts[i] for i in indices], dtype=torch.long),
        }

    def prepare_encoder_cudagraph_capture_inputs(
        self,
        token_budget: int,
        max_batch_size: int,
        max_frames_per_batch: int,
        device: torch.device,
        dtype: torch.dtype,
        path: str = "default",
        axis_keys: tuple[Hashable, ...] | None = None,
    ) -> "EncoderCudaGraphCaptureInputs":
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphCaptureInputs

        # The buffer holds what the processor sends, uint8 tiles (not `dtype`):
        # replays copy tiles in unconverted and the graph normalises them.
        num_tiles = max(token_budget // self.tokens_per_tile, 1)
        tiles = torch.randint(
            0, 256, (num_tiles, 3, self.tile_size, self.tile_size), dtype=torch.uint8, device=device
        )
        return EncoderCudaGraphCaptureInputs(values={"pixel_values_flat": tiles})

    def prepare_encoder_cudagraph_replay_buffers(
        self,
        mm_kwargs: dict[str, Any],
        max_batch_size: int,
        max_frames_per_batch: int,
        path: str = "default",
    ) -> "EncoderCudaGraphReplayBuffers":
        from vllm.v1.worker.encoder_cudagraph_defs import EncoderCudaGraphReplayBuffers

        keys = self._tile_keys(mm_kwargs)
        values = {} if keys is None else {"pixel_values_flat": mm_kwargs[keys[0]]}
        return EncoderCudaGraphReplayBuffers(values=values)

    def encoder_cudagraph_forward(
        self, values: dict[str, torch.Tensor], path: str = "default"
    ) -> torch.Tensor:
        """[t, 3, T, T] uint8 tiles -> [t * tokens_per_tile, llm_hidden]."""
        features = self.extract_feature(values["pixel_values_flat"], across_ranks=False)
        return features.reshape(-1, self.llm_hidden_size)

    def encoder_eager_forward(self, mm_kwargs: dict[str, Any], path: str = "default") -> torch.Tensor:
        keys = self._tile_keys(mm_kwargs)
        if keys is None:
            return torch.cat(list(mm_kwargs["image_embeds"]))
        features = self.extract_feature(mm_kwargs[keys[0]], across_ranks=False)
        return features.reshape(-1, self.llm_hidden_size)

    def postprocess_encoder_output(
        self,
        outputs: dict[str, torch.Tensor],
        indices: list[int],
        per_item_out_tokens: list[int],
        dest: dict[int, torch.Tensor] | list[torch.Tensor | None],
        clone: bool = False,
        batch_mm_kwargs: dict[str, Any] | None = None,
    ) -> None:
        from vllm.model_executor.models.utils import scatter_output_slices

        if "default" not in outputs:
            # An image_embeds batch: no encoder ran, the items are the output.
            outputs = {"default": self.encoder_eager_forward(batch_mm_kwargs or {})}
        scatter_output_slices(outputs["default"], indices, per_item_out_tokens, dest, clone)


def _as_ints(values: object) -> list[int]:
    if isinstance(values, torch.Tensor):
        return [int(v) for v in values.tolist()]
    return [int(v) for v in values]


def vision_quant_config(
    config: Any, quant_config: QuantizationConfig | None
) -> QuantizationConfig | None:
    """The quantization the vision tower gets: none when only the LLM is quantized.

    Quantized InternVL releases (OpenGVLab's AWQ, GPTQ exports) quantize the LLM
    and keep the tower in full precision, with the quantization config in
    `llm_config` only and often nothing in `modules_to_not_convert`. vLLM's
    built-in InternVL adds "vision_model" to AWQ's `modules_to_not_convert` for
    this; the same rule here holds for any method. A config at the top level of
    config.json, or `--quantization` without a checkpoint config (online fp8),
    applies to the tower too. `mlp1` is a plain nn.Linear stack, never quantized.
    """
    if quant_config is None:
        return None
    top_level = getattr(config, "quantization_config", None)
    llm_level = getattr(config.llm_config, "quantization_config", None)
    if top_level is None and llm_level is not None:
        return None
    return quant_config
