"""OpenAI-shaped error bodies, and the handlers that guarantee bad input is never a 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from preprocessing import MediaError

logger = logging.getLogger(__name__)

# The pydantic error type server/schemas.py raises for a field we do not support;
# also the `code` of its 400.
UNSUPPORTED_PARAMETER = "unsupported_parameter"


class APIError(Exception):
    """An error the client should see as `{"error": {...}}` with `status`."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.param = param
        if status is not None:
            self.status = status
        self.headers = headers or {}


class BadRequest(APIError):
    status = 400


class Unauthorized(APIError):
    status = 401
    type = "authentication_error"


class ModelNotFound(APIError):
    status = 404

    def __init__(self, model: str) -> None:
        super().__init__(f"The model {model!r} does not exist", code="model_not_found", param="model")


class PayloadTooLarge(APIError):
    status = 413


class TooManyRequests(APIError):
    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, code="too_many_requests", headers={"Retry-After": str(retry_after_s)})


class EngineUnavailable(APIError):
    status = 503
    type = "service_unavailable_error"

    def __init__(self, message: str = "the inference engine is not available") -> None:
        super().__init__(message, code="engine_unavailable")


class GenerationAborted(APIError):
    """The engine gave up on a generation before it finished (shutdown, engine abort).

    Not an answer: its text is cut short, and `stop` would claim the model had finished.
    """

    status = 503
    type = "service_unavailable_error"

    def __init__(self) -> None:
        super().__init__(
            "the generation was aborted by the engine before it finished (is the server shutting down?); retry",
            code="generation_aborted",
        )


class GenerationFailed(APIError):
    """vLLM's "error" finish: a retryable failure inside the engine (e.g. a KV-cache load)."""

    status = 500
    type = "server_error"

    def __init__(self) -> None:
        super().__init__("the engine failed this generation; retry", code="generation_failed")


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error's body, as OpenAI's."""

    error: ErrorDetail


def documented_errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's `responses=`: the statuses it answers, each with the error body.

    "4XX" covers the rest (405, ...) and keeps FastAPI from documenting a 422:
    invalid fields are 400s here, as at OpenAI.
    """
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()
    }
    documented["4XX"] = {"model": ErrorResponse, "description": "Other client errors"}
    return documented


def error_body(message: str, type_: str, *, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_response(error: APIError) -> JSONResponse:
    return JSONResponse(
        error_body(error.message, error.type, param=error.param, code=error.code),
        status_code=error.status,
        headers=error.headers,
    )


def from_media_error(error: MediaError, *, param: str | None = None) -> APIError:
    return BadRequest(str(error), code=error.code, param=param)


def _location(loc: tuple | list) -> str | None:
    # Drop the "body" prefix and pydantic's union-branch tags so `param` reads
    # like the JSON path the client sent, e.g. messages.0.content.
    parts = [str(part) for part in loc if part != "body" and not _is_union_tag(part)]
    return ".".join(parts) or None


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part in {"str", "list", "function-after", "function-before"})


def validation_error(exc: RequestValidationError) -> APIError:
    """A 400, as OpenAI and vLLM answer invalid fields (FastAPI's default is 422)."""
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return BadRequest("request body is not valid JSON", code="invalid_json")
    if not errors:
        return BadRequest("invalid request", code="invalid_field")
    first = errors[0]
    if first.get("type") == "extra_forbidden":
        return _unknown_fields(errors)
    if first.get("type") == UNSUPPORTED_PARAMETER:
        param = first["ctx"]["param"]
        return BadRequest(first["msg"], code=UNSUPPORTED_PARAMETER, param=param)
    param = _location(first.get("loc", ()))
    message = first.get("msg", "invalid value")
    if param:
        message = f"{param}: {message}"
    elif first.get("type") == "missing":
        message = "the request body is empty (or null): send a JSON object"
    else:
        message = f"request body: {message}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more error{'s' if len(errors) > 2 else ''})"
    return BadRequest(message, code="invalid_field", param=param)


def _unknown_fields(errors: list[dict[str, Any]]) -> APIError:
    # OpenAI's words, every unknown name at once.
    names = [_location(error.get("loc", ())) for error in errors if error.get("type") == "extra_forbidden"]
    plural = "s" if len(names) > 1 else ""
    return BadRequest(
        f"Unrecognized request argument{plural} supplied: {', '.join(names)}", code="unknown_parameter", param=names[0]
    )


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
_FASTAPI_BODY_ERROR = "There was an error parsing the body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(validation_error(exc))

    @app.exception_handler(MediaError)
    async def _media_error(request: Request, exc: MediaError) -> JSONResponse:
        return error_response(from_media_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        code = _HTTP_CODES.get(exc.status_code)
        message = str(exc.detail)
        if exc.status_code == 400 and message == _FASTAPI_BODY_ERROR:
            # FastAPI's words for a body json.loads cannot even decode (not UTF-8).
            message, code = "request body is not valid JSON (nor UTF-8 text)", "invalid_json"
        return JSONResponse(
            error_body(message, type_, code=code),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal server error", "server_error", code="internal_error"), status_code=500)
