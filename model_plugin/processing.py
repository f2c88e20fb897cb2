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
The engine-level limits bind every request: vLLM merges a request's kwargs over
the engine's, and a request naming a limit above the engine's is refused
(ValueError, a 400 from vLLM's server); it may name a lower one.

An image item may also arrive already tiled, as `{"tiles": uint8 [n, 3, T, T]}`
from `preprocessing.tile_image_uint8`: the server tiles on its worker threads so
that vLLM's input processing, which runs on the event loop, does no pixel work.
"""

import re
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
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems, MultiModalDataItems
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    ProcessorInputs,
    PromptReplacement,
    PromptUpdate,
    PromptUpdateDetails,
)
from vllm.multimodal.processing.processor import (
    MultiModalPromptUpdates,
    PlaceholderFeaturesInfo,
    ResolvedPromptUpdate,
    iter_token_matches,
)

from preprocessing import (
    IMG_CONTEXT_TOKEN,
    IMG_END_TOKEN,
    IMG_START_TOKEN,
    MAX_TILES,
    tile_image_uint8,
)

from .tile_embedding_cache import tile_digests

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
DEFAULT_MAX_VIDEO_FRAMES = 32
# The model's store of encoded tiles (tile_embedding_cache.py); the engine's
# mm_processor_kwargs `tile_embedding_cache_mib` sets it, 0 turns it off.
DEFAULT_TILE_EMBEDDING_CACHE_MIB = 256
_IMAGE_RUN = re.compile(
    f"{re.escape(IMG_START_TOKEN)}((?:{re.escape(IMG_CONTEXT_TOKEN)})*){re.escape(IMG_END_TOKEN)}"
)


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

    def engine_tile_limit(self) -> int:
        """The engine's `max_tiles_limit`: what memory is profiled for."""
        config = self.get_hf_config()
        default_max = config.max_dynamic_patch if config.dynamic_image_size else 1
        limit = _engine_kwargs(self).get("max_tiles_limit", default_max)
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_TILES:
            raise ValueError(f"max_tiles_limit must be an integer in 1..{MAX_TILES}, got {limit!r}")
        return limit

    def tile_options(self, request_kwargs: Mapping[str, object]) -> TileOptions:
        """A request's tile budgets, bound by the engine's limit.

        vLLM merges a request's `mm_processor_kwargs` over the engine's, so the
        engine limit is read on its own: a request may lower it, never raise it.
        """
        config = self.get_hf_config()
        engine_limit = self.engine_tile_limit()
        limit = _request_limit(request_kwargs, "max_tiles_limit", engine_limit)
        kwargs = self.ctx.get_merged_mm_kwargs(request_kwargs)
        default_max = config.max_dynamic_patch if config.dynamic_image_size else 1
        options = TileOptions(
            min_tiles=kwargs.get("min_tiles", config.min_dynamic_patch),
            max_tiles=kwargs.get("max_tiles", min(default_max, limit)),
            max_tiles_limit=limit,
            use_thumbnail=bool(config.use_thumbnail),
        )
        _validate(options)
        return options

    def engine_video_frame_limit(self) -> int:
        limit = _engine_kwargs(self).get("max_video_frames", DEFAULT_MAX_VIDEO_FRAMES)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"max_video_frames must be a positive integer, got {limit!r}")
        return limit

    def max_video_frames(self, request_kwargs: Mapping[str, object] | None = None) -> int:
        """The most frames one video of this request may have (the engine's limit binds)."""
        return _request_limit(request_kwargs or {}, "max_video_frames", self.engine_video_frame_limit())

    def tiles_for_budget(self, max_tiles: int, use_thumbnail: bool) -> int:
        return max_tiles + (1 if use_thumbnail and max_tiles > 1 else 0)

    def get_mm_max_tokens_per_item(
        self, seq_len: int, mm_counts: Mapping[str, int]
    ) -> Mapping[str, int]:
        config = self.get_hf_config()
        image_tiles = self.tiles_for_budget(self.engine_tile_limit(), bool(config.use_thumbnail))
        return {
            "image": image_tiles * self.tokens_per_tile,
            "video": self.engine_video_frame_limit() * self.tokens_per_tile,
        }

    def image_replacement(self, tiles: int) -> str:
        return IMG_START_TOKEN + IMG_CONTEXT_TOKEN * (self.tokens_per_tile * tiles) + IMG_END_TOKEN

    def video_replacement(self, frames: int) -> str:
        # As the official video evaluation: one labelled line per frame.
        return "".join(
            f"Frame{i + 1}: {self.image_replacement(1)}\n" for i in range(frames)
        )

    def image_features(self, tiles: int) -> list[int]:
        """An image's ids in any prompt: `<img>`, the context tokens, `</img>`.

        All three are added tokens, split out before the backbone's own
        tokenization, so these ids are the same wherever the image lands.
        """
        return [self.start_token_id] + [self.context_token_id] * (self.tokens_per_tile * tiles) + [
            self.end_token_id
        ]

    def video_features(self, frames: int) -> list[int]:
        """A video's ids from its first `<img>` to its last `</img>`.

        The "Frame1: " before and the newline after belong to the surrounding
        text and tokenize with it; what lies between the frames is bounded by
        added tokens on both sides, so it tokenizes the same in any prompt.
        """
        text = self.video_replacement(frames)
        span = text[text.index(IMG_START_TOKEN) : text.rindex(IMG_END_TOKEN) + len(IMG_END_TOKEN)]
        return self.encode_expanded(span)

    def encode_expanded(self, text: str) -> list[int]:
        """`tokenizer.encode(text, add_special_tokens=False)` for text with images expanded.

        The `<IMG_CONTEXT>` runs (thousands of added tokens, most of the time of
        encoding them as text) are taken out of `<img>...</img>`, the rest is
        encoded, and the runs go back in as ids right after each `<img>`: added
        tokens are split out before the backbone's tokenization, so the ids are
        the same. Text with an `<img>` outside such a run is encoded as it is.
        """
        tokenizer = self.get_tokenizer()
        runs = [(m.end(1) - m.start(1)) // len(IMG_CONTEXT_TOKEN) for m in _IMAGE_RUN.finditer(text)]
        ids = tokenizer.encode(_IMAGE_RUN.sub(IMG_START_TOKEN + IMG_END_TOKEN, text), add_special_tokens=False)
        starts = [i for i, token in enumerate(ids) if token == self.start_token_id]
        if len(starts) != len(runs) or any(ids[i + 1 : i + 2] != [self.end_token_id] for i in starts):
            return tokenizer.encode(text, add_special_tokens=False)
        out: list[int] = []
        previous = 0
        for start, run in zip(starts, runs):
            out += ids[previous : start + 1]
            out += [self.context_token_id] * run
            previous = start + 1
        out += ids[previous:]
        return out

    @cached_property
    def context_token_id(self) -> int:
        return self.get_tokenizer().convert_tokens_to_ids(IMG_CONTEXT_TOKEN)

    @cached_property
    def start_token_id(self) -> int:
        return self.get_tokenizer().convert_tokens_to_ids(IMG_START_TOKEN)

    @cached_property
    def end_token_id(self) -> int:
        return self.get_tokenizer().convert_tokens_to_ids(IMG_END_TOKEN)


def _engine_kwargs(info: BaseProcessingInfo) -> Mapping[str, object]:
    """The engine-level `mm_processor_kwargs`, without any request's."""
    return info.ctx.get_merged_mm_kwargs({})


def _request_limit(request_kwargs: Mapping[str, object], key: str, engine_limit: int) -> int:
    """A request's own cap on `key`: at most the engine's, which it cannot raise."""
    value = request_kwargs.get(key, engine_limit)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if value > engine_limit:
        raise ValueError(
            f"{key}={value} is over this server's limit of {engine_limit}; "
            f"a request may lower {key}, not raise it"
        )
    return value


def _validate(options: TileOptions) -> None:
    if isinstance(options.min_tiles, bool) or not isinstance(options.min_tiles, int):
        raise ValueError(f"min_tiles must be an integer, got {options.min_tiles!r}")
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
        limit = info.engine_tile_limit()
        tile = info.tile_size
        # A (limit x 1) strip tiles into exactly `limit` tiles plus the thumbnail
        # when processed with `max_tiles=limit` (`dummy_processor_kwargs`): the
        # largest image a request may send. `--limit-mm-per-prompt` size options
        # may only shrink it, as vLLM's helpers enforce.
        data: dict[str, Any] = {
            "image": self._get_dummy_images(
                width=tile * limit,
                height=tile,
                num_images=mm_counts.get("image", 0),
                overrides=mm_options.get("image") if mm_options else None,
            )
        }
        num_videos = mm_counts.get("video", 0)
        if num_videos:
            data["video"] = self._get_dummy_videos(
                width=tile,
                height=tile,
                num_frames=info.engine_video_frame_limit(),
                num_videos=num_videos,
                overrides=mm_options.get("video") if mm_options else None,
            )
        return data

    def dummy_processor_kwargs(self) -> dict[str, object]:
        # Without `max_tiles` the dummy image would get the default budget
        # (config.json's `max_dynamic_patch`), below a larger engine limit. The
        # dummies' blank tiles are all alike: cached, the profile would encode one.
        return {"max_tiles": self.info.engine_tile_limit(), "cache_tiles": False}


class InternVLChatMultiModalProcessor(BaseMultiModalProcessor[InternVLChatProcessingInfo]):
    def get_dummy_inputs(
        self,
        seq_len: int,
        mm_counts: Mapping[str, int],
        mm_options: MultiModalDummyOptions,
    ) -> ProcessorInputs:
        inputs = super().get_dummy_inputs(seq_len, mm_counts, mm_options)
        inputs.hf_processor_mm_kwargs = self.dummy_inputs.dummy_processor_kwargs()
        return inputs

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
                _pretiled(
                    image,
                    info.tile_size,
                    max_tiles=info.tiles_for_budget(options.max_tiles_limit, options.use_thumbnail),
                )
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
            if hf_kwargs.get("cache_tiles", True):
                out["image_tile_digests"] = tile_digests(out["pixel_values_flat"])
        videos = hf_data.get("videos") or []
        if videos:
            max_frames = info.max_video_frames(hf_kwargs)
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
            if hf_kwargs.get("cache_tiles", True):
                out["video_tile_digests"] = tile_digests(out["pixel_values_flat_video"])
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
            image_tile_digests=MultiModalFieldConfig.flat_from_sizes("image", image_tiles, keep_on_cpu=True),
            image_num_patches=MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            image_embeds=MultiModalFieldConfig.batched("image"),
            pixel_values_flat_video=MultiModalFieldConfig.flat_from_sizes("video", video_tiles),
            video_tile_digests=MultiModalFieldConfig.flat_from_sizes("video", video_tiles, keep_on_cpu=True),
            video_num_patches=MultiModalFieldConfig.batched("video", keep_on_cpu=True),
        )

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        # The targets are vLLM's token-space fallback (`_apply_prompt_updates`
        # expands in text); the contents are each item's ids as they appear in
        # the expanded prompt, which is how its placeholder range is found.
        info = self.info
        tokenizer = info.get_tokenizer()
        context_id = info.context_token_id
        data = out_mm_kwargs.get_data()
        image_tiles = _as_list(data.get("image_num_patches"))
        video_frames = _as_list(data.get("video_num_patches"))

        def image_update(index: int) -> PromptUpdateDetails:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):
                tiles = _embedding_tiles(images.get_feature_size(index), info.tokens_per_tile)
            else:
                tiles = image_tiles[index]
            return PromptUpdateDetails.select_token_id(info.image_features(tiles), context_id)

        def video_update(index: int) -> PromptUpdateDetails:
            return PromptUpdateDetails.select_token_id(info.video_features(video_frames[index]), context_id)

        def encode(text: str) -> list[int]:
            return tokenizer.encode(text, add_special_tokens=False)

        return [
            PromptReplacement(modality="image", target=encode(IMAGE_PLACEHOLDER), replacement=image_update),
            PromptReplacement(modality="video", target=encode(VIDEO_PLACEHOLDER), replacement=video_update),
        ]

    def _apply_prompt_updates(
        self,
        token_ids: list[int],
        mm_prompt_updates: MultiModalPromptUpdates,
    ) -> tuple[list[int], Mapping[str, list[PlaceholderFeaturesInfo]]]:
        """Expand `<image>`/`<video>` in text, then tokenize once, as the official `chat()`.

        The official code replaces `<image>` in the query string and tokenizes the
        whole. `<image>` and `<video>` are plain text, so their ids depend on what
        surrounds them (sentencepiece's "▁" before "<", byte-level BPE's " <"),
        and swapping ids for ids cannot give the ids of the expanded text: the
        text beside a placeholder tokenizes differently once `<img>` (an added
        token) is there instead. So the prompt is decoded, each placeholder
        replaced by its item's text, and the result encoded. A prompt whose ids
        do not survive that round trip (ids a client built itself) is expanded
        by vLLM's token matching instead, its ids kept as they are.
        """
        counts = {modality: len(items) for modality, items in mm_prompt_updates.items() if items}
        if not counts:
            return super()._apply_prompt_updates(token_ids, mm_prompt_updates)
        text = self._prompt_text(token_ids)
        if text is None:
            return super()._apply_prompt_updates(token_ids, self._with_video_labels(mm_prompt_updates))

        found = {modality: 0 for modality in counts}
        order: list[tuple[str, int, ResolvedPromptUpdate]] = []

        def expand(match: re.Match[str]) -> str:
            modality = _PLACEHOLDER_MODALITY[match.group(0)]
            index = found.get(modality, 0)
            if index >= counts.get(modality, 0):
                return match.group(0)  # more placeholders than items: left as text
            found[modality] = index + 1
            update = mm_prompt_updates[modality][index][0]
            order.append((modality, index, update))
            return self._replacement_text(update)

        expanded = _PLACEHOLDER_PATTERN.sub(expand, text)
        for modality, count in counts.items():
            if found[modality] != count:
                raise ValueError(
                    f"The prompt has {found[modality]} {_MODALITY_PLACEHOLDER[modality]} placeholders "
                    f"for {count} {modality} items"
                )
        new_ids = self.info.encode_expanded(expanded)

        placeholders: dict[str, list[PlaceholderFeaturesInfo]] = {modality: [] for modality in counts}
        start = 0
        for modality, index, update in order:
            full = update.content.full
            match = next(iter_token_matches(new_ids, full, start_idx=start), None)
            if match is None:
                raise RuntimeError(f"{modality} item {index}: its ids are not in the expanded prompt")
            is_embed = update.content.is_embed
            placeholders[modality].append(
                PlaceholderFeaturesInfo(
                    modality=modality,
                    item_idx=index,
                    start_idx=match.start_idx,
                    tokens=full,
                    is_embed=None if is_embed is None else is_embed(full),
                )
            )
            start = match.end_idx
        return new_ids, placeholders

    def _prompt_text(self, token_ids: list[int]) -> str | None:
        """The text the prompt ids were encoded from, if decoding finds it.

        A whole decode is tried first. Sentencepiece models with a dummy prefix
        add "▁" to every run between added tokens, which a whole decode keeps
        as a space after each added token; decoding each run on its own drops
        it again, as sentencepiece and the released slow classes do. Either
        text counts only if it encodes back to exactly these ids.
        """
        tokenizer = self.info.get_tokenizer()
        ids = list(token_ids)
        whole = tokenizer.decode(ids, skip_special_tokens=False)
        if tokenizer.encode(whole, add_special_tokens=False) == ids:
            return whole
        added = {token_id: content for content, token_id in tokenizer.get_added_vocab().items()}
        pieces, run = [], []
        for token_id in ids + [None]:
            if token_id is None or token_id in added:
                if run:
                    pieces.append(tokenizer.decode(run, skip_special_tokens=False))
                    run = []
                if token_id is not None:
                    pieces.append(added[token_id])
            else:
                run.append(token_id)
        by_runs = "".join(pieces)
        if tokenizer.encode(by_runs, add_special_tokens=False) == ids:
            return by_runs
        return None

    def _replacement_text(self, update: ResolvedPromptUpdate) -> str:
        """The text an item's placeholder becomes, from its resolved (possibly cached) update."""
        info = self.info
        full = update.content.full
        if update.modality == "image":
            return info.image_replacement(full.count(info.context_token_id) // info.tokens_per_tile)
        return info.video_replacement(full.count(info.start_token_id))

    def _with_video_labels(self, mm_prompt_updates: MultiModalPromptUpdates) -> MultiModalPromptUpdates:
        """For token matching: a video's content with its "FrameN: " labels and newlines."""
        info = self.info
        tokenizer = info.get_tokenizer()

        def labelled(update: ResolvedPromptUpdate) -> ResolvedPromptUpdate:
            text = self._replacement_text(update)
            ids = tokenizer.encode(text, add_special_tokens=False)
            return update.with_content(PromptUpdateDetails.select_token_id(ids, info.context_token_id))

        return {
            modality: [
                [labelled(u) if modality == "video" else u for u in item_updates] for item_updates in items
            ]
            for modality, items in mm_prompt_updates.items()
        }


_PLACEHOLDER_MODALITY = {IMAGE_PLACEHOLDER: "image", VIDEO_PLACEHOLDER: "video"}
_MODALITY_PLACEHOLDER = {modality: text for text, modality in _PLACEHOLDER_MODALITY.items()}
_PLACEHOLDER_PATTERN = re.compile("|".join(map(re.escape, _PLACEHOLDER_MODALITY)))


def _embedding_tiles(rows: int, tokens_per_tile: int) -> int:
    """Tiles behind precomputed image embeddings (`{"image": [tensor[rows, hidden]]}`)."""
    if rows <= 0 or rows % tokens_per_tile:
        raise ValueError(
            f"image_embeds must have a positive multiple of {tokens_per_tile} rows "
            f"(tokens per tile), got {rows}"
        )
    return rows // tokens_per_tile


def _as_list(value: object) -> list[int]:
    if value is None:
        return []
    if isinstance(value, torch.Tensor):
        return [int(v) for v in value.tolist()]
    return [int(v) for v in value]


def pretiled_image(tiles: torch.Tensor) -> dict[str, torch.Tensor]:
    """An image item that skips tiling in the processor (see the module doc)."""
    return {"tiles": tiles}


def _pretiled(item: Mapping[str, object], tile_size: int, *, max_tiles: int) -> torch.Tensor:
    tiles = item.get("tiles")
    if not (
        isinstance(tiles, torch.Tensor)
        and tiles.dtype == torch.uint8
        and tiles.ndim == 4
        and tiles.shape[0] >= 1
        and tuple(tiles.shape[1:]) == (3, tile_size, tile_size)
    ):
        raise ValueError(f"A pre-tiled image must be uint8 [n, 3, {tile_size}, {tile_size}]")
    if tiles.shape[0] > max_tiles:
        raise ValueError(f"A pre-tiled image has {tiles.shape[0]} tiles; this server allows at most {max_tiles}")
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
