"""`internvl-serve`: command-line flags onto `Settings`, then uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from .settings import Settings

_NOT_GIVEN = argparse.SUPPRESS  # unset flags fall back to INTERNVL_* env vars, then defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="internvl-serve",
        description="OpenAI-compatible server for InternVL2 models on vLLM. Every flag can also be set "
        "through an environment variable: INTERNVL_<FLAG> (dashes as underscores), e.g. INTERNVL_PORT=9000.",
        argument_default=_NOT_GIVEN,
    )
    server = parser.add_argument_group("model and server")
    server.add_argument("--model", help="HF hub id or local checkpoint directory. Without it, a tiny RANDOM-weight "
                        "demo InternVL2-1B is generated once (cached) and served on the CPU.")
    server.add_argument("--served-model-name", help="Model id clients must send (default: the --model value).")
    server.add_argument("--host", help="Interface to listen on (default 127.0.0.1).")
    server.add_argument("--port", type=int, help="TCP port (default 8000).")
    server.add_argument("--checkpoint-cache-dir", help="Where the demo checkpoint is cached (default ~/.cache/internvl-serve).")
    server.add_argument("--log-level", choices=["debug", "info", "warning", "error"], help="Log verbosity (default info).")
    server.add_argument("--drain-timeout", type=float, help="Seconds in-flight requests may run after SIGTERM (default 30).")

    engine = parser.add_argument_group("vLLM engine (vLLM's own flag names)")
    engine.add_argument("--tensor-parallel-size", type=int, help="GPUs to shard each layer over (default 1).")
    engine.add_argument("--pipeline-parallel-size", type=int, help="Pipeline stages (default 1).")
    engine.add_argument("--distributed-executor-backend", help="vLLM executor backend: mp, ray, uni, external_launcher.")
    engine.add_argument("--dtype", help="Weight/activation dtype: auto, float16, bfloat16, float32 (default auto).")
    engine.add_argument("--max-model-len", type=int, help="Context length (default: the model's).")
    engine.add_argument("--gpu-memory-utilization", type=float, help="Fraction of GPU memory vLLM may use (default 0.9).")
    engine.add_argument("--max-num-seqs", type=int, help="Most sequences batched per step.")
    engine.add_argument("--quantization", help="vLLM quantization method, e.g. awq, gptq, fp8.")
    engine.add_argument("--enforce-eager", action="store_true", help="Disable CUDA graphs / compilation.")
    engine.add_argument("--seed", type=int, help="Engine random seed (default 0).")
    engine.add_argument("--structured-outputs-disable-any-whitespace", action="store_true",
                        help="Generate JSON (response_format) without free whitespace; engine-wide in vLLM.")

    security = parser.add_argument_group("security")
    security.add_argument("--api-key", dest="api_keys", action="append", help="Accepted bearer key; repeat for "
                          "several (env: INTERNVL_API_KEYS=a,b). Without any, no key is needed.")
    security.add_argument("--metrics-require-key", action="store_true", help="Require an API key for /metrics too.")

    limits = parser.add_argument_group("limits")
    limits.add_argument("--max-images-per-request", type=int, help="Images in one request (default 8).")
    limits.add_argument("--max-videos-per-request", type=int, help="Videos in one request (default 1).")
    limits.add_argument("--max-frames-per-video", type=int, help="Frames one video may have (default 32).")
    limits.add_argument("--default-num-frames", type=int, help="Frames sampled when a request names none (default 8).")
    limits.add_argument("--max-tiles-per-image", type=int, help="Largest tile budget a request may ask for (default 12, at most 40).")
    limits.add_argument("--default-max-tiles", type=int, help="Tile budget when a request names none (default 12).")
    limits.add_argument("--max-image-pixels", type=int, help="Largest decoded image, in pixels (default 40M).")
    limits.add_argument("--max-image-aspect-ratio", type=float, help="Longest over shortest image side; "
                        "flatter or taller images get a 400 (default 200).")
    limits.add_argument("--max-request-bytes", type=int, help="Largest request body (default 64 MiB).")
    limits.add_argument("--max-media-bytes", type=int, help="Largest fetched image or video (default 32 MiB).")
    limits.add_argument("--max-concurrent-requests", type=int, help="Requests at once; more get 429 (default 64).")
    limits.add_argument("--max-n", type=int, help="Largest `n` (choices per request) (default 8).")
    limits.add_argument("--preprocess-workers", type=int, help="Threads decoding and sampling media (default 4).")

    media = parser.add_argument_group("media fetching")
    media.add_argument("--media-connect-timeout", type=float, help="Seconds to connect to a media host (default 5).")
    media.add_argument("--media-read-timeout", type=float, help="Seconds between received bytes (default 30).")
    media.add_argument("--media-max-redirects", type=int, help="Redirects followed, each re-checked (default 3).")
    media.add_argument("--media-allowed-domain", dest="media_allowed_domains", action="append",
                       help="Only fetch from this host or its subdomains; repeatable. Default: any public host.")
    media.add_argument("--media-allowed-network", dest="media_allowed_networks", action="append",
                       help="CIDR exempt from the private/loopback ban (SSRF protection), e.g. 10.0.0.0/8; repeatable.")
    media.add_argument("--media-local-dir", help="Directory file:// URLs may read from (default: file:// disabled).")
    return parser


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    try:
        return Settings(**args)
    except ValidationError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from_args(argv)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # SIGTERM: stop accepting, let in-flight requests finish up to this long.
        timeout_graceful_shutdown=settings.drain_timeout,
    )
    server = _server(config)
    app.state.stop_serving = server.stop
    server.run()
    if not server.started:
        return 3  # as uvicorn.run: the engine or the socket failed to start
    return app.state.exit_code


def _server(config):
    """uvicorn's server, but the process ends with the app's exit status rather than by its signal.

    uvicorn re-raises SIGTERM after a graceful shutdown, so the process would die
    "killed by SIGTERM" even when every request drained; here a drained SIGTERM
    exits 0 and an engine death exits non-zero (`app.state.exit_code`).
    """
    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                try:
                    yield
                finally:
                    self._captured_signals.clear()  # shut down already: do not die by the signal

        def stop(self) -> None:
            self.should_exit = True

    return Server(config)


if __name__ == "__main__":
    sys.exit(main())
