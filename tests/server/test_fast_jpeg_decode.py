"""--fast-jpeg-decode: off by default (exact tiles); on, a large JPEG gets the exact path's
grid, size and boxes, tiles a few levels off, and a content id of its own."""

import base64
import io

import numpy as np
import torch
from PIL import Image

from tests.server.server_support import FAKE_MODEL, image_part, text_part

CHAT = "/v1/chat/completions"


def big_jpeg() -> str:
    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:2400, 0:3200] / 3200
    pixels = (np.stack([np.sin(9 * x), np.cos(7 * y), np.sin(5 * (x + y))], -1) * 90 + 128
              + rng.normal(0, 5, (2400, 3200, 3))).clip(0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def engine_input(client, fake_engine, url: str) -> tuple[torch.Tensor, str]:
    body = {"model": FAKE_MODEL, "max_tokens": 2,
            "messages": [{"role": "user", "content": [image_part(url, max_tiles=6), text_part("What is it?")]}]}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    prompt = fake_engine.calls[-1]["prompt"]
    return prompt["multi_modal_data"]["image"][0]["tiles"], prompt["multi_modal_uuids"]["image"][0]


def test_reduced_decoding_keeps_grid_and_size_and_is_keyed_apart(make_client, fake_engine):
    url = big_jpeg()
    exact, exact_id = engine_input(make_client(), fake_engine, url)
    fast_client = make_client(fast_jpeg_decode=True)
    fast, fast_id = engine_input(fast_client, fake_engine, url)
    assert fast.shape == exact.shape == (7, 3, 448, 448)  # 3x2 + thumbnail either way
    assert fast_id != exact_id  # other pixels: vLLM's caches must not mix them up
    error = (fast.int() - exact.int()).abs().float()
    assert 0 < error.mean() <= 1.5
    # Boxes are in pixels of the full image, not of the smaller decode.
    engine = type(fake_engine)(reply="<ref>cat</ref><box>[[100, 200, 500, 1000]]</box>")
    body = {"model": FAKE_MODEL, "max_tokens": 2,
            "messages": [{"role": "user", "content": [image_part(url, max_tiles=6), text_part("Where?")]}]}
    response = make_client(engine=engine, fast_jpeg_decode=True).post(CHAT, json=body)
    assert response.status_code == 200, response.text
    [box] = response.json()["choices"][0]["message"]["grounding"]
    assert box["box"] == [320.0, 480.0, 1600.0, 2400.0]  # of 3200x2400, as /1000
