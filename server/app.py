"""The FastAPI application: wiring, lifespan and per-app state (no module globals)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .admission import Admission
from .auth import ApiKeys
from .engine import Engine, VLLMEngine
from .errors import install_error_handlers
from .limits import BodySizeLimit, ConcurrencyLimit
from .media import MediaFetcher
from .metrics import Metrics
from .observe import RequestMetrics
from .request_ids import install as install_request_ids
from .routes import chat, health, metrics, models, playground, tiling, tokenize
from .settings import Settings
from .tile_cache import TileCache

logger = logging.getLogger(__name__)

# How often the server checks that its engine process is still alive.
ENGINE_WATCH_INTERVAL_S = 1.0
# Exit status when the engine died under the server: an orchestrator restarts it.
ENGINE_DEAD_EXIT_CODE = 1

DESCRIPTION = """OpenAI-compatible chat completions for the InternVL2 family, served by vLLM.

Images: `image_url` parts (http(s), `data:` base64, or `file://` under the configured
directory), with `detail` (`low` = one tile) and the extension `max_tiles`.
Videos: `video_url` parts (a video file; `num_frames`, `start`, `end`) or a list of
frames: `{"type": "video_frames", "video_frames": {"urls": [...]}}`.
Grounded answers carry `message.grounding`: boxes in pixels of the last image.
A playground page is served at `/`; `GET /v1/internvl/tiling` previews an image's tile grid.
"""


def create_app(settings: Settings, engine: Engine | None = None, *, fetcher: MediaFetcher | None = None) -> FastAPI:
    """The app; with `engine` given it is used as is (tests), else vLLM starts in the lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.executor = ThreadPoolExecutor(settings.preprocess_workers, thread_name_prefix="preprocess")
        state.fetcher = fetcher or MediaFetcher(settings)
        owns_engine = engine is None
        watchdog = None
        try:
            if owns_engine:
                state.engine = await VLLMEngine.start(settings)
                watchdog = asyncio.create_task(_watch_engine(app))
            logger.info("serving %s", state.engine.info.name)
            yield
        finally:
            if watchdog is not None:
                watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watchdog
            # uvicorn has already drained in-flight requests (up to drain_timeout).
            if owns_engine and state.engine is not None:
                await state.engine.shutdown()
                state.engine = None
            await state.fetcher.aclose()
            state.executor.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="internvl-serve",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.engine = engine
    # The process's exit status, and how to stop serving; cli.main sets the latter.
    app.state.exit_code = 0
    app.state.stop_serving = None
    app.state.metrics = Metrics()
    app.state.limiter = ConcurrencyLimit(settings.max_concurrent_requests)
    app.state.api_keys = ApiKeys(settings.api_keys)
    app.state.tile_cache = TileCache(settings.tile_cache_mib * 2**20)

    install_error_handlers(app)
    for module in (chat, tokenize, tiling, models, health, metrics, playground):
        app.include_router(module.router)
    # Added last = outermost. Admission runs before the body is read (the size
    # limit may read a chunked one); the request metrics also see 401/413/429s.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    app.add_middleware(
        Admission,
        keys=app.state.api_keys,
        limiter=app.state.limiter,
        routes=lambda: app.router.routes,
        metrics_require_key=settings.metrics_require_key,
    )
    app.add_middleware(RequestMetrics, metrics=app.state.metrics)
    # Outermost of all: every response, a 401/413/429/500 included, carries X-Request-Id.
    install_request_ids(app)
    return app


async def _watch_engine(app: FastAPI) -> None:
    """Once the engine is dead (its process killed or crashed), stop serving and exit non-zero.

    /health and new requests answer 503 from the moment vLLM notices; the process
    then shuts down so that an orchestrator restarts it, rather than lingering unable to serve.
    """
    state = app.state
    while state.engine is not None and state.engine.is_alive():
        await asyncio.sleep(ENGINE_WATCH_INTERVAL_S)
    logger.critical("the inference engine has died: shutting down (exit status %d)", ENGINE_DEAD_EXIT_CODE)
    state.exit_code = ENGINE_DEAD_EXIT_CODE
    if state.stop_serving is not None:
        state.stop_serving()
