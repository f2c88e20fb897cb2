"""One command for a CUDA machine: does the plugin serve, match vLLM's built-in, and keep up?

    pip install '.[gpu]'
    python benchmarks/gpu_check.py                    # CUDA: bf16, CUDA graphs
    python benchmarks/gpu_check.py --cpu-smoke        # every piece, small, on the CPU

Steps, each a row of the table printed at the end:
1. platform: vLLM's platform is CUDA (NVML; this process makes no CUDA query).
2. serve ours: a full-size checkpoint (real config, `load_format=dummy` weights;
   default InternVL2-8B) under `python -m server` in bf16 with CUDA graphs (no
   --enforce-eager); one chat request with an image must come back 200, then a
   short streaming load (benchmarks/bench_e2e.py --base-url).
3. serve builtin: the same checkpoint, flags and load under `vllm serve` with
   `VLLM_PLUGINS=internvl2_config` (vLLM's own InternVL model).
4. parity: a generated tiny InternVL2-1B in bf16 through `vllm.LLM`, once with the
   plugin and once with the built-in model, greedy, top-5 logprobs: the expanded
   prompts must be identical token for token and the first generated token the
   same; the largest first-step logprob difference is reported.

The built-in model needs torchvision: on a GPU `.[gpu]` brings it; on the CPU run
from .venv-bench with the shim (benchmarks/setup_bench_env.sh):

    PYTHONPATH=/work/shared/tools/torchvision-cpu-shim .venv-bench/bin/python benchmarks/gpu_check.py --cpu-smoke

Exit status 0 only when every row passed.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.bench_e2e import free_port, make_jpeg  # noqa: E402
from benchmarks.server_process import stop, wait_until_healthy  # noqa: E402

SERVED_NAME = "gpu-check"
PARITY_IMAGES = ((448, 448), (896, 448), (1344, 896))  # 1, 3 and 7 tiles at budget 6 (with thumbnail)
PARITY_TILES = 6


@dataclass
class Profile:
    """What differs between a CUDA run and the CPU smoke run."""

    family: str
    engine_flags: list[str]
    bench_size: str
    startup_timeout_s: float
    parity_eager: bool
    env: dict[str, str] = field(default_factory=dict)


def profile(args) -> Profile:
    if args.cpu_smoke:
        return Profile(
            family=args.family or "InternVL2-1B",
            engine_flags=["--dtype", "bfloat16", "--enforce-eager", "--max-model-len", "4096", "--max-num-seqs", "4"],
            bench_size="--smoke",
            startup_timeout_s=900,
            parity_eager=True,
            env={"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")},
        )
    return Profile(
        family=args.family or "InternVL2-8B",
        # No --enforce-eager: CUDA graphs are captured, as in production.
        engine_flags=["--dtype", "bfloat16", "--max-model-len", "8192", "--max-num-seqs", "32"],
        bench_size="--quick",
        startup_timeout_s=1800,
        parity_eager=False,
    )


@dataclass
class Row:
    step: str
    ok: bool
    detail: str
    seconds: float


def check_platform(args) -> Row:
    from vllm.platforms import current_platform

    name = type(current_platform).__name__
    if args.cpu_smoke:
        return Row("platform", current_platform.is_cpu(), f"{name} (CPU smoke run)", 0.0)
    ok = current_platform.is_cuda()
    return Row("platform", ok, f"{name}: {current_platform.get_device_name()}" if ok else f"{name}: not CUDA", 0.0)


def server_command(target: str, model: Path, port: int, prof: Profile) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, **prof.env}
    common = [*prof.engine_flags, "--load-format", "dummy", "--seed", "0", "--served-model-name", SERVED_NAME]
    if target == "ours":
        env.pop("VLLM_PLUGINS", None)  # every plugin: ours serves the model
        command = [sys.executable, "-m", "server", "--model", str(model), "--port", str(port), *common,
                   "--max-images-per-request", "1", "--max-videos-per-request", "0",
                   "--max-tiles-per-image", "12", "--default-max-tiles", "12", "--max-concurrent-requests", "128"]
    else:
        env["VLLM_PLUGINS"] = "internvl2_config"  # our config classes, vLLM's own model
        # The interpreter's own `vllm` script (.venv-bench's is vllm-cpu aware, see setup_bench_env.sh).
        launcher = Path(sys.executable).parent / "vllm"
        prefix = [sys.executable, str(launcher)] if launcher.exists() else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
        command = [*prefix, "serve", str(model), "--port", str(port),
                   "--host", "127.0.0.1", *common, "--limit-mm-per-prompt", json.dumps({"image": 1, "video": 0})]
    return command, env


def one_image_request(base_url: str) -> tuple[bool, str]:
    url = "data:image/jpeg;base64," + base64.b64encode(make_jpeg(1280, 720, 0)).decode()
    reply = httpx.post(f"{base_url}/v1/chat/completions", timeout=600, json={
        "model": SERVED_NAME, "max_tokens": 8, "temperature": 0.0,
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": url}},
            {"type": "text", "text": "Describe the image."}]}],
    })
    if reply.status_code != 200:
        return False, f"HTTP {reply.status_code}: {reply.text[:300]}"
    usage = reply.json()["usage"]
    return usage["completion_tokens"] > 0, f"prompt {usage['prompt_tokens']} tok"


def serve_and_load(target: str, model: Path, prof: Profile, work: Path) -> tuple[Row, dict | None]:
    port = free_port()
    command, env = server_command(target, model, port, prof)
    log = work / f"{target}.log"
    print(f"[{target}] {' '.join(command)}\n[{target}] log: {log}", flush=True)
    started = time.monotonic()
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}"
        wait_until_healthy(process, base_url, log_path=log, timeout_s=prof.startup_timeout_s)
        startup = time.monotonic() - started
        ok, detail = one_image_request(base_url)
        if not ok:
            return Row(f"serve {target}", False, detail, startup), None
        bench_json = work / f"{target}-bench.json"
        bench = subprocess.run(
            [sys.executable, str(REPO / "benchmarks" / "bench_e2e.py"), "--base-url", base_url,
             "--model-name", SERVED_NAME, prof.bench_size, "--json", str(bench_json)],
            cwd=REPO, env=env, timeout=1800,
        )
        load = json.loads(bench_json.read_text())["servers"]["external"] if bench_json.exists() else None
        ok = bench.returncode == 0 and load is not None
        return Row(f"serve {target}", ok, f"healthy, image request ok ({detail})" if ok else
                   f"load failed (bench_e2e exit {bench.returncode})", startup), load
    except (RuntimeError, httpx.HTTPError, subprocess.TimeoutExpired) as error:
        return Row(f"serve {target}", False, str(error).splitlines()[0][:200] + f" (see {log})",
                   time.monotonic() - started), None
    finally:
        stop(process, timeout_s=120)


def generate(implementation: str, model: Path, out: Path, eager: bool) -> None:
    """Child process: greedy generations with top-5 logprobs, as JSON."""
    from vllm import LLM, SamplingParams

    from preprocessing import get_template, image_prefix

    config = json.loads((model / "config.json").read_text())
    template = get_template(config["template"])
    llm = LLM(model=str(model), dtype="bfloat16", enforce_eager=eager, max_model_len=4096, max_num_seqs=4,
              seed=0, limit_mm_per_prompt={"image": 1, "video": 0},
              mm_processor_kwargs={"max_dynamic_patch": PARITY_TILES} if implementation == "builtin"
              else {"max_tiles_limit": PARITY_TILES})
    requests = [
        {"prompt": template.render([(image_prefix(1) + "Describe the image.", None)]),
         "multi_modal_data": {"image": [Image.open(io.BytesIO(make_jpeg(w, h, i))).convert("RGB")]}}
        for i, (w, h) in enumerate(PARITY_IMAGES)
    ]
    requests.append({"prompt": template.render([("Count to five.", None)])})
    params = SamplingParams(temperature=0.0, max_tokens=8, logprobs=5, ignore_eos=True)
    results = [
        {"prompt_token_ids": list(o.prompt_token_ids), "token_ids": list(o.outputs[0].token_ids),
         "first_logprobs": {str(t): lp.logprob for t, lp in o.outputs[0].logprobs[0].items()}}
        for o in llm.generate(requests, params, use_tqdm=False)
    ]
    out.write_text(json.dumps(results))


def check_parity(prof: Profile, work: Path) -> Row:
    from model_plugin.make_checkpoint import ensure_checkpoint

    started = time.monotonic()
    model = ensure_checkpoint("InternVL2-1B", "tiny", REPO / ".checkpoints")
    outputs = {}
    for implementation in ("plugin", "builtin"):
        env = {**os.environ, **prof.env}
        if implementation == "builtin":
            env["VLLM_PLUGINS"] = "internvl2_config"
        else:
            env.pop("VLLM_PLUGINS", None)
        out = work / f"parity-{implementation}.json"
        command = [sys.executable, __file__, "--generate", implementation, "--model", str(model), "--out", str(out)]
        if prof.parity_eager:
            command.append("--eager")
        with open(work / f"parity-{implementation}.log", "wb") as log:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=1800)
        if done.returncode != 0:
            return Row("parity bf16", False, f"{implementation} failed, see {work}/parity-{implementation}.log",
                       time.monotonic() - started)
        outputs[implementation] = json.loads(out.read_text())
    same_prompts = same_first = 0
    worst = 0.0
    for ours, theirs in zip(outputs["plugin"], outputs["builtin"]):
        same_prompts += ours["prompt_token_ids"] == theirs["prompt_token_ids"]
        same_first += ours["token_ids"][0] == theirs["token_ids"][0]
        shared = ours["first_logprobs"].keys() & theirs["first_logprobs"].keys()
        worst = max([worst, *(abs(ours["first_logprobs"][t] - theirs["first_logprobs"][t]) for t in shared)])
    n = len(outputs["plugin"])
    same_all = sum(a["token_ids"] == b["token_ids"] for a, b in zip(outputs["plugin"], outputs["builtin"]))
    ok = same_prompts == n and same_first == n
    detail = (f"prompts identical {same_prompts}/{n}, first token {same_first}/{n}, all 8 tokens {same_all}/{n}, "
              f"max |first-step logprob diff| {worst:.3f}")
    return Row("parity bf16", ok, detail, time.monotonic() - started)


def load_summary(load: dict | None) -> str:
    if not load or not load.get("levels"):
        return "-"
    parts = [f"c={lv['concurrency']}: {lv['requests_per_s']:.2f} req/s, TTFT p50 {lv['ttft_p50_s'] * 1e3:.0f} ms, "
             f"p99 {lv['latency_p99_s'] * 1e3:.0f} ms, errors {lv['errors']}" for lv in load["levels"]]
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-smoke", action="store_true", help="run every piece small on the CPU (eager)")
    parser.add_argument("--family", help="full-size checkpoint to serve (default InternVL2-8B; InternVL2-1B with --cpu-smoke)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["ours", "builtin", "parity"])
    parser.add_argument("--work-dir", type=Path, help="logs and JSON (default: a new temporary directory)")
    parser.add_argument("--generate", choices=["plugin", "builtin"], help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--eager", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.generate:
        generate(args.generate, args.model, args.out, args.eager)
        return

    from model_plugin.make_checkpoint import ensure_checkpoint

    prof = profile(args)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="internvl-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = [check_platform(args)]
    loads = {}
    if rows[0].ok:
        full = ensure_checkpoint(prof.family, "full", REPO / ".checkpoints")
        for target in ("ours", "builtin"):
            if target not in args.skip:
                row, loads[target] = serve_and_load(target, full, prof, work)
                rows.append(row)
        if "parity" not in args.skip:
            rows.append(check_parity(prof, work))

    print(f"\n{prof.family} full-size (dummy weights), {' '.join(prof.engine_flags)}; logs in {work}")
    print(f"{'step':<14} {'result':<6} {'seconds':>8}  detail")
    for row in rows:
        print(f"{row.step:<14} {'PASS' if row.ok else 'FAIL':<6} {row.seconds:8.1f}  {row.detail}")
    for target, load in loads.items():
        print(f"load {target:<9} {load_summary(load)}")
    if all(loads.get(t) for t in ("ours", "builtin")):
        for a, b in zip(loads["ours"]["levels"], loads["builtin"]["levels"]):
            print(f"ours/builtin c={a['concurrency']}: req/s x{a['requests_per_s'] / b['requests_per_s']:.2f}, "
                  f"TTFT p50 x{a['ttft_p50_s'] / b['ttft_p50_s']:.2f}, prompt tokens equal: "
                  f"{a['prompt_tokens'] == b['prompt_tokens']}")
    sys.exit(0 if all(row.ok for row in rows) else 1)


if __name__ == "__main__":
    main()
