"""The shared HTTP boundary of the OpenAI-compatible engines (design.md decision 9).

Every remote engine (``stt_openai_compat``, ``llm_openai_compat``, ``tts_openai_compat``) talks
through one :class:`OpenAICompatClient`, and every transport failure becomes a
:class:`~openrealtime.backends.errors.BackendError` here, at one place (house rule 4):

========================================  ==============================  =========
failure                                   ``code``                        retriable
========================================  ==============================  =========
connection refused / DNS / reset          ``engine_unavailable``          yes
connect, read, write or pool timeout      ``engine_timeout``              yes
HTTP 4xx/5xx (OpenAI error body read)     ``engine_http_<status>``        429, 5xx
body cut before its end                   ``engine_stream_incomplete``    yes
unparsable body                           ``engine_bad_response``         no
========================================  ==============================  =========

Messages name the engine and the server (without credentials) and never contain the API key.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from openrealtime.backends.errors import BackendError, BackendTimeout

__all__ = ["OpenAICompatClient", "ServerSentEvent", "incomplete", "iter_sse", "parse_json"]

_USER_AGENT = "openrealtime"
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ServerSentEvent:
    """One SSE event: its ``event:`` name (``""`` when absent) and its joined ``data:`` lines."""

    event: str
    data: str


class OpenAICompatClient:
    """An ``httpx.AsyncClient`` for one OpenAI-compatible server, with errors mapped.

    Create one per engine; it opens its connection pool on first use. Call :meth:`aclose` when
    the engine is retired (optional in a process that exits).

    Args:
        engine: the engine's label for messages (e.g. ``"LLM"``).
        base_url: the API root, e.g. ``http://127.0.0.1:8000/v1`` (paths are appended to it).
        api_key: sent as ``Authorization: Bearer``; ``None`` sends no header.
        timeout: seconds to wait for each read/write (and the default for connecting).
        connect_timeout: seconds to wait for the TCP/TLS connection; defaults to ``timeout``.
    """

    def __init__(
        self,
        engine: str,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        connect_timeout: float | None = None,
    ) -> None:
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key or None
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout or timeout)
        url = httpx.URL(self.base_url)
        self.server = str(url.copy_with(username=None, password=None, query=None))
        """The server as messages show it: no credentials, no query string."""
        self._client: httpx.AsyncClient | None = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            headers = {"User-Agent": _USER_AGENT}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._client = httpx.AsyncClient(
                base_url=self.base_url + "/", headers=headers, timeout=self.timeout
            )
        return self._client

    async def aclose(self) -> None:
        """Close the connection pool; the client reopens one if used again."""
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @asynccontextmanager
    async def stream(
        self,
        path: str,
        *,
        json_body: Mapping[str, Any] | None = None,
        data: Mapping[str, str] | None = None,
        files: Mapping[str, tuple[str, bytes, str]] | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """POST to ``path`` and yield the streaming response once its status is 2xx.

        Any httpx failure while the block runs (reading the body included) is raised as a
        :class:`BackendError`; a 4xx/5xx status raises one with the server's error message.
        """
        try:
            request = self._http().build_request(
                "POST", path.lstrip("/"), json=json_body, data=data, files=files
            )
            response = await self._http().send(request, stream=True)
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise self._status_error(response)
                yield response
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None

    def scrub(self, text: str) -> str:
        """Remove the API key from ``text`` (for messages built from server answers)."""
        if self._api_key and self._api_key in text:
            text = text.replace(self._api_key, "***")
        return text

    def error(self, message: str, code: str, *, retriable: bool = False) -> BackendError:
        """A :class:`BackendError` whose message names this engine and server."""
        return BackendError(
            self.scrub(f"{self.engine} engine at {self.server}: {message}"),
            code=code,
            retriable=retriable,
        )

    def _status_error(self, response: httpx.Response) -> BackendError:
        status = response.status_code
        detail = _error_detail(response)
        return self.error(
            f"HTTP {status}: {detail}",
            f"engine_http_{status}",
            retriable=status == 429 or status >= 500,
        )

    def _transport_error(self, exc: httpx.HTTPError) -> BackendError:
        kind = type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            phase = "connecting" if isinstance(exc, httpx.ConnectTimeout) else "waiting"
            seconds = self.timeout.connect if phase == "connecting" else self.timeout.read
            return BackendTimeout(
                self.scrub(
                    f"{self.engine} engine at {self.server}: no answer after {seconds:g} s "
                    f"({phase}, {kind})"
                )
            )
        if isinstance(exc, httpx.ConnectError):
            return self.error(f"cannot connect ({exc})", "engine_unavailable", retriable=True)
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return self.error(
                f"the connection broke before the answer ended ({kind})",
                "engine_stream_incomplete",
                retriable=True,
            )
        if isinstance(exc, httpx.TransportError):
            message = f"transport failure ({kind}: {exc})"
            return self.error(message, "engine_unavailable", retriable=True)
        return self.error(f"request failed ({kind}: {exc})", "engine_error")


def incomplete(client: OpenAICompatClient, what: str) -> BackendError:
    """The error for a stream that ended without its final event (cut mid-answer)."""
    return client.error(f"{what} ended before its end", "engine_stream_incomplete", retriable=True)


async def iter_sse(response: httpx.Response) -> AsyncIterator[ServerSentEvent]:
    """Parse a ``text/event-stream`` body into events (WHATWG SSE, as OpenAI streams it).

    Comment lines and ``id``/``retry`` fields are skipped; an event still open when the body
    ends is dropped, as the SSE spec says.
    """
    event = ""
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield ServerSentEvent(event, "\n".join(data))
            event, data = "", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value


def parse_json(client: OpenAICompatClient, text: str | bytes, what: str) -> Any:
    """Decode JSON from the server, mapping garbage to ``engine_bad_response``."""
    try:
        return json.loads(text)
    except ValueError:
        shown = text[:80] if isinstance(text, str) else text[:80].decode("utf-8", "replace")
        raise client.error(f"{what} is not JSON: {shown!r}", "engine_bad_response") from None


def _error_detail(response: httpx.Response) -> str:
    """The message of an OpenAI error body, else the start of the body text."""
    text = response.text
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message: str = error["message"]
            code = error.get("code") or error.get("type")
            return f"{message} ({code})" if isinstance(code, str) and code else message
        if isinstance(error, str):
            return error
        if isinstance(body.get("detail"), str):  # FastAPI-style servers
            return str(body["detail"])
    return text.strip()[:_MAX_ERROR_CHARS] or response.reason_phrase or "no body"
