"""Settings from flags and INTERNVL_* environment variables."""

import pytest

from server.cli import build_parser, settings_from_args
from server.settings import Settings


def test_defaults_serve_the_demo_model():
    settings = settings_from_args([])
    assert settings.model is None and settings.uses_demo_model
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_tiles_per_image == 12 and settings.default_max_tiles == 12


def test_vllm_flags_use_vllm_names():
    settings = settings_from_args(
        [
            "--model", "OpenGVLab/InternVL2-1B", "--tensor-parallel-size", "2", "--pipeline-parallel-size", "1",
            "--distributed-executor-backend", "mp", "--dtype", "bfloat16", "--max-model-len", "4096",
            "--gpu-memory-utilization", "0.8", "--max-num-seqs", "16", "--quantization", "awq",
            "--enforce-eager", "--seed", "7",
        ]
    )
    assert settings.model == "OpenGVLab/InternVL2-1B"
    assert settings.tensor_parallel_size == 2 and settings.distributed_executor_backend == "mp"
    assert settings.dtype == "bfloat16" and settings.max_model_len == 4096
    assert settings.gpu_memory_utilization == 0.8 and settings.max_num_seqs == 16
    assert settings.quantization == "awq" and settings.enforce_eager and settings.seed == 7


def test_environment_fills_what_flags_leave_out(monkeypatch):
    monkeypatch.setenv("INTERNVL_PORT", "9001")
    monkeypatch.setenv("INTERNVL_API_KEYS", "k1, k2")
    monkeypatch.setenv("INTERNVL_MEDIA_ALLOWED_NETWORKS", "127.0.0.0/8")
    monkeypatch.setenv("INTERNVL_ENFORCE_EAGER", "true")
    settings = settings_from_args(["--host", "0.0.0.0"])
    assert settings.port == 9001 and settings.host == "0.0.0.0"
    assert settings.api_keys == ["k1", "k2"] and settings.media_allowed_networks == ["127.0.0.0/8"]
    assert settings.enforce_eager
    # A flag beats the environment.
    assert settings_from_args(["--port", "1234"]).port == 1234


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
    ],
)
def test_invalid_settings_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as caught:
        settings_from_args(argv)
    assert caught.value.code == 2


def test_help_explains_every_flag():
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.option_strings
    names = {name for action in parser._actions for name in action.option_strings}
    # Every flag maps onto a Settings field.
    fields = set(Settings.model_fields)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.dest in fields, action.dest
    assert "--tensor-parallel-size" in names and "--api-key" in names


def test_model_name():
    assert Settings(model="/a/b").model_name == "/a/b"
    assert Settings(model="/a/b", served_model_name="x").model_name == "x"
    assert Settings().model_name.endswith("random")
