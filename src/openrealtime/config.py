"""One typed server configuration, read from ``OPENREALTIME_*`` environment variables and flags.

design.md: ``cli.py`` parses flags and the environment into a :class:`Config`; nothing else reads
the environment. Every field is documented below; the environment variable for a field is its
name upper-cased with the ``OPENREALTIME_`` prefix (``api_keys`` -> ``OPENREALTIME_API_KEYS``).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ENV_PREFIX = "OPENREALTIME_"
"""Prefix of every environment variable :meth:`Config.from_env` reads."""

VAD_CHOICES: tuple[str, ...] = ("silero", "energy")
"""Voice-activity detectors the server knows (``--vad``)."""

STT_CHOICES: tuple[str, ...] = ("pocketsphinx", "openai-compatible", "faster-whisper", "fake")
"""Speech-to-text engines the server knows (``--stt``)."""

LLM_CHOICES: tuple[str, ...] = ("llamacpp", "openai-compatible", "fake")
"""Language-model engines the server knows (``--llm``)."""

TTS_CHOICES: tuple[str, ...] = ("espeak", "flite", "piper", "openai-compatible", "fake")
"""Text-to-speech engines the server knows (``--tts``)."""

TURN_CHOICES: tuple[str, ...] = ("none", "smart-turn")
"""Turn-completion models for ``semantic_vad`` (``--turn``); ``none`` ends turns on silence."""

LOG_LEVEL_CHOICES: tuple[str, ...] = ("critical", "error", "warning", "info", "debug", "trace")
"""Log levels (uvicorn's names; ``trace`` is uvicorn's level below ``debug``)."""

DEFAULT_MODELS: tuple[str, ...] = (
    "gpt-realtime",
    "gpt-realtime-mini",
    "gpt-realtime-2",
    "gpt-realtime-2.1",
    "gpt-realtime-1.5",
    "gpt-4o-realtime-preview",
    "gpt-4o-mini-realtime-preview",
)
"""Model names listed by ``/v1/models`` (spec §1.1: the SDK's model literals)."""

MIN_SIGNING_KEY_LENGTH = 32
"""Shortest accepted ``secret_signing_key``: it must be a random key, not a password."""

_FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "vad": VAD_CHOICES,
    "stt": STT_CHOICES,
    "llm": LLM_CHOICES,
    "tts": TTS_CHOICES,
    "turn": TURN_CHOICES,
    "log_level": LOG_LEVEL_CHOICES,
}

_REDIS_SCHEMES: tuple[str, ...] = ("redis://", "rediss://", "unix://")
_WILDCARDS = frozenset({"0.0.0.0", "::", "[::]"})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True)
class Config:
    """Everything the server is configured with; immutable once built.

    Build it with :meth:`from_env` (environment plus explicit overrides) or directly (tests).
    Construction validates every field and raises :class:`ValueError` naming the bad one.
    """

    host: str = "127.0.0.1"
    """Interface to bind. Binding a non-loopback host requires an API key (see ``cli.py``)."""

    port: int = 8000
    """TCP port to listen on (0 picks a free port)."""

    api_keys: tuple[str, ...] = ()
    """Accepted API keys (``Authorization: Bearer`` or subprotocol ``openai-insecure-api-key.``).

    Empty disables authentication. Env: comma-separated ``OPENREALTIME_API_KEYS``.
    """

    secret_signing_key: str | None = dataclasses.field(default=None, repr=False)
    """Key that signs ephemeral client secrets (``ek_…``, ``POST /v1/realtime/client_secrets``).

    At least 32 characters; give every instance behind a load balancer the same one. When
    unset, secrets are signed with a key derived from the API key that minted them (revoking
    that key revokes them), or, with no API keys either, with a random key of the process.
    Never logged. Env: ``OPENREALTIME_SECRET_SIGNING_KEY``.
    """

    ice_servers: tuple[str, ...] = ()
    """STUN/TURN servers for WebRTC calls (``stun:host:3478``, ``turn:host:3478?transport=udp``,
    ``turns:…``). Empty: host candidates only, enough when callers reach the server's address
    directly (LAN, public IP); a server behind NAT needs a STUN or TURN server. Env:
    comma-separated ``OPENREALTIME_ICE_SERVERS``."""

    ice_username: str | None = None
    """Username for the TURN servers in ``ice_servers``."""

    ice_credential: str | None = dataclasses.field(default=None, repr=False)
    """Password for the TURN servers in ``ice_servers`` (never logged)."""

    ssl_certfile: str | None = None
    """PEM certificate file; with ``ssl_keyfile`` the server speaks ``https``/``wss``."""

    ssl_keyfile: str | None = None
    """PEM private key file for ``ssl_certfile``."""

    log_level: str = "info"
    """Log level for openrealtime and uvicorn, one of :data:`LOG_LEVEL_CHOICES`."""

    vad: str = "silero"
    """Voice-activity detector, one of :data:`VAD_CHOICES`."""

    vad_model_path: str | None = None
    """A local Silero ONNX file to use instead of the cached pinned one."""

    stt: str = "pocketsphinx"
    """Speech-to-text engine, one of :data:`STT_CHOICES`."""

    llm: str = "llamacpp"
    """Language-model engine, one of :data:`LLM_CHOICES`."""

    tts: str = "espeak"
    """Text-to-speech engine, one of :data:`TTS_CHOICES`."""

    turn: str = "smart-turn"
    """Turn-completion model used by ``semantic_vad``, one of :data:`TURN_CHOICES`."""

    turn_model_path: str | None = None
    """A local Smart Turn ONNX file to use instead of the cached pinned one."""

    echo_cancellation: bool = True
    """Cancel the echo of the assistant's own audio in every session's input (WebRTC's AEC3,
    fed with what the server sent or played), so a speakerphone does not interrupt itself."""

    resume_false_interruptions: bool = True
    """Over WebRTC, when the user starts speaking during an answer, pause its playback instead of
    cancelling it, and resume it if what follows was no real interruption (a cough, "mm-hm":
    shorter than ``min_interruption_ms`` and only backchannel words). Off: every barge-in
    cancels at once, as over a WebSocket (where the client owns playback)."""

    min_interruption_ms: int = 1000
    """Speech over a paused answer that lasts this long is a real interruption (WebRTC)."""

    false_interruption_timeout_ms: int = 2000
    """Shorter speech over a paused answer whose transcript has not come this long after it
    ended is taken for a false interruption: the answer resumes (WebRTC)."""

    llm_model_path: str | None = None
    """A local GGUF file for ``--llm llamacpp`` instead of the cached SmolLM2-135M-Instruct."""

    llm_threads: int = 1
    """CPU threads of the embedded LLM. One is the default: in a voice session the VAD, the STT
    decoder and the network share the cores, and llama.cpp's spinning threads then slow each
    other down (bench/voice_latency.py on 2 cores: p50 417-465 ms with 1 thread, 469-472 with
    2; docs/benchmarks.md). Two decode faster on an otherwise idle machine."""

    stt_model_path: str | None = None
    """Model for ``--stt faster-whisper``: a CTranslate2 Whisper directory, a size name, or a
    pinned embedded model: ``whisper-tiny-en`` (English, 75 MB; the default when unset) or
    ``whisper-base`` (99 languages, 145 MB)."""

    stt_base_url: str | None = None
    """API root of a remote STT (``--stt openai-compatible``), e.g. ``http://host:8000/v1``."""

    stt_model: str | None = None
    """Model name sent to the remote STT (default ``whisper-1``)."""

    stt_api_key: str | None = None
    """Bearer key for the remote STT; never logged."""

    llm_base_url: str | None = None
    """API root of a remote LLM (``--llm openai-compatible``), e.g. ``http://host:11434/v1``."""

    llm_model: str | None = None
    """Model name sent to the remote LLM (required with ``openai-compatible``)."""

    llm_api_key: str | None = None
    """Bearer key for the remote LLM; never logged."""

    tts_base_url: str | None = None
    """API root of a remote TTS (``--tts openai-compatible``), e.g. ``http://host:8880/v1``."""

    tts_model: str | None = None
    """Model name sent to the remote TTS (default ``tts-1``)."""

    tts_api_key: str | None = None
    """Bearer key for the remote TTS; never logged."""

    engine_timeout: float = 30.0
    """Seconds a remote engine may take for one read before the request fails."""

    engine_idle_timeout: float = 30.0
    """Seconds a remote engine's streamed answer may go without content before it fails with
    ``engine_timeout``. Keep-alives (SSE comments, blank lines, whitespace) are not content, so
    a server that sends only those cannot hold a response or a transcription open forever."""

    engine_probe_seconds: float = 5.0
    """How often the readiness check asks each remote engine's server whether it answers."""

    max_output_tokens: int = 4096
    """Server-side cap on the tokens of one answer: applied when a response asks for ``"inf"``
    (the default) and to ``/v1/chat/completions`` requests without ``max_tokens``. An answer
    cut there ends ``incomplete`` with reason ``max_output_tokens``. 4096 is the live
    service's largest ``max_output_tokens`` (spec §7)."""

    cache_dir: str | None = None
    """Directory model files are cached in; ``None`` means the default of ``models.py``."""

    session_max_seconds: int = 3600
    """Maximum session duration (spec §1.7: 60 minutes), then ``session_expired`` and close."""

    ws_max_size: int = 24 * 1024 * 1024
    """Largest WebSocket message accepted, in bytes (after decompression).

    Spec §7: a 15 MiB ``input_audio_buffer.append`` is about 20 MiB of base64 plus JSON. A
    larger message closes the connection with 1009.
    """

    ws_ping_interval: float = 20.0
    """Seconds between server keepalive pings (spec §1.1: the live service pings every ~20 s)."""

    ws_ping_timeout: float = 20.0
    """Seconds to wait for a pong before closing with 1011."""

    outbound_queue_max: int = 256
    """Most server events queued for one session before the session waits for the client."""

    outbound_stall_seconds: float = 10.0
    """A client that reads nothing for this long while its queue is full is closed with 1008."""

    handshake_timeout: float = 10.0
    """Seconds a new connection (or a kept-alive one starting its next request) has to send its
    whole request head; after that it is closed (408 once part of a request arrived). Bounds
    idle TCP connections and slow-loris handshakes. websockets' own ``open_timeout`` is 10 s."""

    close_timeout: float = 2.0
    """Seconds a WebSocket whose close frame was sent (or whose session ended) may keep unsent
    data queued for a peer that does not read; then the connection is aborted."""

    drain_seconds: float = 20.0
    """On SIGTERM, how long open sessions and calls may go on (readiness fails at once and new
    ones are refused) before each is ended with a ``server_shutting_down`` error and a close."""

    shutdown_timeout: float = 10.0
    """Seconds a stopping server (SIGTERM, Ctrl-C) waits for sessions to end after telling them
    to close (1012) before it cancels what is left and exits."""

    allowed_origins: tuple[str, ...] = ()
    """Browser origins (``scheme://host[:port]``) allowed besides the server's own (the
    playground's). A request whose ``Origin`` is neither gets 403 (a WebSocket gets no 101) and
    CORS answers name only allowed origins. With no API key the list is the only way a web page
    from another origin gets in; with keys and an empty list any origin may use its key (the
    ``ek_`` browser flow), and a non-empty list restricts browsers to it. ``*`` allows every
    origin. Env: comma-separated ``OPENREALTIME_ALLOWED_ORIGINS``."""

    allowed_hosts: tuple[str, ...] = ()
    """Host names the server answers to besides ``localhost``, IP addresses and the bound host
    (defence against DNS rebinding). Checked when authentication is off, and always when this
    list is given; ``*`` turns the check off; ``.example.com`` allows its subdomains. Env:
    comma-separated ``OPENREALTIME_ALLOWED_HOSTS``."""

    max_conversation_text_bytes: int = 16 * 1024 * 1024
    """Most text (UTF-8 bytes of item contents, arguments and outputs) one conversation holds.
    A ``conversation.item.create`` that would pass it is refused with an ``error``
    (``conversation_text_limit_exceeded``); deleting items makes room again."""

    max_conversation_audio_seconds: float = 600.0
    """Most audio one conversation keeps (user and assistant, 10 minutes = 28.8 MB at 24 kHz
    PCM16). Past it, the oldest items' audio is dropped (their transcripts stay in the
    context); a single item with more audio than this is refused."""

    workers: int = 1
    """Worker processes sharing the listening port; 0 means one per CPU core (``--workers
    auto``). Env: ``OPENREALTIME_WORKERS`` (a number or ``auto``)."""

    redis_url: str | None = None
    """Redis that workers and instances share (``redis://host:6379/0``): which process owns each
    WebRTC call, so a sideband or hangup reaching another one gets there. Needed with more than
    one worker or instance; a single process needs none."""

    internal_host: str = "127.0.0.1"
    """Interface of each process's private listener (only with ``redis_url``): where the other
    workers and instances reach the WebRTC calls this process holds, to relay a sideband or a
    hangup that reached them (docs/deployment.md "Calls across workers and instances"). Plain
    HTTP, the same routes and authentication as the public port. The loopback default serves
    workers of one machine; instances on several machines need an interface they can reach
    (a private network). Env: ``OPENREALTIME_INTERNAL_HOST``."""

    internal_port: int = 0
    """First port of the private listeners: each worker takes the first free port of
    ``internal_port`` .. ``internal_port + workers - 1`` (for firewall rules and published
    container ports); 0 lets each take any free port."""

    advertise_host: str | None = None
    """The host name or address other instances use to reach this one's private listeners
    (stored in Redis with each call); ``internal_host`` when unset. Required when
    ``internal_host`` is a wildcard (``0.0.0.0``, ``::``)."""

    sip_port: int = 0
    """SIP port for phone calls (UDP and TCP; TLS on the next port when ``ssl_certfile`` is
    set), 0 for none (docs/sip.md). Needs ``webhook_url`` and ``webhook_secret``."""

    sip_host: str | None = None
    """Interface SIP and RTP listen on; ``host`` when unset."""

    sip_advertise: str | None = None
    """The address callers reach SIP and RTP at (Contact, SDP), when it is not ``sip_host``
    (a wildcard bind, a NAT)."""

    sip_rtp_ports: str = "40000-40999"
    """UDP ports for the calls' RTP (and RTCP, the next odd port): ``LOW-HIGH``."""

    sip_ring_timeout: float = 30.0
    """Seconds a call waits for ``accept`` before it is rejected ``480``."""

    sip_allow: tuple[str, ...] = ()
    """Networks (``10.0.0.0/8``, ``203.0.113.7``) SIP is taken from; empty: anyone."""

    sip_username: str | None = None
    """Digest user a caller must authenticate as (``sip_password`` too); none: no digest."""

    sip_password: str | None = None
    """Digest password for ``sip_username`` (never logged)."""

    webhook_url: str | None = None
    """Where ``realtime.call.incoming`` events are POSTed (spec §1.5)."""

    webhook_secret: str | None = None
    """Standard Webhooks signing secret (``whsec_`` and base64, as OpenAI's; never logged)."""

    models: tuple[str, ...] = DEFAULT_MODELS
    """Model names ``/v1/models`` lists. Env: comma-separated ``OPENREALTIME_MODELS``."""

    accept_any_model: bool = True
    """Accept any ``model`` string; when False an unlisted model gets ``invalid_model`` (§1.1)."""

    def __post_init__(self) -> None:
        for name, choices in _FIELD_CHOICES.items():
            value = getattr(self, name)
            if value not in choices:
                raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in 0..65535; got {self.port}")
        if any(not key or key != key.strip() for key in self.api_keys):
            raise ValueError("api_keys must not contain empty keys or keys with spaces around")
        if self.secret_signing_key is not None and (
            len(self.secret_signing_key) < MIN_SIGNING_KEY_LENGTH
            or self.secret_signing_key != self.secret_signing_key.strip()
        ):
            raise ValueError(
                f"secret_signing_key must be at least {MIN_SIGNING_KEY_LENGTH} characters "
                "without spaces around (e.g. `python -c 'import secrets; "
                "print(secrets.token_urlsafe(32))'`)"
            )
        for url in self.ice_servers:
            if not url.startswith(("stun:", "turn:", "turns:")):
                raise ValueError(f"ice_servers: {url!r} is not a stun:, turn: or turns: URL")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile must be given together")
        positive = {
            "session_max_seconds": self.session_max_seconds,
            "ws_max_size": self.ws_max_size,
            "ws_ping_interval": self.ws_ping_interval,
            "ws_ping_timeout": self.ws_ping_timeout,
            "outbound_queue_max": self.outbound_queue_max,
            "outbound_stall_seconds": self.outbound_stall_seconds,
            "llm_threads": self.llm_threads,
            "engine_idle_timeout": self.engine_idle_timeout,
            "engine_probe_seconds": self.engine_probe_seconds,
            "max_output_tokens": self.max_output_tokens,
            "handshake_timeout": self.handshake_timeout,
            "close_timeout": self.close_timeout,
            "shutdown_timeout": self.shutdown_timeout,
            "drain_seconds": self.drain_seconds,
            "max_conversation_text_bytes": self.max_conversation_text_bytes,
            "max_conversation_audio_seconds": self.max_conversation_audio_seconds,
            "min_interruption_ms": self.min_interruption_ms,
            "false_interruption_timeout_ms": self.false_interruption_timeout_ms,
        }
        for name, number in positive.items():
            if number <= 0:
                raise ValueError(f"{name} must be positive; got {number}")
        if self.workers < 0:
            raise ValueError(f"workers must be a positive number or auto; got {self.workers}")
        if self.redis_url is not None and not self.redis_url.startswith(_REDIS_SCHEMES):
            raise ValueError(
                f"redis_url must start with {', '.join(_REDIS_SCHEMES)}; got {self.redis_url!r}"
            )
        if not 0 <= self.internal_port <= 65535:
            raise ValueError(f"internal_port must be in 0..65535; got {self.internal_port}")
        if not self.internal_host.strip():
            raise ValueError("internal_host must not be empty")
        if self.redis_url and self.internal_host in _WILDCARDS and not self.advertise_host:
            raise ValueError(
                f"internal_host {self.internal_host} listens on every interface: set "
                "advertise_host to the address other instances reach this one at"
            )
        if not self.models:
            raise ValueError("models must list at least one model name")
        if self.engine_timeout <= 0:
            raise ValueError(f"engine_timeout must be positive; got {self.engine_timeout}")
        for engine in ("stt", "llm", "tts"):
            if getattr(self, engine) == "openai-compatible" and not getattr(
                self, f"{engine}_base_url"
            ):
                raise ValueError(f"{engine} openai-compatible needs {engine}_base_url")
        if self.llm == "openai-compatible" and not self.llm_model:
            raise ValueError("llm openai-compatible needs llm_model (the server's model name)")
        self._check_sip()

    @property
    def sip_rtp_range(self) -> tuple[int, int]:
        """``sip_rtp_ports`` as ``(low, high)``."""
        low, _, high = self.sip_rtp_ports.partition("-")
        return int(low), int(high)

    def _check_sip(self) -> None:
        if not 0 <= self.sip_port <= 65534:
            raise ValueError(f"sip_port must be in 0..65534; got {self.sip_port}")
        try:
            low, high = self.sip_rtp_range
        except ValueError:
            raise ValueError(
                f"sip_rtp_ports must be LOW-HIGH (40000-40999); got {self.sip_rtp_ports!r}"
            ) from None
        if not 1024 <= low < high <= 65535:
            raise ValueError(f"sip_rtp_ports must be within 1024-65535; got {self.sip_rtp_ports}")
        for network in self.sip_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"sip_allow: {network!r} is not an address or network") from None
        if (self.sip_username is None) != (self.sip_password is None):
            raise ValueError("sip_username and sip_password must be given together")
        if self.sip_ring_timeout <= 0:
            raise ValueError("sip_ring_timeout must be positive")
        if not self.sip_port:
            return
        if not self.webhook_url or not self.webhook_secret:
            raise ValueError(
                "sip_port needs webhook_url and webhook_secret: every call is announced to "
                "the application, which accepts or rejects it (no call is taken otherwise)"
            )
        if not self.webhook_url.startswith(("http://", "https://")):
            raise ValueError(f"webhook_url must be an http(s) URL; got {self.webhook_url!r}")
        if self.webhook_secret.startswith("whsec_"):
            try:
                base64.b64decode(self.webhook_secret[6:], validate=True)
            except binascii.Error:
                raise ValueError("webhook_secret: the part after 'whsec_' is not base64") from None
        if (self.sip_host or self.host) in _WILDCARDS and not self.sip_advertise:
            raise ValueError(
                "sip_port on a wildcard address needs sip_advertise: the address callers send "
                "their audio to (it goes in the SDP and Contact)"
            )
        if self.worker_count > 1:
            raise ValueError(
                "sip_port needs --workers 1: SIP and its RTP are served by one process (run a "
                "separate instance for phone calls; with --redis-url the other instances reach "
                "its calls)"
            )

    @property
    def worker_count(self) -> int:
        """How many worker processes ``workers`` asks for (``auto``: one per core)."""
        return self.workers or os.cpu_count() or 1

    @property
    def auth_enabled(self) -> bool:
        """Whether clients must present one of :attr:`api_keys`."""
        return bool(self.api_keys)

    def is_valid_key(self, key: str) -> bool:
        """Check a presented key against :attr:`api_keys` in constant time per key.

        Call from every authenticated route (WebSocket handshake, REST). Every configured key
        is compared (no early exit) so timing does not reveal which key nearly matched.

        Args:
            key: the key the client presented.

        Returns:
            True when the key is one of the configured keys.
        """
        presented = key.encode("utf-8")
        found = False
        for candidate in self.api_keys:
            found |= hmac.compare_digest(presented, candidate.encode("utf-8"))
        return found

    def model_allowed(self, model: str) -> bool:
        """Whether a ``model`` query parameter opens a session (spec §1.1 ``invalid_model``).

        Args:
            model: the requested model name.

        Returns:
            True when any model is accepted or the model is listed in :attr:`models`.
        """
        return self.accept_any_model or model in self.models

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, /, **overrides: Any) -> Config:
        """Build a config from ``OPENREALTIME_*`` variables, then apply explicit overrides.

        Call once at start-up (the CLI passes its flags as overrides). Overrides whose value is
        ``None`` are ignored, so unset flags fall back to the environment, then to the default.

        Args:
            env: the environment to read; :data:`os.environ` when omitted.
            **overrides: field values that take precedence over the environment.

        Returns:
            The validated config.

        Raises:
            ValueError: an unknown override, an unparsable variable or an invalid value; the
                message names the field or variable.
        """
        source = os.environ if env is None else env
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for name, f in fields.items():
            var = ENV_PREFIX + name.upper()
            raw = source.get(var)
            if raw is not None:
                values[name] = _parse(var, raw, f)
        for name, value in overrides.items():
            if name not in fields:
                raise ValueError(f"unknown config field {name!r}")
            if value is not None:
                values[name] = tuple(value) if isinstance(value, list) else value
        return cls(**values)

    def to_env(self) -> dict[str, str]:
        """Every field as the ``OPENREALTIME_*`` variable :meth:`from_env` reads back.

        Call to hand this config to child processes (``--workers``: uvicorn's workers build
        their app from the environment). ``Config.from_env(config.to_env()) == config`` for
        every config; every field is written, so the variables the parent inherited do not
        leak through (``None`` is an empty value, read back as ``None``).

        Returns:
            Variable names and values; secrets included, so hand them only to children.

        Raises:
            ValueError: a list item holds a comma, which the comma-separated variable cannot
                carry; the message names the field.
        """
        env: dict[str, str] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, tuple):
                if any("," in item or item != item.strip() or not item for item in value):
                    raise ValueError(
                        f"{f.name}: an item with a comma or spaces around cannot be passed "
                        f"to worker processes through {ENV_PREFIX}{f.name.upper()}"
                    )
                text = ",".join(value)
            elif isinstance(value, float):
                text = repr(value)
            else:
                text = str(value)
            if isinstance(value, str) and (
                value != value.strip() or (not value and str(f.type) != "str")
            ):
                raise ValueError(
                    f"{f.name}: {value!r} cannot be passed to worker processes through "
                    f"{ENV_PREFIX}{f.name.upper()}"
                )
            env[ENV_PREFIX + f.name.upper()] = text
        return env


def _parse(var: str, raw: str, f: dataclasses.Field[Any]) -> Any:
    """Convert one environment variable to the type of its field."""
    kind = str(f.type)
    text = raw.strip()
    try:
        if f.name == "workers" and text.lower() == "auto":
            return 0
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "bool":
            lowered = text.lower()
            if lowered in _TRUE:
                return True
            if lowered in _FALSE:
                return False
            raise ValueError(f"expected one of {sorted(_TRUE | _FALSE)}")
        if kind == "tuple[str, ...]":
            return tuple(part.strip() for part in text.split(",") if part.strip())
        if kind == "str | None":
            return text or None
        return text
    except ValueError as exc:
        raise ValueError(f"{var}={raw!r}: {exc}") from None
