"""Prometheus metrics, in a registry owned by one app (no process-wide state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320)
_PREPROCESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "internvl_requests", "Chat requests by HTTP status.", ["status"], registry=r
        )
        self.latency = Histogram(
            "internvl_request_latency_seconds", "End-to-end request latency.", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.time_to_first_token = Histogram(
            "internvl_time_to_first_token_seconds",
            "Time from request arrival to the first generated token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.prompt_tokens = Counter("internvl_prompt_tokens", "Prompt tokens processed.", registry=r)
        self.completion_tokens = Counter("internvl_completion_tokens", "Completion tokens generated.", registry=r)
        self.images = Counter("internvl_images", "Images received.", registry=r)
        self.tiles = Counter("internvl_image_tiles", "448px tiles produced from images.", registry=r)
        self.frames = Counter("internvl_video_frames", "Video frames sampled or received.", registry=r)
        self.preprocess_seconds = Histogram(
            "internvl_preprocessing_seconds",
            "Fetching and decoding a request's media.",
            buckets=_PREPROCESS_BUCKETS,
            registry=r,
        )
        self.running = Gauge("internvl_requests_running", "Requests the engine is running.", registry=r)
        self.waiting = Gauge("internvl_requests_waiting", "Requests waiting in the engine's queue.", registry=r)
        self.in_flight = Gauge("internvl_requests_in_flight", "Chat requests being handled by the server.", registry=r)
