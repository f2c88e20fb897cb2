"""GET /v1/internvl/tiling (the playground's grid preview) answers what a chat request really plans.

The oracle is the engine input of a real chat request for the same image (through
the FakeEngine): its tile count, and the grid read back from the tiles' pixels.
The image is a gradient (red grows left to right, green top to bottom), so each
grid tile's mean colour says which column and row of the resized image it is.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from server.app import create_app
from server.settings import Settings
from server_support import FAKE_MODEL, FakeEngine, data_url, image_part, text_part

KEY = "preview-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
DEFAULT_BUDGET = 6  # distinct from the per-image budgets below, so a wrong fallback shows

SIZES = [(800, 600), (600, 800), (448, 448), (1920, 1080), (1080, 1920), (1000, 100), (97, 1000), (37, 23), (1, 1), (2, 5)]
SWEPT_SIZE = (800, 600)  # every budget 1..40
SAMPLED_BUDGETS = [1, 2, 6, 12, 24, 40]


def gradient(width: int, height: int) -> Image.Image:
    xs = np.linspace(0, 255, width) if width > 1 else np.full(1, 127.5)
    ys = np.linspace(0, 255, height) if height > 1 else np.full(1, 127.5)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[..., 0] = np.round(xs)[None, :]
    pixels[..., 1] = np.round(ys)[:, None]
    return Image.fromarray(pixels)


def grid_from_tiles(tiles: np.ndarray, grid_tiles: int) -> tuple[int, int]:
    """The cols x rows arrangement of `grid_tiles` row-major tiles, from their mean red and green."""
    means = tiles[:grid_tiles, :2].astype(np.float64).mean(axis=(2, 3))  # [n, (red, green)]
    best, best_error = None, float("inf")
    for cols in range(1, grid_tiles + 1):
        if grid_tiles % cols:
            continue
        rows = grid_tiles // cols
        index = np.arange(grid_tiles)
        expected = np.stack([255 * (index % cols + 0.5) / cols, 255 * (index // cols + 0.5) / rows], axis=1)
        error = np.abs(means - expected).max()
        if error < best_error:
            best, best_error = (cols, rows), error
    return best


def client_for(engine: FakeEngine) -> TestClient:
    settings = Settings(model="/models/fake", api_keys=[KEY], max_tiles_per_image=40, default_max_tiles=DEFAULT_BUDGET)
    return TestClient(create_app(settings, engine=engine), raise_server_exceptions=False)


def planned_by_chat(client: TestClient, engine: FakeEngine, url: str, **image_fields) -> tuple[int, np.ndarray]:
    """(tiles, tile pixels) of the engine input a real chat request gets for this image."""
    body = {
        "model": FAKE_MODEL,
        "messages": [{"role": "user", "content": [image_part(url, **image_fields), text_part("What is this?")]}],
        "max_tokens": 1,
    }
    response = client.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    tiles = engine.calls[-1]["prompt"]["multi_modal_data"]["image"][0]["tiles"].numpy()
    return tiles.shape[0], tiles


def preview(client: TestClient, width: int, height: int, **query) -> dict:
    response = client.get("/v1/internvl/tiling", params={"width": width, "height": height, **query}, headers=AUTH)
    assert response.status_code == 200, response.text
    return response.json()


def cases(budgets_of):
    for size in SIZES:
        for budget in budgets_of(size):
            yield size, {"max_tiles": budget}
        yield size, {"detail": "low"}
        yield size, {"detail": "high"}
        yield size, {}
        yield size, {"detail": "low", "max_tiles": 5}  # an explicit budget wins over detail=low


@pytest.mark.parametrize(
    "info_changes", [{}, {"min_tiles": 4, "use_thumbnail": False}], ids=["default-rule", "min4-no-thumbnail"]
)
def test_preview_equals_what_a_chat_request_plans(info_changes):
    engine = FakeEngine()
    engine.info = dataclasses.replace(engine.info, **info_changes)
    if info_changes:  # the second rule needs fewer cases
        budgets_of = lambda size: (1, 3, 4, 7, 12) if size == SWEPT_SIZE else (4, 9)  # noqa: E731
    else:
        budgets_of = lambda size: range(1, 41) if size == SWEPT_SIZE else SAMPLED_BUDGETS  # noqa: E731
    images = {size: data_url(gradient(*size)) for size in SIZES}
    checked = 0
    with client_for(engine) as client:
        for (width, height), fields in cases(budgets_of):
            tiles, pixels = planned_by_chat(client, engine, images[width, height], **fields)
            plan = preview(client, width, height, **fields)
            context = (width, height, fields, plan)
            assert plan["tiles"] == tiles, context
            has_thumbnail = tiles > plan["cols"] * plan["rows"]
            assert plan["thumbnail"] == has_thumbnail, context
            grid_tiles = tiles - has_thumbnail
            assert (plan["cols"], plan["rows"]) == grid_from_tiles(pixels, grid_tiles), context
            checked += 1
    assert checked >= (100 if not info_changes else 40)


def test_preview_budget_resolution_and_tokens():
    engine = FakeEngine()
    with client_for(engine) as client:
        assert preview(client, 800, 600, detail="low")["max_tiles"] == 1
        assert preview(client, 800, 600)["max_tiles"] == DEFAULT_BUDGET
        assert preview(client, 800, 600, max_tiles=17)["max_tiles"] == 17
        plan = preview(client, 1920, 1080, max_tiles=12)
        # <img>, 256 context tokens per tile, </img> (checked against the real tokenizer in test_playground.py).
        assert plan["image_tokens"] == 256 * plan["tiles"] + 2
        assert plan["max_tiles_limit"] == 40


def test_preview_refuses_as_chat_does():
    engine = FakeEngine()
    settings = Settings(model="/models/fake", api_keys=[KEY], max_tiles_per_image=8, default_max_tiles=6)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as client:
        content = [image_part(data_url(gradient(64, 64)), max_tiles=9)]
        body = {"model": FAKE_MODEL, "messages": [{"role": "user", "content": content}]}
        chat = client.post("/v1/chat/completions", json=body, headers=AUTH)
        over = client.get("/v1/internvl/tiling", params={"width": 64, "height": 64, "max_tiles": 9}, headers=AUTH)
        assert over.status_code == chat.status_code == 400
        assert over.json()["error"]["code"] == chat.json()["error"]["code"] == "too_many_tiles"
        assert over.json()["error"]["param"] == "max_tiles"
        assert "limit of 8" in over.json()["error"]["message"]
        bad_queries = [
            {"width": 0, "height": 5},
            {"width": 5, "height": 5, "max_tiles": 41},
            {"width": 5, "height": 5, "detail": "huge"},
            {"width": 5},
        ]
        for query in bad_queries:
            response = client.get("/v1/internvl/tiling", params=query, headers=AUTH)
            assert response.status_code in (400, 422), query
            assert response.json()["error"]["type"] == "invalid_request_error", query
        assert client.get("/v1/internvl/tiling", params={"width": 5, "height": 5}).status_code == 401
        engine.alive = False
        assert client.get("/v1/internvl/tiling", params={"width": 5, "height": 5}, headers=AUTH).status_code == 503


def test_page_and_assets_are_public_and_shipped_in_the_package():
    from importlib import resources

    engine = FakeEngine()
    with client_for(engine) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        shipped = resources.files("server") / "static"
        assert page.content == (shipped / "index.html").read_bytes()
        for asset, kind in (("playground.js", "text/javascript"), ("playground.css", "text/css")):
            response = client.get(f"/playground/{asset}")
            assert response.status_code == 200 and response.headers["content-type"].startswith(kind)
            assert response.content == (shipped / asset).read_bytes()
            assert f"/playground/{asset}" in page.text
        # Nothing from elsewhere: every src/href of the page is local.
        assert "http://" not in page.text and "https://" not in page.text
        for path in ("/playground/nope.js", "/playground/..%2Fapp.py", "/playground/index.html.bak", "/playground/"):
            response = client.get(path)
            assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", path
        # API routes still want the key; the docs stay where they were.
        assert client.get("/v1/models").status_code == 401
        assert client.get("/docs").status_code == 200
