"""The vLLM `AsyncLLM` behind the API, and what the server needs to know about the model.

Routes talk to the small `Engine` protocol, so tests can run the HTTP layer
against a fake without starting vLLM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from model_plugin.hf_format import chat_config_dict, from_hf_config, is_hf_format
from preprocessing import THINKING_SYSTEM_MESSAGE, ChatTemplate, get_template

from .errors import APIError, BadRequest, EngineUnavailable
from .settings import DEMO_FAMILY, DEMO_SCALE, Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    source: str
    template: ChatTemplate
    max_model_len: int | None
    use_thumbnail: bool
    min_tiles: int
    created: int
    # The system message of the model's thinking mode (InternVL3.5), if it has one.
    thinking_system_message: str | None = None


@dataclass
class QueueDepth:
    """Engine scheduler counts, refreshed by vLLM's stat-logger hook."""

    running: int = 0
    waiting: int = 0


class Engine(Protocol):
    info: ModelInfo
    queue: QueueDepth
    # The inference engine's own version (vLLM's), for /version.
    version: str

    def generate(
        self, prompt: dict[str, Any], sampling: dict[str, Any], request_id: str, *, stream: bool
    ) -> AsyncIterator[Any]:
        """The request's outputs; closing the iterator early aborts the request in the engine.

        `request_id` need not be unique (clients choose it through X-Request-Id).
        """
        ...

    async def tokenize(self, prompt: dict[str, Any], *, add_special_tokens: bool | None = None) -> list[int]:
        """The prompt's token ids exactly as `generate` would see them (image and video tokens expanded)."""
        ...

    async def detokenize(self, token_ids: list[int]) -> str: ...

    def token_strings(self, token_ids: list[int]) -> list[str]: ...

    def is_alive(self) -> bool: ...

    async def shutdown(self) -> None: ...


def resolve_model(settings: Settings) -> str:
    """The local dir or hub id to load; makes the random demo checkpoint if none was given."""
    if settings.model is not None:
        return settings.model
    from model_plugin.make_checkpoint import ensure_checkpoint

    path = ensure_checkpoint(DEMO_FAMILY, DEMO_SCALE, settings.checkpoint_cache_dir)
    banner = "!" * 78
    logger.warning(
        "\n%s\n!! No --model given: serving the built-in demo checkpoint %s\n"
        "!! Its weights are RANDOM: answers are meaningless. Use --model for real output.\n%s",
        banner,
        path,
        banner,
    )
    return str(path)


def read_model_config(source: str) -> dict[str, Any]:
    """config.json of a local checkpoint dir or a hub repo."""
    local = Path(source)
    if local.is_dir():
        return json.loads((local / "config.json").read_text())
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(source, "config.json")).read_text())


def model_info(settings: Settings, source: str, config: dict[str, Any]) -> ModelInfo:
    template_name = config.get("template")
    if not template_name:
        raise ValueError(f"{source}: config.json names no chat `template`; is this an InternVL2 checkpoint?")
    return ModelInfo(
        name=settings.model_name,
        source=source,
        template=get_template(template_name),
        max_model_len=None,  # known once vLLM has read the config (and --max-model-len)
        use_thumbnail=bool(config.get("use_thumbnail", True)),
        min_tiles=int(config.get("min_dynamic_patch", 1)),
        created=int(time.time()),
        thinking_system_message=THINKING_SYSTEM_MESSAGE if _has_thinking_mode(config) else None,
    )


# InternVL3.5's Qwen3 members were trained with a thinking mode (the model card's
# R1 system prompt); earlier generations and the GPT-OSS member were not.
_THINKING_BACKBONES = ("Qwen3ForCausalLM", "Qwen3MoeForCausalLM")


def _has_thinking_mode(config: dict[str, Any]) -> bool:
    architectures = (config.get("llm_config") or {}).get("architectures") or []
    return config.get("template") == "internvl2_5" and bool(architectures) and architectures[0] in _THINKING_BACKBONES


def engine_args(settings: Settings, source: str, *, hf_format: bool = False) -> Any:
    """vLLM's `AsyncEngineArgs`: the engine flags as given, plus what the server's own settings decide.

    `hf_format`: the checkpoint is in transformers' InternVL format, served by the
    same model through its config mapped onto the released one.
    """
    import argparse
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    fields = {field.name for field in dataclasses.fields(AsyncEngineArgs)}
    given = dict(settings.engine_args)
    namespace = argparse.Namespace(**{
        **given,
        "model": source,
        "served_model_name": [settings.model_name],
        "log_level": settings.log_level.upper(),
        "limit_mm_per_prompt": _mm_limits(settings, given.get("limit_mm_per_prompt") or {}),
        "mm_processor_kwargs": {
            **(given.get("mm_processor_kwargs") or {}),
            # The plugin profiles memory for, and accepts, at most these.
            "max_tiles_limit": settings.max_tiles_per_image,
            "max_video_frames": settings.max_frames_per_video,
            "tile_embedding_cache_mib": settings.tile_embedding_cache_mib,
        },
        "structured_outputs_config": _structured_outputs_config(settings, given.get("structured_outputs_config")),
    })
    if hf_format:
        if given.get("hf_overrides"):
            raise ValueError("--hf-overrides cannot be combined with a transformers-format (-hf) checkpoint")
        namespace.hf_overrides = from_hf_config
    assert set(vars(namespace)) <= fields, set(vars(namespace)) - fields
    return AsyncEngineArgs.from_cli_args(namespace)


def _mm_limits(settings: Settings, given: dict[str, Any]) -> dict[str, Any]:
    """--limit-mm-per-prompt with the per-request limits (Settings has made the two agree).

    A modality given in vLLM's detailed form ({"count", "width", ...}) keeps it: its
    sizes steer vLLM's memory profiling.
    """
    limits = dict(given)
    limits.setdefault("image", settings.max_images_per_request)
    limits.setdefault("video", settings.max_videos_per_request)
    return limits


def _structured_outputs_config(settings: Settings, given: Any) -> Any:
    import dataclasses

    from vllm.config import StructuredOutputsConfig

    config = given if given is not None else StructuredOutputsConfig()
    if settings.structured_outputs_disable_any_whitespace:
        # vLLM accepts the option only with an explicitly named backend.
        backend = "xgrammar" if config.backend == "auto" else config.backend
        config = dataclasses.replace(config, backend=backend, disable_any_whitespace=True)
    return config


class VLLMEngine:
    """`AsyncLLM` in this process; its engine core runs in a process of its own."""

    def __init__(self, llm: Any, info: ModelInfo, queue: QueueDepth) -> None:
        from vllm import __version__

        self._llm = llm
        self.info = info
        self.queue = queue
        self.version = __version__
        self._stop_token_ids = _special_token_ids(llm.get_tokenizer(), info.template.stop_strings)

    @classmethod
    async def start(cls, settings: Settings) -> VLLMEngine:
        from model_plugin.runtime import apply_cpu_defaults
        from vllm.v1.engine.async_llm import AsyncLLM

        source = await asyncio.to_thread(resolve_model, settings)
        raw_config = await asyncio.to_thread(read_model_config, source)
        config = chat_config_dict(raw_config)
        info = model_info(settings, source, config)
        apply_cpu_defaults()
        queue = QueueDepth()
        args = engine_args(settings, source, hf_format=is_hf_format(raw_config))
        llm = AsyncLLM.from_engine_args(args, stat_loggers=[_queue_depth_logger(queue)])
        info = _with_max_len(info, llm.model_config.max_model_len)
        logger.info("engine ready: %s (template %s)", source, info.template.name)
        return cls(llm, info, queue)

    def sampling_params(self, sampling: dict[str, Any], *, stream: bool) -> Any:
        from vllm import SamplingParams
        from vllm.exceptions import VLLMClientError
        from vllm.sampling_params import RequestOutputKind, StructuredOutputsParams

        kwargs = dict(sampling)
        structured = kwargs.pop("structured_outputs", None)
        try:
            if structured is not None:
                kwargs["structured_outputs"] = StructuredOutputsParams(**structured)
            return SamplingParams.from_optional(
                **kwargs,
                stop_token_ids=self._stop_token_ids,
                # Streaming wants each step's new tokens; otherwise only the end.
                output_kind=RequestOutputKind.DELTA if stream else RequestOutputKind.FINAL_ONLY,
            )
        except (ValueError, TypeError, VLLMClientError) as error:
            raise BadRequest(str(error), code="invalid_sampling_parameters", param=getattr(error, "parameter", None)) from None

    async def generate(
        self, prompt: dict[str, Any], sampling: dict[str, Any], request_id: str, *, stream: bool
    ) -> AsyncIterator[Any]:
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError, EngineGenerateError

        if not self.is_alive():
            raise EngineUnavailable("the inference engine has stopped")
        params = self.sampling_params(sampling, stream=stream)
        outputs = self._llm.generate(prompt, params, request_id)
        try:
            async for output in outputs:
                yield output
        except EngineDeadError:
            raise EngineUnavailable("the inference engine has stopped") from None
        except VLLMClientError as error:
            raise BadRequest(str(error), code="invalid_request", param=getattr(error, "parameter", None)) from None
        except EngineGenerateError as error:
            raise _client_error(error.__cause__) or error
        except ValueError as error:
            # vLLM's input processing reports bad prompts (too long, bad media) this way;
            # anything else is our bug and stays a 500.
            raise BadRequest(str(error), code="invalid_request") from None
        finally:
            # A disconnected client closes us: closing vLLM's generator aborts the request
            # by its internal id (vLLM makes those unique) and frees its KV cache now.
            # `AsyncLLM.abort(request_id)` would also abort every other request that
            # reuses the same X-Request-Id. A finished generator closes as a no-op.
            try:
                await asyncio.shield(outputs.aclose())
            except Exception:  # the engine may already be gone; nothing left to free
                logger.debug("closing request %s failed", request_id, exc_info=True)

    async def tokenize(self, prompt: dict[str, Any], *, add_special_tokens: bool | None = None) -> list[int]:
        import dataclasses

        from vllm.exceptions import VLLMClientError
        from vllm.renderers.inputs.preprocess import parse_model_prompt

        if not self.is_alive():
            raise EngineUnavailable("the inference engine has stopped")
        # The renderer `generate` uses, with its parameters for raw prompts, so image and
        # video placeholders expand exactly as there. No length limit: counting a prompt
        # is how a client learns it is too long.
        renderer = self._llm.renderer
        params = dataclasses.replace(renderer.default_cmpl_tok_params, max_total_tokens=None)
        if add_special_tokens is not None:
            params = dataclasses.replace(params, add_special_tokens=add_special_tokens)
        try:
            parsed = parse_model_prompt(self._llm.model_config, prompt)
            # skip_mm_cache: counting must not fill the cache generation relies on.
            (engine_input,) = await renderer.render_cmpl_async([parsed], params, skip_mm_cache=True)
        except (ValueError, TypeError, VLLMClientError) as error:
            raise BadRequest(str(error), code="invalid_request", param=getattr(error, "parameter", None)) from None
        return list(engine_input["prompt_token_ids"])

    async def detokenize(self, token_ids: list[int]) -> str:
        from vllm.exceptions import VLLMClientError

        renderer = self._llm.renderer
        try:
            renderer.validate_token_ids(token_ids, parameter="tokens")
        except VLLMClientError as error:
            raise BadRequest(str(error), code="invalid_token_id", param="tokens") from None
        tokenizer = renderer.get_tokenizer()
        return await asyncio.to_thread(tokenizer.decode, token_ids)

    def token_strings(self, token_ids: list[int]) -> list[str]:
        return list(self._llm.get_tokenizer().convert_ids_to_tokens(token_ids))

    def is_alive(self) -> bool:
        return not self._llm.errored

    async def shutdown(self) -> None:
        await asyncio.to_thread(self._llm.shutdown)


def _client_error(cause: BaseException | None) -> APIError | None:
    if isinstance(cause, ValueError):
        return BadRequest(str(cause), code="invalid_request")
    status = getattr(cause, "status_code", None)
    if isinstance(status, int) and 400 <= status < 600:
        return APIError(str(cause), status=status, code="engine_rejected")
    return None


def _special_token_ids(tokenizer: Any, tokens: tuple[str, ...]) -> list[int]:
    """Ids of the stop strings that are single special tokens (most templates' turn ends)."""
    ids = []
    vocab = tokenizer.get_vocab()
    for token in tokens:
        if token in vocab:
            ids.append(vocab[token])
    return ids


def _with_max_len(info: ModelInfo, max_model_len: int) -> ModelInfo:
    from dataclasses import replace

    return replace(info, max_model_len=max_model_len)


def _queue_depth_logger(queue: QueueDepth):
    """A vLLM stat-logger factory that copies scheduler counts into `queue`."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class QueueDepthLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx: int = 0) -> None:
            if scheduler_stats is not None:
                queue.running = scheduler_stats.num_running_reqs
                queue.waiting = scheduler_stats.num_waiting_reqs

        def log_engine_initialized(self) -> None:
            pass

    return lambda vllm_config, engine_index=0: QueueDepthLogger(vllm_config, engine_index)
