"""GET /metrics in the Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..auth import require_metrics_key

router = APIRouter(tags=["metrics"])


@router.get("/metrics", dependencies=[Depends(require_metrics_key)], summary="Prometheus metrics")
async def metrics(request: Request) -> Response:
    state = request.app.state
    if state.engine is not None:
        # Scheduler counts arrive with engine steps; copy the latest at scrape time.
        state.metrics.running.set(state.engine.queue.running)
        state.metrics.waiting.set(state.engine.queue.waiting)
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
