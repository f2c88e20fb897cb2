"""LoRA adapters on the LLM, precomputed image embeddings, and the encoder CUDA-graph contract.

One fp32 engine (InternVL2-1B tiny) with `enable_lora` and `enable_mm_embeds`:
- a PEFT adapter on the LLM's q/v projections changes the answer to an image
  request; an all-zero adapter leaves it identical;
- the embeddings the model computes for an image, sent as `image_embeds`, give
  the same prompt and greedy tokens as the image;
- vLLM's EncoderCudaGraphManager, driven through our model's
  SupportsEncoderCudaGraph methods with the CUDA graph replaced by an eager call
  (CPU), returns exactly what embed_multimodal returns, for images, video frames
  and image_embeds batches.
"""

import json

import pytest
import torch
from safetensors.torch import save_file

from preprocessing import tile_image_uint8
from tests.conftest import make_llm, shutdown_llm
from tests.image_request import DEFAULT_CASE, Served, make_image

pytestmark = pytest.mark.slow

MAX_TOKENS = 12
LORA_RANK = 8


@pytest.fixture(scope="module")
def engine(checkpoint):
    path = checkpoint("InternVL2-1B")
    with pytest.MonkeyPatch.context() as patch:
        # Lets collective_rpc carry probe functions to the worker (tests only).
        patch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        llm = make_llm(
            path,
            max_model_len=4096,
            enable_lora=True,
            max_lora_rank=LORA_RANK,
            max_loras=2,
            enable_mm_embeds=True,
        )
        yield Served(path, llm)
        shutdown_llm(llm)


def write_peft_adapter(target, llm_config: dict, *, zero: bool, seed: int = 0):
    """A PEFT LoRA adapter on every layer's q_proj and v_proj, as `peft` saves one."""
    gen = torch.Generator().manual_seed(seed)
    hidden = llm_config["hidden_size"]
    head_dim = hidden // llm_config["num_attention_heads"]
    out_features = {"q_proj": hidden, "v_proj": llm_config["num_key_value_heads"] * head_dim}
    tensors = {}
    for layer in range(llm_config["num_hidden_layers"]):
        for proj, out in out_features.items():
            name = f"base_model.model.language_model.model.layers.{layer}.self_attn.{proj}"
            tensors[f"{name}.lora_A.weight"] = torch.randn(LORA_RANK, hidden, generator=gen) * 0.5
            b = torch.randn(out, LORA_RANK, generator=gen) * 0.5
            tensors[f"{name}.lora_B.weight"] = torch.zeros_like(b) if zero else b
    target.mkdir(parents=True)
    save_file(tensors, target / "adapter_model.safetensors")
    (target / "adapter_config.json").write_text(
        json.dumps(
            {
                "peft_type": "LORA",
                "task_type": "CAUSAL_LM",
                "r": LORA_RANK,
                "lora_alpha": 2 * LORA_RANK,
                "lora_dropout": 0.0,
                "bias": "none",
                "target_modules": ["q_proj", "v_proj"],
                "base_model_name_or_path": "InternVL2-1B-tiny",
            }
        )
    )
    return target


def greedy(engine, request, lora=None):
    return engine.greedy(request, MAX_TOKENS, lora_request=lora)


def top_logprobs(output) -> list[float]:
    return [next(iter(step.values())).logprob for step in output.outputs[0].logprobs]


def test_lora_adapter_changes_the_answer_and_a_zero_adapter_does_not(engine, tmp_path):
    from vllm.lora.request import LoRARequest

    llm_config = json.loads((engine.checkpoint / "config.json").read_text())["llm_config"]
    adapter = write_peft_adapter(tmp_path / "adapter", llm_config, zero=False)
    zero = write_peft_adapter(tmp_path / "zero", llm_config, zero=True)
    request = engine.request()

    base = greedy(engine, request)
    adapted = greedy(engine, request, LoRARequest("adapter", 1, str(adapter)))
    unchanged = greedy(engine, request, LoRARequest("zero", 2, str(zero)))

    assert unchanged.outputs[0].token_ids == base.outputs[0].token_ids
    assert torch.allclose(torch.tensor(top_logprobs(unchanged)), torch.tensor(top_logprobs(base)), atol=1e-5)
    assert adapted.outputs[0].token_ids != base.outputs[0].token_ids or not torch.allclose(
        torch.tensor(top_logprobs(adapted)), torch.tensor(top_logprobs(base)), atol=1e-3
    )
    # The adapter applies to the first token already (prefill, not only decode).
    assert abs(top_logprobs(adapted)[0] - top_logprobs(base)[0]) > 1e-3 or (
        adapted.outputs[0].token_ids[0] != base.outputs[0].token_ids[0]
    )


def image_embeddings(engine, tiles: torch.Tensor) -> torch.Tensor:
    def embed(model):
        device = model.mlp1[1].weight.device
        [out] = model.embed_multimodal(
            pixel_values_flat=tiles.to(device), image_num_patches=torch.tensor([len(tiles)])
        )
        return out.cpu()

    embeddings = engine.on_model(embed)
    return embeddings


@pytest.mark.parametrize("layout", ["list_of_2d", "batched_3d"])
def test_image_embeds_give_the_image_answer(engine, layout):
    request = engine.request()
    from_image = greedy(engine, request)

    tiles = tile_image_uint8(DEFAULT_CASE.image, max_tiles=DEFAULT_CASE.max_tiles)
    embeddings = image_embeddings(engine, tiles)
    assert embeddings.shape == (len(tiles) * 256, 128)  # tokens per tile x LLM hidden
    request = dict(request, multi_modal_data={"image": [embeddings] if layout == "list_of_2d" else embeddings[None]})
    request.pop("mm_processor_kwargs")
    from_embeds = greedy(engine, request)

    assert from_embeds.prompt_token_ids == from_image.prompt_token_ids
    assert from_embeds.outputs[0].token_ids == from_image.outputs[0].token_ids
    assert torch.allclose(torch.tensor(top_logprobs(from_embeds)), torch.tensor(top_logprobs(from_image)), atol=1e-4)


def test_image_embeds_must_fill_whole_tiles(engine):
    request = engine.request()
    request.pop("mm_processor_kwargs")
    request["multi_modal_data"] = {"image": [torch.zeros(300, 128)]}
    with pytest.raises(Exception, match="multiple of 256"):
        greedy(engine, request)


def test_encoder_cudagraph_manager_matches_embed_multimodal(engine):
    """The manager's pack/select/pad/replay/scatter over our model, graphs run eagerly."""
    sizes = [(800, 600, 1, 6), (300, 640, 2, 2), (448, 448, 3, 1)]  # width, height, seed, max tiles
    images = [tile_image_uint8(make_image(w, h, seed), max_tiles=n) for w, h, seed, n in sizes]
    frames = torch.cat([tile_image_uint8(make_image(320, 240, 10 + i), max_tiles=1) for i in range(3)])

    def check(worker):
        from vllm.v1.worker.encoder_cudagraph import BudgetGraphMetadata, EncoderCudaGraphManager

        model = worker.get_model()
        device = model.mlp1[1].weight.device
        manager = EncoderCudaGraphManager(worker.vllm_config, device, model.mlp1[1].weight.dtype, model)

        class EagerGraph:
            """Stands in for torch.cuda.CUDAGraph: replay runs the captured forward."""

            def __init__(self, values, output):
                self.values, self.output = values, output

            def replay(self):
                self.output.copy_(model.encoder_cudagraph_forward(dict(self.values)))

        config = worker.vllm_config
        report = {
            "budgets": list(manager.token_budgets),
            "largest": min(config.scheduler_config.max_num_batched_tokens, config.model_config.max_model_len),
        }
        with torch.inference_mode():
            graphs = manager._get_graph_set("default")
            for budget in manager.token_budgets:
                capture = model.prepare_encoder_cudagraph_capture_inputs(
                    budget, manager.max_batch_size, manager.max_frames_per_batch, device, torch.float32
                )
                report.setdefault("buffers", []).append(
                    (tuple(capture.values["pixel_values_flat"].shape), str(capture.values["pixel_values_flat"].dtype))
                )
                output = torch.empty_like(model.encoder_cudagraph_forward(dict(capture.values)))
                graphs[budget] = BudgetGraphMetadata(
                    budget, manager.max_batch_size, manager.max_frames_per_batch,
                    EagerGraph(capture.values, output), capture.values, output,
                )

            image_kwargs = {
                "pixel_values_flat": torch.cat(images).to(device),
                "image_num_patches": torch.tensor([len(t) for t in images]),
            }
            video_kwargs = {"pixel_values_flat_video": frames.to(device), "video_num_patches": torch.tensor([3])}
            eager_images = model.embed_multimodal(**image_kwargs)
            embeds_kwargs = {"image_embeds": [e.clone() for e in eager_images[:2]]}
            for key, kwargs in (("image", image_kwargs), ("video", video_kwargs), ("embeds", embeds_kwargs)):
                from_graphs = manager.execute(kwargs)
                eager = model.embed_multimodal(**kwargs)
                report[key] = {"graphs": [t.cpu() for t in from_graphs], "eager": [t.cpu() for t in eager]}
            report["specs"] = [
                (s.input_size, s.output_tokens) for s in model.get_encoder_cudagraph_item_specs(image_kwargs)
            ]
            report["hits"] = manager.graph_hits
        return report

    # The report comes back through msgpack: tensors only inside lists and dicts
    # (inside a tuple they arrive undecoded), and tuples of plain values may come back as lists.
    [report] = engine.llm.collective_rpc(check)
    tiles = [len(t) for t in images]
    assert [tuple(spec) for spec in report["specs"]] == [(n, n * 256) for n in tiles]
    assert report["budgets"][0] == 256 and report["budgets"][-1] == report["largest"]
    # Capture buffers hold uint8 tiles (what the processor sends), one per 256 tokens.
    assert [shape[0] for shape, _ in report["buffers"]] == [b // 256 for b in report["budgets"]]
    assert {dtype for _, dtype in report["buffers"]} == {"torch.uint8"}
    assert report["hits"] == len(images) + 1  # every image and the video replayed a graph
    for key in ("image", "video", "embeds"):
        from_graphs, eager = report[key]["graphs"], report[key]["eager"]
        assert len(from_graphs) == len(eager), key
        for a, b in zip(from_graphs, eager):
            assert a.shape == b.shape, key
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=key)
