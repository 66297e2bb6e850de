"""The ``error`` event's payload and builders for every code the live service sends (spec §6)."""

from __future__ import annotations

from typing import Literal

ErrorType = Literal["invalid_request_error", "server_error"]

MAX_MESSAGE_CHARS = 1024
"""Longest ``error.message``: a message quotes the client's input (a key name, a value), and a
10 MB key must not become a 20 MB error event (issue 8, defect 11)."""

MAX_PARAM_CHARS = 256
"""Longest ``error.param`` (a path built from the client's keys)."""


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, marked with ``…`` when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown(value: object) -> str:
    """A client's value or key as quoted in a message: at most 200 characters."""
    return bounded(str(value), 200)


class ProtocolError(Exception):
    """A client mistake that becomes one ``error`` event; the session lives on (spec §6.1).

    Raise it anywhere between parsing and the core; the one place that catches it adds the
    client's ``event_id`` and emits the event.
    """

    def __init__(
        self,
        code: str | None,
        message: str,
        *,
        param: str | None = None,
        type: ErrorType = "invalid_request_error",
    ) -> None:
        message = bounded(message, MAX_MESSAGE_CHARS)
        super().__init__(message)
        self.code = code
        self.message = message
        self.param = None if param is None else bounded(param, MAX_PARAM_CHARS)
        self.type: ErrorType = type

    def payload(self, event_id: str | None = None) -> dict[str, str | None]:
        """Return the ``error`` object of the server event (spec §6.1)."""
        return {
            "type": self.type,
            "code": self.code,
            "message": self.message,
            "param": self.param,
            "event_id": event_id,
        }


def quote_list(values: list[str] | tuple[str, ...]) -> str:
    """Format choices as the live service does: ``'a', 'b', and 'c'``."""
    quoted = [f"'{v}'" for v in values]
    if len(quoted) <= 1:
        return "".join(quoted)
    if len(quoted) == 2:
        return f"{quoted[0]} and {quoted[1]}"
    return ", ".join(quoted[:-1]) + f", and {quoted[-1]}"


def invalid_value(
    value: object, supported: list[str] | tuple[str, ...], param: str
) -> ProtocolError:
    """An enum-like field got a value outside its choices."""
    return ProtocolError(
        "invalid_value",
        f"Invalid value: '{shown(value)}'. Supported values are: {quote_list(supported)}.",
        param=param,
    )


def unknown_parameter(param: str) -> ProtocolError:
    """An object carried a key the spec does not define."""
    return ProtocolError("unknown_parameter", f"Unknown parameter: '{shown(param)}'.", param=param)


def missing_parameter(param: str) -> ProtocolError:
    """A required key was absent."""
    return ProtocolError(
        "missing_required_parameter", f"Missing required parameter: '{shown(param)}'.", param=param
    )


def invalid_json(detail: str) -> ProtocolError:
    """The text frame was not JSON."""
    return ProtocolError(
        "invalid_json",
        f"Invalid event: failed to parse JSON value. Please check your payload. ({detail})",
    )


def binary_frame() -> ProtocolError:
    """A binary WebSocket frame arrived (spec §1.1 Framing)."""
    return ProtocolError(
        "invalid_event",
        "Expected a text WebSocket message; binary frames are not supported.",
    )


def commit_empty(buffered_ms: float) -> ProtocolError:
    """``input_audio_buffer.commit`` with under 100 ms of audio (spec §6.2)."""
    return ProtocolError(
        "input_audio_buffer_commit_empty",
        "Error committing input audio buffer: buffer too small. Expected at least 100ms of "
        f"audio, but buffer only has {buffered_ms:.2f}ms of audio.",
    )


def active_response(response_id: str) -> ProtocolError:
    """``response.create`` while a default-conversation response is running."""
    return ProtocolError(
        "conversation_already_has_active_response",
        f"Conversation already has an active response in progress: {response_id}. Wait until "
        "the response is finished before creating a new one.",
    )


def cancel_not_active() -> ProtocolError:
    """``response.cancel`` with nothing to cancel."""
    return ProtocolError(
        "response_cancel_not_active", "Cancellation failed: no active response found"
    )


def session_expired(minutes: float) -> ProtocolError:
    """The session reached its maximum duration (spec §1.7)."""
    unit = "minute" if minutes == 1 else "minutes"
    return ProtocolError(
        "session_expired", f"Your session hit the maximum duration of {minutes:g} {unit}."
    )


def server_error(detail: str = "") -> ProtocolError:
    """An unexpected fault inside the server; the session goes on."""
    msg = "The server had an error while processing your request. Sorry about that!"
    return ProtocolError(None, f"{msg} {detail}".strip(), type="server_error")


def rest_error_body(
    message: str,
    *,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
) -> dict[str, dict[str, str | None]]:
    """The body of an HTTP error in the OpenAI REST shape (spec §6.2 "REST errors").

    Every REST route and refusal (client secrets, calls, the served engine endpoints, origin
    checks) answers with it, so clients' ``APIStatusError`` parsing always works.
    """
    return {
        "error": {
            "message": bounded(message, MAX_MESSAGE_CHARS),
            "type": type,
            "param": None if param is None else bounded(param, MAX_PARAM_CHARS),
            "code": code,
        }
    }
