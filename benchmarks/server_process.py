"""Waiting for and stopping a server started as a subprocess: shared by the benchmarks and the tests."""

import signal
import subprocess
import time
from pathlib import Path

import httpx


def wait_until_healthy(
    process: subprocess.Popen,
    base_url: str,
    *,
    log_path: Path,
    timeout_s: float = 600,
    poll_s: float = 0.5,
) -> None:
    """Return once GET /health answers 200; raise with the log's tail if the process
    exits first or the timeout passes (the process is killed then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server not healthy after {timeout_s:.0f}s:\n{_tail(log_path)}")
        time.sleep(poll_s)


def stop(process: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM (the server drains), then SIGKILL if it is still there after `timeout_s`."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()


def _tail(log_path: Path, chars: int = 5000) -> str:
    try:
        return Path(log_path).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"
