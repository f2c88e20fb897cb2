"""Helpers for the server tests: an engine stand-in (no vLLM) and test media."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from preprocessing import get_template
from server.engine import ModelInfo, QueueDepth

FAKE_MODEL = "fake-internvl"
# The fake tokenizer: one token per character (its code point), a BOS beyond Unicode,
# and a fixed number of tokens per image tile and per video frame.
FAKE_BOS = 0x110000
FAKE_TOKENS_PER_TILE = 3
FAKE_TOKENS_PER_FRAME = 2
_FAKE_MEDIA_TOKEN = 0x110001


def fake_prompt_ids(prompt: dict[str, Any], *, add_special_tokens: bool = False) -> list[int]:
    ids = [FAKE_BOS] if add_special_tokens else []
    ids += [ord(char) for char in prompt["prompt"]]
    media = prompt.get("multi_modal_data", {})
    tiles = sum(image["tiles"].shape[0] for image in media.get("image", []))
    frames = sum(len(video) for video in media.get("video", []))
    return ids + [_FAKE_MEDIA_TOKEN] * (tiles * FAKE_TOKENS_PER_TILE + frames * FAKE_TOKENS_PER_FRAME)


@dataclass
class FakeCompletion:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None
    logprobs: Any = None


@dataclass
class FakeOutput:
    prompt_token_ids: list[int] | None
    outputs: list[FakeCompletion]
    finished: bool
    metrics: Any = None
    num_cached_tokens: int | None = None


@dataclass
class FakeEngine:
    reply: str = "hello world"
    alive: bool = True
    delay_s: float = 0.0
    # How the last output finishes ("abort": as vLLM reports an aborted request).
    finish_reason: str = "stop"
    # What the outputs report as served from the prefix cache (None: not reported).
    cached_tokens: int | None = None
    version: str = "fake-engine-1.0"
    info: ModelInfo = field(
        default_factory=lambda: ModelInfo(
            name=FAKE_MODEL,
            source="/models/fake",
            template=get_template("Hermes-2"),
            max_model_len=4096,
            use_thumbnail=True,
            min_tiles=1,
            created=int(time.time()),
        )
    )
    queue: QueueDepth = field(default_factory=QueueDepth)
    calls: list[dict[str, Any]] = field(default_factory=list)
    aborted: list[str] = field(default_factory=list)

    async def generate(self, prompt, sampling, request_id, *, stream):
        self.calls.append({"prompt": prompt, "sampling": sampling, "request_id": request_id, "stream": stream})
        prompt_ids = fake_prompt_ids(prompt)
        words = self.reply.split(" ")
        finished = False
        try:
            if stream:
                for position, word in enumerate(words):
                    if self.delay_s:
                        await asyncio.sleep(self.delay_s)
                    last = position == len(words) - 1
                    piece = word if position == 0 else " " + word
                    yield FakeOutput(
                        prompt_ids if position == 0 else None,
                        [FakeCompletion(i, piece, [position], self.finish_reason if last else None) for i in range(sampling["n"])],
                        last,
                        num_cached_tokens=self.cached_tokens if position == 0 else None,
                    )
            else:
                if self.delay_s:
                    await asyncio.sleep(self.delay_s)
                yield FakeOutput(
                    prompt_ids,
                    [FakeCompletion(i, self.reply, list(range(len(words))), self.finish_reason) for i in range(sampling["n"])],
                    True,
                    num_cached_tokens=self.cached_tokens,
                )
            finished = True
        finally:
            if not finished:
                self.aborted.append(request_id)

    async def tokenize(self, prompt, *, add_special_tokens=None):
        self.calls.append({"tokenize": prompt, "add_special_tokens": add_special_tokens})
        return fake_prompt_ids(prompt, add_special_tokens=bool(add_special_tokens))

    async def detokenize(self, token_ids):
        from server.errors import BadRequest

        if any(token > _FAKE_MEDIA_TOKEN for token in token_ids):
            raise BadRequest("token id out of vocabulary", code="invalid_token_id", param="tokens")
        return "".join(self.token_strings(token_ids))

    def token_strings(self, token_ids):
        names = {FAKE_BOS: "<s>", _FAKE_MEDIA_TOKEN: "<IMG_CONTEXT>"}
        return [names.get(token) or chr(token) for token in token_ids]

    def is_alive(self) -> bool:
        return self.alive

    async def shutdown(self) -> None:
        self.alive = False


def make_image(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR)


def image_bytes(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def data_url(image: Image.Image, fmt: str = "PNG") -> str:
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(image_bytes(image, fmt)).decode()


def image_part(url: str, **extra) -> dict:
    return {"type": "image_url", "image_url": {"url": url, **extra}}


def text_part(text: str) -> dict:
    return {"type": "text", "text": text}


def make_mp4(frames: int = 16, width: int = 96, height: int = 64, fps: int = 8) -> bytes:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.full((height, width, 3), index * 15 % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()
