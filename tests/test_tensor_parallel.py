"""Tensor parallel 2 on the CPU gives the same greedy output as TP 1, in both
encoder modes.

Weight-sharded (the default): the engine really runs two workers, each holding
its shard; every worker reports its rank, process and parameter shapes, which
are compared with TP 1's. The 6B-style tower has a head count that 2 does not
divide: it only shards because the attention is padded with dummy heads.

Data-parallel encoder (`mm_encoder_tp_mode="data"`): every rank holds the whole
vision tower and encodes only its share of the tiles (then all-gathers), so each
rank must have encoded half of the tiles.

One TP 1 engine per family is the reference for both (engine starts dominate).
"""

from dataclasses import dataclass

import pytest
from vllm import SamplingParams

from preprocessing import get_template, image_prefix
from tests.conftest import make_llm, shutdown_llm
from tests.test_plugin_parity import make_image

pytestmark = pytest.mark.slow

FAMILIES = {
    "InternVL2-1B": "300M-style tower (LayerNorm, qkv bias)",
    "InternVL2-40B": "6B-style tower (RMSNorm, qk-norm, 5 heads)",
}


def record_encoder_batches(worker):
    """Runs in each worker: note the tile count of every vision-tower call."""
    tower = worker.model_runner.get_model().vision_model
    tower.encoded_batches = []
    if not getattr(tower, "batch_hook_installed", False):
        tower.embeddings.register_forward_pre_hook(
            lambda module, args: tower.encoded_batches.append(args[0].shape[0])
        )
        tower.batch_hook_installed = True


def encoded_batches(worker):
    return worker.model_runner.get_model().vision_model.encoded_batches


@dataclass
class Run:
    outputs: list
    encoded: list[list[int]]  # per worker: tiles per vision-tower call
    workers: list[dict]


def run_engine(path, template_name: str, **overrides) -> Run:
    template = get_template(template_name)
    requests = [
        {
            # 2x1 tiles + thumbnail: an odd tile count is padded for the
            # split across ranks in data mode.
            "prompt": template.render([(image_prefix(1) + "Describe the image.", None)]),
            "multi_modal_data": {"image": [make_image(1000, 500, 5)]},
            "mm_processor_kwargs": {"max_tiles": 4},
        },
        {"prompt": template.render([("Count to ten.", None)])},
    ]
    params = SamplingParams(temperature=0.0, max_tokens=12, ignore_eos=True, logprobs=1)
    llm = make_llm(path, **overrides)
    try:
        llm.collective_rpc(record_encoder_batches)
        outputs = llm.generate(requests, params, use_tqdm=False)
        return Run(outputs, llm.collective_rpc(encoded_batches), worker_report(llm))
    finally:
        shutdown_llm(llm)


def worker_report(llm) -> list[dict]:
    """Per worker process: TP rank and world size, pid, and every parameter's shape."""

    def report(worker):  # runs inside each worker (pickled by value: a local function)
        import os

        from vllm.distributed import get_tensor_model_parallel_rank, get_tensor_model_parallel_world_size

        return {
            "rank": get_tensor_model_parallel_rank(),
            "world_size": get_tensor_model_parallel_world_size(),
            "pid": os.getpid(),
            "shapes": {name: list(p.shape) for name, p in worker.get_model().named_parameters()},
        }

    return llm.collective_rpc(report)


def assert_sharded(tp1: dict[str, list[int]], rank_shapes: dict[str, list[int]]) -> None:
    """One rank's parameters against TP 1's. Sizes, not shapes: the CPU backend may
    repack a linear layer's weight into its own layout after loading."""
    assert rank_shapes.keys() == tp1.keys()
    full = {name: _numel(shape) for name, shape in tp1.items()}
    held = {name: _numel(shape) for name, shape in rank_shapes.items()}
    assert all(held[name] <= full[name] for name in full), [n for n in full if held[n] > full[n]]
    # The LLM's column- and row-parallel layers hold exactly half on each rank.
    llm_parallel = [
        name for name in full
        if name.startswith("language_model.")
        and name.endswith(("qkv_proj.weight", "gate_up_proj.weight", "o_proj.weight", "down_proj.weight"))
    ]
    assert llm_parallel
    for name in llm_parallel:
        assert 2 * held[name] == full[name], (name, rank_shapes[name], tp1[name])
    # So is the vision tower (padded heads: a rank may hold half plus a dummy head).
    # Its tiny weights may be repacked into padded blocks on the CPU, so the evidence
    # is every layer's per-head / column-parallel parameters split: the qkv weight or
    # bias or the per-head qk-norm (6B style), and fc1's weight or bias.
    vision_sharded = {name for name in full if name.startswith("vision_model.") and held[name] < full[name]}
    vision_layers = {name.split(".attn.")[0] for name in full if name.endswith(".attn.qkv.weight")}
    assert vision_layers
    for layer in vision_layers:
        attention = {f"{layer}.attn.{p}" for p in ("qkv.weight", "qkv.bias", "q_norm.weight", "k_norm.weight")}
        mlp = {f"{layer}.mlp.fc1.weight", f"{layer}.mlp.fc1.bias"}
        assert attention & vision_sharded and mlp & vision_sharded, (layer, sorted(vision_sharded))
    assert sum(held.values()) < 0.75 * sum(full.values()), (sum(held.values()), sum(full.values()))


def _numel(shape: list[int]) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def assert_same_greedy_output(tp1: Run, tp2: Run) -> None:
    for one, two in zip(tp1.outputs, tp2.outputs, strict=True):
        assert one.prompt_token_ids == two.prompt_token_ids
        assert one.outputs[0].token_ids == two.outputs[0].token_ids
        for a, b in zip(one.outputs[0].logprobs, two.outputs[0].logprobs):
            (token_a, lp_a), (token_b, lp_b) = next(iter(a.items())), next(iter(b.items()))
            assert token_a == token_b
            assert abs(lp_a.logprob - lp_b.logprob) < 1e-3


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request, checkpoint):
    import json

    path = checkpoint(request.param)
    template = json.loads((path / "config.json").read_text())["template"]
    with pytest.MonkeyPatch.context() as patch:
        # Lets collective_rpc carry the hooks and report functions to the workers (tests only).
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        tp1 = run_engine(path, template)
    return path, template, tp1


def tp2_engine(path, template: str, **overrides) -> Run:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        patch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0|1")
        return run_engine(path, template, tensor_parallel_size=2, distributed_executor_backend="mp", **overrides)


def test_tp2_matches_tp1(family):
    path, template, tp1 = family
    [single] = tp1.workers
    assert (single["rank"], single["world_size"]) == (0, 1)

    tp2 = tp2_engine(path, template)
    workers = tp2.workers
    assert sorted((w["rank"], w["world_size"]) for w in workers) == [(0, 2), (1, 2)]
    assert len({w["pid"] for w in workers}) == 2  # two worker processes
    for worker in workers:
        assert_sharded(single["shapes"], worker["shapes"])
    assert workers[0]["shapes"] == workers[1]["shapes"]
    assert_same_greedy_output(tp1, tp2)


def test_data_parallel_encoder_matches_tp1(family):
    path, template, tp1 = family
    [tp1_batches] = tp1.encoded
    tp2 = tp2_engine(path, template, mm_encoder_tp_mode="data")

    assert any(tiles % 2 for tiles in tp1_batches), f"no odd tile count in {tp1_batches}"
    half = [-(-tiles // 2) for tiles in tp1_batches]
    assert tp2.encoded == [half, half], f"TP 1 encoded {tp1_batches} tiles per call"
    # Data mode: every rank holds the whole tower.
    for worker in tp2.workers:
        vision = {n: s for n, s in worker["shapes"].items() if n.startswith("vision_model.")}
        assert vision == {n: s for n, s in tp1.workers[0]["shapes"].items() if n.startswith("vision_model.")}
    assert_same_greedy_output(tp1, tp2)
