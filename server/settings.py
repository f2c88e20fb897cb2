"""Every server setting, from CLI flags or `INTERNVL_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from preprocessing import DEFAULT_NUM_FRAMES, MAX_FRAMES, MAX_TILES

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "internvl-serve"
# The embedded demo model: a tiny random-weight InternVL2-1B made on first start.
DEMO_FAMILY = "InternVL2-1B"
DEMO_SCALE = "tiny"

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

    # vLLM engine arguments, under vLLM's own names.
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    distributed_executor_backend: str | None = None
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_num_seqs: int | None = Field(None, ge=1)
    quantization: str | None = None
    enforce_eager: bool = False
    seed: int | None = 0
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
    max_concurrent_requests: int = Field(64, ge=1)
    max_n: int = Field(8, ge=1)

    # Media fetching.
    media_connect_timeout: float = Field(5.0, gt=0)
    media_read_timeout: float = Field(30.0, gt=0)
    media_max_redirects: int = Field(3, ge=0)
    media_allowed_domains: CommaList = Field(default_factory=list, description="If set, only these hosts (and subdomains).")
    media_allowed_networks: CommaList = Field(
        default_factory=list, description="CIDRs exempt from the private-address (SSRF) ban, e.g. 127.0.0.0/8."
    )
    media_local_dir: Path | None = Field(None, description="file:// URLs are served only from under this directory.")
    preprocess_workers: int = Field(4, ge=1)

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

    @model_validator(mode="after")
    def _consistent_limits(self) -> Settings:
        if self.default_max_tiles > self.max_tiles_per_image:
            raise ValueError("default_max_tiles must not exceed max_tiles_per_image")
        if self.default_num_frames > self.max_frames_per_video:
            raise ValueError("default_num_frames must not exceed max_frames_per_video")
        return self

    @property
    def uses_demo_model(self) -> bool:
        return self.model is None

    @property
    def model_name(self) -> str:
        if self.served_model_name:
            return self.served_model_name
        return self.model if self.model is not None else f"{DEMO_FAMILY}-{DEMO_SCALE}-random"
