"""Turn the many ways a client can hand us media into raw bytes or a path."""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from .errors import MediaError

# Longer strings cannot be sane file paths; treating them as base64 first also
# avoids a filesystem lookup per request for large payloads.
_MAX_PATH_LENGTH = 4096
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),", re.IGNORECASE)


def decode_base64(text: str, *, code: str) -> bytes:
    # Clients wrap long base64 lines and some send URL-safe alphabets.
    compact = "".join(text.split())
    if "-" in compact or "_" in compact:
        compact = compact.replace("-", "+").replace("_", "/")
    compact += "=" * (-len(compact) % 4)
    try:
        data = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MediaError(f"invalid base64 data: {exc}", code=code) from None
    if not data:
        raise MediaError("base64 data is empty", code=code)
    return data


def decode_data_url(url: str, *, code: str) -> bytes:
    match = _DATA_URL.match(url)
    if match is None:
        raise MediaError("malformed data URL (expected data:<mime>;base64,<data>)", code=code)
    params = [p.lower() for p in match.group("params").split(";") if p]
    if "base64" not in params:
        raise MediaError("only base64-encoded data URLs are supported", code=code)
    return decode_base64(url[match.end():], code=code)


def resolve_source(source: object, *, code: str) -> bytes | Path:
    """Return the bytes of `source`, or a Path when it names a local file.

    Accepts bytes-like objects, pathlib paths, data URLs, local path strings and
    bare base64 strings. Anything else is a MediaError.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise MediaError("media data is empty", code=code)
        return data
    if isinstance(source, Path):
        return _existing_file(source, code=code)
    if isinstance(source, str):
        if source[:5].lower() == "data:":
            return decode_data_url(source, code=code)
        if len(source) <= _MAX_PATH_LENGTH and os.path.isfile(source):
            return Path(source)
        try:
            return decode_base64(source, code=code)
        except MediaError:
            if _looks_like_path(source):
                raise MediaError(f"file not found: {source!r}", code=code) from None
            raise
    raise MediaError(f"unsupported media source type: {type(source).__name__}", code=code)


def _existing_file(path: Path, *, code: str) -> Path:
    if not path.is_file():
        raise MediaError(f"file not found: {str(path)!r}", code=code)
    return path


def _looks_like_path(text: str) -> bool:
    # Only for choosing the clearer error message; base64 never contains ".".
    return len(text) <= _MAX_PATH_LENGTH and (
        text.startswith(("/", "./", "../", "~")) or re.search(r"\.[A-Za-z0-9]{1,5}$", text) is not None
    )
