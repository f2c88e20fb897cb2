"""Every server setting, from CLI flags or `INTERNVL_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from preprocessing import DEFAULT_NUM_FRAMES, MAX_FRAMES, MAX_TILES
from preprocessing.video import DEFAULT_DECODE_TIMEOUT_S, DEFAULT_MAX_DURATION_S, DEFAULT_MAX_TOTAL_FRAMES

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "internvl-serve"
# The embedded demo model: a tiny random-weight InternVL2-1B made on first start.
DEMO_FAMILY = "InternVL2-1B"
DEMO_SCALE = "tiny"

# vLLM engine arguments the server derives from settings of its own.
_OWN_ENGINE_ARGS = {
    "model": "--model",
    "served_model_name": "--served-model-name",
    "log_level": "--log-level",
}
# The plugin's processor options, set from the server's limits.
_OWN_PROCESSOR_KWARGS = {
    "max_tiles_limit": "--max-tiles-per-image",
    "max_video_frames": "--max-frames-per-video",
    "tile_embedding_cache_mib": "--tile-embedding-cache-mib",
}
_MM_LIMIT_FIELDS = {"image": "max_images_per_request", "video": "max_videos_per_request"}


def mm_limit_count(limit: Any) -> int:
    """The item count of one --limit-mm-per-prompt entry: an int, or vLLM's {"count": n, ...} form."""
    if isinstance(limit, dict):
        return int(limit.get("count", 999))
    return int(getattr(limit, "count", limit))


# Comma-separated in the environment (INTERNVL_API_KEYS=a,b) rather than JSON.
CommaList = Annotated[list[str], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTERNVL_", extra="forbid", validate_default=True)

    # Model and HTTP.
    model: str | None = Field(None, description="HF hub id or local checkpoint dir; None serves the random demo model.")
    served_model_name: str | None = Field(None, description="Model id clients send; defaults to --model.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    checkpoint_cache_dir: Path = DEFAULT_CACHE_DIR
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # vLLM's engine arguments (AsyncEngineArgs fields) that differ from their defaults, as the
    # CLI parsed them from vLLM's own flags or INTERNVL_<FLAG> variables (server/cli.py).
    # server/engine.py adds the model, the media limits and the options below.
    engine_args: dict[str, Any] = Field(
        default_factory=dict, description="vLLM AsyncEngineArgs fields, e.g. {'tensor_parallel_size': 2}."
    )
    structured_outputs_disable_any_whitespace: bool = Field(
        False, description="JSON outputs without free whitespace (vLLM applies this engine-wide)."
    )

    # Security.
    api_keys: CommaList = Field(default_factory=list, description="Accepted bearer keys; empty = no auth.")
    metrics_require_key: bool = False

    # Limits.
    max_images_per_request: int = Field(8, ge=0)
    max_videos_per_request: int = Field(1, ge=0)
    max_frames_per_video: int = Field(MAX_FRAMES, ge=1, le=MAX_FRAMES)
    default_num_frames: int = Field(DEFAULT_NUM_FRAMES, ge=1, le=MAX_FRAMES)
    max_tiles_per_image: int = Field(12, ge=1, le=MAX_TILES, description="Largest tile budget a request may ask for.")
    default_max_tiles: int = Field(12, ge=1, le=MAX_TILES, description="Tile budget when a request names none.")
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_image_aspect_ratio: float = Field(
        200.0, ge=1, description="Longest side over shortest side an image may have (InternVL's tiling tops out at 40:1)."
    )
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1024)
    max_media_bytes: int = Field(32 * 1024 * 1024, ge=1, description="Per fetched image or video.")
    max_media_bytes_per_request: int = Field(128 * 1024 * 1024, ge=1, description="All media of one request together.")
    max_video_total_frames: int = Field(
        DEFAULT_MAX_TOTAL_FRAMES, ge=1, description="Frames a video may hold (sampling decodes up to all of them)."
    )
    max_video_duration: float = Field(DEFAULT_MAX_DURATION_S, gt=0, description="Longest video, in seconds.")
    max_concurrent_requests: int = Field(64, ge=1)
    max_n: int = Field(8, ge=1)

    # Media fetching.
    media_connect_timeout: float = Field(5.0, gt=0)
    media_read_timeout: float = Field(30.0, gt=0)
    media_max_redirects: int = Field(3, ge=0)
    media_fetch_timeout: float = Field(30.0, gt=0, description="Seconds for one fetch, redirects included, to the last byte.")
    media_request_timeout: float = Field(60.0, gt=0, description="Seconds to fetch and decode all media of one request.")
    media_fetches_per_request: int = Field(4, ge=1, description="Fetches one request runs at once.")
    media_fetches_per_host: int = Field(8, ge=1, description="Fetches from one host at once, all requests together.")
    video_decode_timeout: float = Field(DEFAULT_DECODE_TIMEOUT_S, gt=0, description="Seconds to decode one video.")
    media_allowed_domains: CommaList = Field(default_factory=list, description="If set, only these hosts (and subdomains).")
    media_allowed_networks: CommaList = Field(
        default_factory=list, description="CIDRs exempt from the private-address (SSRF) ban, e.g. 127.0.0.0/8."
    )
    media_local_dir: Path | None = Field(None, description="file:// URLs are served only from under this directory.")
    preprocess_workers: int = Field(4, ge=1)
    tile_cache_mib: int = Field(
        512, ge=0, description="MiB of tiled images kept by content for resent images (0: off)."
    )
    fast_jpeg_decode: bool = Field(
        False, description="Decode JPEGs far above their tile grid at 1/2..1/8 scale in the DCT (pixels differ slightly)."
    )
    tile_embedding_cache_mib: int = Field(
        256, ge=0, description="MiB of encoded tiles the model keeps by pixels, on its device (0: off)."
    )

    # Shutdown.
    drain_timeout: float = Field(30.0, ge=0, description="Seconds to let in-flight requests finish on SIGTERM.")

    @field_validator("api_keys", "media_allowed_domains", "media_allowed_networks", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("media_allowed_networks")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for network in value:
            ipaddress.ip_network(network, strict=False)  # raises ValueError -> validation error
        return value

    @field_validator("engine_args")
    @classmethod
    def _known_engine_args(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            return value
        import dataclasses

        from vllm.engine.arg_utils import AsyncEngineArgs

        unknown = set(value) - {field.name for field in dataclasses.fields(AsyncEngineArgs)}
        if unknown:
            raise ValueError(f"not vLLM engine arguments: {sorted(unknown)}")
        owned = set(value) & _OWN_ENGINE_ARGS.keys()
        if owned:
            raise ValueError("; ".join(f"{name}: use {_OWN_ENGINE_ARGS[name]}" for name in sorted(owned)))
        processor_kwargs = value.get("mm_processor_kwargs") or {}
        clashes = sorted(set(processor_kwargs) & _OWN_PROCESSOR_KWARGS.keys())
        if clashes:
            raise ValueError(
                "--mm-processor-kwargs: "
                + "; ".join(f"{name} is set by {_OWN_PROCESSOR_KWARGS[name]}" for name in clashes)
            )
        return value

    @model_validator(mode="after")
    def _consistent_limits(self) -> Settings:
        if self.default_max_tiles > self.max_tiles_per_image:
            raise ValueError("default_max_tiles must not exceed max_tiles_per_image")
        if self.default_num_frames > self.max_frames_per_video:
            raise ValueError("default_num_frames must not exceed max_frames_per_video")
        self._adopt_mm_limits()
        return self

    def _adopt_mm_limits(self) -> None:
        """vLLM's --limit-mm-per-prompt and our per-request limits are one limit.

        Given alone, --limit-mm-per-prompt sets the per-request limits (so requests
        over it get our 400); given with --max-images/videos-per-request, the two
        must agree.
        """
        limits = self.engine_args.get("limit_mm_per_prompt") or {}
        for modality, name in _MM_LIMIT_FIELDS.items():
            if modality not in limits:
                continue
            count = mm_limit_count(limits[modality])
            if name in self.model_fields_set and getattr(self, name) != count:
                flag = "--" + name.replace("_", "-")
                raise ValueError(
                    f"--limit-mm-per-prompt allows {count} {modality}(s) but {flag} is {getattr(self, name)}; "
                    f"give one of them, or equal values"
                )
            setattr(self, name, count)

    @property
    def uses_demo_model(self) -> bool:
        return self.model is None

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return self.model if self.model is not None else f"{DEMO_FAMILY}-{DEMO_SCALE}-random"
