"""One answered SIP call: its session, media and dialog, until either side hangs up.

:class:`SipCall` is what the :class:`~openrealtime.transports.webrtc_calls.CallRegistry` runs
for a phone call (it satisfies ``LiveCall`` like WebRTC's ``Call``): the session driver over a
:class:`~openrealtime.transports.webrtc_calls.CallTransport` whose events go to sidebands only,
the call's :class:`~openrealtime.transports.sip.media.SipMedia`, and its dialog, ended with a
BYE unless the caller ended it. :meth:`SipCall.refer` transfers it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiosipua import IncomingCall

from openrealtime.logging_setup import SessionLogger
from openrealtime.transports.rest import CallRequestError
from openrealtime.transports.sip.media import SipMedia
from openrealtime.transports.sip.signalling import SipStack
from openrealtime.transports.webrtc_calls import CallTransport

if TYPE_CHECKING:
    from openrealtime.runtime.driver import SessionDriver

__all__ = ["BYE_WAIT_S", "TRANSFER_WAIT_S", "SipCall"]

_log = logging.getLogger("openrealtime.transports.sip.endpoint")

BYE_WAIT_S = 2.0
"""How long the end of a call waits for the answer to its BYE."""
TRANSFER_WAIT_S = 30.0
"""How long a REFER's transfer may take before the call is left to the agent again."""


class SipCall:
    """One answered SIP call: its media, its session, its dialog.

    Registered in the :class:`CallRegistry` like a WebRTC call (``transport``, ``driver``,
    ``log``, :meth:`hangup`, :meth:`run`), so sidebands and hangup work alike.
    """

    def __init__(
        self,
        call_id: str,
        stack: SipStack,
        sip: IncomingCall,
        transport: CallTransport,
        media: SipMedia,
        driver: SessionDriver,
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self.id = call_id
        self.stack = stack
        self.sip = sip
        self.transport = transport
        self.media = media
        self.driver = driver
        self.log = SessionLogger(_log, driver.session.id)
        self._release = release
        self._keep: asyncio.Task[None] | None = None
        self.media_format = (0, 0, 101)
        """``(rtp_port, payload_type, dtmf_payload_type)`` of our answer (for re-INVITEs)."""
        self.caller_left = False
        self.transfer: asyncio.Future[int] | None = None

    def hangup(self, reason: str = "hung up") -> None:
        """End the call (``POST …/hangup``, shutdown); :meth:`run` then sends the BYE."""
        self.transport.end(reason)

    def caller_hung_up(self) -> None:
        """The caller sent BYE (already answered)."""
        self.caller_left = True
        self.transport.end("caller hung up")

    async def run(self) -> None:
        """Serve the session until the call ends, then hang up and release the call."""
        self.log.info("%s: SIP call started", self.id)
        try:
            await self.driver.run()
        except Exception:
            self.log.exception("%s: session failed", self.id)
        finally:
            self.transport.end("session ended")
            await self.media.end()
            if not self.caller_left:
                await self._bye()
            self.stack.forget(self.sip)
            await self._release()
            stats = self.media.stats
            self.log.info(
                "%s: SIP call ended (%s); RTP received %s, sent %s, dropped from elsewhere %s",
                self.id,
                self.transport.end_reason,
                stats.get("packets_received"),
                stats.get("sent_frames"),
                stats.get("foreign_packets"),
            )

    async def _bye(self) -> None:
        if self.sip.dialog.state.value != "confirmed":
            return
        answer = self.stack.send_in_dialog(self.sip, "BYE")
        self.sip.dialog.terminate()
        try:
            async with asyncio.timeout(BYE_WAIT_S):
                response = await answer
            self.log.info("%s: BYE answered %d", self.id, response.status_code)
        except (TimeoutError, asyncio.CancelledError):
            self.log.info("%s: BYE not answered within %g s", self.id, BYE_WAIT_S)

    async def refer(self, target: str) -> None:
        """Send a REFER to ``target``; the call ends once the transfer succeeds.

        Raises:
            CallRequestError: the caller refused the REFER or did not answer it.
        """
        loop = asyncio.get_running_loop()
        self.transfer = loop.create_future()
        answer = self.stack.send_in_dialog(
            self.sip,
            "REFER",
            [("Refer-To", f"<{target}>"), ("Referred-By", f"<{self.sip.callee}>")],
        )
        try:
            async with asyncio.timeout(10.0):
                response = await answer
        except TimeoutError:
            raise CallRequestError(
                "The caller did not answer the transfer (REFER).",
                code="sip_refer_timeout",
                status=504,
            ) from None
        if response.status_code >= 300:
            raise CallRequestError(
                f"The caller refused the transfer: {response.status_code} "
                f"{response.reason_phrase}.",
                code="sip_refer_rejected",
                status=409,
            )
        self.log.info("%s: REFER to %s accepted (%d)", self.id, target, response.status_code)
        task = loop.create_task(self._await_transfer())
        self._keep = task

    async def _await_transfer(self) -> None:
        assert self.transfer is not None
        try:
            async with asyncio.timeout(TRANSFER_WAIT_S):
                status = await self.transfer
        except TimeoutError:
            self.log.warning("%s: transfer not confirmed in %g s", self.id, TRANSFER_WAIT_S)
            return
        if 200 <= status < 300:
            self.hangup(f"transferred ({status})")
        else:
            self.log.info("%s: transfer failed (%d); the call goes on", self.id, status)

    def transfer_progress(self, status: int) -> None:
        """A NOTIFY of the transfer's progress."""
        if status >= 200 and self.transfer is not None and not self.transfer.done():
            self.transfer.set_result(status)
