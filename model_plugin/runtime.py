"""Process-wide defaults that make vLLM's CPU build start without tuning.

Environment variables are inherited by the engine and worker processes vLLM
spawns, so they must be set before the engine is created.
"""

import os

CPU_DEFAULTS = {
    # Without it the CPU backend reserves 92% of a NUMA node for the KV cache
    # and fails to start on small machines. GiB.
    "VLLM_CPU_KVCACHE_SPACE": "2",
    # Engine and workers are started with spawn: safe with threads and torch.
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}


def apply_cpu_defaults() -> None:
    """Fill in CPU settings the user has not set; never override theirs."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch comes with vLLM
        return
    if torch.cuda.is_available():
        return
    for key, value in CPU_DEFAULTS.items():
        os.environ.setdefault(key, value)
