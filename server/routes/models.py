"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from openai.types import Model

from ..auth import require_api_key
from ..errors import EngineUnavailable, ModelNotFound

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])


def _served_model(request: Request) -> Model:
    engine = request.app.state.engine
    if engine is None:
        raise EngineUnavailable()
    info = engine.info
    return Model(id=info.name, object="model", created=info.created, owned_by="internvl-serve")


@router.get("/v1/models", summary="List the served model")
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_served_model(request).model_dump(mode="json")]}


@router.get("/v1/models/{model_id:path}", summary="Describe the served model")
async def get_model(model_id: str, request: Request) -> dict:
    model = _served_model(request)
    if model_id != model.id:
        raise ModelNotFound(model_id)
    return model.model_dump(mode="json")
