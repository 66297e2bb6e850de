"""Who is calling: API keys and ephemeral client secrets (spec §1.1 "Auth", §1.2, §1.3).

Every transport asks :func:`authenticate` what a presented key is worth; ``POST
/v1/realtime/client_secrets`` calls :func:`mint_client_secret`. Nothing here does I/O.

A client secret is stateless, so any instance configured with the same key accepts it::

    ek_<payload>.<tag>
    payload = base64url(zlib(JSON {"v": 1, "iat", "nbf", "exp", "jti", "session"}))
    tag     = base64url(HMAC-SHA256(K, "openrealtime.client_secret.v1." + payload))

(base64url without padding). ``session`` is the request's session config, validated at minting;
it becomes the defaults of every session opened with the secret. ``K`` is, in order:

1. ``Config.secret_signing_key`` set: ``HMAC-SHA256(signing_key, label)`` (one key for a fleet);
2. API keys configured: ``PBKDF2-HMAC-SHA256(api_key, salt=label, 100 000 rounds)`` of the key
   that minted the secret (revoking that API key revokes its secrets; the slow derivation keeps
   a weak API key from being brute-forced offline from a secret handed to a browser);
3. neither: a random key of this process (secrets die with the process). With ``--workers N``
   the parent process draws one with :func:`new_signing_key` and gives it to its workers as
   their ``secret_signing_key`` (case 1), so a secret minted by one worker opens sessions on
   every other; instances still need a configured key to share secrets.

The tag is checked before the payload is decoded, so an unsigned payload is never decompressed.
The secret's expiry is checked only when a session is opened: a running session outlives it.
See docs/decisions.md "Ephemeral client secrets".
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import re
import secrets
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import Field

from openrealtime.logging_setup import redact
from openrealtime.protocol import errors
from openrealtime.protocol.base import WireModel
from openrealtime.protocol.codec import validate
from openrealtime.protocol.errors import ProtocolError

if TYPE_CHECKING:
    from openrealtime.config import Config

__all__ = [
    "CLIENT_SECRET_PREFIX",
    "DEFAULT_EXPIRES_SECONDS",
    "MAX_CLIENT_SECRET_LENGTH",
    "MAX_EXPIRES_SECONDS",
    "MIN_EXPIRES_SECONDS",
    "NOT_BEFORE_LEEWAY_SECONDS",
    "AuthError",
    "ClientSecret",
    "ClientSecretExpired",
    "ClientSecretNotYetValid",
    "Credential",
    "CredentialKind",
    "InvalidApiKey",
    "InvalidClientSecret",
    "MissingCredential",
    "SessionType",
    "authenticate",
    "mint_client_secret",
    "new_signing_key",
    "token_from_authorization",
]

CLIENT_SECRET_PREFIX = "ek_"
"""Clients decide "ephemeral key" by this prefix alone (spec §1.2), so every secret has it."""

MIN_EXPIRES_SECONDS = 10
"""Shortest ``expires_after.seconds`` (spec §1.2, §7)."""

MAX_EXPIRES_SECONDS = 7200
"""Longest ``expires_after.seconds`` (spec §1.2, §7)."""

DEFAULT_EXPIRES_SECONDS = 600
"""``expires_after.seconds`` when the request gives none (spec §1.2)."""

NOT_BEFORE_LEEWAY_SECONDS = 30
"""Clock skew tolerated between the instance that minted a secret and the one that checks it."""

MAX_CLIENT_SECRET_LENGTH = 7168
"""Longest secret minted or accepted, in characters.

The secret travels in one HTTP header line (``Authorization`` or ``Sec-WebSocket-Protocol``),
and the WebSocket handshake parser refuses lines over 8 KiB. The session config is compressed,
so this leaves room for roughly 15-25 KB of instructions and tools.
"""

_LABEL = b"openrealtime.client_secret.v1"
_PBKDF2_ROUNDS = 100_000
_VERSION = 1
_MAX_PAYLOAD_BYTES = 1 << 20
"""Decompressed payload cap (only ever reached by a payload this server signed)."""

_SHAPE = re.compile(r"^ek_(?P<payload>[A-Za-z0-9_-]+)\.(?P<tag>[A-Za-z0-9_-]{43})$")
_PROCESS_KEY = secrets.token_bytes(32)
"""Signs secrets when neither a signing key nor API keys are configured."""

CredentialKind = Literal["api_key", "client_secret", "anonymous"]
SessionType = Literal["realtime", "transcription"]


# --------------------------------------------------------------------------- results, errors


@dataclass(frozen=True)
class Credential:
    """What a presented key is worth, as :func:`authenticate` found it."""

    kind: CredentialKind
    """``api_key`` (a configured key), ``client_secret`` (a valid ``ek_…``) or ``anonymous``
    (authentication is off and no client secret was presented)."""
    session_defaults: dict[str, Any] | None = field(default=None, hash=False)
    """A client secret's session config (a ``session.update``-shaped body with ``type``): the
    defaults of sessions opened with it (spec §1.2). ``None`` for other kinds."""
    expires_at: int | None = None
    """When a client secret stops opening sessions (unix seconds); ``None`` for other kinds."""

    @property
    def session_type(self) -> SessionType | None:
        """The session type a client secret was minted for; ``None`` for other kinds."""
        if self.session_defaults is None:
            return None
        kind = self.session_defaults.get("type")
        return "transcription" if kind == "transcription" else "realtime"


class AuthError(Exception):
    """A presented key opens nothing; transports answer 401 or ``error`` + close 3000 (§1.1).

    ``code`` and ``message`` are the ``error`` object's (spec §6).
    """

    code: str | None = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MissingCredential(AuthError):
    """Authentication is on and no key was presented (``code`` is ``None``, as live)."""

    code = None

    def __init__(self) -> None:
        super().__init__("Missing bearer or basic authentication in header")


def _incorrect(token: str, detail: str = "") -> str:
    tail = f" {detail}" if detail else ""
    return (
        f"Incorrect API key provided: {redact(token)}.{tail} You can find your API key at "
        "https://platform.openai.com/account/api-keys."
    )


class InvalidApiKey(AuthError):
    """The key is neither a configured API key nor a client secret."""

    def __init__(self, token: str, detail: str = "") -> None:
        super().__init__(_incorrect(token, detail))


class InvalidClientSecret(InvalidApiKey):
    """An ``ek_…`` secret that this server (or its fleet) did not sign, or that was altered."""

    def __init__(self, token: str, detail: str = "The client secret is not valid.") -> None:
        super().__init__(token, detail)


class ClientSecretExpired(InvalidClientSecret):
    """A genuine client secret past its ``expires_at``."""

    def __init__(self, token: str, expires_at: int) -> None:
        super().__init__(token, f"The client secret expired at {expires_at} (unix time).")
        self.expires_at = expires_at


class ClientSecretNotYetValid(InvalidClientSecret):
    """A genuine client secret whose not-before time is still ahead (clock skew or tampering)."""

    def __init__(self, token: str, not_before: int) -> None:
        super().__init__(token, f"The client secret is not valid before {not_before} (unix time).")
        self.not_before = not_before


@dataclass(frozen=True)
class ClientSecret:
    """A minted secret and the effective session it opens (spec §1.2 response)."""

    value: str
    """``ek_…``."""
    expires_at: int
    """Unix seconds after which the secret opens no new session."""
    session: dict[str, Any] = field(hash=False)
    """The full effective session object (as ``session.created`` will show it)."""

    def response(self) -> dict[str, Any]:
        """The ``200`` body of ``POST /v1/realtime/client_secrets`` (spec §1.2)."""
        return {"value": self.value, "expires_at": self.expires_at, "session": self.session}


# --------------------------------------------------------------------------- keys


def _now() -> float:
    """Wall-clock unix time; the one clock of this module (tests replace it)."""
    return time.time()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@functools.lru_cache(maxsize=64)
def _key_from_signing_key(signing_key: str) -> bytes:
    return hmac.new(signing_key.encode("utf-8"), _LABEL, hashlib.sha256).digest()


@functools.lru_cache(maxsize=64)
def _key_from_api_key(api_key: str) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", api_key.encode("utf-8"), _LABEL, _PBKDF2_ROUNDS)


def _verification_keys(config: Config) -> list[bytes]:
    if config.secret_signing_key:
        return [_key_from_signing_key(config.secret_signing_key)]
    if config.api_keys:
        return [_key_from_api_key(key) for key in config.api_keys]
    return [_PROCESS_KEY]


def _signing_key(config: Config, api_key: str | None) -> bytes:
    if config.secret_signing_key:
        return _key_from_signing_key(config.secret_signing_key)
    if config.api_keys:
        if api_key is None or not config.is_valid_key(api_key):
            raise ValueError("minting a client secret needs the API key that authorized it")
        return _key_from_api_key(api_key)
    return _PROCESS_KEY


def new_signing_key() -> str:
    """A fresh random ``secret_signing_key`` (256 bits, URL-safe text).

    Call once in a parent process that starts workers without a configured key or API keys,
    and give every worker the same value: they then accept each other's client secrets.
    """
    return secrets.token_urlsafe(32)


def _tag(key: bytes, payload: str) -> str:
    return _b64(hmac.new(key, _LABEL + b"." + payload.encode("ascii"), hashlib.sha256).digest())


# --------------------------------------------------------------------------- authenticate


def token_from_authorization(header: str | None) -> str | None:
    """The key in an ``Authorization`` header: ``Bearer KEY``, or ``Basic`` with KEY as password.

    Call from HTTP routes before :func:`authenticate` (spec §1.1 "Auth"; the WebSocket route
    also reads the ``openai-insecure-api-key.`` subprotocol).

    Args:
        header: the header's value, or ``None``.

    Returns:
        The key, or ``None`` when there is none.
    """
    scheme, _, credentials = (header or "").strip().partition(" ")
    credentials = credentials.strip()
    if not credentials:
        return None
    if scheme.lower() == "bearer":
        return credentials
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


def authenticate(
    config: Config, bearer_token: str | None, *, now: float | None = None
) -> Credential:
    """Decide what a presented key opens (spec §1.1 "Auth", §1.2, §1.3).

    Call once per connection or REST call, before anything else is done for it: the WebSocket
    handshake, ``POST /v1/realtime/calls`` (WebRTC), ``POST /v1/realtime/client_secrets``.
    A client secret is checked only here, so a session it opened outlives it.

    Args:
        config: the server config (``api_keys``, ``secret_signing_key``).
        bearer_token: the presented key (``sk-…`` or ``ek_…``), or ``None``/``""`` for none.
        now: unix time to check a secret's validity at; the wall clock when omitted.

    Returns:
        ``api_key`` for a configured key; ``client_secret`` (with its session defaults) for a
        valid ``ek_…`` secret; ``anonymous`` when authentication is off and no secret was
        presented (any other key is ignored then, as before client secrets existed).

    Raises:
        MissingCredential: authentication is on and no key was presented.
        ClientSecretExpired: a genuine secret past its expiry.
        ClientSecretNotYetValid: a genuine secret whose not-before time is ahead.
        InvalidClientSecret: an ``ek_…`` value that is malformed, altered or signed elsewhere
            (checked even when authentication is off: its session config would be lost).
        InvalidApiKey: authentication is on and the key is unknown.
    """
    token = (bearer_token or "").strip()
    if not token:
        if config.auth_enabled:
            raise MissingCredential()
        return Credential("anonymous")
    if config.auth_enabled and config.is_valid_key(token):
        return Credential("api_key")
    if token.startswith(CLIENT_SECRET_PREFIX):
        return _verify_client_secret(config, token, _now() if now is None else now)
    if config.auth_enabled:
        raise InvalidApiKey(token)
    return Credential("anonymous")


def _verify_client_secret(config: Config, token: str, now: float) -> Credential:
    match = _SHAPE.match(token) if len(token) <= MAX_CLIENT_SECRET_LENGTH else None
    if match is None:
        raise InvalidClientSecret(token)
    payload_text = match["payload"]
    presented = match["tag"].encode("ascii")
    genuine = False
    for key in _verification_keys(config):  # no early exit: timing does not tell which key
        genuine |= hmac.compare_digest(presented, _tag(key, payload_text).encode("ascii"))
    if not genuine:
        raise InvalidClientSecret(token)
    payload = _decode_payload(payload_text)
    if payload is None:
        raise InvalidClientSecret(token)
    session, not_before, expires_at = payload
    if now + NOT_BEFORE_LEEWAY_SECONDS < not_before:
        raise ClientSecretNotYetValid(token, not_before)
    if now >= expires_at:
        raise ClientSecretExpired(token, expires_at)
    return Credential("client_secret", session_defaults=session, expires_at=expires_at)


def _decode_payload(text: str) -> tuple[dict[str, Any], int, int] | None:
    """The session, not-before and expiry of a signed payload; ``None`` if it is malformed."""
    try:
        inflater = zlib.decompressobj()
        raw = inflater.decompress(_unb64(text), _MAX_PAYLOAD_BYTES)
        if inflater.unconsumed_tail or not inflater.eof:
            return None
        data = json.loads(raw)
    except (binascii.Error, zlib.error, ValueError):
        return None
    if not isinstance(data, dict) or data.get("v") != _VERSION:
        return None
    session, not_before, expires_at = data.get("session"), data.get("nbf"), data.get("exp")
    if not isinstance(session, dict) or session.get("type") not in ("realtime", "transcription"):
        return None
    if not isinstance(not_before, int) or not isinstance(expires_at, int):
        return None
    return session, not_before, expires_at


# --------------------------------------------------------------------------- mint


class _ExpiresAfter(WireModel):
    """``expires_after`` (spec §1.2): only the ``created_at`` anchor exists."""

    anchor: Literal["created_at"] = "created_at"
    seconds: Annotated[int, Field(ge=MIN_EXPIRES_SECONDS, le=MAX_EXPIRES_SECONDS)] = (
        DEFAULT_EXPIRES_SECONDS
    )


class _CreateRequest(WireModel):
    """The body of ``POST /v1/realtime/client_secrets`` (spec §1.2)."""

    expires_after: _ExpiresAfter | None = None
    session: dict[str, Any] | None = None


def mint_client_secret(
    config: Config,
    request: Any,
    *,
    api_key: str | None = None,
    now: float | None = None,
) -> ClientSecret:
    """Create a client secret from a ``POST /v1/realtime/client_secrets`` body (spec §1.2).

    Call after :func:`authenticate` returned an ``api_key`` credential (or ``anonymous`` when
    authentication is off): a client secret must not mint another. The session config is
    validated as a ``session.update`` would be, against the same session models, so a secret
    always opens a session.

    Args:
        config: the server config (which key signs; which models are allowed).
        request: the decoded JSON body: ``{"expires_after": {"anchor", "seconds"},
            "session": {...}}``, both optional (600 s; a default realtime session).
        api_key: the API key that authorized the request; its derived key signs the secret
            unless ``secret_signing_key`` is set. Required when API keys are configured.
        now: the minting time (unix seconds); the wall clock when omitted.

    Returns:
        The secret, its expiry and the effective session.

    Raises:
        ProtocolError: the body is invalid (the live service's codes and params, e.g.
            ``integer_below_min_value`` on ``expires_after.seconds``); answer 400.
        ValueError: API keys are configured and ``api_key`` is not one of them.
    """
    if not isinstance(request, dict):
        raise ProtocolError(
            "invalid_type",
            f"Invalid type for the request body: expected an object, but got "
            f"{_json_kind(request)} instead.",
        )
    parsed = validate(_CreateRequest, request)
    seconds = (parsed.expires_after or _ExpiresAfter()).seconds
    body = parsed.session if parsed.session is not None else {"type": "realtime"}
    issued_at = int(_now() if now is None else now)
    session = _effective_session(config, body, issued_at)
    expires_at = issued_at + seconds
    claims = {
        "v": _VERSION,
        "iat": issued_at,
        "nbf": issued_at,
        "exp": expires_at,
        "jti": secrets.token_urlsafe(9),
        "session": body,
    }
    raw = json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    payload = _b64(zlib.compress(raw, 9))
    value = f"{CLIENT_SECRET_PREFIX}{payload}.{_tag(_signing_key(config, api_key), payload)}"
    if len(value) > MAX_CLIENT_SECRET_LENGTH:
        raise ProtocolError(
            "client_secret_too_large",
            f"The session config is too large for a client secret ({len(value)} characters "
            f"after compression; at most {MAX_CLIENT_SECRET_LENGTH}). Shorten the instructions "
            "or tools, or send them with session.update after connecting.",
            param="session",
        )
    return ClientSecret(value=value, expires_at=expires_at, session=session)


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


def _effective_session(config: Config, body: dict[str, Any], now: int) -> dict[str, Any]:
    """Validate a session config and return the session object it yields (spec §3).

    The session core itself applies it, exactly as it will for a session opened with the
    secret, so whatever it refuses is refused here, with the same error.
    """
    from openrealtime.core.ids import RandomIds
    from openrealtime.core.session import Limits, RealtimeSession

    kind = body.get("type")
    if kind is None:
        raise errors.missing_parameter("session.type")
    if kind not in ("realtime", "transcription"):
        raise errors.invalid_value(kind, ["realtime", "transcription"], "session.type")
    model = body.get("model")
    if kind == "realtime" and isinstance(model, str) and not config.model_allowed(model):
        raise ProtocolError(
            "invalid_model",
            f'Model "{model}" is not supported in realtime mode. '
            f"Supported models: {', '.join(config.models)}.",
            param="session.model",
        )
    session = RealtimeSession(
        kind,
        "gpt-realtime" if kind == "realtime" else "",
        ids=RandomIds(),
        now_ms=now * 1000,
        limits=Limits(max_duration_ms=config.session_max_seconds * 1000),
        defaults=body,
    )
    created = session.drain().events[0]
    payload = getattr(created, "session", None)
    if not isinstance(payload, dict):  # pragma: no cover - the core always starts this way
        raise ProtocolError(None, "The session could not be created.", type="server_error")
    return payload
