"""GET /v1/internvl/tiling: the tile grid an image of a given size gets in a chat request.

The playground draws it over each image before sending; it is computed by the
chat's own planning and tiling rule, so the preview is the grid the server uses.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from preprocessing import MAX_TILES, TOKENS_PER_TILE, find_grid, num_tiles

from ..auth import require_api_key
from ..errors import BadRequest, documented_errors
from ..pipeline import plan_chat, serving_engine, tile_rule
from ..schemas import ChatPrompt

router = APIRouter(tags=["tiling"])

# An image's `<img>` and `</img>` around its context tokens.
_IMAGE_DELIMITER_TOKENS = 2


class TilingPlan(BaseModel):
    width: int
    height: int
    max_tiles: int  # the budget the server resolved (1 for detail=low without max_tiles)
    cols: int
    rows: int
    thumbnail: bool
    tiles: int  # cols * rows, plus the thumbnail when there is one
    image_tokens: int  # in the prompt: <img>, 256 per tile, </img>
    max_tiles_limit: int


@router.get(
    "/v1/internvl/tiling",
    dependencies=[Depends(require_api_key)],
    response_model=TilingPlan,
    summary="The tile grid an image of this size gets in a chat request (the playground's preview)",
    responses=documented_errors({
        400: "Invalid size or budget, or a budget over the server's limit",
        401: "Missing or wrong API key",
        503: "Engine not available",
    }),
)
async def tiling(
    request: Request,
    width: int = Query(ge=1, le=1_000_000),
    height: int = Query(ge=1, le=1_000_000),
    max_tiles: int | None = Query(None, ge=1, le=MAX_TILES, description="The image part's `max_tiles`"),
    detail: Literal["auto", "low", "high"] = Query("auto", description="The image part's `detail`"),
) -> TilingPlan:
    state = request.app.state
    engine = serving_engine(state, None)
    budget = _planned_budget(state, engine, max_tiles, detail)
    rule = tile_rule(engine)
    cols, rows = find_grid(width, height, **rule.bounds(budget))
    tiles = num_tiles(width, height, use_thumbnail=rule.use_thumbnail, **rule.bounds(budget))
    return TilingPlan(
        width=width,
        height=height,
        max_tiles=budget,
        cols=cols,
        rows=rows,
        thumbnail=tiles > cols * rows,
        tiles=tiles,
        image_tokens=tiles * TOKENS_PER_TILE + _IMAGE_DELIMITER_TOKENS,
        max_tiles_limit=state.settings.max_tiles_per_image,
    )


def _planned_budget(state, engine, max_tiles: int | None, detail: str) -> int:
    """The budget chat planning gives this image as the current turn's only image (the very same code)."""
    image_url = {"url": "data:,", "detail": detail}
    if max_tiles is not None:
        image_url["max_tiles"] = max_tiles
    prompt = ChatPrompt(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": image_url}]}])
    try:
        return plan_chat(state, engine, prompt).images[0].max_tiles
    except BadRequest as error:
        # Planning names the message part; here the query parameter is what was wrong.
        raise BadRequest(error.message, code=error.code, param="max_tiles") from None
