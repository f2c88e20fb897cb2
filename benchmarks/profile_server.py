"""Where does the time of a 13-tile request go in our server? py-spy over the whole process tree.

Starts `python -m server` (tiny generated InternVL2-1B, fp32, eager), attaches
`py-spy record --subprocesses --pid` once it is healthy (API server, engine core
and worker are all sampled; startup is not), sends --requests sequential 13-tile requests (640x480 JPEG, 4x3 grid +
thumbnail) with 32 output tokens after two warm-ups, stops the server, and
summarises the collapsed stacks per process: the share of samples in which each
function is on the stack (inclusive) and at the top (self). Idle threads are
not sampled. py-spy is a benchmark-only tool: install it into .venv-bench with
`benchmarks/setup_bench_env.sh --profilers`.

    PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python benchmarks/profile_server.py \\
        [--requests 20] [--out benchmarks/results/profile_13tile]
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_e2e import SERVED_NAME, make_jpeg, payload  # noqa: E402
from benchmarks.server_process import wait_until_healthy  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def frame_name(frame: str) -> str:
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    file = match["file"]
    for marker in ("site-packages/", "/work/main/"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{match['func']} ({file})"


def summarise(raw: Path, top: int) -> str:
    by_process: dict[str, list[tuple[list[str], int]]] = collections.defaultdict(list)
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        # Child processes are nested under their parents' frames: the innermost
        # "process PID:cmd" frame names the sampled process.
        marks = [i for i, f in enumerate(frames) if f.startswith("process ")]
        process = frames[marks[-1]] if marks else "process ?"
        if marks:
            frames = frames[marks[-1] + 1:]
        by_process[process].append(([frame_name(f) for f in frames], int(count)))
    lines = []
    for process, stacks in sorted(by_process.items(), key=lambda kv: -sum(c for _, c in kv[1])):
        total = sum(c for _, c in stacks)
        inclusive: collections.Counter[str] = collections.Counter()
        self_time: collections.Counter[str] = collections.Counter()
        for frames, count in stacks:
            for name in set(frames):
                inclusive[name] += count
            if frames:
                self_time[frames[-1]] += count
        lines.append(f"\n## {process[:160]}: {total} samples")
        lines.append("inclusive:")
        lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in inclusive.most_common(top)]
        lines.append("self:")
        lines += [f"  {100 * c / total:5.1f}%  {name}" for name, c in self_time.most_common(top // 2)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--rate", type=int, default=50, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--out", type=Path, default=Path("/tmp/internvl-profile"))
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        raise SystemExit("py-spy not found: run benchmarks/setup_bench_env.sh --profilers")

    from model_plugin.make_checkpoint import ensure_checkpoint

    model = ensure_checkpoint("InternVL2-1B", "tiny", REPO / ".checkpoints")
    args.out.mkdir(parents=True, exist_ok=True)
    raw = args.out / "stacks.txt"
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"),
           "VLLM_WORKER_MULTIPROC_METHOD": "spawn"}
    env.pop("VLLM_PLUGINS", None)
    command = [sys.executable, "-m", "server", "--model", str(model), "--port", str(port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "8192", "--max-num-seqs", "32",
               "--seed", "0", "--served-model-name", SERVED_NAME, "--log-level", "warning"]
    log = open(args.out / "server.log", "wb")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        try:
            wait_until_healthy(process, f"http://127.0.0.1:{port}", log_path=args.out / "server.log")
        except RuntimeError as error:
            raise SystemExit(str(error)) from None
        # A new image each time: identical ones would hit vLLM's processor and prefix caches.
        # Attach only now: startup (imports, weight loading, profiling run) is not sampled.
        spy = subprocess.Popen([py_spy, "record", "--subprocesses", "--rate", str(args.rate), "--format", "raw",
                                "-o", str(raw), "--pid", str(process.pid)], stdout=log, stderr=subprocess.STDOUT)
        time.sleep(2)
        bodies = [payload(SERVED_NAME, make_jpeg(640, 480, seed=1000 + i), 32) for i in range(args.requests + 2)]
        headers = {"Content-Type": "application/json"}
        latencies = []
        with httpx.Client(timeout=300) as client:
            for i, body in enumerate(bodies):
                start = time.perf_counter()
                response = client.post(f"http://127.0.0.1:{port}/v1/chat/completions", content=body, headers=headers)
                response.raise_for_status()
                if i >= 2:
                    latencies.append(time.perf_counter() - start)
        spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
        spy.wait(timeout=120)
        latencies.sort()
        print(f"{args.requests} sequential 13-tile requests, 32 tokens: p50 {latencies[len(latencies) // 2] * 1e3:.0f} ms")
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
        log.close()
    summary = summarise(raw, args.top)
    (args.out / "summary.txt").write_text(summary)
    print(summary)


if __name__ == "__main__":
    main()
