"""One live `internvl-serve` (uvicorn + vLLM on the CPU) shared by the whole test session.

Every test module that needs a real server uses the `live_server` fixture, so the
suite pays for one engine start. Only loopback is ever contacted. The server and
every process it starts carry the CUDA-query probe (tests/cuda_probe), so that
tests/test_no_cuda_query.py checks the processes the rest of the suite exercises.
"""

import functools
import http.server
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import openai
import pytest

from benchmarks.server_process import wait_until_healthy
from tests.cuda_probe import probe_env

REPO = Path(__file__).resolve().parents[1]
API_KEY = "e2e-key"
MAX_CONCURRENT = 3
MAX_REQUEST_BYTES = 4 * 1024 * 1024
STARTUP_TIMEOUT_S = 600


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, base_url: str, model: str, checkpoint: Path, media_dir: Path, log: Path, cuda_probe_log: Path):
        self.base_url = base_url
        self.log = log  # the server's stdout and stderr
        self.model = model
        self.checkpoint = checkpoint
        self.media_dir = media_dir
        self.cuda_probe_log = cuda_probe_log

    def client(self, **kwargs) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300, **kwargs)

    def async_client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=API_KEY, max_retries=0, timeout=300)

    def post(self, payload: dict, **kwargs) -> httpx.Response:
        headers = {"Authorization": f"Bearer {API_KEY}", **kwargs.pop("headers", {})}
        return httpx.post(f"{self.base_url}/v1/chat/completions", json=payload, headers=headers, timeout=300, **kwargs)

    def alive(self) -> bool:
        return httpx.get(f"{self.base_url}/health", timeout=10).status_code == 200


@pytest.fixture(scope="session")
def live_server(checkpoint, tmp_path_factory):
    path = checkpoint("InternVL2-1B")
    media_dir = tmp_path_factory.mktemp("media")
    port = free_port()
    log_dir = tmp_path_factory.mktemp("server")
    log_path = log_dir / "server.log"
    cuda_probe_log = log_dir / "cuda-probe.jsonl"
    env = probe_env(cuda_probe_log)
    env.pop("VLLM_WORKER_MULTIPROC_METHOD", None)  # the server must choose by itself
    command = [
        sys.executable, "-m", "server",
        "--model", str(path), "--served-model-name", "internvl-tiny",
        "--port", str(port), "--dtype", "float32", "--enforce-eager", "--max-model-len", "8192",
        "--max-num-seqs", "8", "--seed", "0", "--api-key", API_KEY,
        "--media-allowed-network", "127.0.0.0/8", "--media-local-dir", str(media_dir),
        "--max-concurrent-requests", str(MAX_CONCURRENT), "--max-request-bytes", str(MAX_REQUEST_BYTES),
        "--structured-outputs-disable-any-whitespace",
        "--max-frames-per-video", "8", "--default-num-frames", "4", "--drain-timeout", "10",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    wait_until_healthy(process, base_url, log_path=log_path, timeout_s=STARTUP_TIMEOUT_S)
    yield LiveServer(base_url, "internvl-tiny", path, media_dir, log_path, cuda_probe_log)
    process.send_signal(signal.SIGTERM)
    try:
        # A drained SIGTERM is a clean exit: status 0 (server/cli.py keeps uvicorn from
        # re-raising the signal), so orchestrators do not count it as a crash.
        assert process.wait(timeout=90) == 0
        assert "Application shutdown complete" in log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()


@pytest.fixture(scope="session")
def tokenizer(live_server):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(live_server.checkpoint)


@pytest.fixture(scope="session")
def loopback_http(live_server):
    """A static file server on 127.0.0.1 serving the server's media directory."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(live_server.media_dir))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


