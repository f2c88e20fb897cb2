"""vLLM out-of-tree plugin for the InternVL2 family.

vLLM calls `register()` in every process it starts (API server, engine core,
workers) through the `vllm.general_plugins` entry point. Leave the plugin out
with `VLLM_PLUGINS` to get vLLM's built-in InternVL back as a baseline.
"""

import logging

logger = logging.getLogger(__name__)

ARCHITECTURE = "InternVLChatModel"


def register() -> None:
    from vllm import ModelRegistry

    from .configuration import register_configs

    register_configs()
    # A lazy "module:Class" reference keeps vLLM's model code out of processes
    # that never build the model.
    ModelRegistry.register_model(ARCHITECTURE, "model_plugin.internvl:InternVLChatModel")
    logger.info("internvl-serve: %s now served by model_plugin.internvl", ARCHITECTURE)
