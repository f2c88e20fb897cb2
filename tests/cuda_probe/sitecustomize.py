"""Records CUDA queries made by project code, in every Python process it reaches.

Put this directory first on PYTHONPATH: Python imports `sitecustomize` at start-up
in the server and in every process vLLM spawns (they inherit the environment).
Each process appends one `loaded` line, and one `cuda` line per call of a wrapped
torch.cuda function whose caller (the first frame outside torch and this file) is
a file under one of `CUDA_PROBE_ROOTS`. Lines are JSON, appended to
`CUDA_PROBE_LOG`.
"""

import functools
import json
import multiprocessing
import os
import sys

LOG = os.environ.get("CUDA_PROBE_LOG")
ROOTS = tuple(os.path.join(root, "") for root in os.environ.get("CUDA_PROBE_ROOTS", "").split(os.pathsep) if root)

# Everything that initialises CUDA or asks the driver about devices; on a CUDA
# build each one arms torch's fork guard or creates a context.
CUDA_QUERIES = (
    "is_available", "device_count", "current_device", "init", "_lazy_init", "set_device",
    "get_device_properties", "get_device_name", "get_device_capability", "mem_get_info",
    "synchronize", "memory_allocated", "max_memory_allocated", "memory_reserved",
    "empty_cache", "current_stream", "default_stream", "get_arch_list", "ipc_collect",
)
DRIVER_QUERIES = ("_cuda_getDeviceCount", "_cuda_init")


def _process_name() -> str:
    title = ""
    try:
        import setproctitle

        title = setproctitle.getproctitle()
    except ImportError:
        pass
    return f"{multiprocessing.current_process().name} | {title}"


def _write(record: dict) -> None:
    record.update(pid=os.getpid(), process=_process_name(), argv=sys.orig_argv[1:])
    line = (json.dumps(record) + "\n").encode()
    fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def _caller(skip: tuple[str, ...]) -> tuple[str, int]:
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith(skip) or frame.f_code.co_filename == __file__):
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame is not None else ("?", 0)


def _install() -> None:
    import torch
    import torch.cuda

    torch_dir = os.path.join(os.path.dirname(torch.__file__), "")

    def wrap(owner, name: str, label: str) -> None:
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def recorded(*args, **kwargs):
            filename, line = _caller((torch_dir,))
            if filename.startswith(ROOTS):
                _write({"event": "cuda", "function": label, "caller": f"{filename}:{line}"})
            return original(*args, **kwargs)

        setattr(owner, name, recorded)

    for name in CUDA_QUERIES:
        wrap(torch.cuda, name, f"torch.cuda.{name}")
    for name in DRIVER_QUERIES:
        wrap(torch._C, name, f"torch._C.{name}")


if LOG:
    _install()
    _write({"event": "loaded"})
