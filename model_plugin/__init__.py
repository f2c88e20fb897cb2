"""vLLM out-of-tree plugin for the InternVL2 family.

vLLM calls the `vllm.general_plugins` entry points in every process it starts
(API server, engine core, workers). Two are installed:
- `internvl2_config`: `register_config()`, the `internvl_chat` config classes
  (no `trust_remote_code`);
- `internvl2`: `register()`, the config and this package's model.
`VLLM_PLUGINS=internvl2_config` keeps the config but gives vLLM's built-in
InternVL model back, as a baseline.
"""

import logging

logger = logging.getLogger(__name__)

ARCHITECTURE = "InternVLChatModel"


def register_config() -> None:
    from .configuration import register_configs

    register_configs()


def register() -> None:
    from vllm import ModelRegistry

    register_config()
    # A lazy "module:Class" reference keeps vLLM's model code out of processes
    # that never build the model.
    ModelRegistry.register_model(ARCHITECTURE, "model_plugin.internvl:InternVLChatModel")
    logger.info("internvl-serve: %s now served by model_plugin.internvl", ARCHITECTURE)

    from vllm.platforms import current_platform

    if current_platform.is_cpu():
        from .cpu_compat import patch_cpu_model_runner

        patch_cpu_model_runner()
