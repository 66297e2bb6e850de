"""``openrealtime`` CLI with timing hooks, for ``bench/vad_latency.py``'s server-side share.

Runs exactly ``openrealtime.cli.main(argv)`` after wrapping three methods (nothing under src/
changes):

- ``StarletteWebSocketTransport.receive``: stamps each client frame with ``time.monotonic()`` as
  the driver's reader gets it from uvicorn, and numbers it (frame 0 is the first client frame).
- ``SessionDriver._on_frame``: notes which frame the driver is handling and when it dequeued it.
- ``SessionDriver._run``: times the ``DetectSpeech`` command (Silero + the core's turn
  detection) and notes any ``input_audio_buffer.speech_stopped`` it produced.
- ``StarletteWebSocketTransport.send_text``: stamps when that event's frame was handed to the
  socket, and appends one JSON line to ``$OPENREALTIME_BENCH_PROBE``.

``time.monotonic()`` is CLOCK_MONOTONIC, shared by every process on the machine, so the client
can subtract its own stamps from these. Each hook costs ~1 µs per frame.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from typing import Any

from openrealtime.cli import main
from openrealtime.core.commands import DetectSpeech
from openrealtime.protocol.server_events import InputAudioBufferSpeechStopped
from openrealtime.runtime import driver as drv
from openrealtime.transports import websocket as wsmod

_OUT = open(os.environ["OPENREALTIME_BENCH_PROBE"], "a", buffering=1)  # noqa: SIM115
_MARK = '"input_audio_buffer.speech_stopped"'

_Transport: Any = wsmod.StarletteWebSocketTransport
_Driver: Any = drv.SessionDriver
_orig_receive = _Transport.receive
_orig_send_text = _Transport.send_text
_orig_on_frame = _Driver._on_frame
_orig_run = _Driver._run


async def _receive(self: Any) -> Any:
    data = await _orig_receive(self)
    if data is not None:
        now = time.monotonic()
        if not hasattr(self, "_bench_queue"):
            self._bench_queue = deque()
            self._bench_count = 0
            self._bench_pending = {}
        self._bench_queue.append((self._bench_count, now))
        self._bench_count += 1
    return data


def _on_frame(self: Any, data: Any) -> None:
    index, t_recv = self.transport._bench_queue.popleft()
    self._bench_current = (index, t_recv, time.monotonic())
    _orig_on_frame(self, data)


def _run(self: Any, command: Any) -> None:
    if not isinstance(command, DetectSpeech):
        _orig_run(self, command)
        return
    before = len(self.session._out.events)
    t0 = time.monotonic()
    _orig_run(self, command)
    t1 = time.monotonic()
    for event in self.session._out.events[before:]:
        if isinstance(event, InputAudioBufferSpeechStopped):
            index, t_recv, t_deq = self._bench_current
            self.transport._bench_pending[event.item_id] = {
                "frame": index,
                "t_recv": t_recv,
                "t_dequeue": t_deq,
                "t_vad_start": t0,
                "t_vad_done": t1,
            }


async def _send_text(self: Any, text: str) -> None:
    if _MARK not in text:
        await _orig_send_text(self, text)
        return
    t_start = time.monotonic()
    await _orig_send_text(self, text)
    t_end = time.monotonic()
    item_id = json.loads(text).get("item_id")
    record = getattr(self, "_bench_pending", {}).pop(item_id, None)
    if record is not None:
        record.update(item_id=item_id, t_send_start=t_start, t_sent=t_end)
        _OUT.write(json.dumps(record) + "\n")


_Transport.receive = _receive
_Transport.send_text = _send_text
_Driver._on_frame = _on_frame
_Driver._run = _run

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
