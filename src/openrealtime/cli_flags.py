"""The flags of ``openrealtime serve``: names, types, help, defaults and environment variables.

Split from :mod:`openrealtime.cli` (which parses them into a
:class:`~openrealtime.config.Config` and runs the server) because they are most of its lines.
"""

from __future__ import annotations

import argparse

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

__all__ = ["add_serve_flags", "cache_help", "env_var", "workers_flag"]

_DEFAULTS = Config()


def workers_flag(text: str) -> int:
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
    """The environment variable of a config field."""
    return ENV_PREFIX + field.upper()


env_var = _env


def cache_help() -> str:
    """The help of ``--cache-dir``."""
    return (
        f"model cache directory (env {_env('cache_dir')}; default "
        "$XDG_CACHE_HOME/openrealtime or ~/.cache/openrealtime)"
    )


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """Every flag of ``openrealtime serve`` (each with its default and environment variable)."""
    d = _DEFAULTS
    p.add_argument(
        "--host",
        metavar="HOST",
        help=f"interface to bind (env {_env('host')}; default {d.host})",
    )
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help=f"TCP port (env {_env('port')}; default {d.port})",
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
        type=workers_flag,
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
    _add_sip_flags(p)
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
    p.add_argument("--cache-dir", metavar="DIR", help=cache_help())
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


def _add_sip_flags(p: argparse.ArgumentParser) -> None:
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
