"""Interleaved A/B: our server against `vllm serve` with vLLM's built-in InternVL.

Both servers run at once on the same generated checkpoint and engine settings
(benchmarks/bench_e2e.py's), and take turns: in every round each workload and
concurrency level runs on one, then on the other, with the same request bodies,
and the order flips every round so that drift (thermal, other users of the
machine) falls on both. Each round gives a ratio ours / built-in; the report is
the median ratio over the rounds and its spread (min..max). A ratio without a
spread is not a result.

Workloads (every round gets new images, so no cache carries over between rounds):
- fresh:     one image of a mixed size per request (640x480 .. 1920x1080), a question.
- multiturn: conversations of several turns where the client resends the whole
             history, its image included, every turn (what stateless OpenAI clients
             do); the turns of a conversation are sent one after the other, and both
             servers get the same history (fixed assistant turns), with earlier
             images at the full budget (`history_max_tiles`) so the prompts match.
- documents: 3:4 pages of 1536x2048 (12 tiles + thumbnail), mostly white
             with text-like lines: large images, many tiles, many near-blank tiles.
- video:     8 frames of 640x480, one tile each: to ours as a video (`video_frames`,
             the official video prompt), to the built-in as the same 8 frames sent as
             images at one tile each (`mm_processor_kwargs.max_dynamic_patch = 1`); the
             built-in's InternVL has no video for non-Qwen backbones, so this is what a
             user of it does. The only workload whose bodies differ between the servers.
`--tp 2` runs both at tensor parallel 2 (the built-in's encoder mode: `--builtin-encoder-tp-mode`).

    PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python benchmarks/bench_ab.py --json benchmarks/results/ab.json
    .venv/bin/python benchmarks/bench_ab.py --urls A_URL B_URL --api-key KEY --smoke   # two running servers
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_e2e import (  # noqa: E402
    IMAGE_SIZES,
    REPO,
    SERVED_NAME,
    SYSTEM,
    Result,
    make_jpeg,
    one_request,
    percentile,
    server_commands,
    torchvision_problem,
)

BUDGET = 12
DOCUMENT_SIZE = (1536, 2048)  # a 3:4 page: a 3x4 grid + thumbnail = 13 tiles at budget 12
TURNS = ("Describe this image.", "What colours stand out?", "Anything in the corners?", "Sum it up in a word.")
ASSISTANT_TURN = "I see a picture with several regions of colour."


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def make_document(seed: int) -> bytes:
    """A page of text-like bars in paragraphs that ends part-way down, as a letter does:
    wide white margins and a blank lower part (several blank tiles)."""
    rng = np.random.default_rng(seed)
    width, height = DOCUMENT_SIZE
    page = Image.new("L", DOCUMENT_SIZE, 250)
    draw = ImageDraw.Draw(page)
    y, end = 160, int(height * rng.uniform(0.35, 0.7))
    while y < end:
        for _ in range(int(rng.integers(3, 9))):  # a paragraph
            x = 150
            while x < width - 150 - 40:
                word = int(rng.integers(20, 90))
                draw.rectangle([x, y, min(x + word, width - 150), y + 14], fill=int(rng.integers(0, 60)))
                x += word + 12
            y += 28
        y += int(rng.integers(40, 160))  # a gap, sometimes a blank tile's worth
    buffer = io.BytesIO()
    page.convert("RGB").save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def body(model: str, messages: list[dict], max_tokens: int, **extra) -> bytes:
    return json.dumps({
        "model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0,
        "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}, **extra,
    }).encode()


def image_turn(jpeg: bytes, question: str) -> dict:
    return {"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(jpeg)}},
                                        {"type": "text", "text": question}]}


def fresh(model: str, seed: int, count: int, max_tokens: int) -> list[list[bytes]]:
    sizes = [IMAGE_SIZES[i % len(IMAGE_SIZES)] for i in range(count)]
    return [[body(model, [{"role": "system", "content": SYSTEM}, image_turn(make_jpeg(*size, seed=seed + i), TURNS[0])],
                  max_tokens)] for i, size in enumerate(sizes)]


def multiturn(model: str, seed: int, count: int, max_tokens: int) -> list[list[bytes]]:
    """`count` conversations; each is a chain of requests, turn t resending turns 1..t-1."""
    chains = []
    for i in range(count):
        jpeg = make_jpeg(*IMAGE_SIZES[i % len(IMAGE_SIZES)], seed=seed + i)
        history: list[dict] = [{"role": "system", "content": SYSTEM}, image_turn(jpeg, TURNS[0])]
        chain = []
        for question in TURNS[1:]:
            chain.append(body(model, history, max_tokens, history_max_tiles=BUDGET))
            history = [*history, {"role": "assistant", "content": ASSISTANT_TURN},
                       {"role": "user", "content": question}]
        chain.append(body(model, history, max_tokens, history_max_tiles=BUDGET))
        chains.append(chain)
    return chains


def documents(model: str, seed: int, count: int, max_tokens: int) -> list[list[bytes]]:
    return [[body(model, [{"role": "system", "content": SYSTEM}, image_turn(make_document(seed + i), "Read this page.")],
                  max_tokens)] for i in range(count)]


FRAMES = 8
FRAME_SIZE = (640, 480)


def video(model: str, seed: int, count: int, max_tokens: int) -> list[list[dict[str, bytes]]]:
    """Per request, the body for a server taking video ("video") and for one taking images ("images")."""
    chains = []
    for i in range(count):
        frames = [data_url(make_jpeg(*FRAME_SIZE, seed=(seed + i) * FRAMES + f)) for f in range(FRAMES)]
        question = {"type": "text", "text": "What happens in the video?"}
        system = {"role": "system", "content": SYSTEM}
        as_video = [system, {"role": "user", "content": [
            {"type": "video_frames", "video_frames": {"urls": frames}}, question]}]
        as_images = [system, {"role": "user", "content": [
            *({"type": "image_url", "image_url": {"url": url}} for url in frames), question]}]
        chains.append([{"video": body(model, as_video, max_tokens),
                        "images": body(model, as_images, max_tokens, mm_processor_kwargs={"max_dynamic_patch": 1})}])
    return chains


WORKLOADS = {"fresh": fresh, "multiturn": multiturn, "documents": documents, "video": video}
# How each server takes a video: ours as a video, the built-in as its frames.
VIDEO_STYLE = {"ours": "video", "builtin": "images", "a": "video", "b": "video"}


def for_server(chains: list[list], name: str) -> list[list[bytes]]:
    return [[request if isinstance(request, bytes) else request[VIDEO_STYLE[name]] for request in chain]
            for chain in chains]


async def run_chains(base_url: str, headers: dict, chains: list[list[bytes]], concurrency: int) -> tuple[list[Result], float]:
    """`concurrency` clients; each takes a chain and sends its requests one after another."""
    url = f"{base_url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        queue: asyncio.Queue[list[bytes]] = asyncio.Queue()
        for chain in chains:
            queue.put_nowait(chain)
        results: list[Result] = []

        async def client_loop():
            while not queue.empty():
                for request in queue.get_nowait():
                    results.append(await one_request(client, url, request, headers))

        start = time.perf_counter()
        await asyncio.gather(*(client_loop() for _ in range(concurrency)))
        return results, time.perf_counter() - start


@dataclass
class Cell:
    """One workload at one concurrency: what each round measured on each server."""

    workload: str
    concurrency: int
    rounds: list[dict]  # per round: {server: {requests_per_s, ttft_p50_s, prompt_tokens, errors}}

    def ratios(self, a: str, b: str, key: str) -> list[float]:
        return [r[a][key] / r[b][key] for r in self.rounds if r[a][key] and r[b][key]]


def measure(base_url: str, headers: dict, chains: list[list[bytes]], concurrency: int) -> dict:
    results, wall = asyncio.run(run_chains(base_url, headers, chains, concurrency))
    good = [r for r in results if r.ok]
    return {
        "requests": len(results),
        "errors": len(results) - len(good),
        "first_error": next((r.error for r in results if not r.ok), None),
        "requests_per_s": len(good) / wall,
        "ttft_p50_s": percentile([r.ttft for r in good], 50),
        "latency_p50_s": percentile([r.latency for r in good], 50),
        "prompt_tokens": sorted({r.prompt_tokens for r in good}),
    }


def spread(values: list[float]) -> dict:
    if not values:
        return {"median": float("nan"), "min": float("nan"), "max": float("nan"), "rounds": 0}
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": len(values)}


def plan(args) -> list[tuple[str, int, int]]:
    """(workload, concurrency, units per round): units are requests, or conversations for multiturn."""
    cells = []
    for name in args.workloads:
        for concurrency in args.concurrency[name]:
            units = max(args.min_units, args.units_per_slot * concurrency)
            if name == "multiturn":
                units = max(concurrency, units // len(TURNS))
            cells.append((name, concurrency, units))
    return cells


def run(args, servers: dict[str, tuple[str, dict]]) -> dict:
    names = list(servers)
    cells = {(w, c): Cell(w, c, []) for w, c, _ in plan(args)}
    for name, (url, headers) in servers.items():  # warm both: first requests pay one-off costs
        warm = measure(url, headers, fresh(args.model_name, 10**6, 2, 4) + documents(args.model_name, 10**6, 1, 4), 1)
        if warm["errors"]:
            raise RuntimeError(f"{name} warm-up failed: {warm['first_error']}")
    for round_index in range(args.rounds):
        order = names if round_index % 2 == 0 else names[::-1]
        for workload, concurrency, units in plan(args):
            seed = 1000 * (round_index + 1) + concurrency * 100_000
            chains = WORKLOADS[workload](args.model_name, seed, units, args.max_tokens)
            measured = {}
            for name in order:
                url, headers = servers[name]
                measured[name] = measure(url, headers, for_server(chains, name), concurrency)
            cells[(workload, concurrency)].rounds.append(measured)
            a, b = (measured[n] for n in names)
            for name in names:
                if measured[name]["errors"]:
                    print(f"  {name}: {measured[name]['errors']} errors, first: {measured[name]['first_error']}", flush=True)
            print(f"round {round_index + 1} {workload:<9} c={concurrency:<3} "
                  f"req/s {a['requests_per_s']:6.2f} vs {b['requests_per_s']:6.2f} (x{a['requests_per_s'] / max(b['requests_per_s'], 1e-9):.2f})  "
                  f"TTFT p50 {a['ttft_p50_s'] * 1e3:6.0f} vs {b['ttft_p50_s'] * 1e3:6.0f} ms  "
                  f"errors {a['errors']}/{b['errors']}  load {os.getloadavg()[0]:.1f}", flush=True)
    return {"servers": names, "cells": cells}


def summarize(outcome: dict) -> list[dict]:
    a, b = outcome["servers"]
    table = []
    for cell in outcome["cells"].values():
        table.append({
            "workload": cell.workload,
            "concurrency": cell.concurrency,
            "requests_per_s_ratio": spread(cell.ratios(a, b, "requests_per_s")),
            "ttft_p50_ratio": spread(cell.ratios(a, b, "ttft_p50_s")),
            "requests_per_s": {name: statistics.median(r[name]["requests_per_s"] for r in cell.rounds) for name in (a, b)},
            "prompt_tokens": {name: sorted({t for r in cell.rounds for t in r[name]["prompt_tokens"]}) for name in (a, b)},
            "errors": {name: sum(r[name]["errors"] for r in cell.rounds) for name in (a, b)},
            "rounds": cell.rounds,
        })
    return table


def print_table(table: list[dict], a: str, b: str) -> None:
    print(f"\n{a} / {b}: median over rounds [min..max]")
    print(f"{'workload':<10} {'c':>3}  {'req/s ratio':<24} {'TTFT p50 ratio':<24} prompt tokens equal")
    for row in table:
        rps, ttft = row["requests_per_s_ratio"], row["ttft_p50_ratio"]
        same = row["prompt_tokens"][a] == row["prompt_tokens"][b]
        print(f"{row['workload']:<10} {row['concurrency']:>3}  "
              f"x{rps['median']:.2f} [{rps['min']:.2f}..{rps['max']:.2f}]{'':<8} "
              f"x{ttft['median']:.2f} [{ttft['min']:.2f}..{ttft['max']:.2f}]{'':<8} {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="checkpoint dir (default: generated tiny InternVL2-1B)")
    parser.add_argument("--urls", nargs=2, metavar=("A_URL", "B_URL"), help="two running servers instead of ours/builtin")
    parser.add_argument("--api-key", default=os.environ.get("INTERNVL_BENCH_API_KEY"), help="with --urls")
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS), choices=list(WORKLOADS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--units-per-slot", type=int, default=3, help="requests (conversations: / turns) per client")
    parser.add_argument("--min-units", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--max-num-seqs", type=int, default=32)
    parser.add_argument("--smoke", action="store_true", help="2 rounds, concurrency 2, 4 tokens (CI)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/internvl-bench-ab"))
    parser.add_argument("--tp", type=int, default=1, help="tensor parallel size of both servers")
    parser.add_argument("--builtin-encoder-tp-mode", choices=["weights", "data"], default="weights",
                        help="the built-in's --mm-encoder-tp-mode with --tp > 1 (on this CPU weights is faster)")
    parser.add_argument("--concurrency", type=int, nargs="+", help="one list of levels for every workload")
    args = parser.parse_args()
    levels = {"fresh": [1, 8, 32], "multiturn": [8], "documents": [8], "video": [8]}
    args.concurrency = {name: args.concurrency or levels[name] for name in WORKLOADS}
    if args.smoke:
        args.rounds, args.max_tokens, args.units_per_slot, args.min_units = 2, 4, 1, 2
        args.concurrency = {name: [2] for name in WORKLOADS}

    report: dict = {"settings": {"rounds": args.rounds, "max_tokens": args.max_tokens, "budget": BUDGET, "tp": args.tp,
                                 "builtin_encoder_tp_mode": args.builtin_encoder_tp_mode if args.tp > 1 else None,
                                 "concurrency": args.concurrency, "python": sys.executable,
                                 "cpus": os.cpu_count(), "loadavg_before": os.getloadavg()}}
    started = []
    try:
        if args.urls:
            headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
            servers = {"a": (args.urls[0], headers), "b": (args.urls[1], headers)}
            # The same bodies go to both: they must serve the model under one name.
            names = [httpx.get(f"{url}/v1/models", headers=headers, timeout=30).json()["data"][0]["id"] for url in args.urls]
            if names[0] != names[1]:
                sys.exit(f"the two servers serve different model names: {names}")
            args.model_name = names[0]
        else:
            if problem := torchvision_problem():
                sys.exit(f"the built-in server cannot run here: {problem}")
            from model_plugin.make_checkpoint import ensure_checkpoint

            model = args.model or ensure_checkpoint("InternVL2-1B", "tiny", REPO / ".checkpoints")
            report["settings"]["model"] = str(model)
            args.model_name = SERVED_NAME
            args.log_dir.mkdir(parents=True, exist_ok=True)
            # bench_e2e's launch settings; its --max-concurrent-requests reads `concurrency`.
            tp = ["--tensor-parallel-size", str(args.tp)] if args.tp > 1 else []
            launch = argparse.Namespace(**{
                **vars(args), "targets": ["ours", "builtin"], "concurrency": [32], "engine_flags": tp,
                "builtin_flags": [*(["--mm-encoder-tp-mode", args.builtin_encoder_tp_mode] if tp else []),
                                  # the per-request one-tile budget of the frames sent as images
                                  *(["--trust-request-mm-kwargs"] if "video" in args.workloads else [])],
                "images_per_request": FRAMES if "video" in args.workloads else 1,
                "videos_per_request": 1 if "video" in args.workloads else 0,
            })
            servers = {}
            for server in server_commands(launch, model, args.log_dir):
                print(f"[{server.name}] starting: {' '.join(server.command)}", flush=True)
                server.start()
                started.append(server)
                print(f"[{server.name}] healthy after {server.startup_s:.1f}s", flush=True)
                servers[server.name] = (server.base_url, {})
        outcome = run(args, servers)
    finally:
        for server in started:
            server.stop()
    a, b = outcome["servers"]
    table = summarize(outcome)
    print_table(table, a, b)
    report["settings"]["loadavg_after"] = os.getloadavg()
    report["table"] = table
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if any(sum(row["errors"].values()) for row in table):
        sys.exit(1)


if __name__ == "__main__":
    main()
