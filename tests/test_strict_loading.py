"""Weight loading is strict: a missing or unexpected tensor fails the start and is named."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from preprocessing import get_template
from tests.conftest import make_llm

pytestmark = pytest.mark.slow


def edited_copy(source, target, edit):
    """A copy of a checkpoint with `edit(state)` applied to its (first) weight file."""
    shutil.copytree(source, target)
    index_path = target / "model.safetensors.index.json"
    if not index_path.exists():  # one model.safetensors, as the released InternVL2-1B
        state = load_file(target / "model.safetensors")
        edit(state)
        save_file(state, target / "model.safetensors", metadata={"format": "pt"})
        return target
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
    """Loads, and its answer's log-probabilities match the transformers oracle's
    (fed the official inputs) as closely as in tests/test_plugin_parity.py."""
    from vllm import SamplingParams

    from tests.conftest import shutdown_llm
    from tests.oracle import load_oracle, oracle_logprobs
    from tests.test_plugin_parity import TOLERANCE, Case, Engine, build_request, make_image, official_inputs

    path = checkpoint(family)
    config = json.loads((path / "config.json").read_text())
    original_context = config["llm_config"].get("original_max_position_embeddings")  # Phi-3 LongRoPE
    llm = make_llm(path, max_model_len=min(4096, original_context or 4096))
    engine = Engine(family, path, llm, get_template(config["template"]), config)
    case = Case("one_image", "Describe.", [make_image(640, 480, 3)], [2], [])
    try:
        params = SamplingParams(temperature=0.0, max_tokens=2, ignore_eos=True, logprobs=5)
        output = llm.generate([build_request(engine, case)], params, use_tqdm=False)[0]
        tokenizer = llm.get_tokenizer()
    finally:
        shutdown_llm(llm)
    text, pixel_values = official_inputs(engine, case)
    official_ids = tokenizer(text).input_ids
    assert list(output.prompt_token_ids) == official_ids
    completion = output.outputs[0]
    oracle = load_oracle(path, tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"))
    expected = oracle_logprobs(oracle, official_ids + list(completion.token_ids), pixel_values)
    start = len(official_ids) - 1
    for step, (token, logprobs) in enumerate(zip(completion.token_ids, completion.logprobs)):
        row = expected[start + step]
        assert row.argmax().item() == token, f"step {step}: oracle prefers {row.argmax().item()}, vLLM chose {token}"
        worst = max(abs(entry.logprob - row[token_id].item()) for token_id, entry in logprobs.items())
        assert worst <= TOLERANCE, f"step {step}: |logprob diff| {worst:.2e}"
