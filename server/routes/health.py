"""GET /health: 200 while the engine is alive, 503 otherwise. Never needs a key."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

router = APIRouter(tags=["health"])


@router.get("/health", summary="Engine liveness")
async def health(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    if engine is None or not engine.is_alive():
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})
