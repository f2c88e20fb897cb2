"""Weight loading is strict: a missing or unexpected tensor fails the start and is named."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.conftest import make_llm

pytestmark = pytest.mark.slow


def edited_copy(source, target, edit):
    """A copy of a sharded checkpoint with `edit(state)` applied to the first shard."""
    shutil.copytree(source, target)
    index_path = target / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    state = load_file(target / shard)
    edit(state)
    save_file(state, target / shard, metadata={"format": "pt"})
    index["weight_map"] = {
        name: file for name, file in index["weight_map"].items() if file != shard
    } | {name: shard for name in state}
    index_path.write_text(json.dumps(index))
    return target


@pytest.fixture(autouse=True)
def in_process_engine(monkeypatch):
    # With the engine core in this process, its start-up error reaches the test.
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")


def start_error(path) -> str:
    with pytest.raises(Exception) as error:
        make_llm(path, max_model_len=4096)
    chain, exc = [], error.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(chain)


def test_a_missing_tensor_is_named(checkpoint, tmp_path):
    def drop(state):
        name = next(n for n in state if n.endswith("mlp.fc2.bias"))
        drop.name = name
        del state[name]

    path = edited_copy(checkpoint("InternVL2-1B"), tmp_path / "missing", drop)
    assert drop.name in start_error(path)


def test_an_unexpected_tensor_is_named(checkpoint, tmp_path):
    def add(state):
        state["vision_model.encoder.layers.0.attn.surprise"] = torch.zeros(4)

    path = edited_copy(checkpoint("InternVL2-1B"), tmp_path / "unexpected", add)
    assert "vision_model.encoder.layers.0.attn.surprise" in start_error(path)


# The four parity families load in test_plugin_parity; these are the other six.
OTHER_FAMILIES = [
    "InternVL2-8B",
    "InternVL2-26B",
    "InternVL2-Llama3-76B",
    "Mini-InternVL-Chat-2B-V1-5",
    "Mini-InternVL-Chat-4B-V1-5",
    "InternVL-Chat-V1-5",
]


@pytest.mark.parametrize("family", OTHER_FAMILIES)
def test_every_family_loads_strictly_and_generates(family, checkpoint):
    from vllm import SamplingParams

    from preprocessing import get_template, image_prefix
    from tests.conftest import shutdown_llm
    from tests.test_plugin_parity import make_image

    path = checkpoint(family)
    template = get_template(json.loads((path / "config.json").read_text())["template"])
    llm = make_llm(path, max_model_len=4096)
    try:
        request = {
            "prompt": template.render([(image_prefix(1) + "Describe.", None)]),
            "multi_modal_data": {"image": [make_image(640, 480, 3)]},
            "mm_processor_kwargs": {"max_tiles": 2},
        }
        params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True)
        output = llm.generate([request], params, use_tqdm=False)[0]
    finally:
        shutdown_llm(llm)
    assert len(output.outputs[0].token_ids) == 2
