"""Soak test: mixed load with disconnecting clients, then a fault, against a real
`internvl-serve` on the tiny random-weight InternVL2-1B (CPU is fine).

    python benchmarks/soak.py --requests 300 --concurrency 32            # by hand
    python benchmarks/soak.py --requests 40 --concurrency 8              # CI's short form
    python benchmarks/soak.py --fault kill-engine --requests 16          # engine death

It starts its own server on a free loopback port and checks that

- every client that stayed got a complete, well-formed answer (JSON, or SSE
  ending in a finish reason and [DONE]); a share of streaming clients
  (--disconnect-share) hang up mid-stream on purpose;
- the engine freed the aborted requests: running and waiting on /metrics go
  back to 0, and the server's own in-flight gauge too;
- the RSS of the server's process tree returns to within --memory-tolerance of
  its warmed-up baseline;
- /health stayed green throughout;
- then the fault (--fault):
  * sigterm: SIGTERM while streams are running: they all finish, a new
    connection is refused, the server exits 0;
  * kill-engine: SIGKILL to the engine-core process: /health turns 503 and
    requests get 503 at once, and the server exits non-zero by itself;
  * none.

Prints a summary table; exits 1 if any check failed. Only loopback is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.server_process import wait_until_healthy  # noqa: E402
MODEL = "internvl-tiny"
CHAT = "/v1/chat/completions"


# --- the server ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        from model_plugin.make_checkpoint import ensure_checkpoint

        cache = Path(os.environ.get("INTERNVL_TEST_CHECKPOINTS", REPO / ".checkpoints"))
        self.checkpoint = ensure_checkpoint("InternVL2-1B", "tiny", cache)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(tempfile.mkstemp(prefix="soak-server-", suffix=".log")[1])
        command = [
            sys.executable, "-m", "server",
            "--model", str(self.checkpoint), "--served-model-name", MODEL,
            "--port", str(self.port), "--dtype", "float32", "--enforce-eager",
            "--max-model-len", "4096", "--max-num-seqs", str(args.max_num_seqs), "--seed", "0",
            # The soak measures the engine under load, not the 429 limit.
            "--max-concurrent-requests", "1024",
            "--max-frames-per-video", "8", "--default-num-frames", "4",
            "--drain-timeout", str(args.drain_timeout), "--log-level", "warning",
        ]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.ps = psutil.Process(self.process.pid)

    def wait_healthy(self, timeout_s: float = 600) -> None:
        wait_until_healthy(self.process, self.base_url, log_path=self.log_path, timeout_s=timeout_s, poll_s=1)

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss_bytes(self) -> int:
        total = 0
        for process in self.tree():
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def engine_core(self) -> psutil.Process | None:
        for process in self.tree()[1:]:
            try:
                text = process.name() + " " + " ".join(process.cmdline())
            except psutil.NoSuchProcess:
                continue
            if "EngineCore" in text:
                return process
        return None

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                for process in reversed(self.tree()):
                    process.kill()


# --- media --------------------------------------------------------------------------


def _image(width: int, height: int, seed: int, fmt: str) -> str:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=(height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(base).resize((width, height), Image.Resampling.BILINEAR).save(buffer, fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode()


def _video(frames: int, width: int, height: int, seed: int) -> str:
    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(frames):
            pixels = np.full((height, width, 3), (seed * 40 + index * 23) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return "data:video/mp4;base64," + base64.b64encode(buffer.getvalue()).decode()


# Many sizes and shapes; the tile budgets are kept small for CPU prefill.
IMAGE_SIZES = [(32, 32), (448, 448), (640, 480), (480, 640), (1024, 256), (256, 1024), (1280, 720), (900, 900), (2000, 300), (100, 1600)]


def media_pool() -> tuple[list[str], list[str]]:
    images = [_image(w, h, seed, "JPEG" if seed % 2 else "PNG") for seed, (w, h) in enumerate(IMAGE_SIZES)]
    videos = [_video(frames, w, h, seed) for seed, (frames, w, h) in enumerate([(6, 64, 48), (12, 96, 64), (4, 128, 128)])]
    return images, videos


# --- requests -----------------------------------------------------------------------


@dataclass
class Plan:
    index: int
    kind: str  # text | image | images | video
    stream: bool
    disconnect: bool
    body: dict


@dataclass
class Outcome:
    plan: Plan
    ok: bool
    status: int | None = None
    seconds: float = 0.0
    error: str = ""


def make_plans(
    count: int, seed: int, disconnect_share: float, images: list[str], videos: list[str], seeded: bool = False
) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    hang_ups = set(rng.sample(range(count), round(disconnect_share * count)))
    for index in range(count):
        kind = rng.choices(["text", "image", "images", "video"], weights=[2, 4, 2, 2])[0]
        disconnect = index in hang_ups
        stream = disconnect or rng.random() < 0.5
        content: list[dict] = []
        if kind == "image":
            content.append({"type": "image_url", "image_url": {"url": rng.choice(images), "max_tiles": rng.choice([1, 2, 4, 6])}})
        elif kind == "images":
            for url in rng.sample(images, 2):
                content.append({"type": "image_url", "image_url": {"url": url, "max_tiles": rng.choice([1, 2])}})
        elif kind == "video":
            content.append({"type": "video_url", "video_url": {"url": rng.choice(videos), "num_frames": rng.choice([2, 4])}})
        content.append({"type": "text", "text": rng.choice(["Describe this.", "What do you see?", "Hello!", "Count the objects."])})
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            # A disconnecting client needs a long stream to hang up in the middle of.
            "max_tokens": 512 if disconnect else rng.choice([4, 8, 16]),
            "temperature": rng.choice([0.0, 0.7]),
            "ignore_eos": disconnect,
            "stream": stream,
        }
        if seeded:
            body["seed"] = index
        if stream:
            body["stream_options"] = {"include_usage": True}
        plans.append(Plan(index, kind, stream, disconnect, body))
    return plans


def check_completion(body: dict, max_tokens: int) -> str | None:
    try:
        choice = body["choices"][0]
        if body["object"] != "chat.completion" or not body["id"].startswith("chatcmpl-"):
            return "not a chat.completion"
        if choice["message"]["role"] != "assistant" or not isinstance(choice["message"]["content"], str):
            return "bad message"
        if choice["finish_reason"] not in ("stop", "length"):
            return f"finish_reason {choice['finish_reason']!r}"
        usage = body["usage"]
        if usage["total_tokens"] != usage["prompt_tokens"] + usage["completion_tokens"]:
            return "usage does not add up"
        if not 1 <= usage["completion_tokens"] <= max_tokens:
            return f"completion_tokens {usage['completion_tokens']}"
    except (KeyError, IndexError, TypeError) as error:
        return f"malformed: {error!r}"
    return None


async def run_one(client: httpx.AsyncClient, plan: Plan) -> Outcome:
    started = time.monotonic()
    outcome = Outcome(plan, ok=False)
    try:
        if not plan.stream:
            response = await client.post(CHAT, json=plan.body)
            outcome.status = response.status_code
            if response.status_code != 200:
                outcome.error = response.text[:200]
            else:
                outcome.error = check_completion(response.json(), plan.body["max_tokens"]) or ""
                outcome.ok = not outcome.error
        else:
            outcome.ok, outcome.status, outcome.error = await _stream(client, plan)
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        outcome.error = repr(error)
    outcome.seconds = time.monotonic() - started
    return outcome


async def _stream(client: httpx.AsyncClient, plan: Plan) -> tuple[bool, int, str]:
    async with client.stream("POST", CHAT, json=plan.body) as response:
        if response.status_code != 200:
            return False, response.status_code, (await response.aread()).decode(errors="replace")[:200]
        content_chunks = 0
        finish = None
        usage = None
        done = False
        text = ""
        async for line in response.aiter_lines():
            if not line:
                continue
            if not line.startswith("data: "):
                return False, 200, f"not an SSE data line: {line[:80]!r}"
            data = line[len("data: "):]
            if data == "[DONE]":
                done = True
                break
            chunk = json.loads(data)
            if "error" in chunk:
                return False, 200, f"error event: {chunk['error']}"
            if chunk.get("object") != "chat.completion.chunk":
                return False, 200, "not a chunk"
            if chunk.get("usage"):
                usage = chunk["usage"]
            for choice in chunk["choices"]:
                delta = choice["delta"].get("content") or ""
                text += delta
                content_chunks += bool(delta)
                finish = choice.get("finish_reason") or finish
            if plan.disconnect and content_chunks >= 2:
                # Hang up mid-stream: leaving the block closes the connection.
                return True, 200, "disconnected on purpose"
        if plan.disconnect:
            return False, 200, "stream ended before the client could hang up"
        if not done:
            return False, 200, "no [DONE]"
        if finish not in ("stop", "length"):
            return False, 200, f"finish_reason {finish!r}"
        if usage is None or not 1 <= usage["completion_tokens"] <= plan.body["max_tokens"]:
            return False, 200, f"bad usage {usage}"
        return True, 200, ""


async def run_load(base_url: str, plans: list[Plan], concurrency: int) -> tuple[list[Outcome], float]:
    queue: asyncio.Queue[Plan] = asyncio.Queue()
    for plan in plans:
        queue.put_nowait(plan)
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=httpx.Timeout(600, connect=10), limits=limits) as client:

        async def worker() -> None:
            while not queue.empty():
                outcomes.append(await run_one(client, queue.get_nowait()))

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcomes, time.monotonic() - started


class HealthWatch:
    """Polls /health in the background; every answer must be 200."""

    def __init__(self, base_url: str, interval_s: float = 0.5) -> None:
        self.base_url = base_url
        self.interval_s = interval_s
        self.checks = 0
        self.failures: list[str] = []
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(base_url=self.base_url, timeout=10) as client:
            while True:
                try:
                    response = await client.get("/health")
                    if response.status_code != 200:
                        self.failures.append(f"{response.status_code} {response.text[:80]}")
                except httpx.HTTPError as error:
                    self.failures.append(repr(error))
                self.checks += 1
                await asyncio.sleep(self.interval_s)

    def __enter__(self) -> HealthWatch:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc) -> None:
        assert self._task is not None
        self._task.cancel()


def scrape(base_url: str) -> dict[str, float]:
    values = {}
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def wait_drained(base_url: str, timeout_s: float = 60) -> dict[str, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        metrics = scrape(base_url)
        busy = [metrics.get(name, 0) for name in ("internvl_requests_running", "internvl_requests_waiting", "internvl_requests_in_flight")]
        if not any(busy) or time.monotonic() > deadline:
            return metrics
        time.sleep(0.5)


def settle_rss(server: Server, seconds: float = 3.0) -> int:
    """The tree's RSS once it stops moving (median of a few samples)."""
    samples = []
    for _ in range(5):
        time.sleep(seconds / 5)
        samples.append(server.rss_bytes())
    return int(statistics.median(samples))


# --- faults ---------------------------------------------------------------------------


async def fault_sigterm(server: Server, streams: int, drain_timeout: float) -> dict[str, object]:
    """SIGTERM while `streams` long streams run: they finish, new connections are refused, exit 0."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 24,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    plans = [Plan(i, "text", True, False, dict(body, seed=i)) for i in range(streams)]
    async with httpx.AsyncClient(base_url=server.base_url, timeout=httpx.Timeout(drain_timeout + 60, connect=5)) as client:
        tasks = [asyncio.create_task(_stream(client, plan)) for plan in plans]
        await asyncio.sleep(0)
        # Wait until the engine runs them, then signal.
        deadline = time.monotonic() + 60
        while scrape(server.base_url).get("internvl_requests_in_flight", 0) < streams and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        await asyncio.sleep(0.5)
        refused = False
        try:
            async with httpx.AsyncClient(timeout=5) as fresh:
                response = await fresh.post(f"{server.base_url}{CHAT}", json=dict(body, stream=False))
                refused = response.status_code >= 500
        except httpx.ConnectError:
            refused = True
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finished = sum(1 for result in results if isinstance(result, tuple) and result[0])
    code = await asyncio.to_thread(server.process.wait, drain_timeout + 90)
    return {
        "in-flight streams at SIGTERM": streams,
        "finished completely": finished,
        "new request refused": refused,
        "exit status": code,
        "exit after SIGTERM (s)": round(time.monotonic() - signalled, 1),
        "_ok": finished == streams and refused and code == 0,
        "_detail": [repr(result)[:200] for result in results if not (isinstance(result, tuple) and result[0])],
    }


async def fault_kill_engine(server: Server) -> dict[str, object]:
    """SIGKILL the engine core: /health 503, requests 503 at once, the server exits non-zero."""
    core = server.engine_core()
    if core is None:
        return {"engine core found": False, "_ok": False, "_detail": [p.name() for p in server.tree()]}
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    core.kill()
    killed = time.monotonic()
    health_503_after = None
    request_status = None
    request_seconds = None
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
        while time.monotonic() - killed < 30 and server.process.poll() is None:
            try:
                response = await client.get("/health")
            except httpx.HTTPError:
                break
            if response.status_code == 503:
                health_503_after = time.monotonic() - killed
                started = time.monotonic()
                try:
                    answer = await client.post(CHAT, json=body)
                    request_status = answer.status_code
                except httpx.HTTPError:
                    request_status = "connection refused (already exiting)"
                request_seconds = time.monotonic() - started
                break
            await asyncio.sleep(0.1)
    try:
        code = await asyncio.to_thread(server.process.wait, 60)
    except subprocess.TimeoutExpired:
        code = None
    exited_after = time.monotonic() - killed
    request_ok = request_status == 503 and request_seconds is not None and request_seconds < 1.0
    return {
        "engine core found": True,
        "/health 503 after (s)": None if health_503_after is None else round(health_503_after, 2),
        "request status": request_status,
        "request answered in (s)": None if request_seconds is None else round(request_seconds, 3),
        "server exit status": code,
        "server exited after (s)": round(exited_after, 1),
        "_ok": health_503_after is not None and request_ok and code not in (None, 0),
        "_detail": [],
    }


# --- main -----------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def table(rows: list[tuple[str, object]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"  {name:<{width}}  {value}" for name, value in rows)


async def soak(args: argparse.Namespace) -> int:
    failures: list[str] = []
    started = time.monotonic()
    server = Server(args)
    try:
        await asyncio.to_thread(server.wait_healthy)
        startup_s = time.monotonic() - started
        images, videos = media_pool()
        # Warm up with every media item once, so vLLM's caches and pools are at
        # their steady size before the baseline is taken.
        warm = [
            Plan(-1, "image", False, False, {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url, "max_tiles": tiles}}, {"type": "text", "text": "hi"}]}]})
            for url in images for tiles in (1, 2, 4, 6)
        ] + [
            Plan(-1, "video", False, False, {"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": url, "num_frames": frames}}, {"type": "text", "text": "hi"}]}]})
            for url in videos for frames in (2, 4)
        ]
        warm_outcomes, _ = await run_load(server.base_url, warm, min(args.concurrency, 8))
        failures += [f"warm-up request failed: {o.status} {o.error}" for o in warm_outcomes if not o.ok]
        wait_drained(server.base_url)
        baseline = settle_rss(server)

        plans = make_plans(args.requests, args.seed, args.disconnect_share, images, videos, args.seeded)
        with HealthWatch(server.base_url) as health:
            outcomes, load_s = await run_load(server.base_url, plans, args.concurrency)
            metrics = await asyncio.to_thread(wait_drained, server.base_url)
            final = await asyncio.to_thread(settle_rss, server)
        stayed = [o for o in outcomes if not o.plan.disconnect]
        left = [o for o in outcomes if o.plan.disconnect]
        bad = [o for o in outcomes if not o.ok]
        for outcome in bad[:10]:
            failures.append(f"request {outcome.plan.index} ({outcome.plan.kind}, stream={outcome.plan.stream}): {outcome.status} {outcome.error}")
        if len(bad) > 10:
            failures.append(f"... and {len(bad) - 10} more failed requests")
        running, waiting = metrics.get("internvl_requests_running", -1), metrics.get("internvl_requests_waiting", -1)
        in_flight = metrics.get("internvl_requests_in_flight", -1)
        if (running, waiting, in_flight) != (0, 0, 0):
            failures.append(f"not drained: running={running} waiting={waiting} in_flight={in_flight}")
        growth = (final - baseline) / baseline
        if growth > args.memory_tolerance:
            failures.append(f"RSS grew {growth:+.1%} (limit {args.memory_tolerance:.0%})")
        if health.failures:
            failures.append(f"/health failed {len(health.failures)}x: {health.failures[:3]}")
        server_errors = sum(value for name, value in metrics.items() if name.startswith('internvl_requests_total{status="5'))
        if server_errors:
            failures.append(f"{server_errors:g} responses with a 5xx status")

        latencies = [o.seconds for o in stayed if o.ok]
        streamed = sum(o.plan.stream for o in stayed)
        rows = [
            ("server start (s)", f"{startup_s:.0f}"),
            ("requests / concurrency", f"{len(outcomes)} / {args.concurrency}"),
            ("  text / image / 2 images / video", " / ".join(str(sum(o.plan.kind == k for o in outcomes)) for k in ("text", "image", "images", "video"))),
            ("  streaming / non-streaming (stayed)", f"{streamed} / {len(stayed) - streamed}"),
            ("clients that stayed: complete + well-formed", f"{sum(o.ok for o in stayed)} / {len(stayed)}"),
            ("clients that hung up mid-stream", f"{sum(o.ok for o in left)} / {len(left)} ({len(left) / max(1, len(outcomes)):.0%})"),
            ("load duration (s) / requests per s", f"{load_s:.1f} / {len(outcomes) / load_s:.2f}"),
            ("latency p50 / p95 / max (s)", f"{percentile(latencies, .5):.2f} / {percentile(latencies, .95):.2f} / {max(latencies, default=float('nan')):.2f}"),
            ("engine running / waiting after", f"{running:g} / {waiting:g} (server in flight {in_flight:g})"),
            ("5xx responses", f"{server_errors:g}"),
            ("RSS baseline -> after (MiB)", f"{baseline / 2**20:.0f} -> {final / 2**20:.0f} ({growth:+.1%})"),
            ("/health checks green", f"{health.checks - len(health.failures)} / {health.checks}"),
        ]

        fault: dict[str, object] = {}
        if args.fault == "sigterm":
            fault = await fault_sigterm(server, args.drain_streams, args.drain_timeout)
        elif args.fault == "kill-engine":
            fault = await fault_kill_engine(server)
        if fault:
            rows.append((f"fault: {args.fault}", "passed" if fault["_ok"] else "FAILED"))
            rows += [(f"  {name}", value) for name, value in fault.items() if not name.startswith("_")]
            if not fault["_ok"]:
                failures.append(f"fault {args.fault} failed: {fault}")
        print("\nsoak summary\n" + table(rows))
    except Exception as error:  # a crash of the harness or the server is a failure too
        failures.append(f"{type(error).__name__}: {error}")
    finally:
        server.stop()
    if failures:
        print("\nFAILED:\n" + "\n".join(f"  - {failure}" for failure in failures))
        print(f"\nserver log ({server.log_path}), tail:\n{server.log_tail()}")
        return 1
    print("\nall checks passed")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=300, help="Requests in the soak (default 300).")
    parser.add_argument("--concurrency", type=int, default=32, help="Clients at once (default 32).")
    parser.add_argument("--disconnect-share", type=float, default=0.2, help="Share of clients that hang up mid-stream (default 0.2).")
    parser.add_argument("--memory-tolerance", type=float, default=0.10, help="Allowed RSS growth over the warmed-up baseline (default 0.10).")
    parser.add_argument("--fault", choices=["sigterm", "kill-engine", "none"], default="sigterm", help="Fault after the soak (default sigterm).")
    parser.add_argument("--drain-streams", type=int, default=4, help="Streams in flight when SIGTERM arrives (default 4).")
    parser.add_argument("--drain-timeout", type=float, default=60, help="The server's --drain-timeout (default 60).")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="The engine's batch size (default 16).")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the request mix.")
    parser.add_argument("--seeded", action="store_true", help="Send a per-request `seed`. On the CPU build this "
                        "kills the engine once a seeded sampled request is chunk-prefilled (vLLM rewinds the "
                        "generator offset, which CPU generators lack): a known bug, off by default.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(soak(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
