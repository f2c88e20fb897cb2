"""Building the vision tower alone, outside an engine, as vLLM's layer tests do."""

import contextlib
import socket
from types import SimpleNamespace

import torch
from safetensors.torch import load_file

from model_plugin.configuration import InternVLChatConfig

PREFIX = "vision_model"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_single_process_group() -> None:
    """A world-size-1 gloo group and TP 1 (idempotent within a process)."""
    from vllm.distributed import ensure_model_parallel_initialized, init_distributed_environment

    init_distributed_environment(
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{free_port()}",
        backend="gloo",
    )
    ensure_model_parallel_initialized(1, 1)


@contextlib.contextmanager
def vllm_context(vllm_config=None):
    from vllm.config import VllmConfig, set_current_vllm_config

    with set_current_vllm_config(vllm_config or VllmConfig()):
        ensure_single_process_group()
        yield


@contextlib.contextmanager
def fake_tensor_parallel(monkeypatch, world_size: int, rank: int):
    """Make the layers shard as rank `rank` of `world_size` (construction and
    loading only: no collective can run)."""
    from vllm.distributed import parallel_state

    with monkeypatch.context() as patch:
        patch.setattr(parallel_state, "_TP", SimpleNamespace(world_size=world_size, rank_in_group=rank))
        yield


def vision_checkpoint(path):
    """(vision config, {name without the `vision_model.` prefix: tensor})."""
    config = InternVLChatConfig.from_pretrained(path)
    tensors = {}
    for shard in sorted(path.glob("*.safetensors")):
        for name, tensor in load_file(shard).items():
            if name.startswith(PREFIX + "."):
                tensors[name.removeprefix(PREFIX + ".")] = tensor
    return config.vision_config, tensors


def build_tower(vision_config, tensors=None, *, num_layers=None, vllm_config=None, for_forward=False):
    """The tower, loaded from `tensors` if given. `for_forward` finishes it as
    vLLM's loader does (the CPU repacks linear weights: parameters change)."""
    from model_plugin.intern_vit import InternVisionModel

    torch.manual_seed(0)
    tower = InternVisionModel(
        vision_config, None, num_layers=num_layers, prefix=PREFIX, vllm_config=vllm_config
    )
    if tensors is not None:
        loaded = tower.load_weights(tensors.items())
        assert {name for name, _ in tower.named_parameters()} <= loaded
    if for_forward:
        for module in tower.modules():
            quant_method = getattr(module, "quant_method", None)
            if quant_method is not None:
                quant_method.process_weights_after_loading(module)
    return tower.eval()
