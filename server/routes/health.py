"""GET /health (liveness, never needs a key) and GET /version."""

from __future__ import annotations

from importlib.metadata import version as installed_version

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from ..auth import require_api_key
from ..errors import EngineUnavailable, documented_errors

router = APIRouter(tags=["health"])


@router.get("/health", summary="Engine liveness")
async def health(request: Request) -> JSONResponse:
    engine = request.app.state.engine
    if engine is None or not engine.is_alive():
        return JSONResponse({"status": "unavailable"}, status_code=503)
    return JSONResponse({"status": "ok"})


# Needs the API key (when keys are set), unlike /health: software versions tell an
# attacker which known vulnerabilities to try, and a liveness probe does not need them.
@router.get(
    "/version",
    dependencies=[Depends(require_api_key)],
    summary="Server and vLLM versions",
    responses=documented_errors({401: "Missing or wrong API key", 503: "Engine not available"}),
)
async def version(request: Request) -> dict[str, str]:
    engine = request.app.state.engine
    if engine is None:
        raise EngineUnavailable()
    return {"version": installed_version("internvl-serve"), "vllm_version": engine.version}
