"""vLLM multimodal processing for InternVL2: tiling by `preprocessing/`, prompt expansion.

Images and video frames leave the processor as uint8 tiles; the model normalises
them where the encoder runs (a quarter of the bytes of fp32 between processes,
bit-identical values).

Tile budgets come through `mm_processor_kwargs`:
- `max_tiles`: an int for every image of the request, or a list with one entry
  per image (None = default). Defaults to config.json's `max_dynamic_patch`.
- `min_tiles`: defaults to config.json's `min_dynamic_patch`.
- `max_tiles_limit` (engine level): the largest budget a request may ask for; the
  memory profile and the encoder cache are sized for it.
- `max_video_frames` (engine level): the most frames one video may have.

An image item may also arrive already tiled, as `{"tiles": uint8 [n, 3, T, T]}`
from `preprocessing.tile_image_uint8`: the server tiles on its worker threads so
that vLLM's input processing, which runs on the event loop, does no pixel work.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from PIL import Image
from transformers import BatchFeature

from vllm.config.multimodal import MultiModalDummyOptions
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)

from preprocessing import (
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    MAX_TILES,
    tile_image_uint8,
)

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
DEFAULT_MAX_VIDEO_FRAMES = 32


@dataclass(frozen=True)
class TileOptions:
    min_tiles: int
    max_tiles: int | list[int | None]
    max_tiles_limit: int
    use_thumbnail: bool

    def for_image(self, index: int) -> int:
        budget = self.max_tiles[index] if isinstance(self.max_tiles, list) else self.max_tiles
        return self.max_tiles_limit if budget is None else budget


class InternVLChatProcessingInfo(BaseProcessingInfo):
    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None}

    def get_supported_mm_processor_kwargs(self) -> dict[str, set[str]]:
        # No HF processor: every kwarg stays flat and reaches `_call_hf_processor`.
        return {}

    @cached_property
    def tokens_per_tile(self) -> int:
        config = self.get_hf_config()
        image_size = config.force_image_size or config.vision_config.image_size
        grid = image_size // config.vision_config.patch_size
        return int(grid * grid * config.downsample_ratio**2)

    @cached_property
    def tile_size(self) -> int:
        config = self.get_hf_config()
        return config.force_image_size or config.vision_config.image_size

    def tile_options(self, request_kwargs: Mapping[str, object]) -> TileOptions:
        config = self.get_hf_config()
        kwargs = self.ctx.get_merged_mm_kwargs(request_kwargs)
        default_max = config.max_dynamic_patch if config.dynamic_image_size else 1
        limit = int(kwargs.get("max_tiles_limit", default_max))
        options = TileOptions(
            min_tiles=int(kwargs.get("min_tiles", config.min_dynamic_patch)),
            max_tiles=kwargs.get("max_tiles", min(default_max, limit)),
            max_tiles_limit=limit,
            use_thumbnail=bool(config.use_thumbnail),
        )
        _validate(options)
        return options

    def max_video_frames(self) -> int:
        kwargs = self.ctx.get_merged_mm_kwargs({})
        return int(kwargs.get("max_video_frames", DEFAULT_MAX_VIDEO_FRAMES))

    def tiles_for_budget(self, max_tiles: int, use_thumbnail: bool) -> int:
        return max_tiles + (1 if use_thumbnail and max_tiles > 1 else 0)

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int]
    ) -> Mapping[str, int]:
        options = self.tile_options({})
        image_tiles = self.tiles_for_budget(options.max_tiles_limit, options.use_thumbnail)
        return {
            "image": image_tiles * self.tokens_per_tile,
            "video": self.max_video_frames() * self.tokens_per_tile,
        }

    def image_replacement(self, tiles: int) -> str:
        return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (self.tokens_per_tile * tiles) + IMG_END_TOKEN

    def video_replacement(self, frames: int) -> str:
        # As the official video evaluation: one labelled line per frame.
        return "".join(
            f"Frame{i + 1}: {self.image_replacement(1)}\n" for i in range(frames)
        )

    @cached_property
    def context_token_id(self) -> int:
        return self.get_tokenizer().convert_tokens_to_ids(IMG_CONTEXT_TOKEN)


def _validate(options: TileOptions) -> None:
    if not 1 <= options.max_tiles_limit <= MAX_TILES:
        raise ValueError(f"max_tiles_limit must be in 1..{MAX_TILES}, got {options.max_tiles_limit}")
    budgets = options.max_tiles if isinstance(options.max_tiles, list) else [options.max_tiles]
    for budget in budgets:
        if budget is None:
            continue
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise ValueError(f"max_tiles must be an integer, got {budget!r}")
        if not 1 <= budget <= options.max_tiles_limit:
            raise ValueError(
                f"max_tiles must be in 1..{options.max_tiles_limit}, got {budget}"
            )
    if not 1 <= options.min_tiles <= min(b or options.max_tiles_limit for b in budgets or [1]):
        raise ValueError(f"min_tiles must be in 1..max_tiles, got {options.min_tiles}")


class InternVLChatDummyInputsBuilder(BaseDummyInputsBuilder[InternVLChatProcessingInfo]):
    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return IMAGE_PLACEHOLDER * mm_counts.get("image", 0) + VIDEO_PLACEHOLDER * mm_counts.get(
            "video", 0
        )

    def get_dummy_mm_data(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: MultiModalDummyOptions,
    ):
        info = self.info
        limit = info.tile_options({}).max_tiles_limit
        tile = info.tile_size
        # A (limit x 1) strip tiles into exactly `limit` tiles plus the thumbnail:
        # the largest image a request may send.
        data: dict[str, Any] = {
            "image": self._get_dummy_images(
                width=tile * limit,
                height=tile,
                num_images=mm_counts.get("image", 0),
            )
        }
        num_videos = mm_counts.get("video", 0)
        if num_videos:
            data["video"] = self._get_dummy_videos(
                width=tile,
                height=tile,
                num_frames=info.max_video_frames(),
                num_videos=num_videos,
            )
        return data


class InternVLChatMultiModalProcessor(BaseMultiModalProcessor[InternVLChatProcessingInfo]):
    def _call_hf_processor(
        self,
        hf_data: Mapping[str, object],
        hf_kwargs: Mapping[str, object],
    ) -> BatchFeature:
        info = self.info
        out: dict[str, torch.Tensor] = {}
        images = hf_data.get("images") or []
        if images:
            options = info.tile_options(hf_kwargs)
            tiles = [
                _pretiled(image, info.tile_size)
                if isinstance(image, Mapping)
                else tile_image_uint8(
                    _as_rgb(image),
                    min_tiles=min(options.min_tiles, options.for_image(i)),
                    max_tiles=options.for_image(i),
                    use_thumbnail=options.use_thumbnail,
                    tile_size=info.tile_size,
                )
                for i, image in enumerate(images)
            ]
            out["pixel_values_flat"] = torch.cat(tiles)
            out["image_num_patches"] = torch.tensor([len(t) for t in tiles])
        videos = hf_data.get("videos") or []
        if videos:
            max_frames = info.max_video_frames()
            per_video = []
            for video in videos:
                frames = _video_frames(video)
                if not 1 <= len(frames) <= max_frames:
                    raise ValueError(
                        f"A video must have 1..{max_frames} frames, got {len(frames)}"
                    )
                per_video.append(
                    torch.cat(
                        [tile_image_uint8(frame, max_tiles=1, tile_size=info.tile_size) for frame in frames]
                    )
                )
            out["pixel_values_flat_video"] = torch.cat(per_video)
            out["video_num_patches"] = torch.tensor([len(v) for v in per_video])
        return BatchFeature(out)

    def _get_cache_missing_processor_kwargs(self, inputs, mm_is_cached) -> Mapping[str, object]:
        # A per-image budget list must line up with the images actually processed.
        kwargs = dict(inputs.hf_processor_mm_kwargs)
        budgets = kwargs.get("max_tiles")
        if isinstance(budgets, list) and "image" in mm_is_cached:
            kwargs["max_tiles"] = [
                budget
                for budget, cached in zip(budgets, mm_is_cached["image"])
                if not cached
            ]
        return kwargs

    def _get_mm_fields_config(
        self,
        hf_inputs: BatchFeature,
        hf_processor_mm_kwargs: Mapping[str, object],
    ) -> Mapping[str, MultiModalFieldConfig]:
        image_tiles = hf_inputs.get("image_num_patches", torch.empty(0, dtype=torch.long))
        video_tiles = hf_inputs.get("video_num_patches", torch.empty(0, dtype=torch.long))
        return dict(
            pixel_values_flat=MultiModalFieldConfig.flat_from_sizes("image", image_tiles),
            image_num_patches=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            pixel_values_flat_video=MultiModalFieldConfig.flat_from_sizes("video", video_tiles),
            video_num_patches=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        )

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        info = self.info
        tokenizer = info.get_tokenizer()
        context_id = info.context_token_id
        data = out_mm_kwargs.get_data()
        image_tiles = _as_list(data.get("image_num_patches"))
        video_frames = _as_list(data.get("video_num_patches"))

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        def image_update(index: int) -> PromptUpdateDetails:
            return PromptUpdateDetails.select_token_id(
                encode(info.image_replacement(image_tiles[index])), context_id
            )

        def video_update(index: int) -> PromptUpdateDetails:
            return PromptUpdateDetails.select_token_id(
                encode(info.video_replacement(video_frames[index])), context_id
            )

        return [
            PromptReplacement(modality="image", target=encode(IMAGE_PLACEHOLDER), replacement=image_update),
            PromptReplacement(modality="video", target=encode(VIDEO_PLACEHOLDER), replacement=video_update),
        ]


def _as_list(value: object) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.tolist()]
    return [int(v) for v in value]


def pretiled_image(tiles: torch.Tensor) -> dict[str, torch.Tensor]:
    """An image item that skips tiling in the processor (see the module doc)."""
    return {"tiles": tiles}


def _pretiled(item: Mapping[str, object], tile_size: int) -> torch.Tensor:
    tiles = item.get("tiles")
    if not (
        isinstance(tiles, torch.Tensor)
        and tiles.dtype == torch.uint8
        and tiles.ndim == 4
        and tiles.shape[0] >= 1
        and tuple(tiles.shape[1:]) == (3, tile_size, tile_size)
    ):
        raise ValueError(f"A pre-tiled image must be uint8 [n, 3, {tile_size}, {tile_size}]")
    if tiles.shape[0] > MAX_TILES + 1:
        raise ValueError(f"A pre-tiled image has {tiles.shape[0]} tiles; at most {MAX_TILES + 1}")
    return tiles


def _as_rgb(image: object) -> Image.Image:
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, np.ndarray):
        return Image.fromarray(image).convert("RGB")
    raise ValueError(f"Unsupported image item of type {type(image).__name__}")


def _video_frames(video: object) -> list[Image.Image]:
    if isinstance(video, tuple):  # (frames, metadata)
        video = video[0]
    if isinstance(video, torch.Tensor):
        video = video.numpy()
    return [_as_rgb(frame) for frame in video]


__all__ = [
    "InternVLChatDummyInputsBuilder",
    "InternVLChatMultiModalProcessor",
    "InternVLChatProcessingInfo",
    "pretiled_image",
]
