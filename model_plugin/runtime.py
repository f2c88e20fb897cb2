"""Process-wide defaults set before the engine is created.

Environment variables are inherited by the engine-core and worker processes
vLLM starts, so they must be set before the engine exists.

Nothing here may query CUDA through torch (`torch.cuda.is_available()` and the
like): on a CUDA build that initialises the driver in this process and arms
torch's fork guard, and an engine core started with `fork` then fails on its
first CUDA call ("Cannot re-initialize CUDA in forked subprocess"). vLLM's
platform object answers "which device is this" without touching CUDA (NVML on
NVIDIA GPUs).
"""

import os

# The server process runs threads (the event loop's executor, uvicorn), and
# forking a threaded process is unsafe; CUDA cannot survive a fork either.
# `vllm serve` defaults to spawn for the same reasons; a user's explicit
# setting still wins.
PROCESS_DEFAULTS = {
    "VLLM_WORKER_MULTIPROC_METHOD": "spawn",
}

CPU_DEFAULTS = {
    # Without it the CPU backend reserves 92% of a NUMA node for the KV cache
    # and fails to start on small machines. GiB.
    "VLLM_CPU_KVCACHE_SPACE": "2",
}


def apply_engine_defaults() -> None:
    """Fill in settings the user has not set; never override theirs."""
    from vllm.platforms import current_platform

    defaults = dict(PROCESS_DEFAULTS)
    if current_platform.is_cpu():
        defaults.update(CPU_DEFAULTS)
    for key, value in defaults.items():
        os.environ.setdefault(key, value)


# The name callers used before the defaults stopped being CPU-only.
apply_cpu_defaults = apply_engine_defaults
