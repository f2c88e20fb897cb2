"""OpenAI sampling fields -> keyword arguments for vLLM's `SamplingParams`.

Kept as a plain dict (no vLLM import) so it is testable without an engine;
`structured_outputs` is a dict for `StructuredOutputsParams`.
"""

from __future__ import annotations

import json
from typing import Any

from preprocessing import ChatTemplate

from .errors import BadRequest
from .schemas import ChatCompletionRequest


def sampling_kwargs(request: ChatCompletionRequest, template: ChatTemplate, *, max_n: int) -> dict[str, Any]:
    if request.n > max_n:
        raise BadRequest(f"n={request.n} exceeds this server's limit of {max_n}", code="invalid_n", param="n")
    kwargs: dict[str, Any] = {
        "n": request.n,
        "max_tokens": request.token_limit,
        # Template stop strings end every turn, whatever the client asks for.
        "stop": list(dict.fromkeys([*template.stop_strings, *request.stop_list])),
        "ignore_eos": request.ignore_eos,
        # Grounding tags (<ref>, <box>) are special tokens and must survive decoding.
        "skip_special_tokens": False,
        "spaces_between_special_tokens": False,
        "seed": request.seed,
    }
    optional = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        "top_k": request.top_k,
        "min_p": request.min_p,
        "presence_penalty": request.presence_penalty,
        "frequency_penalty": request.frequency_penalty,
        "repetition_penalty": request.repetition_penalty,
        # vLLM refuses ids outside the vocabulary (param `logit_bias`).
        "logit_bias": request.token_bias,
    }
    kwargs.update({name: value for name, value in optional.items() if value is not None})
    if request.logprobs:
        kwargs["logprobs"] = request.top_logprobs or 0
    structured = structured_outputs(request)
    if structured is not None:
        kwargs["structured_outputs"] = structured
    return kwargs


def structured_outputs(request: ChatCompletionRequest) -> dict[str, Any] | None:
    """The one structured-output constraint the request asks for, if any."""
    candidates: list[tuple[str, dict[str, Any]]] = []
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_object":
        candidates.append(("response_format", {"json_object": True}))
    elif fmt is not None and fmt.type == "json_schema":
        candidates.append(("response_format", {"json": fmt.json_schema.schema_ or {"type": "object"}}))
    options: dict[str, Any] = {}
    if request.structured_outputs is not None:
        if request.structured_outputs.constraint():
            candidates.append(("structured_outputs", request.structured_outputs.constraint()))
        if request.structured_outputs.disable_any_whitespace:
            options["disable_any_whitespace"] = True
    if request.guided_regex is not None:
        candidates.append(("guided_regex", {"regex": request.guided_regex}))
    if request.guided_choice is not None:
        candidates.append(("guided_choice", {"choice": request.guided_choice}))
    if request.guided_json is not None:
        candidates.append(("guided_json", {"json": request.guided_json}))
    if len(candidates) > 1:
        raise BadRequest(
            "give one structured-output constraint, not several: " + ", ".join(name for name, _ in candidates),
            code="conflicting_parameters",
            param=candidates[1][0],
        )
    if not candidates:
        return None
    constraint = {**candidates[0][1], **options}
    if isinstance(constraint.get("json"), str):
        try:
            constraint["json"] = json.loads(constraint["json"])
        except json.JSONDecodeError:
            raise BadRequest("the JSON schema is not valid JSON", code="invalid_schema", param=candidates[0][0]) from None
    return constraint

