"""`internvl-serve`: the server's flags and every vLLM engine flag, onto `Settings`, then uvicorn.

vLLM's own `AsyncEngineArgs.add_cli_args` declares the engine flags, so each keeps
vLLM's name, type, choices and help; the server's flags (and its `--model`,
`--served-model-name`, `--log-level`, which replace vLLM's) are added on top.
Every flag can also come from `INTERNVL_<FLAG>`: the server's through
pydantic-settings, the engine's by being put before the command line's own flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import ValidationError

from .request_ids import LOG_FORMAT, RequestIdLogFilter
from .settings import Settings

ENV_PREFIX = "INTERNVL_"
_NOT_GIVEN = argparse.SUPPRESS  # unset server flags fall back to INTERNVL_* env vars, then Settings' defaults
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

DESCRIPTION = """OpenAI-compatible server for InternVL2 models on vLLM.

Every flag can also be set through an environment variable INTERNVL_<FLAG> (dashes as underscores), \
e.g. INTERNVL_PORT=9000, INTERNVL_MAX_NUM_BATCHED_TOKENS=8192, INTERNVL_ENABLE_PREFIX_CACHING=false; \
a flag on the command line beats the variable. vLLM's engine flags keep vLLM's names and meaning.

--help=<group> lists one group's flags (e.g. --help=server, --help=limits, --help=ParallelConfig), \
--help=<word> the flags whose name contains it (--help=tensor), --help=all every flag.
"""


def build_parser() -> argparse.ArgumentParser:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    # "resolve": the server's --model, --served-model-name and --log-level replace vLLM's.
    parser = FlexibleArgumentParser(
        prog="internvl-serve",
        usage="internvl-serve [--model MODEL] [--port PORT] [vLLM engine flags] [server flags]",
        description=DESCRIPTION,
        conflict_handler="resolve",
    )
    AsyncEngineArgs.add_cli_args(parser)
    vllm_groups = list(parser._action_groups)
    _add_server_flags(parser)
    # The server's groups first in --help, before vLLM's config classes.
    own_groups = [group for group in parser._action_groups if group not in vllm_groups]
    parser._action_groups = vllm_groups[:2] + own_groups + vllm_groups[2:]
    parser.server_dests = {action.dest for group in own_groups for action in group._group_actions}
    return parser


def _add_server_flags(parser: argparse.ArgumentParser) -> None:
    def group(title: str, description: str):
        added = parser.add_argument_group(title, description)
        # Unset server flags stay absent, so Settings can read INTERNVL_* and its defaults.
        return _Defaulting(added)

    server = group("server", "The model to serve, its public name, and the HTTP server.")
    server.add_argument("--model", help="HF hub id or local checkpoint directory. Without it, a tiny RANDOM-weight "
                        "demo InternVL2-1B is generated once (cached) and served on the CPU.")
    server.add_argument("--served-model-name", help="Model id clients must send (default: the --model value).")
    server.add_argument("--host", help="Interface to listen on (default 127.0.0.1).")
    server.add_argument("--port", type=int, help="TCP port (default 8000).")
    server.add_argument("--checkpoint-cache-dir", help="Where the demo checkpoint is cached (default ~/.cache/internvl-serve).")
    server.add_argument("--log-level", choices=["debug", "info", "warning", "error"],
                        help="Log verbosity of the server and of vLLM (default info).")
    server.add_argument("--drain-timeout", type=float, help="Seconds in-flight requests may run after SIGTERM (default 30).")
    server.add_argument("--structured-outputs-disable-any-whitespace", action="store_true",
                        help="Generate JSON (response_format) without free whitespace; engine-wide in vLLM "
                        "(sets --structured-outputs-config.disable_any_whitespace, with the xgrammar backend "
                        "unless one is named).")

    security = group("security", "API keys.")
    security.add_argument("--api-key", dest="api_keys", action="append", help="Accepted bearer key; repeat for "
                          "several (env: INTERNVL_API_KEYS=a,b). Without any, no key is needed.")
    security.add_argument("--metrics-require-key", action="store_true", help="Require an API key for /metrics too.")

    limits = group("limits", "What one request may ask for, and how many run at once.")
    limits.add_argument("--max-images-per-request", type=int, help="Images in one request (default 8). Also "
                        "vLLM's --limit-mm-per-prompt image count; give one of the two, or equal values.")
    limits.add_argument("--max-videos-per-request", type=int, help="Videos in one request (default 1). Also "
                        "vLLM's --limit-mm-per-prompt video count.")
    limits.add_argument("--max-frames-per-video", type=int, help="Frames one video may have (default 32).")
    limits.add_argument("--default-num-frames", type=int, help="Frames sampled when a request names none (default 8).")
    limits.add_argument("--max-tiles-per-image", type=int, help="Largest tile budget a request may ask for "
                        "(default 12, at most 40).")
    limits.add_argument("--default-max-tiles", type=int, help="Tile budget when a request names none (default 12).")
    limits.add_argument("--max-image-pixels", type=int, help="Largest decoded image, in pixels (default 40M).")
    limits.add_argument("--max-image-aspect-ratio", type=float, help="Longest over shortest image side; "
                        "flatter or taller images get a 400 (default 200).")
    limits.add_argument("--max-request-bytes", type=int, help="Largest request body (default 64 MiB).")
    limits.add_argument("--max-media-bytes", type=int, help="Largest fetched image or video (default 32 MiB).")
    limits.add_argument("--max-media-bytes-per-request", type=int,
                        help="All fetched media of one request together (default 128 MiB).")
    limits.add_argument("--max-video-total-frames", type=int,
                        help="Most frames a video may hold; longer ones get a 400 (default 36000).")
    limits.add_argument("--max-video-duration", type=float, help="Longest video in seconds (default 3600).")
    limits.add_argument("--max-concurrent-requests", type=int, help="Requests at once; more get 429 (default 64).")
    limits.add_argument("--max-n", type=int, help="Largest `n` (choices per request) (default 8).")
    limits.add_argument("--preprocess-workers", type=int, help="Threads decoding and sampling media (default 4).")
    limits.add_argument("--tile-cache-mib", type=int,
                        help="MiB of tiled images kept by content, so that a resent image is not decoded and tiled "
                        "again (default 512; 0 turns it off).")
    limits.add_argument("--fast-jpeg-decode", action="store_true",
                        help="Decode a JPEG far larger than its tile grid at 1/2, 1/4 or 1/8 scale in the DCT "
                        "domain: faster on large photos, pixels a little off the exact decode "
                        "(benchmarks/bench_jpeg_draft.py); default off, exact.")
    limits.add_argument("--tile-embedding-cache-mib", type=int,
                        help="MiB of encoded tiles the model keeps, found by their pixels, so that a tile seen "
                        "again (resent history, blank document tiles) is not encoded again; allocated on the "
                        "model's device at load, per rank (default 256; 0 turns it off).")

    media = group("media", "Fetching images and videos: timeouts, SSRF protection, local files.")
    media.add_argument("--media-connect-timeout", type=float, help="Seconds to connect to a media host (default 5).")
    media.add_argument("--media-read-timeout", type=float, help="Seconds between received bytes (default 30).")
    media.add_argument("--media-max-redirects", type=int, help="Redirects followed, each re-checked (default 3).")
    media.add_argument("--media-fetch-timeout", type=float,
                       help="Seconds for one fetch, redirects included, to the last byte (default 30).")
    media.add_argument("--media-request-timeout", type=float,
                       help="Seconds to fetch and decode all media of one request (default 60).")
    media.add_argument("--media-fetches-per-request", type=int, help="Fetches one request runs at once (default 4).")
    media.add_argument("--media-fetches-per-host", type=int,
                       help="Fetches from one host at once, all requests together (default 8).")
    media.add_argument("--video-decode-timeout", type=float, help="Seconds to decode one video (default 30).")
    media.add_argument("--media-allowed-domain", dest="media_allowed_domains", action="append",
                       help="Only fetch from this host or its subdomains; repeatable. Default: any public host.")
    media.add_argument("--media-allowed-network", dest="media_allowed_networks", action="append",
                       help="CIDR exempt from the private/loopback ban (SSRF protection), e.g. 10.0.0.0/8; repeatable.")
    media.add_argument("--media-local-dir", help="Directory file:// URLs may read from (default: file:// disabled).")


class _Defaulting:
    """An argument group whose flags default to "absent" (argparse.SUPPRESS)."""

    def __init__(self, group) -> None:
        self._group = group

    def add_argument(self, *names: str, **kwargs: Any) -> argparse.Action:
        kwargs.setdefault("default", _NOT_GIVEN)
        return self._group.add_argument(*names, **kwargs)


def settings_from_args(argv: Sequence[str] | None = None) -> Settings:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        from_env = engine_flags_from_env(parser, os.environ, argv)
    except ValueError as error:
        parser.error(str(error))
    args = vars(parser.parse_args(from_env + argv))
    own = {dest: args.pop(dest) for dest in parser.server_dests if dest in args}
    # Only what differs from vLLM's defaults, so Settings says what was asked for.
    engine = {dest: value for dest, value in args.items() if _differs(value, parser.get_default(dest))}
    try:
        return Settings(**own, engine_args=engine)
    except ValidationError as error:
        parser.error(str(error))
        raise  # unreachable: parser.error exits


def engine_flags_from_env(parser: argparse.ArgumentParser, environ: Mapping[str, str], argv: Sequence[str]) -> list[str]:
    """Command-line tokens for the vLLM flags set as INTERNVL_<FLAG> and not on the command line."""
    given = _actions_in(parser, argv)
    tokens: list[str] = []
    for action in parser._actions:
        if not action.option_strings or action.dest in parser.server_dests or action.dest == "help":
            continue
        flag = next((name for name in action.option_strings if name.startswith("--")), None)
        if flag is None or action in given:
            continue
        variable = ENV_PREFIX + flag[2:].replace("-", "_").upper()
        value = environ.get(variable)
        if value is not None:
            tokens += _env_tokens(action, flag, variable, value)
    return tokens


def _env_tokens(action: argparse.Action, flag: str, variable: str, value: str) -> list[str]:
    if action.nargs == 0:  # a switch
        word = value.strip().lower()
        if word not in _TRUE | _FALSE:
            raise ValueError(f"{variable}={value!r}: expected true or false")
        on = word in _TRUE
        if isinstance(action, argparse.BooleanOptionalAction):
            return [flag if on else "--no-" + flag[2:]]
        if isinstance(action, argparse._StoreFalseAction):
            on = not on
        return [flag] if on else []
    if action.nargs in ("+", "*") or isinstance(action.nargs, int):
        return [flag, *[item for item in re.split(r"[,\s]+", value.strip()) if item]]
    return [f"{flag}={value}"]


def _actions_in(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[argparse.Action]:
    """The actions whose flags appear in argv, in any of the spellings FlexibleArgumentParser accepts."""
    found = set()
    for token in argv:
        if not token.startswith("-"):
            continue
        name = token.split("=", 1)[0]
        if name.startswith("--"):
            name = "--" + name[2:].split(".", 1)[0].replace("_", "-")
        elif name.startswith("-O"):
            name = "--optimization-level"
        else:
            name = name.split(".", 1)[0]
        action = parser._option_string_actions.get(name)
        if action is not None:
            found.add(action)
    return found


def _differs(value: Any, default: Any) -> bool:
    try:
        return bool(value != default)
    except Exception:  # values without a plain comparison (arrays): keep them
        return True


def main(argv: Sequence[str] | None = None) -> int:
    settings = settings_from_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    # On the handler, not a logger: records from every logger (vLLM's too) get the id.
    for handler in logging.getLogger().handlers:
        handler.addFilter(RequestIdLogFilter())
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
