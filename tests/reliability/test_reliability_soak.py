"""The soak script's short form, and engine death. Each starts servers of its
own (the fault ends them), so they stay apart from the shared live server."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def run_soak(*args: str, timeout: int = 600) -> str:
    result = subprocess.run([sys.executable, str(SOAK), *args], capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr[-3000:]
    print(output)
    assert result.returncode == 0, output[-8000:]
    assert "all checks passed" in result.stdout
    return result.stdout


def test_soak_short_then_sigterm_drains_and_exits_0():
    """40 mixed requests at concurrency 8, 20% hanging up mid-stream; then SIGTERM under load."""
    output = run_soak("--requests", "40", "--concurrency", "8", "--fault", "sigterm", "--drain-timeout", "30")
    assert re.search(r"fault: sigterm\s+passed", output)
    assert re.search(r"exit status\s+0\n", output)


def test_engine_death_turns_health_503_and_exits_non_zero():
    output = run_soak("--requests", "8", "--concurrency", "4", "--fault", "kill-engine")
    assert re.search(r"fault: kill-engine\s+passed", output)
    assert re.search(r"server exit status\s+[1-9]", output)
