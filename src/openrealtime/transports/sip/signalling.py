"""SIP signalling: aiosipua's user agent server with the fixes docs/sip.md lists.

One :class:`SipStack` per listening transport (UDP, TCP, TLS), each one ``aiosipua.SipUAS``.
aiosipua (pinned) parses and builds messages, keeps dialogs and transactions, answers
``100 Trying``, retransmits ``200 OK`` until the ACK, turns CANCEL into ``487``. This adapter
sits on the transport's two callbacks (nothing of the library is patched) and adds what the
library lacks or gets wrong for a server that trunks call:

- a source allow-list (networks), checked before anything is parsed into a call;
- digest authentication of new INVITEs (RFC 8760/2617 MD5 with ``qop=auth``; the nonce is
  stateless: a timestamp and its HMAC, valid for five minutes);
- retransmitted requests are absorbed and answered with the last response (aiosipua would
  start a second call on a retransmitted INVITE, and answer a retransmitted BYE ``500``);
- non-2xx final answers to an INVITE are retransmitted over UDP until the ACK (Timer G);
- our in-dialog requests (BYE, REFER) say the right transport in Via and Contact, are
  retransmitted over UDP until answered (Timer E), and their answers are handed back;
- a ``Contact`` without ``;transport=`` on TCP/TLS responses gets one (the peer would send
  its ACK over UDP otherwise);
- a dialog's route set keeps the INVITE's Record-Route order (the library reverses it);
- a message whose handling raises (malformed headers) gets ``400`` when it can be routed,
  and the log says so at most once a second, never with a traceback per packet.

The call logic (what to answer, when) is :mod:`openrealtime.transports.sip.endpoint`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiosipua import IncomingCall, SipUAS
from aiosipua.header_codec import parse_auth
from aiosipua.message import SipMessage, SipRequest, SipResponse
from aiosipua.transport import (
    SipTransport,
    TcpSipTransport,
    UdpSipTransport,
    _stamp_via_received,
)
from aiosipua.utils import format_addr

__all__ = [
    "AUTH_HEADERS",
    "SipHandler",
    "SipSecurity",
    "SipStack",
    "TlsSipTransport",
    "header_lines",
]

_log = logging.getLogger(__name__)

T1_S = 0.5
"""RFC 3261's round-trip estimate: the first retransmission interval over UDP."""
T2_S = 4.0
"""The longest retransmission interval."""
TRANSACTION_S = 32.0
"""64·T1: how long a transaction is retransmitted (and remembered)."""
NONCE_TTL_S = 300
"""How long a digest nonce stays valid."""

_ECHOED = frozenset({"via", "v", "from", "f", "to", "t", "call-id", "i", "cseq"})
"""Header fields a response repeats from its request (long and compact names)."""

AUTH_HEADERS = frozenset({"authorization", "proxy-authorization"})
"""Headers never passed on to the application (the webhook's ``sip_headers``)."""


@dataclass(frozen=True)
class SipSecurity:
    """Who may place calls.

    Args:
        allow: source networks allowed to send SIP (``None``: anyone).
        username: digest user (``None``: no authentication).
        password: digest password.
        realm: digest realm.
    """

    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] | None = None
    username: str | None = None
    password: str = ""
    realm: str = "openrealtime"

    def allows(self, host: str) -> bool:
        """Whether a packet from ``host`` may be processed."""
        if self.allow is None:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.allow)


def header_lines(raw: bytes) -> list[tuple[str, str]]:
    """A message's header fields as sent: names, values, repeats and order kept.

    What the application gets as ``sip_headers`` (the reference service keeps "names, values,
    repeated entries, and order"); the library's parsed headers merge repeats and split
    comma lists. Folded lines (a leading space or tab) continue the field before them.
    """
    head = raw.split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
    fields: list[tuple[str, str]] = []
    for line in head.decode("utf-8", errors="replace").splitlines()[1:]:
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip(), value.strip()))
    return fields


class _OncePerSecond(logging.Filter):
    """Lets one record a second through per logger (errors always).

    The SIP and RTP libraries log every malformed packet: a flood of packets would be a flood
    of log lines.
    """

    def __init__(self) -> None:
        super().__init__()
        self._last = 0.0
        self.dropped = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if record.levelno >= logging.ERROR or now - self._last >= 1.0:
            self._last = now
            return True
        self.dropped += 1
        return False


def quiet_library_logs() -> None:
    """Rate-limit the loggers of aiosipua and aiortp (idempotent)."""
    for name in list(logging.root.manager.loggerDict):
        if name.split(".")[0] in ("aiosipua", "aiortp"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _OncePerSecond) for f in logger.filters):
                logger.addFilter(_OncePerSecond())


class SipHandler(Protocol):
    """What a :class:`SipStack` tells the endpoint."""

    def on_invite(self, stack: SipStack, call: IncomingCall) -> None:
        """A new, authenticated INVITE (``100 Trying`` already sent)."""

    def on_reinvite(self, stack: SipStack, call: IncomingCall) -> None:
        """An INVITE inside a confirmed dialog: it must be answered."""

    def on_bye(self, call: IncomingCall) -> None:
        """The caller hung up (``200 OK`` already sent)."""

    def on_cancel(self, call_id: str) -> None:
        """The caller gave up while ringing (``487`` already sent)."""

    def on_transfer_progress(self, call_id: str, status: int, reason: str) -> None:
        """A NOTIFY about a REFER we sent: the transfer's SIP status."""


class _Datagrams(asyncio.DatagramProtocol):
    """The UDP protocol of aiosipua's transport, minus its failing assertion.

    aiosipua asserts that the transport is an ``asyncio.DatagramTransport``, which uvloop's is
    not; the assertion failing in ``connection_made`` made uvloop drop the socket.
    """

    def __init__(self, owner: UdpSipTransport) -> None:
        self._owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | Any, ...]) -> None:
        self._owner._dispatch(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        _log.debug("SIP UDP error: %s", exc)


class UvUdpSipTransport(UdpSipTransport):
    """aiosipua's UDP transport on any event loop (asyncio's or uvloop's)."""

    async def start(self) -> None:
        """Bind the socket."""
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self), local_addr=self.local_addr
        )
        self._udp_transport = transport


class TlsSipTransport(TcpSipTransport):
    """SIP over TLS: aiosipua's TCP transport with the server's certificate."""

    ssl_context: ssl.SSLContext | None = None

    async def start(self) -> None:
        """Listen with TLS."""
        self._server = await asyncio.start_server(
            self._handle_connection,
            host=self.local_addr[0],
            port=self.local_addr[1],
            ssl=self.ssl_context,
        )


@dataclass
class _Seen:
    """A request handled: when, from where, and the last answer to it."""

    at: float
    source: tuple[str, int]
    response: SipResponse | None = None
    record_route: list[str] = field(default_factory=list)


@dataclass
class _Pending:
    future: asyncio.Future[SipResponse]
    resend: asyncio.Task[None] | None = field(default=None)


class SipStack:
    """One listening SIP transport with its user agent server and the adapter's fixes.

    Args:
        kind: ``udp``, ``tcp`` or ``tls``.
        host: address to listen on.
        port: port to listen on.
        handler: told of calls.
        security: allow-list and digest credentials.
        advertise: address put in Via and Contact (the listening one when ``None``).
        ssl_context: the certificate, for ``tls``.
    """

    def __init__(
        self,
        kind: str,
        host: str,
        port: int,
        handler: SipHandler,
        *,
        security: SipSecurity,
        advertise: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.kind = kind
        self.via_transport = kind.upper()
        transport: SipTransport
        if kind == "udp":
            transport = UvUdpSipTransport(local_addr=(host, port))
        elif kind == "tcp":
            transport = TcpSipTransport(local_addr=(host, port))
        elif kind == "tls":
            tls = TlsSipTransport(local_addr=(host, port))
            tls.ssl_context = ssl_context
            transport = tls
        else:
            raise ValueError(f"unknown SIP transport {kind!r}")
        self.transport = transport
        self.security = security
        self.uas = SipUAS(
            transport,
            user_agent="openrealtime",
            advertised_addr=(advertise, port) if advertise else None,
        )
        self._handler = handler
        self._secret = os.urandom(32)
        self._seen: dict[tuple[str, str, str], _Seen] = {}
        self._pending: dict[tuple[str, int, str], _Pending] = {}
        self._resends: dict[str, asyncio.Task[None]] = {}
        """Timer G retransmissions of non-2xx INVITE answers, by Via branch."""
        self._last_complaint = 0.0
        self.last_raw = b""
        """The bytes of the message being dispatched (for :func:`header_lines`)."""
        self.dropped = 0
        """Packets dropped for their source (allow-list)."""

    @property
    def reliable(self) -> bool:
        """Whether the transport retransmits by itself (TCP, TLS)."""
        return self.kind != "udp"

    async def start(self) -> None:
        """Listen, with the adapter between the transport and the user agent server."""
        uas = self.uas
        uas.on_invite = self._new_call
        uas.on_reinvite = lambda call: self._handler.on_reinvite(self, call)
        uas.on_bye = lambda call, _request: self._handler.on_bye(call)
        uas.on_cancel = lambda request, _addr: self._handler.on_cancel(request.call_id or "")
        uas.on_transfer_progress = self._handler.on_transfer_progress
        await uas.start()
        quiet_library_logs()
        inner = self.transport.on_message
        assert inner is not None
        self._send_reply: Callable[[SipResponse], None] = self.transport.send_reply
        self.transport._dispatch = lambda data, addr: self._dispatch(inner, data, addr)  # type: ignore[method-assign]
        self.transport.send_reply = self._reply  # type: ignore[method-assign]

    def _new_call(self, call: IncomingCall) -> None:
        # RFC 3261 §12.1.1: a UAS keeps the Record-Route URIs in order (aiosipua reverses them,
        # as a UAC would, which misroutes our BYE behind two or more record-routing proxies)
        call.dialog.route_set = list(call.invite.headers.get("record-route"))
        self._handler.on_invite(self, call)

    async def stop(self) -> None:
        """Stop listening; pending requests and retransmissions are dropped."""
        for task in [*self._resends.values(), *(p.resend for p in self._pending.values())]:
            if task is not None:
                task.cancel()
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.cancel()
        self._pending.clear()
        self._resends.clear()
        with contextlib.suppress(Exception):
            await self.uas.stop()

    # ---------------------------------------------------------------- receiving

    def _dispatch(
        self,
        inner: Callable[[SipRequest | SipResponse, tuple[str, int]], None],
        data: bytes,
        addr: tuple[str, int],
    ) -> None:
        """Every message received, in place of the transport's own dispatch.

        The source is checked first; then the library parses and handles the message. What it
        cannot parse or handle gets ``400`` when it can be answered, and one log line a second
        at most (the library logs a traceback per packet).
        """
        if not self.security.allows(addr[0]):
            self.dropped += 1  # silently: a 403 would confirm that a SIP server listens here
            return
        self.last_raw = data  # read by the handler while this message is dispatched
        try:
            msg = SipMessage.parse(data)
            if isinstance(msg, SipResponse):
                self._on_response(msg)
                return
            _stamp_via_received(msg, addr)
            if self._absorbed(msg, addr) or not self._authorized(msg):
                return
            inner(msg, addr)
        except Exception as exc:  # a parse error, or malformed headers deep in the library
            self._complain(f"bad SIP message from {addr[0]}: {exc!r}")
            self._bad_request(data, addr)
        finally:
            self.last_raw = b""

    def _bad_request(self, raw: bytes, addr: tuple[str, int]) -> None:
        """Answer ``400`` to a request nobody could handle, from its header lines as sent."""
        if not raw[:16].isascii() or raw.startswith((b"SIP/", b"ACK ")):
            return  # a response, an ACK or binary noise: never answered
        fields = [(n, v) for n, v in header_lines(raw) if n.lower() in _ECHOED]
        if not any(n.lower() in ("via", "v") for n, _ in fields):
            return  # nowhere to send it
        text = "SIP/2.0 400 Bad Request\r\n"
        text += "".join(f"{name}: {value}\r\n" for name, value in fields)
        text += "Content-Length: 0\r\n\r\n"
        with contextlib.suppress(Exception):
            self.transport.send(text.encode("utf-8", "replace"), addr)  # type: ignore[arg-type]

    def _complain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_complaint >= 1.0:
            self._last_complaint = now
            _log.warning("%s (further ones within 1 s not logged)", text)

    @staticmethod
    def _key(msg: SipRequest | SipResponse) -> tuple[str, str, str]:
        vias = msg.via
        cseq = msg.cseq
        branch = (vias[0].branch or "") if vias else ""
        return (msg.call_id or "", branch, cseq.method.upper() if cseq else "")

    def _absorbed(self, request: SipRequest, source: tuple[str, int]) -> bool:
        """Whether ``request`` retransmits one already handled (its last answer is resent).

        A new request is remembered with where it came from (TCP answers go back on that
        connection) and, for an INVITE, its Record-Route (copied into our 18x and 2xx).
        """
        method = request.method.upper()
        if method == "ACK":
            vias = request.via
            branch = vias[0].branch if vias else None
            task = self._resends.pop(branch or "", None)
            if task is not None:  # the ACK of a non-2xx answer: Timer G stops
                task.cancel()
                return True
            return False
        now = time.monotonic()
        if len(self._seen) > 256:
            self._seen = {k: v for k, v in self._seen.items() if now - v.at < TRANSACTION_S}
        key = self._key(request)
        seen = self._seen.get(key)
        if seen is not None:
            if seen.response is not None:
                self._send(seen.response, seen)
            return True
        seen = self._seen[key] = _Seen(now, source)
        if method == "INVITE":
            seen.record_route = list(request.headers.get("record-route"))
        return False

    def _on_response(self, response: SipResponse) -> None:
        cseq = response.cseq
        if cseq is None:
            return
        key = (response.call_id or "", cseq.seq, cseq.method.upper())
        pending = self._pending.get(key)
        if pending is None or response.status_code < 200:
            return
        del self._pending[key]
        if pending.resend is not None:
            pending.resend.cancel()
        if not pending.future.done():
            pending.future.set_result(response)

    # ---------------------------------------------------------------- digest

    def _nonce(self, stamp: int) -> str:
        mac = hmac.new(self._secret, str(stamp).encode(), hashlib.sha256).hexdigest()[:24]
        return f"{stamp:x}.{mac}"

    def _authorized(self, request: SipRequest) -> bool:
        """Whether a new INVITE may go on; a ``401`` challenge was sent when not."""
        security = self.security
        if security.username is None or request.method.upper() != "INVITE":
            return True
        to = request.to_addr
        if to is not None and to.tag:  # in-dialog: the dialog was authenticated
            return True
        if self._credentials_ok(request):
            return True
        challenge = (
            f'Digest realm="{security.realm}", nonce="{self._nonce(int(time.time()))}", '
            'algorithm=MD5, qop="auth"'
        )
        self.uas._send_error(
            request, 401, "Unauthorized", extra_headers={"WWW-Authenticate": challenge}
        )
        return False

    def _credentials_ok(self, request: SipRequest) -> bool:
        security = self.security
        raw = request.get_header("authorization")
        if not raw:
            return False
        try:
            params = parse_auth(raw, credentials=True).params
            nonce = params["nonce"]
            stamp = int(nonce.partition(".")[0], 16)
        except (KeyError, ValueError):
            return False
        if params.get("username") != security.username or params.get("realm") != security.realm:
            return False
        if not hmac.compare_digest(nonce, self._nonce(stamp)):
            return False
        if not 0 <= time.time() - stamp <= NONCE_TTL_S:
            return False

        def md5(text: str) -> str:
            return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

        ha1 = md5(f"{security.username}:{security.realm}:{security.password}")
        ha2 = md5(f"{request.method.upper()}:{params.get('uri', '')}")
        qop = params.get("qop")
        if qop:
            nc, cnonce = params.get("nc", ""), params.get("cnonce", "")
            expected = md5(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
        else:
            expected = md5(f"{ha1}:{nonce}:{ha2}")
        return hmac.compare_digest(expected, params.get("response", ""))

    # ---------------------------------------------------------------- sending

    def _reply(self, response: SipResponse) -> None:
        """Every response the library sends: remembered, completed, Timer G armed.

        Completed: ``Contact`` gets our transport on TCP/TLS, and an INVITE's 18x and 2xx
        carry its Record-Route (RFC 3261 §12.1.1; the library leaves it out, so the caller's
        ACK and BYE would bypass the proxies).
        """
        key = self._key(response)
        seen = self._seen.get(key)
        if seen is not None:
            seen.response = response
        contact = response.headers.get_first("contact")
        if contact and self.reliable and "transport=" not in contact:
            fixed = contact.replace(">", f";transport={self.kind}>", 1)
            response.headers.set_single("Contact", fixed)
        cseq = response.cseq
        if (
            seen is not None
            and seen.record_route
            and cseq is not None
            and cseq.method.upper() == "INVITE"
            and 100 < response.status_code < 300
            and not response.headers.get("record-route")
        ):
            for route in seen.record_route:
                response.headers.append("Record-Route", route)
        self._send(response, seen)
        if (
            not self.reliable
            and cseq is not None
            and cseq.method.upper() == "INVITE"
            and response.status_code >= 300
        ):
            branch = key[1]
            if branch and branch not in self._resends:
                task = asyncio.get_running_loop().create_task(self._timer_g(response, branch))
                self._resends[branch] = task

    def _send(self, response: SipResponse, seen: _Seen | None) -> None:
        """Send an answer: over TCP/TLS on the request's connection, over UDP by its Via.

        The library routes every answer by the Via, which over TCP names the peer's listening
        port, not the connection the request came on: a proxy's answer would be lost.
        """
        if self.reliable and seen is not None:
            with contextlib.suppress(RuntimeError):  # that connection closed: try the Via
                self.transport.send(response, seen.source)
                return
        self._send_reply(response)

    async def _timer_g(self, response: SipResponse, branch: str) -> None:
        """Resend a non-2xx INVITE answer until its ACK (RFC 3261 §17.2.1)."""
        interval, waited = T1_S, 0.0
        try:
            while waited < TRANSACTION_S:
                await asyncio.sleep(interval)
                waited += interval
                self._send_reply(response)
                interval = min(2 * interval, T2_S)
        finally:
            self._resends.pop(branch, None)

    def send_in_dialog(
        self, call: IncomingCall, method: str, headers: Sequence[tuple[str, str]] = ()
    ) -> asyncio.Future[SipResponse]:
        """Send BYE or REFER in ``call``'s dialog; the future gets its final answer.

        Over UDP the request is retransmitted (Timer E) until answered or for 32 s.
        """
        host, port = call._signaling_addr()
        request = call.dialog.create_request(
            method, via_host=host, via_port=port, via_transport=self.via_transport
        )
        request.headers.set_single(
            "Contact", f"<sip:{format_addr(host, port)};transport={self.kind}>"
        )
        if self.uas.user_agent:
            request.headers.set_single("User-Agent", self.uas.user_agent)
        for name, value in headers:
            request.headers.set_single(name, value)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[SipResponse] = loop.create_future()
        cseq = request.cseq
        assert cseq is not None
        key = (call.call_id, cseq.seq, method.upper())
        pending = _Pending(future)
        self._pending[key] = pending
        destination = call.source_addr
        self.transport.send(request, destination)
        if not self.reliable:
            pending.resend = loop.create_task(self._timer_e(request, destination, key))
        return future

    async def _timer_e(
        self, request: SipRequest, destination: tuple[str, int], key: tuple[str, int, str]
    ) -> None:
        interval, waited = T1_S, 0.0
        while waited < TRANSACTION_S and key in self._pending:
            await asyncio.sleep(interval)
            waited += interval
            if key in self._pending:
                self.transport.send(request, destination)
            interval = min(2 * interval, T2_S)
        pending = self._pending.pop(key, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(TimeoutError(f"no answer to {key[2]}"))

    def forget(self, call: IncomingCall) -> None:
        """Drop the library's state of a call that is over."""
        call._stop_retransmissions()
        self.uas._calls.pop(call.call_id, None)
