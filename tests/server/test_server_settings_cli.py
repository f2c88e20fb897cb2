"""Settings from flags and INTERNVL_* environment variables; vLLM's own engine flags reach AsyncEngineArgs."""

import dataclasses

import pytest

from server.cli import build_parser, settings_from_args
from server.engine import engine_args
from server.settings import Settings


def config_field(config, name):
    """A field of a vLLM config given as JSON: vLLM keeps it as a dict or as its config class."""
    return config[name] if isinstance(config, dict) else getattr(config, name)


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def test_defaults_serve_the_demo_model():
    settings = settings_from_args([])
    assert settings.model is None and settings.uses_demo_model
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_tiles_per_image == 12 and settings.default_max_tiles == 12
    assert settings.engine_args == {}  # nothing differs from vLLM's defaults


def test_vllm_flags_reach_the_engine_args():
    settings = settings_from_args(
        [
            "--model", "OpenGVLab/InternVL2-1B", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
            "--distributed-executor-backend", "mp", "--dtype", "bfloat16", "--max-model-len", "4096",
            "--gpu-memory-utilization", "0.8", "--max-num-seqs", "16", "--quantization", "awq",
            "--enforce-eager", "--seed", "7",
            # Flags the server never declared itself:
            "--trust-remote-code", "--revision", "v1.0", "--tokenizer", "/tok", "--max-num-batched-tokens", "8192",
            "--enable-prefix-caching", "--kv-cache-dtype", "fp8", "-dp", "2", "--mm-encoder-tp-mode", "data",
            "--compilation-config", '{"mode": 0}', "--max_logprobs", "5",
        ]
    )
    assert settings.model == "OpenGVLab/InternVL2-1B"
    args = engine_args(settings, "/local/InternVL2-1B")
    assert args.model == "/local/InternVL2-1B" and args.served_model_name == ["OpenGVLab/InternVL2-1B"]
    assert (args.tensor_parallel_size, args.pipeline_parallel_size, args.data_parallel_size) == (2, 1, 2)
    assert args.distributed_executor_backend == "mp" and args.dtype == "bfloat16" and args.max_model_len == 4096
    assert args.gpu_memory_utilization == 0.8 and args.max_num_seqs == 16 and args.quantization == "awq"
    assert args.enforce_eager and args.seed == 7
    assert args.trust_remote_code and args.revision == "v1.0" and args.tokenizer == "/tok"
    assert args.max_num_batched_tokens == 8192 and args.enable_prefix_caching and args.kv_cache_dtype == "fp8"
    assert args.mm_encoder_tp_mode == "data" and config_field(args.compilation_config, "mode") == 0
    assert args.max_logprobs == 5


def test_vllm_flags_from_the_environment(monkeypatch):
    monkeypatch.setenv("INTERNVL_TRUST_REMOTE_CODE", "true")
    monkeypatch.setenv("INTERNVL_DOWNLOAD_DIR", "/weights")
    monkeypatch.setenv("INTERNVL_MAX_NUM_BATCHED_TOKENS", "4096")
    monkeypatch.setenv("INTERNVL_ENABLE_PREFIX_CACHING", "false")
    monkeypatch.setenv("INTERNVL_KV_CACHE_DTYPE", "fp8_e5m2")
    monkeypatch.setenv("INTERNVL_COMPILATION_CONFIG", '{"mode": 0}')
    monkeypatch.setenv("INTERNVL_LIMIT_MM_PER_PROMPT", '{"image": 3}')
    monkeypatch.setenv("INTERNVL_TENSOR_PARALLEL_SIZE", "4")
    settings = settings_from_args(["--tensor-parallel-size", "2"])  # a flag beats the environment
    args = engine_args(settings, "/m")
    assert args.trust_remote_code and args.download_dir == "/weights" and args.max_num_batched_tokens == 4096
    assert args.enable_prefix_caching is False and args.kv_cache_dtype == "fp8_e5m2"
    assert config_field(args.compilation_config, "mode") == 0 and args.tensor_parallel_size == 2
    assert args.limit_mm_per_prompt == {"image": 3, "video": 1} and settings.max_images_per_request == 3


def test_bad_environment_switch_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("INTERNVL_ENFORCE_EAGER", "maybe")
    with pytest.raises(SystemExit) as caught:
        settings_from_args([])
    assert caught.value.code == 2


def test_trust_remote_code_is_opt_in():
    assert engine_args(Settings(model="/m"), "/m").trust_remote_code is False


def test_server_environment_fills_what_flags_leave_out(monkeypatch):
    monkeypatch.setenv("INTERNVL_PORT", "9001")
    monkeypatch.setenv("INTERNVL_API_KEYS", "k1, k2")
    monkeypatch.setenv("INTERNVL_MEDIA_ALLOWED_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("INTERNVL_ENFORCE_EAGER", "true")
    settings = settings_from_args(["--host", "0.0.0.0"])
    assert settings.port == 9001 and settings.host == "0.0.0.0"
    assert settings.api_keys == ["k1", "k2"] and settings.media_allowed_networks == ["127.0.0.0/8"]
    assert settings.engine_args == {"enforce_eager": True}
    # A flag beats the environment.
    assert settings_from_args(["--port", "1234"]).port == 1234
    assert settings_from_args(["--no-enforce-eager"]).engine_args == {}


def test_media_limits_and_limit_mm_per_prompt_are_one_limit():
    # Ours alone: vLLM gets them.
    args = engine_args(settings_from_args(["--max-images-per-request", "2", "--max-videos-per-request", "0"]), "/m")
    assert args.limit_mm_per_prompt == {"image": 2, "video": 0}
    # vLLM's alone (its detailed form too): ours follow, vLLM keeps the sizes it profiles with.
    settings = settings_from_args(["--limit-mm-per-prompt", '{"image": {"count": 4, "width": 896, "height": 896}}'])
    assert settings.max_images_per_request == 4 and settings.max_videos_per_request == 1
    assert engine_args(settings, "/m").limit_mm_per_prompt["image"] == {"count": 4, "width": 896, "height": 896}
    # Both, agreeing: fine; disagreeing: a usage error.
    assert settings_from_args(["--limit-mm-per-prompt", '{"video": 2}', "--max-videos-per-request", "2"])
    with pytest.raises(SystemExit):
        settings_from_args(["--limit-mm-per-prompt", '{"image": 4}', "--max-images-per-request", "2"])


def test_processor_kwargs_merge_but_never_override_the_limits():
    settings = settings_from_args(["--mm-processor-kwargs", '{"some_option": 1}', "--max-tiles-per-image", "6", "--default-max-tiles", "6"])
    assert engine_args(settings, "/m").mm_processor_kwargs == {
        "some_option": 1, "max_tiles_limit": 6, "max_video_frames": 32, "tile_embedding_cache_mib": 256,
    }
    assert engine_args(settings_from_args(["--tile-embedding-cache-mib", "0"]), "/m").mm_processor_kwargs[
        "tile_embedding_cache_mib"] == 0
    for own in ('{"max_tiles_limit": 40}', '{"tile_embedding_cache_mib": 1}'):
        with pytest.raises(SystemExit):
            settings_from_args(["--mm-processor-kwargs", own])


def test_served_model_name_and_log_level_are_the_servers():
    args = engine_args(settings_from_args(["--model", "/m", "--served-model-name", "x", "--log-level", "debug"]), "/m")
    assert args.served_model_name == ["x"] and args.log_level == "DEBUG"
    with pytest.raises(ValueError):
        Settings(engine_args={"model": "/elsewhere"})
    with pytest.raises(ValueError):
        Settings(engine_args={"not_an_engine_arg": 1})


def test_structured_outputs_whitespace_switch():
    args = engine_args(settings_from_args(["--structured-outputs-disable-any-whitespace"]), "/m")
    assert args.structured_outputs_config.disable_any_whitespace
    assert args.structured_outputs_config.backend == "xgrammar"
    named = settings_from_args(
        ["--structured-outputs-disable-any-whitespace", "--structured-outputs-config.backend", "guidance"]
    )
    assert engine_args(named, "/m").structured_outputs_config.backend == "guidance"


def test_repeatable_flags():
    settings = settings_from_args(["--api-key", "a", "--api-key", "b", "--media-allowed-domain", "x.org"])
    assert settings.api_keys == ["a", "b"] and settings.media_allowed_domains == ["x.org"]


@pytest.mark.parametrize(
    "argv",
    [
        ["--port", "70000"],
        ["--max-tiles-per-image", "41"],
        ["--default-max-tiles", "20"],  # above max_tiles_per_image
        ["--media-allowed-network", "not-a-cidr"],
        ["--port", "abc"],
        ["--no-such-flag"],
        ["--tensor-parallel-size", "two"],
        ["--kv-cache-dtype", "not-a-dtype"],
    ],
)
def test_invalid_settings_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        settings_from_args(argv)
    assert caught.value.code == 2


def test_every_flag_lands_somewhere(parser):
    own = parser.server_dests
    engine_fields = {field.name for field in dataclasses.fields(__import__("vllm").AsyncEngineArgs)}
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        if action.dest in own:
            assert action.help, action.option_strings
            assert action.dest in Settings.model_fields, action.dest
        else:
            assert action.dest in engine_fields, action.dest
    names = set(parser._option_string_actions)
    assert {"--tensor-parallel-size", "--api-key", "--trust-remote-code", "--limit-mm-per-prompt"} <= names
    # The server's --model replaced vLLM's: no Qwen default behind it.
    assert parser._option_string_actions["--model"].dest in own


def test_help_lists_groups(parser):
    text = parser.format_help()
    for title in ("server", "security", "limits", "media", "ModelConfig", "ParallelConfig", "MultiModalConfig"):
        assert title in text
    assert "INTERNVL_<FLAG>" in text and len(text.splitlines()) < 80


def test_model_name():
    assert Settings(model="/a/b").model_name == "/a/b"
    assert Settings(model="/a/b", served_model_name="x").model_name == "x"
    assert Settings().model_name.endswith("random")
