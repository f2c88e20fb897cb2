"""`internvl-batch`: command line -> a run -> a summary and an exit status."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import httpx

from .inputs import ParsedInput, read_input
from .output import OutputError
from .retry import RetryPolicy
from .runner import RunConfig, run
from .simple import PromptOptions, build_requests

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
EXIT_OK, EXIT_FAILURES, EXIT_UNUSABLE, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="internvl-batch",
        description="Run an OpenAI Batch API JSONL file, or one prompt over a folder of images/videos, against an "
        "OpenAI-compatible server (such as internvl-serve). Results are appended to the output as they arrive; "
        "rerun the same command after an interruption and it resumes, writing every custom_id exactly once.",
        epilog="Exit status: 0 all succeeded; 1 some requests failed or input lines were bad (see the output's "
        "error lines and the messages above; --retry-failed reruns failed requests); boxes that could not be drawn "
        "do not change it; 2 nothing could run (bad arguments, unreadable input, output in use).",
    )
    parser.add_argument("input", nargs="?", type=Path, metavar="INPUT.jsonl",
                        help="Batch API input: one {custom_id, method, url, body} object per line.")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUTPUT.jsonl",
                        help="Batch API output, appended to; an existing file is resumed.")

    server = parser.add_argument_group("server")
    server.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL,
                        help=f"API base URL (env OPENAI_BASE_URL; default {DEFAULT_BASE_URL}).")
    server.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"),
                        help="Bearer key (env OPENAI_API_KEY; default none).")
    server.add_argument("--concurrency", type=int, default=8, help="Requests in flight at once (default 8).")
    server.add_argument("--timeout", type=float, default=600.0, help="Seconds one attempt may take (default 600).")
    server.add_argument("--connect-timeout", type=float, default=10.0, help="Seconds to connect (default 10).")
    server.add_argument("--max-retries", type=int, default=8,
                        help="Retries per request on 408/409/429/5xx, timeouts and connection errors (default 8).")
    server.add_argument("--retry-base-delay", type=float, default=0.5,
                        help="First backoff ceiling in seconds; doubles per retry, with full jitter (default 0.5).")
    server.add_argument("--retry-max-delay", type=float, default=60.0,
                        help="Longest wait between attempts, Retry-After included (default 60).")

    simple = parser.add_argument_group("simple mode (instead of INPUT.jsonl)")
    simple.add_argument("--images", "--media", "--videos", dest="media", action="append", metavar="DIR_OR_GLOB",
                        help="Folder (searched recursively) or glob of images and/or videos; repeatable. "
                        "Each file becomes one request whose custom_id is its path as given.")
    simple.add_argument("--prompt", help="Text sent with every file (required in simple mode).")
    simple.add_argument("--system", help="System message (default: the model's own).")

    options = parser.add_argument_group("request options (in JSONL mode: defaults for bodies that lack them)")
    options.add_argument("--model", help="Model id (default: the first one the server lists).")
    options.add_argument("--max-tokens", type=int, help="Most tokens to generate.")
    options.add_argument("--temperature", type=float, help="Sampling temperature.")
    options.add_argument("--max-tiles", type=int, help="Tile budget per image (InternVL extension).")
    options.add_argument("--num-frames", type=int, help="Frames sampled per video (InternVL extension).")

    run_group = parser.add_argument_group("run")
    run_group.add_argument("--media-root", type=Path,
                           help="Folder relative local media paths are read from (default: INPUT's folder).")
    run_group.add_argument("--retry-failed", action="store_true",
                           help="Also send again the custom_ids whose line in OUTPUT is an error or a non-2xx "
                           "response, and replace those lines with the new results (success or new error); "
                           "successful lines stay as they are. Works in both modes and resumes like any run. "
                           "The new lines wait in OUTPUT.retry-journal until every retry is in, then OUTPUT is "
                           "rewritten by one atomic rename: an interruption leaves the old OUTPUT, and the same "
                           "command carries on from the journal.")
    run_group.add_argument("--draw-boxes", type=Path, metavar="DIR",
                           help="After the run, save every grounded answer's image with its boxes and labels drawn "
                           "as DIR/<custom_id, sanitised>-<hash>.png (local files and data: URLs; http(s) images are "
                           "not fetched). Images that cannot be drawn are listed in the summary, never fail the run.")
    run_group.add_argument("--summary-json", type=Path, help="Also write the closing summary here as JSON.")
    run_group.add_argument("--no-progress", action="store_true", help="No progress bar.")
    run_group.add_argument("-v", "--verbose", action="store_true", help="Log every retry.")
    return parser


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if (args.input is None) == (args.media is None):
        parser.error("give either INPUT.jsonl or --images DIR_OR_GLOB (simple mode), not both or neither")
    if args.media is not None and not args.prompt:
        parser.error("simple mode needs --prompt")
    if args.input is not None and (args.prompt or args.system):
        parser.error("--prompt/--system belong to simple mode; in JSONL mode each body has its own messages")
    if args.concurrency < 1 or args.max_retries < 0:
        parser.error("--concurrency must be at least 1 and --max-retries at least 0")


def _with_defaults(parsed: ParsedInput, args: argparse.Namespace) -> ParsedInput:
    defaults = {"max_tokens": args.max_tokens, "temperature": args.temperature,
                "max_tiles": args.max_tiles, "num_frames": args.num_frames}
    defaults = {key: value for key, value in defaults.items() if value is not None}
    if defaults:
        parsed.requests = [replace(r, body={**defaults, **r.body}) for r in parsed.requests]
    return parsed


def load(args: argparse.Namespace) -> ParsedInput:
    if args.input is not None:
        return _with_defaults(read_input(args.input), args)
    options = PromptOptions(args.prompt, args.model, args.system, args.max_tokens, args.temperature,
                            args.max_tiles, args.num_frames)
    return ParsedInput(requests=build_requests(args.media, options))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check(parser, args)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        parsed = load(args)
    except OSError as exc:
        print(f"internvl-batch: cannot read input: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    if args.media is not None and not parsed.requests:
        print(f"internvl-batch: no images or videos found in {', '.join(args.media)}", file=sys.stderr)
        return EXIT_UNUSABLE
    media_root = args.media_root or (args.input.parent if args.input is not None else Path.cwd())
    config = RunConfig(
        base_url=args.base_url, api_key=args.api_key, concurrency=args.concurrency, timeout_s=args.timeout,
        connect_timeout_s=args.connect_timeout, media_root=media_root, model=args.model,
        policy=RetryPolicy(args.max_retries, args.retry_base_delay, args.retry_max_delay),
        progress=not args.no_progress, retry_failed=args.retry_failed, draw_boxes=args.draw_boxes,
    )
    try:
        summary = asyncio.run(run(parsed, args.output, config))
    except OutputError as exc:
        print(f"internvl-batch: {exc}", file=sys.stderr)
        return EXIT_UNUSABLE
    except (httpx.HTTPError, RuntimeError) as exc:  # asking the server for its model failed
        print(f"internvl-batch: cannot get the model from {args.base_url}: {exc}; pass --model", file=sys.stderr)
        return EXIT_UNUSABLE
    except OSError as exc:  # e.g. a full disk while rewriting the output for --retry-failed
        print(f"internvl-batch: cannot write {args.output}: {exc}; the same command resumes", file=sys.stderr)
        return EXIT_UNUSABLE
    except KeyboardInterrupt:
        # Every finished result is already on disk; the same command resumes.
        print("internvl-batch: interrupted; rerun the same command to resume"
              + (" (the output is unchanged until every retry is in)" if args.retry_failed else ""), file=sys.stderr)
        return EXIT_INTERRUPTED
    print(summary.render(), file=sys.stderr)
    if args.summary_json is not None:
        args.summary_json.write_text(json.dumps(summary.to_dict(), indent=2) + "\n")
    return EXIT_OK if summary.clean else EXIT_FAILURES
