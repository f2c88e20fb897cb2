"""`compilation_config.compile_mm_encoder` compiles our InternViT layers with
vLLM's `@support_torch_compile`, and the compiled tower computes what the eager
one does."""

import json

import pytest
import torch

from tests.vit_tower import build_tower, vision_checkpoint, vllm_context

STYLES = {"300m": "InternVL2-1B", "6b": "InternVL2-40B"}


def compile_config(compile_mm_encoder: bool):
    from vllm.config import CompilationConfig, CompilationMode, VllmConfig

    return VllmConfig(
        compilation_config=CompilationConfig(
            mode=CompilationMode.VLLM_COMPILE, compile_mm_encoder=compile_mm_encoder
        )
    )


@pytest.mark.parametrize("enabled", [True, False])
def test_compile_follows_compile_mm_encoder(enabled, checkpoint):
    config, _ = vision_checkpoint(checkpoint("InternVL2-1B"))
    vllm_config = compile_config(enabled)
    with vllm_context(vllm_config):
        tower = build_tower(config, vllm_config=vllm_config)
    assert [layer.do_not_compile for layer in tower.encoder.layers] == [not enabled] * len(
        tower.encoder.layers
    )


@pytest.mark.slow
@pytest.mark.parametrize("style", list(STYLES))
def test_compiled_tower_matches_eager(style, checkpoint, tmp_path, monkeypatch):
    from vllm.compilation.counter import compilation_counter

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path))  # no compiled artifacts shared across runs
    config, tensors = vision_checkpoint(checkpoint(STYLES[style]))
    tiles = torch.randn(3, 3, config.image_size, config.image_size, generator=torch.Generator().manual_seed(0))

    with vllm_context(), torch.inference_mode():
        eager = build_tower(config, tensors, for_forward=True)
        expected = eager(tiles)

    vllm_config = compile_config(True)
    with vllm_context(vllm_config), torch.inference_mode():
        tower = build_tower(config, tensors, vllm_config=vllm_config, for_forward=True)
        before = compilation_counter.clone()
        compiled = tower(tiles)
        after_first = compilation_counter.clone()
        # Another tile count reuses the graph: the tile dimension is dynamic.
        fewer = tower(tiles[:2])
        after_second = compilation_counter.clone()

    compiles = lambda counter: counter.num_aot_compiles + counter.num_graphs_seen  # noqa: E731
    assert compiles(after_first) > compiles(before), "the encoder layers were not compiled"
    assert compiles(after_second) == compiles(after_first), "a new tile count recompiled"
    torch.testing.assert_close(compiled, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fewer, expected[:2], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_engine_with_compiled_encoder_matches_eager(checkpoint):
    """One engine run with the encoder compiled (not enforce_eager) gives the
    greedy tokens of the eager engine."""
    from vllm import SamplingParams

    from preprocessing import get_template, image_prefix
    from tests.conftest import make_llm, shutdown_llm
    from tests.test_plugin_parity import make_image

    path = checkpoint("InternVL2-1B")
    template = get_template(json.loads((path / "config.json").read_text())["template"])
    request = {
        "prompt": template.render([(image_prefix(1) + "Describe the image.", None)]),
        "multi_modal_data": {"image": [make_image(700, 500, 5)]},
        "mm_processor_kwargs": {"max_tiles": 4},
    }
    params = SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True, logprobs=1)

    def run(**overrides):
        llm = make_llm(path, max_model_len=4096, **overrides)
        try:
            return llm.generate([request], params, use_tqdm=False)[0].outputs[0]
        finally:
            shutdown_llm(llm)

    eager = run()
    compiled = run(enforce_eager=False, compilation_config={"compile_mm_encoder": True})
    assert compiled.token_ids == eager.token_ids
    for a, b in zip(eager.logprobs, compiled.logprobs):
        assert abs(next(iter(a.values())).logprob - next(iter(b.values())).logprob) < 1e-3
