"""Importing the package must stay light: no vLLM, no torchvision family."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_does_not_pull_in_vllm_or_torchvision():
    code = (
        "import sys, preprocessing; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('vllm', 'torchvision', 'torchaudio', 'torchcodec')); print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_public_api_is_exported():
    import preprocessing

    for name in preprocessing.__all__:
        assert hasattr(preprocessing, name), name
