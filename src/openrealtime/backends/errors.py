"""Engine errors, mapped to Realtime errors at one boundary (design.md house rule 4)."""

from __future__ import annotations


class BackendError(Exception):
    """An engine failed; becomes ``response.done`` failed or a failed transcription.

    Attributes:
        code: a short machine-readable reason, used as ``error.code`` on the wire.
        retriable: whether the same request may succeed if tried again.
    """

    def __init__(self, message: str, *, code: str = "engine_error", retriable: bool = False):
        super().__init__(message)
        self.message = message
        self.code = code
        self.retriable = retriable


class BackendTimeout(BackendError):
    """The engine did not answer within its timeout."""

    def __init__(self, message: str):
        super().__init__(message, code="engine_timeout", retriable=True)


class ModelFileError(Exception):
    """A model file could not be found, fetched or verified; the message says what to do."""
