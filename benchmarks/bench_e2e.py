"""End to end: our server (`python -m server`) vs `vllm serve` with vLLM's built-in InternVL.

Both servers get the same generated checkpoint and the same engine settings
(fp32, eager, --max-model-len, --max-num-seqs, one image per prompt, no video,
12-tile budget, seed 0) and the same load: a fixed set of streaming chat
requests, each one base64 JPEG of a mixed size and a short question, fixed
max_tokens with ignore_eos (extra_body) and temperature 0, at every
--concurrency level. They run one after the other in this one invocation, each
started fresh and warmed with two requests first.

Reported per server and level: requests/s, output tokens/s, TTFT p50 and
request latency p50/p99 (client side, streaming), and the peak RSS of the
server's whole process tree (API server + engine core + worker; psutil, sampled
every 0.2 s) during startup and during load. Plus the single-request figure the
plugin issue asks for: one 13-tile image (640x480 -> 4x3 grid + thumbnail),
32 output tokens, p50 of --single-runs.

vLLM's built-in InternVL needs torchvision, so run this from .venv-bench with the
CPU shim on PYTHONPATH (benchmarks/setup_bench_env.sh); both servers are then
started from that same interpreter and environment. Without torchvision the
built-in server is skipped with a printed reason and ours still runs.

    PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python benchmarks/bench_e2e.py
    .venv/bin/python benchmarks/bench_e2e.py --quick --targets ours
    .venv/bin/python benchmarks/bench_e2e.py --base-url http://127.0.0.1:8000 --api-key KEY --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.server_process import wait_until_healthy  # noqa: E402

IMAGE_SIZES = ((640, 480), (1280, 720), (1920, 1080), (800, 1200))  # mixed; 13, 7, 7, 7 tiles at budget 12
SINGLE_SIZE = (640, 480)  # 4 x 3 grid + thumbnail = 13 tiles
QUESTION = "Describe this image in detail."
# An explicit system message: without one our server applies the official InternVL2
# default system prompt (~160 tokens) and vLLM's chat template applies none, so the
# prompts would differ. With it both render the same prompt length.
SYSTEM = "You are a helpful assistant."
SERVED_NAME = "bench"
STARTUP_TIMEOUT_S = 900


_BASES: dict[tuple[int, int], np.ndarray] = {}


def make_jpeg(width: int, height: int, seed: int) -> bytes:
    """A noisy gradient JPEG; every seed gives different pixels in every tile (no cache hits,
    whole-image or per tile)."""
    base = _BASES.get((width, height))
    if base is None:
        rng = np.random.default_rng(width * 7919 + height)
        y, x = np.mgrid[0:height, 0:width]
        pixels = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1)
        base = _BASES[(width, height)] = np.clip(
            pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
    rng = np.random.default_rng(seed)
    # Rolled by a per-seed offset, every region differs from other seeds' (the model's
    # store of encoded tiles would see through a change confined to one tile) ...
    pixels = np.roll(base, (int(rng.integers(height)), int(rng.integers(width))), axis=(0, 1))
    # ... and a per-request random block (top left) tells apart even equal offsets.
    pixels[:64, :64] = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def payload(model: str, jpeg: bytes, max_tokens: int) -> bytes:
    url = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
    body = {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": QUESTION},
        ]}],
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "ignore_eos": True,  # vLLM extra_body field, honoured by both servers
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    return json.dumps(body).encode()


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    latency: float = 0.0
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""


async def one_request(client: httpx.AsyncClient, url: str, body: bytes, headers: dict) -> Result:
    start = time.perf_counter()
    ttft = None
    usage = {}
    try:
        async with client.stream("POST", url, content=body,
                                 headers={"Content-Type": "application/json", **headers}) as response:
            if response.status_code != 200:
                return Result(False, error=f"HTTP {response.status_code}: {(await response.aread())[:300]!r}")
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                if ttft is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    ttft = time.perf_counter() - start
    except httpx.HTTPError as exc:
        return Result(False, error=f"{type(exc).__name__}: {exc}")
    latency = time.perf_counter() - start
    return Result(True, ttft if ttft is not None else latency, latency,
                  int(usage.get("completion_tokens", 0)), int(usage.get("prompt_tokens", 0)))


async def run_level(base_url: str, headers: dict, bodies: list[bytes], concurrency: int) -> tuple[list[Result], float]:
    url = f"{base_url}/v1/chat/completions"
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(900.0), limits=limits) as client:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        for body in bodies:
            queue.put_nowait(body)
        results: list[Result] = []

        async def worker():
            while not queue.empty():
                body = queue.get_nowait()
                results.append(await one_request(client, url, body, headers))

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return results, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def summarize(results: list[Result], wall: float, concurrency: int) -> dict:
    good = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "wall_s": wall,
        "requests_per_s": len(good) / wall,
        "output_tokens_per_s": sum(r.output_tokens for r in good) / wall,
        "ttft_p50_s": percentile([r.ttft for r in good], 50),
        "latency_p50_s": percentile([r.latency for r in good], 50),
        "latency_p99_s": percentile([r.latency for r in good], 99),
        "prompt_tokens": sorted({r.prompt_tokens for r in good}),
        "output_tokens_per_request": sorted({r.output_tokens for r in good}),
    }


class RssSampler:
    """Peak summed RSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        import psutil

        self._psutil = psutil
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        total = 0
        try:
            processes = [self.root, *self.root.children(recursive=True)]
        except self._psutil.Error:
            return 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except self._psutil.Error:
                pass
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.sample())
            self._stop.wait(self.interval)

    def reset(self) -> int:
        peak, self.peak = self.peak, 0
        return peak

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class Server:
    name: str
    command: list[str]
    env: dict
    log: Path
    port: int
    process: subprocess.Popen | None = None
    sampler: RssSampler | None = None
    startup_s: float = 0.0
    startup_peak_rss: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        start = time.perf_counter()
        with open(self.log, "wb") as log:
            # A process group of its own, so stop() ends exactly this tree.
            self.process = subprocess.Popen(self.command, cwd=REPO, env=self.env, stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        self.sampler = RssSampler(self.process.pid)
        try:
            wait_until_healthy(self.process, self.base_url, log_path=self.log, timeout_s=STARTUP_TIMEOUT_S)
        except RuntimeError as error:
            self.stop()
            raise RuntimeError(f"{self.name}: {error}") from None
        self.startup_s = time.perf_counter() - start
        self.startup_peak_rss = self.sampler.reset()

    def stop(self) -> None:
        if self.sampler:
            self.sampler.stop()
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchvision_problem() -> str | None:
    try:
        import torchvision  # noqa: F401
        import vllm.transformers_utils.processors.internvl  # noqa: F401
    except Exception as exc:
        return (f"{type(exc).__name__}: {str(exc)[:160]}. vLLM's built-in InternVL needs torchvision: run "
                "benchmarks/setup_bench_env.sh, then PYTHONPATH=/work/shared/tools/torchvision-cpu-shim "
                ".venv-bench/bin/python benchmarks/bench_e2e.py")
    return None


def engine_flags(args) -> dict:
    return {"dtype": "float32", "max_model_len": args.max_model_len, "max_num_seqs": args.max_num_seqs,
            "seed": 0, "enforce_eager": True, "images_per_prompt": 1, "videos_per_prompt": 0, "max_tiles": 12}


def server_commands(args, model: Path, log_dir: Path) -> list[Server]:
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    env.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
    common = ["--dtype", "float32", "--enforce-eager", "--max-model-len", str(args.max_model_len),
              "--max-num-seqs", str(args.max_num_seqs), "--seed", "0", "--served-model-name", SERVED_NAME,
              *getattr(args, "engine_flags", [])]
    # Media per request: a video workload sends one video to ours, its frames as images to the built-in.
    images, videos = getattr(args, "images_per_request", 1), getattr(args, "videos_per_request", 0)
    servers = []
    for target in args.targets:
        port = free_port()
        if target == "ours":
            command = [sys.executable, "-m", "server", "--model", str(model), "--port", str(port), *common,
                       "--max-images-per-request", "1", "--max-videos-per-request", str(videos),
                       "--max-tiles-per-image", "12", "--default-max-tiles", "12",
                       "--max-concurrent-requests", str(max(64, 2 * max(args.concurrency))),
                       "--log-level", "warning"]
            target_env = {k: v for k, v in env.items() if k != "VLLM_PLUGINS"}  # all plugins = ours
        else:
            launcher = Path(sys.executable).parent / "vllm"  # setup_bench_env.sh's vllm-cpu-aware CLI
            prefix = [sys.executable, str(launcher)] if launcher.exists() else [
                sys.executable, "-m", "vllm.entrypoints.cli.main"]
            command = [*prefix, "serve", str(model), "--port", str(port), "--host", "127.0.0.1", *common,
                       "--limit-mm-per-prompt", json.dumps({"image": images, "video": 0}),
                       "--uvicorn-log-level", "warning", "--disable-log-stats",
                       *getattr(args, "builtin_flags", [])]
            # Only our config classes: vLLM's built-in InternVLChatModel runs.
            target_env = {**env, "VLLM_PLUGINS": "internvl2_config"}
        servers.append(Server(target, command, target_env, log_dir / f"{target}.log", port))
    return servers


def make_load(args) -> dict:
    """Every request body of a run, each with its own image: no vLLM multimodal
    processor cache or prefix cache hits (identical images would be served from
    both and skip preprocessing, the encoder and prefill). The same set is sent
    to every server, in the same order."""
    name = SERVED_NAME if args.base_url is None else args.model_name
    seed = iter(range(10**6))
    mixed = lambda count: [payload(name, make_jpeg(*IMAGE_SIZES[i % len(IMAGE_SIZES)], seed=next(seed)),  # noqa: E731
                                   args.max_tokens) for i in range(count)]
    load = {"warm": mixed(2), "levels": {}}
    for concurrency in args.concurrency:
        load["levels"][concurrency] = mixed(args.requests or max(args.min_requests, args.requests_per_slot * concurrency))
    load["single"] = [payload(name, make_jpeg(*SINGLE_SIZE, seed=next(seed)), 32) for _ in range(args.single_runs)]
    return load


def measure(base_url: str, headers: dict, args, sampler: RssSampler | None, load: dict) -> dict:
    out: dict = {"levels": [], "loadavg_before": os.getloadavg()}
    warm = asyncio.run(run_level(base_url, headers, load["warm"], 1))[0]
    if not all(r.ok for r in warm):
        raise RuntimeError(f"warm-up failed: {[r.error for r in warm if not r.ok]}")
    if sampler:
        sampler.reset()
    for concurrency in args.concurrency:
        bodies = load["levels"][concurrency]
        count = len(bodies)
        results, wall = asyncio.run(run_level(base_url, headers, bodies, concurrency))
        level = summarize(results, wall, concurrency)
        out["levels"].append(level)
        print(f"  c={concurrency:<3} n={count:<4} {level['requests_per_s']:7.2f} req/s {level['output_tokens_per_s']:8.1f} "
              f"out tok/s  TTFT p50 {level['ttft_p50_s'] * 1e3:7.0f} ms  latency p50 {level['latency_p50_s'] * 1e3:7.0f} "
              f"p99 {level['latency_p99_s'] * 1e3:7.0f} ms  errors {level['errors']}  prompt tokens {level['prompt_tokens']}",
              flush=True)
    singles = [asyncio.run(run_level(base_url, headers, [body], 1))[0][0] for body in load["single"]]
    good = [r for r in singles if r.ok]
    out["single_13_tiles"] = {
        "runs": len(singles), "errors": len(singles) - len(good),
        "latency_p50_s": percentile([r.latency for r in good], 50),
        "ttft_p50_s": percentile([r.ttft for r in good], 50),
        "prompt_tokens": sorted({r.prompt_tokens for r in good}),
        "output_tokens": sorted({r.output_tokens for r in good}),
    }
    s = out["single_13_tiles"]
    print(f"  single 13-tile request, 32 output tokens: latency p50 {s['latency_p50_s'] * 1e3:.0f} ms, "
          f"TTFT p50 {s['ttft_p50_s'] * 1e3:.0f} ms (prompt tokens {s['prompt_tokens']}, {s['runs']} runs)", flush=True)
    if sampler:
        out["load_peak_rss_mib"] = sampler.reset() / 2**20
    out["loadavg_after"] = os.getloadavg()
    print(f"  machine load average before/after: {out['loadavg_before'][0]:.1f} / {out['loadavg_after'][0]:.1f} "
          f"on {os.cpu_count()} CPUs (other users of a shared machine distort the figures)", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="checkpoint dir (default: generated tiny InternVL2-1B)")
    parser.add_argument("--targets", nargs="+", default=["ours", "builtin"], choices=["ours", "builtin"])
    parser.add_argument("--base-url", help="measure an already running server (ours-only, no launch)")
    parser.add_argument("--api-key", default=os.environ.get("INTERNVL_BENCH_API_KEY"), help="with --base-url")
    parser.add_argument("--model-name", help="served model name with --base-url (default: first of /v1/models)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--requests", type=int, help="requests per level (default: max(min, per-slot x c))")
    parser.add_argument("--requests-per-slot", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--single-runs", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=8192)
    parser.add_argument("--max-num-seqs", type=int, default=32)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="concurrency 1 and 8, few requests")
    size.add_argument("--smoke", action="store_true", help="concurrency 1 and 2, 2 requests, 4 tokens (CI)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/internvl-bench-e2e"))
    args = parser.parse_args()
    if args.quick:
        args.concurrency, args.requests_per_slot, args.min_requests, args.max_tokens, args.single_runs = [1, 8], 2, 4, 16, 2
    if args.smoke:
        args.concurrency, args.requests, args.max_tokens, args.single_runs = [1, 2], 2, 4, 1

    from preprocessing.tiling import num_tiles
    tiles = {f"{w}x{h}": num_tiles(w, h, max_tiles=12) for w, h in IMAGE_SIZES}
    print(f"load: {QUESTION!r} + one image of {tiles} (tiles at budget 12), max_tokens {args.max_tokens}, "
          f"ignore_eos, streaming; concurrency {args.concurrency}", flush=True)
    report: dict = {"settings": {**engine_flags(args), "max_tokens": args.max_tokens, "tiles": tiles,
                                 "concurrency": args.concurrency, "python": sys.executable}, "servers": {}}

    if args.base_url:
        headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        if not args.model_name:
            models = httpx.get(f"{args.base_url}/v1/models", headers=headers, timeout=30).json()
            args.model_name = models["data"][0]["id"]
        print(f"[external] {args.base_url} ({args.model_name})", flush=True)
        report["servers"]["external"] = measure(args.base_url, headers, args, None, make_load(args))
    else:
        from model_plugin.make_checkpoint import ensure_checkpoint

        model = args.model or ensure_checkpoint("InternVL2-1B", "tiny", REPO / ".checkpoints")
        report["settings"]["model"] = str(model)
        if "builtin" in args.targets and (problem := torchvision_problem()):
            print(f"SKIPPED builtin: {problem}", flush=True)
            args.targets = [t for t in args.targets if t != "builtin"]
        args.log_dir.mkdir(parents=True, exist_ok=True)
        load = make_load(args)
        for server in server_commands(args, model, args.log_dir):
            print(f"[{server.name}] starting: {' '.join(server.command)}", flush=True)
            try:
                server.start()
                print(f"[{server.name}] healthy after {server.startup_s:.1f}s, startup peak RSS "
                      f"{server.startup_peak_rss / 2**20:.0f} MiB", flush=True)
                result = measure(server.base_url, {}, args, server.sampler, load)
                result.update(startup_s=server.startup_s, startup_peak_rss_mib=server.startup_peak_rss / 2**20,
                              command=server.command, log=str(server.log))
                print(f"[{server.name}] peak RSS under load {result['load_peak_rss_mib']:.0f} MiB", flush=True)
                report["servers"][server.name] = result
            except RuntimeError as exc:
                print(f"[{server.name}] FAILED: {exc}", flush=True)
                report["servers"][server.name] = {"error": str(exc)[:4000]}
            finally:
                server.stop()

    ours, builtin = report["servers"].get("ours", {}), report["servers"].get("builtin", {})
    if ours.get("levels") and builtin.get("levels"):
        print("\nours / builtin:")
        for a, b in zip(ours["levels"], builtin["levels"]):
            print(f"  c={a['concurrency']:<3} req/s x{a['requests_per_s'] / b['requests_per_s']:.2f}  "
                  f"TTFT p50 x{a['ttft_p50_s'] / b['ttft_p50_s']:.2f}  latency p50 x{a['latency_p50_s'] / b['latency_p50_s']:.2f}"
                  f"  p99 x{a['latency_p99_s'] / b['latency_p99_s']:.2f}")
        same = [a["prompt_tokens"] == b["prompt_tokens"] for a, b in zip(ours["levels"], builtin["levels"])]
        print(f"  prompt tokens identical: {all(same)}")
        a, b = ours["single_13_tiles"], builtin["single_13_tiles"]
        print(f"  single 13-tile latency x{a['latency_p50_s'] / b['latency_p50_s']:.2f}; "
              f"load peak RSS x{ours['load_peak_rss_mib'] / builtin['load_peak_rss_mib']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    failed = [name for name, r in report["servers"].items() if "error" in r]
    if failed or any(level["errors"] for r in report["servers"].values() for level in r.get("levels", [])):
        sys.exit(1)


if __name__ == "__main__":
    main()
