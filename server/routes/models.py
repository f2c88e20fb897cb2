"""GET /v1/models: the one model this server serves."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from openai.types import Model

from ..auth import require_api_key
from ..errors import EngineUnavailable, ModelNotFound, documented_errors

router = APIRouter(tags=["models"], dependencies=[Depends(require_api_key)])
_ERRORS = {401: "Missing or wrong API key", 503: "Engine not available"}


def _served_model(request: Request) -> Model:
    engine = request.app.state.engine
    if engine is None:
        raise EngineUnavailable()
    info = engine.info
    # max_model_len: the longest prompt plus answer, in tokens (vLLM's model card has it too).
    return Model(
        id=info.name, object="model", created=info.created, owned_by="internvl-serve", max_model_len=info.max_model_len
    )


@router.get(
    "/v1/models", summary="List the served model (with its `max_model_len`)", responses=documented_errors(_ERRORS)
)
async def list_models(request: Request) -> dict:
    return {"object": "list", "data": [_served_model(request).model_dump(mode="json")]}


@router.get(
    "/v1/models/{model_id:path}",
    summary="Describe the served model (with its `max_model_len`)",
    responses=documented_errors({**_ERRORS, 404: "Unknown model"}),
)
async def get_model(model_id: str, request: Request) -> dict:
    model = _served_model(request)
    if model_id != model.id:
        raise ModelNotFound(model_id)
    return model.model_dump(mode="json")
