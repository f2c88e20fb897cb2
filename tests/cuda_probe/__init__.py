"""The CUDA-query probe's environment and records, for the processes that carry it.

The directory itself goes on PYTHONPATH (its sitecustomize.py loads in every
Python process started with that environment); this module is the tests' side.
"""

import json
import os
from pathlib import Path

PROBE_DIR = Path(__file__).resolve().parent
REPO = PROBE_DIR.parents[1]
PROJECT_ROOTS = [REPO / name for name in ("server", "model_plugin", "preprocessing", "batch")]


def probe_env(log: Path, base: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join([str(PROBE_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["CUDA_PROBE_LOG"] = str(log)
    env["CUDA_PROBE_ROOTS"] = os.pathsep.join(str(root) for root in PROJECT_ROOTS)
    return env


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def is_worker(record: dict) -> bool:
    # Workers own the device; CUDA there is expected on GPUs.
    return "VllmWorker" in record["process"] or "VLLM::Worker" in record["process"]
