"""A resent image is tiled once: the engine gets the very tiles and content id an uncached
request would get, and the server does not decode the image again."""

import pytest
import torch

import server.inputs
from server.tile_cache import TileCache
from tests.server.server_support import FAKE_MODEL, data_url, image_part, make_image, text_part

CHAT = "/v1/chat/completions"


def ask(client, url: str, **image_fields) -> None:
    body = {"model": FAKE_MODEL, "max_tokens": 2,
            "messages": [{"role": "user", "content": [image_part(url, **image_fields), text_part("What is it?")]}]}
    response = client.post(CHAT, json=body)
    assert response.status_code == 200, response.text


def engine_images(call) -> tuple[list[torch.Tensor], list[str]]:
    prompt = call["prompt"]
    return [item["tiles"] for item in prompt["multi_modal_data"]["image"]], prompt["multi_modal_uuids"]["image"]


@pytest.fixture
def decodes(monkeypatch):
    count = []
    real = server.inputs._decode_image

    def counting(*args, **kwargs):
        count.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(server.inputs, "_decode_image", counting)
    return count


@pytest.mark.parametrize("cache_mib", [512, 0], ids=["cached", "off"])
def test_a_resent_image_is_decoded_once_and_gives_the_same_engine_input(make_client, fake_engine, decodes, cache_mib):
    client = make_client(tile_cache_mib=cache_mib)
    url = data_url(make_image(900, 500, seed=3), "JPEG")
    ask(client, url, max_tiles=6)
    ask(client, url, max_tiles=6)
    (first, first_ids), (again, again_ids) = (engine_images(call) for call in fake_engine.calls[-2:])
    assert first_ids == again_ids
    assert torch.equal(first[0], again[0]) and first[0].dtype == torch.uint8
    assert len(decodes) == (1 if cache_mib else 2)


def test_another_budget_or_image_is_tiled_anew(make_client, fake_engine, decodes):
    client = make_client()
    url = data_url(make_image(1400, 500, seed=3), "JPEG")
    ask(client, url, max_tiles=6)
    ask(client, url, max_tiles=2)
    ask(client, data_url(make_image(1400, 500, seed=4), "JPEG"), max_tiles=6)
    calls = [engine_images(call) for call in fake_engine.calls[-3:]]
    assert len(decodes) == 3
    assert len({ids[0] for _, ids in calls}) == 3
    assert calls[0][0][0].shape[0] != calls[1][0][0].shape[0]  # 3x1 vs 2x1, each + thumbnail


def test_tiles_cache_is_bounded_by_bytes_least_recently_used_out():
    cache = TileCache(max_bytes=100)
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A"  # now b is the least recently used
    cache.put("c", "C", 40)
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.bytes == 80 and len(cache) == 2
    cache.put("huge", "H", 101)
    assert cache.get("huge") is None and len(cache) == 2
    off = TileCache(max_bytes=0)
    off.put("a", "A", 1)
    assert off.get("a") is None and len(off) == 0
