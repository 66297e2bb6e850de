"""The ASGI app factory: routes to transports, and a lifespan that loads the engines.

design.md "Layout": ``app.py`` wires routes to transports; the lifespan builds the engines once
per process and every session shares them through :class:`Services` on ``app.state.services``.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from openrealtime import metrics
from openrealtime.auth import mint_client_secret, token_from_authorization
from openrealtime.backends.base import Engines
from openrealtime.config import Config
from openrealtime.logging_setup import (
    configure_logging,
    install_secret_redaction,
    register_secrets,
)
from openrealtime.protocol.codec import JsonInputError, loads
from openrealtime.protocol.errors import ProtocolError
from openrealtime.runtime.lifecycle import Lifecycle, watch_engines
from openrealtime.runtime.memory import tune_allocator
from openrealtime.services import Services
from openrealtime.transports.call_control import register_call_control_routes
from openrealtime.transports.openai_http import register_openai_http_routes
from openrealtime.transports.origins import OriginGuard, OriginPolicy
from openrealtime.transports.rest import http_auth_error, http_credential, openai_error
from openrealtime.transports.webrtc import call_registry, register_webrtc_routes
from openrealtime.transports.websocket import SessionRunner, register_websocket_routes
from openrealtime.web import register_playground_routes

if TYPE_CHECKING:
    from openrealtime.transports.call_directory import RedisCallDirectory
    from openrealtime.transports.sip.endpoint import SipEndpoint

__all__ = ["Services", "create_app", "create_app_from_env"]

_log = logging.getLogger(__name__)


async def _start_engines(
    config: Config, lifecycle: Lifecycle
) -> tuple[Engines, asyncio.Task[None]]:
    """Build the configured engines, warm them up, and start watching them.

    A warm-up that fails (a remote engine not up yet) does not stop the server: it starts
    not ready, and :func:`~openrealtime.runtime.lifecycle.watch_engines` retries until the
    engine answers (issue 9, item 5). Building still fails on a bad configuration.
    """
    from openrealtime.backends.registry import build_engines, probe_engines, warm_up_engines

    engines = build_engines(config)
    warmed = True
    try:
        await warm_up_engines(engines)
    except Exception as exc:  # the engine may come up later; readiness says so meanwhile
        warmed = False
        lifecycle.problem("engines", f"warm-up failed ({str(exc)[:160] or type(exc).__name__})")
    watch = asyncio.create_task(
        watch_engines(
            lifecycle,
            warm_up=functools.partial(warm_up_engines, engines),
            probe=functools.partial(probe_engines, engines),
            warmed=warmed,
            interval=config.engine_probe_seconds,
        ),
        name="engine-watch",
    )
    return engines, watch


async def _start_sip(app: FastAPI, config: Config) -> SipEndpoint:
    """Listen for phone calls (``--sip-port``, docs/sip.md); ``app.state.sip`` while it runs."""
    from openrealtime.transports.sip.endpoint import SipEndpoint

    endpoint = SipEndpoint(
        config,
        call_registry(app),
        app.state.services,
        getattr(app.state, "call_directory", None),
    )
    await endpoint.start()
    app.state.sip = endpoint
    return endpoint


async def _start_call_directory(
    app: FastAPI, config: Config, lifecycle: Lifecycle
) -> RedisCallDirectory:
    """With ``--redis-url``: the shared call directory, advertising this process's private URL.

    ``serving.Server`` opens the private listener and sets ``app.state.internal_url`` before
    the lifespan starts; without it the calls of this process could not be reached.
    """
    internal_url = getattr(app.state, "internal_url", None)
    if not isinstance(internal_url, str):
        raise RuntimeError(
            "redis_url is set but this process has no private listener: run the app with "
            "`openrealtime serve` (openrealtime.serving.Server), which opens one"
        )
    from openrealtime.transports.call_directory import RedisCallDirectory

    directory = RedisCallDirectory(
        config.redis_url or "",
        internal_url,
        on_problem=functools.partial(lifecycle.problem, "call directory"),
    )
    await directory.start()
    return directory


_BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON.)"
)

_MINT_FORBIDDEN_MESSAGE = (
    "You have insufficient permissions for this operation: a client secret (ek_…) cannot "
    "create client secrets. Create them from your backend with an API key."
)


async def _create_client_secret(config: Config, request: Request) -> JSONResponse:
    """``POST /v1/realtime/client_secrets`` (spec §1.2): mint an ``ek_…`` secret."""
    credential = http_credential(config, request)
    if isinstance(credential, JSONResponse):
        return credential
    if credential.kind == "client_secret":
        return openai_error(403, _MINT_FORBIDDEN_MESSAGE)
    raw = await request.body()
    try:
        body = loads(raw) if raw.strip() else {}
    except JsonInputError as exc:
        message = f"{_BAD_JSON_MESSAGE} ({exc})"
        return openai_error(400, message)
    api_key = None
    if credential.kind == "api_key":
        api_key = token_from_authorization(request.headers.get("authorization"))
    try:
        secret = mint_client_secret(config, body, api_key=api_key)
    except ProtocolError as exc:
        return openai_error(400, exc.message, exc.code, exc.type, exc.param)
    _log.info(
        "minted a client secret for a %s session, expires at %d",
        secret.session.get("type"),
        secret.expires_at,
    )
    return JSONResponse(secret.response())


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "openrealtime"}


def create_app(
    config: Config,
    engines: Engines | None = None,
    *,
    session_runner: SessionRunner | None = None,
) -> FastAPI:
    """Build the ASGI app: health, models, client secrets and the ``/v1/realtime`` WebSocket.

    Routes: ``GET /healthz``, ``GET /v1/models``, ``POST /v1/realtime/client_secrets`` (spec
    §1.2), the ``/v1/realtime`` WebSocket (§1.1) and the OpenAI-compatible audio/chat routes.
    Call once per process (the CLI does) or per test. The engines are built in the lifespan
    (``backends.registry.build_engines``) unless given.

    Args:
        config: the server config.
        engines: engines to use instead of building them (tests, embedding).
        session_runner: runs each session; defaults to ``runtime.driver.run_session``
            (tests inject an echo runner). Stored on ``app.state.session_runner``.

    Returns:
        The FastAPI app. ``app.state.config`` is ``config``; ``app.state.services`` is set
        while the lifespan runs.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        lifecycle = Lifecycle()
        watch: asyncio.Task[None] | None = None
        directory: RedisCallDirectory | None = None
        if config.redis_url:  # first: a process that cannot advertise its calls must not start
            directory = await _start_call_directory(app, config, lifecycle)
            app.state.call_directory = directory
        if engines is not None:
            loaded = engines
        else:
            loaded, watch = await _start_engines(config, lifecycle)
        app.state.services = Services(config=config, engines=loaded, lifecycle=lifecycle)
        sip = await _start_sip(app, config) if config.sip_port else None
        lag = asyncio.create_task(metrics.monitor_loop_lag(), name="loop-lag")
        metrics.forget_dead_workers()
        # What start-up allocated (modules, models, engines) lives as long as the process: out
        # of the collector's full passes, which then take ~14 ms instead of 35-55 ms under
        # load (docs/benchmarks.md, "Load").
        gc.collect()  # nothing already dead is kept for good
        gc.freeze()
        _log.info(
            "engines ready: vad=%s stt=%s llm=%s tts=%s turn=%s",
            loaded.vad.name,
            loaded.stt.name,
            loaded.llm.name,
            loaded.tts.name,
            loaded.turn.name if loaded.turn is not None else "none",
        )
        try:
            yield
        finally:
            gc.unfreeze()  # what start-up made can be collected again (at exit, too)
            for task in (watch, lag):
                if task is not None:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            await call_registry(app).close_all()  # calls are not HTTP connections (BYE sent)
            if sip is not None:
                await sip.stop()  # ringing calls are declined 503, then SIP stops listening
                app.state.sip = None
            if directory is not None:
                await directory.close()
                app.state.call_directory = None
            del app.state.services
            if engines is None:  # engines we built are ours to close
                from openrealtime.backends.registry import close_engines

                await close_engines(loaded)

    install_secret_redaction()  # websockets logs handshake headers (keys) at DEBUG
    tune_allocator()  # freed large blocks go back to the system (runtime/memory.py)
    register_secrets(
        *config.api_keys,
        config.secret_signing_key,
        config.stt_api_key,
        config.llm_api_key,
        config.tts_api_key,
        config.ice_credential,
        config.sip_password,
        config.webhook_secret,
    )
    app = FastAPI(
        title="openrealtime",
        summary="A self-hosted OpenAI Realtime API (GA) server.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.config = config
    app.add_middleware(OriginGuard, policy=OriginPolicy.from_config(config))
    if session_runner is not None:
        app.state.session_runner = session_runner

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness probe: the process serves HTTP."""
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False, response_model=None)
    async def readyz(request: Request) -> JSONResponse:
        """Readiness probe: 503 while draining or while an engine is unreachable.

        The reasons (which engine, why) are shown when authentication is off or to a caller
        with an API key; a load balancer needs only the status.
        """
        services: Services | None = getattr(request.app.state, "services", None)
        if services is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        ready, reasons = services.lifecycle.readiness()
        body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
        if reasons and http_auth_error(config, request) is None:
            body["reasons"] = reasons
        body["sessions"] = services.lifecycle.sessions
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False, response_model=None)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus metrics (text format), every worker's; needs an API key when keys are set."""
        denied = http_auth_error(config, request)
        if denied is not None:
            return denied
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    @app.get("/v1/models", response_model=None)
    async def list_models(request: Request) -> JSONResponse | dict[str, Any]:
        """List the model names a realtime session accepts (OpenAI ``GET /v1/models`` shape)."""
        denied = http_auth_error(config, request)
        if denied is not None:
            return denied
        return {"object": "list", "data": [_model_object(name) for name in config.models]}

    @app.get("/v1/models/{model_id}", response_model=None)
    async def retrieve_model(request: Request, model_id: str) -> JSONResponse | dict[str, Any]:
        """Describe one listed model (OpenAI ``GET /v1/models/{model}`` shape)."""
        denied = http_auth_error(config, request)
        if denied is not None:
            return denied
        if model_id not in config.models:
            return openai_error(
                404,
                f"The model '{model_id}' does not exist or you do not have access to it.",
                "model_not_found",
                "invalid_request_error",
            )
        return _model_object(model_id)

    @app.post("/v1/realtime/client_secrets", response_model=None)
    async def create_client_secret(request: Request) -> JSONResponse:
        """Mint an ephemeral client secret (spec §1.2); needs an API key (when auth is on)."""
        return await _create_client_secret(config, request)

    register_websocket_routes(app)
    register_webrtc_routes(app)
    register_call_control_routes(app)
    register_openai_http_routes(app)
    register_playground_routes(app)  # the browser playground at /
    return app


def create_app_from_env() -> FastAPI:
    """The app of one worker process (``openrealtime serve --workers N``), from its environment.

    uvicorn's worker processes call it (``openrealtime.app:create_app_from_env``, a factory);
    the parent sets the ``OPENREALTIME_*`` variables from its own config
    (:meth:`Config.to_env`), so each worker gets exactly the parent's config.

    Returns:
        The app for :meth:`Config.from_env`.
    """
    config = Config.from_env()
    configure_logging(config.log_level)
    return create_app(config)
