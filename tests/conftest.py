import gc
import os
from pathlib import Path

import pytest

from model_plugin.runtime import apply_cpu_defaults

REPO = Path(__file__).resolve().parent.parent
# Generated checkpoints are cached in the work tree (git-ignored): tiny ones take
# seconds to make, and reruns reuse them.
CHECKPOINT_CACHE = Path(os.environ.get("INTERNVL_TEST_CHECKPOINTS", REPO / ".checkpoints"))

apply_cpu_defaults()


@pytest.fixture(scope="session")
def checkpoint():
    from model_plugin.make_checkpoint import ensure_checkpoint

    def get(family: str, scale: str = "tiny") -> Path:
        return ensure_checkpoint(family, scale, CHECKPOINT_CACHE)

    return get


def make_llm(model: Path, **overrides):
    """One vLLM engine on the CPU in fp32, eager, small enough for 2 cores."""
    from vllm import LLM

    settings = dict(
        model=str(model),
        dtype="float32",
        enforce_eager=True,
        max_model_len=8192,
        max_num_seqs=8,
        seed=0,
        limit_mm_per_prompt={"image": 4, "video": 1},
        mm_processor_kwargs={"max_tiles_limit": 12, "max_video_frames": 8},
    )
    settings.update(overrides)
    return LLM(**settings)


def shutdown_llm(llm) -> None:
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


from tests.live_server import live_server, loopback_http, tokenizer  # noqa: E402,F401  (shared fixtures)
