"""The one error type raised for media the server cannot accept."""


class MediaError(ValueError):
    """Untrusted media was rejected: corrupt, truncated, too large, wrong kind.

    Subclasses ValueError so callers that already treat bad input as a 400 keep
    working; `code` is a stable machine-readable reason for API error bodies.
    """

    def __init__(self, message: str, *, code: str = "invalid_media") -> None:
        super().__init__(message)
        self.code = code
