"""No project code queries CUDA in the API-server or engine-core process.

On a CUDA build any `torch.cuda` device query arms torch's fork guard, and an
engine core vLLM forks then dies on its first CUDA call. The probe
(tests/cuda_probe/sitecustomize.py) rides PYTHONPATH into every process the
server and vLLM start and records each CUDA query whose caller is project code.
This machine has no GPU: the calls are recorded all the same, which is the point.
"""

import base64
import io
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cuda_probe import is_worker, probe_env, records
from tests.processor_support import strip

REPO = Path(__file__).resolve().parents[1]


CONTROL = """
import torch
project_file = {project_file!r}
exec(compile("torch.cuda.is_available(); torch.cuda.device_count()", project_file, "exec"))
exec(compile("torch.cuda.is_available()", "/elsewhere/not_project.py", "exec"))
try:
    exec(compile("torch.cuda.current_device()", project_file, "exec"))
except (AssertionError, RuntimeError):
    pass  # no CUDA here; the call was still made
"""


def test_the_probe_records_project_cuda_queries(tmp_path):
    log = tmp_path / "probe.jsonl"
    project_file = str(REPO / "model_plugin" / "control_probe.py")  # a name only; no file is written
    subprocess.run(
        [sys.executable, "-c", CONTROL.format(project_file=project_file)],
        env=probe_env(log), cwd=tmp_path, check=True, timeout=120,
    )
    found = [(r["function"], r["caller"]) for r in records(log) if r["event"] == "cuda"]
    assert ("torch.cuda.is_available", f"{project_file}:1") in found
    assert ("torch.cuda.device_count", f"{project_file}:1") in found
    assert ("torch.cuda.current_device", f"{project_file}:1") in found
    assert not [caller for _, caller in found if "not_project" in caller]
    # A query nested inside torch is blamed on the project frame that started it.
    assert ("torch.cuda._lazy_init", f"{project_file}:1") in found


@pytest.mark.slow
def test_the_server_and_engine_core_make_no_cuda_query(live_server):
    # The shared live server carries the probe (tests/live_server.py); by the time
    # this runs it may have served much more than this one image request.
    buffer = io.BytesIO()
    strip(2).save(buffer, "JPEG")
    image_url = "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()
    reply = live_server.post({"model": live_server.model, "max_tokens": 2, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": image_url}},
        {"type": "text", "text": "Describe."},
    ]}]})
    assert reply.status_code == 200, reply.text

    seen = records(live_server.cuda_probe_log)
    loaded = [r for r in seen if r["event"] == "loaded"]
    # The API server, plus the engine core and worker vLLM spawned, all ran the probe.
    assert any(r["argv"][:2] == ["-m", "server"] for r in loaded), loaded
    assert sum("--multiprocessing-fork" in r["argv"] for r in loaded) >= 2, loaded
    forbidden = [r for r in seen if r["event"] == "cuda" and not is_worker(r)]
    assert not forbidden, "CUDA queried from project code outside the workers:\n" + "\n".join(
        f"{r['function']} from {r['caller']} in {r['process']} (pid {r['pid']})" for r in forbidden
    )
