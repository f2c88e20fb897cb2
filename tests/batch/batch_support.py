"""A scriptable fake OpenAI-compatible server on 127.0.0.1 for engine-free tests.

A request's body may carry `"fake": {"key": K, "script": [...], "retry_after": S}`:
attempt i of key K answers script[i] ("429", "500", "400", "drop" to close the
connection unanswered, "sleep:SECONDS" then 200), and 200 once the script is used up.
A 200 carries `message.grounding` when the body's `fake` has "grounding" (or the server
was made with `grounding=`), as internvl-serve adds it to grounded answers.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

MODEL = "fake-model"


class FakeServer:
    def __init__(self, *, limit: int | None = None, delay_s: float = 0.0, api_key: str | None = None,
                 grounding: list[dict] | None = None) -> None:
        self.grounding = grounding  # for every answer (simple mode bodies carry no `fake`)
        self.limit = limit  # concurrent requests before 429, like internvl-serve
        self.delay_s = delay_s  # time each successful answer takes
        self.api_key = api_key
        self.received: list[dict] = []  # {"path", "body", "time", "auth"} per attempt
        self.attempts: dict[str, int] = {}
        self.active = 0
        self.peak = 0
        self.rejected = 0
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def bodies(self) -> list[dict]:
        return [entry["body"] for entry in self.received]

    def _next_action(self, body: dict) -> tuple[str, dict]:
        fake = body.get("fake") or {}
        key = fake.get("key")
        with self._lock:
            attempt = self.attempts.get(key, 0) if key else 0
            if key:
                self.attempts[key] = attempt + 1
            script = fake.get("script") or []
            return (script[attempt] if attempt < len(script) else "200"), fake

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                self._json(status, {"error": {"message": message, "type": "error", "code": status}}, headers)

            def do_GET(self) -> None:
                if self.path == "/v1/models":
                    self._json(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._error(404, "not found")

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                server.received.append({"path": self.path, "body": body, "time": time.monotonic(),
                                        "auth": self.headers.get("Authorization")})
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._error(401, "bad key")
                action, fake = server._next_action(body)
                if action == "drop":
                    self.close_connection = True
                    return
                if action.isdigit() and action != "200":
                    headers = {"Retry-After": str(fake["retry_after"])} if "retry_after" in fake else {}
                    return self._error(int(action), f"scripted {action}", headers)
                with server._lock:
                    if server.limit is not None and server.active >= server.limit:
                        server.rejected += 1
                        return self._error(429, "at the limit", {"Retry-After": "1"})
                    server.active += 1
                    server.peak = max(server.peak, server.active)
                try:
                    time.sleep(float(action.split(":")[1]) if action.startswith("sleep:") else server.delay_s)
                finally:
                    with server._lock:
                        server.active -= 1
                answer = completion(body, fake.get("grounding", server.grounding))
                self._json(200, answer, {"x-request-id": f"req-{len(server.received)}"})

        return Handler


def completion(body: dict, grounding: list[dict] | None = None) -> dict:
    message = {"role": "assistant", "content": "ok"}
    if grounding is not None:
        message["grounding"] = grounding
    return {
        "id": f"chatcmpl-{abs(hash(json.dumps(body, sort_keys=True))) % 10**8}",
        "object": "chat.completion",
        "model": body.get("model"),
        "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }


def batch_line(custom_id: str, text: str = "hi", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2, **body}}


def write_jsonl(path, records) -> None:
    with open(path, "w") as handle:
        handle.writelines((record if isinstance(record, str) else json.dumps(record)) + "\n" for record in records)


def read_output(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle if line.strip()]


def make_png(path, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)


def make_mp4(path, frames: int = 8, size: tuple[int, int] = (64, 48)) -> None:
    """A few flat grey frames, enough for the server to sample from."""
    import av
    import numpy as np

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for index in range(frames):
            frame = np.full((size[1], size[0], 3), 30 * index % 256, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def lines_in(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:  # not made yet, or merged and removed
        return 0


def run_killing_at_random(
    command: list[str], *, cwd: Path, watched: Path, rng: random.Random, most_new_lines: int, most_extra_s: float,
    after_kill: Callable[[], None] = lambda: None,
) -> tuple[subprocess.Popen, int]:
    """Rerun `command`, SIGKILLing it once a random number of new lines are in `watched` plus a
    random few milliseconds (so kills land between, during and around writes), until one run
    ends by itself. Returns that run's process and the number of kills."""
    kills = 0
    while True:
        target = lines_in(watched) + rng.randint(1, most_new_lines)
        process = subprocess.Popen(command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while process.poll() is None and lines_in(watched) < target:
            time.sleep(0.005)
        time.sleep(rng.uniform(0, most_extra_s))
        if process.poll() is not None:
            return process, kills
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        kills += 1
        after_kill()
