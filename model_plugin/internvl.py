"""InternVLChatModel: InternViT -> pixel shuffle -> mlp1 -> a vLLM-registered LLM.

The LLM named by `llm_config.architectures` (Qwen2, InternLM2, Phi3, Llama) runs on
vLLM's paged attention; this module only turns tiles into embeddings.
"""

from collections.abc import Iterable
from typing import Annotated, Literal

import torch
import torch.nn as nn

from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import (
    MultiModalEmbeddings,
    SupportsMultiModal,
    SupportsPP,
)
from vllm.model_executor.models.utils import (
    AutoWeightsLoader,
    init_vllm_registered_model,
    maybe_prefix,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors
from vllm.utils.tensor_schema import TensorSchema, TensorShape

from preprocessing import IMAGENET_MEAN, IMAGENET_STD

from .intern_vit import InternVisionModel
from .processing import (
    IMAGE_PLACEHOLDER,
    VIDEO_PLACEHOLDER,
    InternVLChatDummyInputsBuilder,
    InternVLChatMultiModalProcessor,
    InternVLChatProcessingInfo,
)


class InternVLTileInputs(TensorSchema):
    """Dimensions:
    - t: tiles of all items in the batch
    - h, w: tile size
    - n: items (images or videos)
    """

    type: Literal["tiles"]
    tiles: Annotated[torch.Tensor, TensorShape("t", 3, "h", "w")]
    tiles_per_item: Annotated[torch.Tensor, TensorShape("n")]


def pixel_shuffle_v2(x: torch.Tensor, scale: float) -> torch.Tensor:
    """[N, W, H, C] -> [N, W*scale, H*scale, C/scale^2], InternVL's ps_version v2."""
    n, w, h, c = x.shape
    x = x.reshape(n, w, int(h * scale), int(c / scale))
    x = x.permute(0, 2, 1, 3).reshape(n, int(h * scale), int(w * scale), int(c / scale / scale))
    return x.permute(0, 2, 1, 3).contiguous()


@MULTIMODAL_REGISTRY.register_processor(
    InternVLChatMultiModalProcessor,
    info=InternVLChatProcessingInfo,
    dummy_inputs=InternVLChatDummyInputsBuilder,
)
class InternVLChatModel(nn.Module, SupportsMultiModal, SupportsPP):
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
        llm_hidden = config.llm_config.hidden_size
        shuffled_dim = vision_config.hidden_size * int(1 / self.downsample_ratio) ** 2
        select_layer = config.select_layer
        num_layers = (
            vision_config.num_hidden_layers + select_layer + 1 if select_layer < 0 else select_layer + 1
        )

        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.vision_model = InternVisionModel(
                vision_config,
                quant_config,
                num_layers=num_layers,
                prefix=maybe_prefix(prefix, "vision_model"),
            )
            self.mlp1 = nn.Sequential(
                nn.LayerNorm(shuffled_dim),
                nn.Linear(shuffled_dim, llm_hidden),
                nn.GELU(),
                nn.Linear(llm_hidden, llm_hidden),
            )
            # Tiles arrive as uint8; normalising here is the official transform
            # (x / 255 - mean) / std in fp32, done once on the encoder's device.
            self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
            self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.llm_config,
                prefix=maybe_prefix(prefix, "language_model"),
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    def _normalize(self, tiles: torch.Tensor) -> torch.Tensor:
        if tiles.dtype == torch.uint8:
            # In place on one fp32 copy: the same ops as torchvision, no temporaries.
            tiles = tiles.float().div_(255).sub_(self.pixel_mean.float()).div_(self.pixel_std.float())
        return tiles.to(self.mlp1[1].weight.dtype)

    def extract_feature(self, tiles: torch.Tensor) -> torch.Tensor:
        """[t, 3, 448, 448] tiles -> [t, 256, llm_hidden] embeddings."""
        features = self.vision_model(self._normalize(tiles))[:, 1:]  # drop CLS
        side = int(features.shape[1] ** 0.5)
        features = features.reshape(features.shape[0], side, side, -1)
        features = pixel_shuffle_v2(features, self.downsample_ratio)
        features = features.reshape(features.shape[0], -1, features.shape[-1])
        return self.mlp1(features)

    def _parse_tiles(self, tiles: object, counts: object) -> InternVLTileInputs | None:
        if tiles is None:
            return None
        size = self.config.force_image_size or self.config.vision_config.image_size
        return InternVLTileInputs(
            type="tiles",
            tiles=tiles,
            tiles_per_item=counts,
            resolve_bindings={"h": size, "w": size},
        )

    def _embed_items(self, inputs: InternVLTileInputs) -> tuple[torch.Tensor, ...]:
        embeddings = self.extract_feature(inputs["tiles"])
        hidden = embeddings.shape[-1]
        tokens_per_tile = embeddings.shape[1]
        sizes = [int(n) * tokens_per_tile for n in inputs["tiles_per_item"].tolist()]
        return embeddings.reshape(-1, hidden).split(sizes)

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        embeddings: tuple[torch.Tensor, ...] = ()
        # Keep the modality order of kwargs: the runner matches outputs to items in it.
        for key in kwargs:
            if key == "pixel_values_flat":
                images = self._parse_tiles(kwargs["pixel_values_flat"], kwargs["image_num_patches"])
                embeddings += self._embed_items(images)
            elif key == "pixel_values_flat_video":
                videos = self._parse_tiles(
                    kwargs["pixel_values_flat_video"], kwargs["video_num_patches"]
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
        # Strict both ways. AutoWeightsLoader raises on a tensor no module claims;
        # a parameter the checkpoint lacks is caught here, because vLLM's own check
        # exempts every unquantized linear layer.
        loaded = AutoWeightsLoader(self).load_weights(weights)
        missing = sorted({name for name, _ in self.named_parameters()} - loaded)
        if missing:
            raise ValueError(f"Checkpoint is missing tensors for: {', '.join(missing)}")
        return loaded
