"""Phone calls over SIP with the reference service's call-control flow (spec §1.5).

An INVITE from a trunk or PBX is answered ``180 Ringing`` and announced to the application by a
signed ``realtime.call.incoming`` webhook (:mod:`.webhook`) carrying the call's ``rtc_…`` id and
the INVITE's headers. The call then waits for the application (``POST
/v1/realtime/calls/{call_id}/…``, :mod:`openrealtime.transports.call_control`):

- ``accept`` with a session config answers ``200 OK`` with the SDP answer (PCMU or PCMA,
  ``telephone-event``) and starts the session on the call's audio (:mod:`.media`), in the same
  :class:`~openrealtime.transports.webrtc_calls.CallRegistry` as WebRTC calls, so the
  application attaches with ``/v1/realtime?call_id=…`` (sideband) and hangs up the same way;
- ``reject`` answers with its ``status_code`` (603 by default);
- ``refer`` transfers: a live call gets a SIP REFER to the target (and is hung up once the
  transfer succeeds); a call still ringing is redirected with ``302`` and the target as
  ``Contact``;
- ``hangup`` ends a live call (BYE); on a ringing call it rejects it (603).

A call nobody accepts within ``sip_ring_timeout`` seconds is rejected ``480``; a caller that
gives up (CANCEL) or hangs up (BYE) ends it; the session ending (``session.close``, expiry,
shutdown) hangs up with a BYE. Each DTMF digit becomes one
``input_audio_buffer.dtmf_event_received`` on the sideband.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import ssl
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiortp.port_allocator import PortAllocator
from aiosipua import IncomingCall, negotiate_sdp
from aiosipua.sdp_negotiate import SdpNegotiationError

from openrealtime.core.ids import RandomIds
from openrealtime.transports.base import SessionRequest
from openrealtime.transports.call_directory import CallDirectory, DirectoryUnavailable
from openrealtime.transports.rest import CallRequestError
from openrealtime.transports.sip.call import SipCall
from openrealtime.transports.sip.media import PAYLOAD_TYPES, SipMedia
from openrealtime.transports.sip.signalling import (
    AUTH_HEADERS,
    SipHandler,
    SipSecurity,
    SipStack,
    header_lines,
)
from openrealtime.transports.sip.webhook import WebhookSender, incoming_call_event
from openrealtime.transports.webrtc_calls import CallRegistry, CallTransport

if TYPE_CHECKING:
    from openrealtime.config import Config
    from openrealtime.runtime.driver import SessionDriver
    from openrealtime.services import Services

__all__ = ["SipCall", "SipEndpoint"]


_log = logging.getLogger(__name__)
_ids = RandomIds()


MAX_RINGING = 200
"""Calls ringing at once (waiting for the application) before new INVITEs get ``503``."""


@dataclass
class _Ringing:
    """A call announced to the application, not yet accepted or rejected."""

    id: str
    stack: SipStack
    sip: IncomingCall
    headers: list[tuple[str, str]]
    timer: asyncio.TimerHandle | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)


class SipEndpoint(SipHandler):
    """The SIP side of one app: listeners, ringing calls, and answered calls' creation.

    Args:
        config: the server config (``sip_*`` and ``webhook_*`` fields).
        registry: where answered calls run.
        services: the app's services, once the lifespan has built them.
        directory: the shared call directory (``--redis-url``), where each call is claimed.
    """

    def __init__(
        self,
        config: Config,
        registry: CallRegistry,
        services: Services,
        directory: CallDirectory | None = None,
    ) -> None:
        assert config.sip_port and config.webhook_url and config.webhook_secret
        self.config = config
        self.registry = registry
        self.services = services
        self.directory = directory
        self.webhooks = WebhookSender(config.webhook_url, config.webhook_secret)
        self.ports = PortAllocator(config.sip_rtp_range)
        self.stacks: list[SipStack] = []
        self._ringing: dict[str, _Ringing] = {}
        self._by_sip: dict[str, str] = {}
        """SIP Call-ID → our call id, for ringing and live calls."""
        self._live: dict[str, SipCall] = {}
        self._background: set[asyncio.Task[Any]] = set()

    @property
    def _host(self) -> str:
        """The interface SIP and RTP listen on (``--sip-host``, else ``--host``)."""
        return self.config.sip_host or self.config.host

    # ---------------------------------------------------------------- lifetime

    async def start(self) -> None:
        """Listen on UDP and TCP (and TLS on the next port with the server's certificate)."""
        config = self.config
        port = config.sip_port
        host = self._host
        security = SipSecurity(
            allow=tuple(ipaddress.ip_network(n, strict=False) for n in config.sip_allow) or None,
            username=config.sip_username,
            password=config.sip_password or "",
        )
        kinds: list[tuple[str, int, ssl.SSLContext | None]] = [
            ("udp", port, None),
            ("tcp", port, None),
        ]
        if config.ssl_certfile and config.ssl_keyfile:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.ssl_certfile, config.ssl_keyfile)
            kinds.append(("tls", port + 1, tls))
        for kind, kind_port, context in kinds:
            stack = SipStack(
                kind,
                host,
                kind_port,
                self,
                security=security,
                advertise=config.sip_advertise,
                ssl_context=context,
            )
            await stack.start()
            self.stacks.append(stack)
        if self.services.engines.stt.name == "pocketsphinx":
            _log.warning(
                "phone audio is narrowband (8 kHz) and PocketSphinx's model is not: it mishears "
                "callers. Use --stt faster-whisper (pip install 'openrealtime[whisper]') for "
                "phone calls (docs/sip.md)"
            )
        _log.info(
            "SIP listening on %s (%s); webhook %s",
            ", ".join(f"{s.kind} {host}:{s.transport.local_addr[1]}" for s in self.stacks),
            "digest auth" if security.username else "no digest auth",
            config.webhook_url,
        )

    async def stop(self) -> None:
        """Reject ringing calls (503), stop listening; live calls end with the registry."""
        for ringing in list(self._ringing.values()):
            self._finish_ringing(ringing, 503, "Service Unavailable")
        for stack in self.stacks:
            await stack.stop()
        await self.webhooks.close()

    # ---------------------------------------------------------------- INVITE

    def on_invite(self, stack: SipStack, call: IncomingCall) -> None:
        """A new call: check it, ring, announce it."""
        if not self.services.lifecycle.accepting:
            call.reject(503, "Service Unavailable")
            stack.forget(call)
            return
        offer = call.sdp_offer
        audio = offer.audio if offer is not None else None
        if offer is None or audio is None or offer.rtp_address is None:
            call.reject(488, "Not Acceptable Here")  # no offer in the INVITE: not supported
            stack.forget(call)
            return
        if "SAVP" in audio.proto.upper() or not any(
            c.payload_type in PAYLOAD_TYPES for c in audio.codecs
        ):
            call.reject(488, "Not Acceptable Here")  # SRTP, or no G.711
            stack.forget(call)
            return
        if len(self._ringing) >= MAX_RINGING:
            _log.warning(
                "%d calls ringing already; INVITE from %s declined", MAX_RINGING, call.caller
            )
            call.reject(503, "Service Unavailable")
            stack.forget(call)
            return
        call_id = "rtc_" + secrets.token_hex(16)
        ringing = _Ringing(call_id, stack, call, header_lines(stack.last_raw))
        self._ringing[call_id] = ringing
        self._by_sip[call.call_id] = call_id
        call.ringing()
        loop = asyncio.get_running_loop()
        ringing.timer = loop.call_later(self.config.sip_ring_timeout, self._ring_timeout, call_id)
        _log.info(
            "%s: INVITE from %s (%s, %s) to %s",
            call_id,
            call.caller,
            call.source_addr[0],
            stack.kind,
            call.callee,
        )
        task = loop.create_task(self._announce(ringing))
        ringing.tasks.add(task)
        task.add_done_callback(ringing.tasks.discard)

    async def _announce(self, ringing: _Ringing) -> None:
        if self.directory is not None:
            try:
                await self.directory.claim(ringing.id)
            except DirectoryUnavailable as exc:
                _log.warning("%s: refused: %s", ringing.id, exc)
                self._finish_ringing(ringing, 503, "Service Unavailable")
                return
        headers = [(n, v) for n, v in ringing.headers if n.lower() not in AUTH_HEADERS]
        event = incoming_call_event(ringing.id, headers)
        delivered = await self.webhooks.deliver(event, wanted=lambda: ringing.id in self._ringing)
        if not delivered and ringing.id in self._ringing:
            _log.warning("%s: the application never took the webhook; rejecting", ringing.id)
            self._finish_ringing(ringing, 480, "Temporarily Unavailable")

    def _ring_timeout(self, call_id: str) -> None:
        ringing = self._ringing.get(call_id)
        if ringing is not None:
            _log.info(
                "%s: not accepted within %g s; rejected",
                call_id,
                self.config.sip_ring_timeout,
            )
            self._finish_ringing(ringing, 480, "Temporarily Unavailable")

    def _finish_ringing(
        self,
        ringing: _Ringing,
        status: int | None,
        reason: str = "",
        headers: dict[str, str] | None = None,
    ) -> None:
        """Forget a ringing call; answer it ``status`` unless it is answered otherwise."""
        self._ringing.pop(ringing.id, None)
        if ringing.timer is not None:
            ringing.timer.cancel()
        for task in ringing.tasks:
            task.cancel()
        if status is not None:
            self._by_sip.pop(ringing.sip.call_id, None)
            if not ringing.sip._answered:
                if headers is None:
                    ringing.sip.reject(status, reason)  # the standard reason phrase when empty
                else:
                    ringing.sip._send_response(status, reason, extra_headers=headers)
                    ringing.sip.dialog.terminate()
            ringing.stack.forget(ringing.sip)
            if self.directory is not None:
                self._spawn(self.directory.release(ringing.id))

    def _spawn(self, coroutine: Any) -> None:
        """Run a coroutine in the background, keeping a reference until it is done."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---------------------------------------------------------------- actions

    def owns(self, call_id: str) -> bool:
        """Whether the call rings or lives here."""
        return call_id in self._ringing or call_id in self._live

    async def accept(self, call_id: str, defaults: dict[str, Any], model: str) -> None:
        """Answer a ringing call and start its session.

        Raises:
            CallRequestError: no such ringing call, or no media could be set up.
            ProtocolError: a bad session config (from the driver).
        """
        ringing = self._ringing.get(call_id)
        if ringing is None:
            raise _not_ringing(call_id, call_id in self._live)
        sip = ringing.sip
        offer = sip.sdp_offer
        assert offer is not None and offer.audio is not None and offer.rtp_address is not None
        dtmf = next(
            (
                c.payload_type
                for c in offer.audio.codecs
                if c.encoding_name.lower() == "telephone-event"
            ),
            101,
        )
        try:
            rtp_port, _ = await self.ports.allocate()
        except Exception as exc:  # every port of --sip-rtp-ports is taken
            _log.warning("%s: no RTP port to answer with: %s", call_id, exc)
            raise CallRequestError(
                "No audio port is free on this server (--sip-rtp-ports).",
                code="sip_no_rtp_port",
                status=503,
            ) from None

        async def release() -> None:
            await self.ports.release(rtp_port)

        async def finished() -> None:  # the call's end: its port, and our records of it
            await release()
            if self._live.get(call_id) is live:
                del self._live[call_id]
                self._by_sip.pop(sip.call_id, None)

        try:
            answer, payload_type = negotiate_sdp(
                offer,
                self._host,
                rtp_port,
                supported_codecs=list(PAYLOAD_TYPES),
                dtmf_payload_type=dtmf,
                advertised_ip=self.config.sip_advertise,
            )
        except SdpNegotiationError as exc:
            await release()
            self._finish_ringing(ringing, 488, "Not Acceptable Here")
            raise CallRequestError(f"The caller's offer cannot be answered: {exc}") from None
        from openrealtime.runtime.driver import SessionDriver

        transport = CallTransport()
        transport.without_channel()  # a phone call's events go to sidebands only
        holder: list[SessionDriver] = []
        media = await SipMedia.open(
            local=(self._host, rtp_port),
            remote=offer.rtp_address,
            payload_type=payload_type,
            dtmf_payload_type=dtmf,
            on_digit=lambda digit: holder[0].dtmf(digit) if holder else None,
        )
        if ringing.id not in self._ringing:  # the caller gave up, or another accept won
            await media.end()
            await release()
            raise _not_ringing(call_id, call_id in self._live)
        request = SessionRequest(kind="realtime", model=model, session_label=_ids.new("sess"))
        try:
            driver = SessionDriver(
                transport, request, self.services, defaults=defaults, media=media
            )
        except BaseException:
            await media.end()
            await release()
            raise
        holder.append(driver)
        self._finish_ringing(ringing, None)
        sip.accept(answer)
        live = SipCall(call_id, ringing.stack, sip, transport, media, driver, finished)
        live.media_format = (rtp_port, payload_type, dtmf)
        self._live[call_id] = live
        self.registry.start(live, directory=self.directory)
        live.log.info("%s: accepted (%s, model %s)", call_id, PAYLOAD_TYPES[payload_type], model)

    def reject(self, call_id: str, status_code: int) -> None:
        """Decline a ringing call with ``status_code``.

        Raises:
            CallRequestError: no such ringing call, or a status code that does not decline.
        """
        if not 400 <= status_code <= 699:
            raise CallRequestError(
                f"Invalid 'status_code': {status_code}. Use a SIP final status from 400 to 699.",
                code="invalid_value",
                param="status_code",
            )
        ringing = self._ringing.get(call_id)
        if ringing is None:
            raise _not_ringing(call_id, call_id in self._live)
        _log.info("%s: rejected %d", call_id, status_code)
        self._finish_ringing(ringing, status_code)

    async def refer(self, call_id: str, target: str) -> None:
        """Transfer a call to ``target`` (REFER when live, ``302`` while ringing).

        Raises:
            CallRequestError: no such call, a bad target, or the caller refused.
        """
        if not target.lower().startswith(("sip:", "sips:", "tel:")) or any(
            c in target for c in "<>\r\n\"' "
        ):
            raise CallRequestError(
                f"Invalid 'target_uri': '{target}'. Use a sip:, sips: or tel: URI.",
                code="invalid_value",
                param="target_uri",
            )
        ringing = self._ringing.get(call_id)
        if ringing is not None:
            _log.info("%s: redirected to %s (302)", call_id, target)
            self._finish_ringing(ringing, 302, "Moved Temporarily", {"Contact": f"<{target}>"})
            return
        live = self._live.get(call_id)
        if live is None:
            raise _not_ringing(call_id, False)
        await live.refer(target)

    def hangup_ringing(self, call_id: str) -> bool:
        """``hangup`` of a call that still rings: declined (603). Whether it rang."""
        ringing = self._ringing.get(call_id)
        if ringing is None:
            return False
        self._finish_ringing(ringing, 603, "Decline")
        return True

    # ---------------------------------------------------------------- SipHandler

    def on_reinvite(self, stack: SipStack, call: IncomingCall) -> None:
        """Hold, resume, session refresh: answered with our media, following a move."""
        live = self._live.get(self._by_sip.get(call.call_id, ""))
        if live is None or call.sdp_answer is None:
            call._send_response(481, "Call/Transaction Does Not Exist")
            return
        offer = call.sdp_offer if call.invite.body else None
        if offer is None:  # no offer: ours is the last answer, and the ACK answers it
            call.accept(call.sdp_answer)
            return
        port, payload_type, dtmf = live.media_format
        try:
            answer, _ = negotiate_sdp(
                offer,
                self._host,
                port,
                supported_codecs=[payload_type],  # the call keeps its codec
                dtmf_payload_type=dtmf,
                advertised_ip=self.config.sip_advertise,
            )
        except SdpNegotiationError:
            call._send_response(488, "Not Acceptable Here")
            return
        address = offer.rtp_address
        if address is not None and address[0] not in ("0.0.0.0", "::"):  # not old-style hold
            live.media.update_remote(address)
        live.log.info(
            "%s: re-INVITE answered (%s)", live.id, answer.audio.direction if answer.audio else "?"
        )
        call.accept(answer)

    def on_bye(self, call: IncomingCall) -> None:
        """The caller hung up."""
        our_id = self._by_sip.get(call.call_id)
        live = self._live.get(our_id or "")
        if live is not None:
            live.caller_hung_up()
        elif our_id is not None and our_id in self._ringing:
            self._finish_ringing(self._ringing[our_id], None)

    def on_cancel(self, call_id: str) -> None:
        """The caller gave up while ringing (487 sent by the library)."""
        our_id = self._by_sip.pop(call_id, None)
        ringing = self._ringing.get(our_id or "")
        if ringing is not None:
            _log.info("%s: cancelled by the caller", ringing.id)
            self._finish_ringing(ringing, None)
            if self.directory is not None:
                self._spawn(self.directory.release(ringing.id))

    def on_transfer_progress(self, call_id: str, status: int, reason: str) -> None:
        """NOTIFY of a transfer."""
        live = self._live.get(self._by_sip.get(call_id, ""))
        if live is not None:
            live.log.info("%s: transfer progress %d %s", live.id, status, reason)
            live.transfer_progress(status)


def _not_ringing(call_id: str, live: bool) -> CallRequestError:
    if live:
        return CallRequestError(
            f"Call '{call_id}' was already accepted.",
            code="call_already_accepted",
            param="call_id",
            status=409,
        )
    return CallRequestError(
        f"No pending call with id '{call_id}'.", code="call_not_found", param="call_id", status=404
    )
