"""A real SIP phone for the SIP tests: one headless baresip 1.0.0 (Debian's) process.

Each instance has its own config dir under ``workdir`` and its own free ports (SIP, the ``cons``
key-press port, 20 RTP ports), so a caller and a transfer target can run side by side. Its
"microphone" is a WAV file (``aufile``); ``sndfile`` records what it heard and what it sent::

    phone = Baresip(tmp_path, audio=question_wav)
    try:
        phone.dial(f"sip:test@127.0.0.1:{sip_port}")
        assert await settled(phone.call_established, 10)
        phone.press("12#")                  # RFC 4733 digits
        phone.hangup()                      # BYE (CANCEL while ringing)
        assert await settled(lambda: phone.call_closed_reason() is not None, 5)
        heard = phone.heard()               # dump-...-dec.wav: what the far end sent
    finally:
        phone.stop()

What baresip 1.0.0 does (docs/sip.md "Testing with baresip"): ``aufile`` only takes 8 kHz
mono and stops sending RTP (and ``sndfile`` stops recording) when the file ends, so the clip is
resampled to 8 kHz and padded with silence to ``audio_length_s``. Each UDP datagram to the
``cons`` port is a key press; a DTMF digit ends only when the next key comes, so ``press``
sends byte 0x04 after the last one. Its log (``-s``: every SIP message too) is read from a
file; the ``call_*`` helpers parse baresip's own wording.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from openrealtime.audio.resample import resample
from openrealtime.audio.wav import read_wav, wav_bytes

__all__ = ["BARESIP", "Baresip", "SipMessage", "free_sip_port"]

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
"""Debian's baresip (``apt install baresip baresip-core``)."""

MODULES = "/usr/lib/baresip/modules"
RATE = 8000
"""The rate ``aufile`` accepts with G.711."""

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_STATUS = re.compile(r"\[\d+:\d\d:\d\d\] audio=\S+ \(bit/s\)\s*")  # the per-call status line
_TRACE = re.compile(r"\x1b\[36;1m#\r?\n(UDP|TCP|TLS) (\S+) -> (\S+)\r?\n(.*?)\x1b\[;m", re.DOTALL)
_RTP_RANGES: set[int] = set()  # RTP range bases this process handed out


@dataclasses.dataclass(frozen=True)
class SipMessage:
    """One SIP message baresip sent or received (from its ``-s`` trace)."""

    transport: str
    """``UDP``, ``TCP`` or ``TLS``."""
    source: str
    """``IP:PORT``."""
    destination: str
    text: str
    """The whole message, CRLF line ends."""
    received: bool
    """True for a message that came to baresip."""

    @property
    def start_line(self) -> str:
        """``INVITE sip:… SIP/2.0`` or ``SIP/2.0 200 OK``."""
        return self.text.split("\r\n", 1)[0]

    def header(self, name: str) -> list[str]:
        """The values of header ``name`` (case-insensitive, full names only)."""
        head = self.text.split("\r\n\r\n", 1)[0].split("\r\n")[1:]
        wanted = name.lower()
        return [
            value.strip()
            for key, _, value in (line.partition(":") for line in head)
            if key.strip().lower() == wanted
        ]


def _bindable(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_sip_port() -> int:
    """A port free for SIP over UDP and TCP on 127.0.0.1, with the next one free too (TLS)."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port < 65535 and all(
            _bindable(p, kind)
            for p in (port, port + 1)
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ):
            return port


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _free_rtp_range(size: int = 20) -> int:
    """The first port of ``size`` free UDP ports (below the kernel's ephemeral range)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - size, 2)
        if base not in _RTP_RANGES and all(
            _bindable(p, socket.SOCK_DGRAM) for p in range(base, base + size)
        ):
            _RTP_RANGES.add(base)
            return base
    raise RuntimeError("no free RTP port range")


class Baresip:
    """One headless baresip process: a caller (:meth:`dial`) or a callee (:meth:`listen`).

    Args:
        workdir: where its config dir, log and recordings go (a subdir per instance).
        audio: a PCM WAV played as the microphone (any rate; resampled to 8 kHz mono); None:
            silence.
        account: extra account parameters, e.g. ``";auth_pass=secret"``.
        user: the account's user (``sip:USER@127.0.0.1``).
        audio_length_s: the microphone file is the clip padded with silence to this length
            (baresip stops sending RTP when the file ends).
        sip_trace: log every SIP message (``-s``; :meth:`sip_messages` needs it).
    """

    def __init__(
        self,
        workdir: Path,
        audio: Path | None = None,
        *,
        account: str = "",
        user: str = "alice",
        audio_length_s: float = 120.0,
        sip_trace: bool = True,
    ) -> None:
        if not Path(BARESIP).exists():
            pytest.fail("baresip is not installed (apt install baresip baresip-core)")
        self.sip_port = free_sip_port()
        self.cons_port = _free_udp_port()
        base = _free_rtp_range()
        self.rtp_ports = (base, base + 19)
        self.user = user
        self.dir = workdir / f"baresip-{user}-{self.sip_port}"
        self.dump_dir = self.dir / "dump"
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "baresip.log"
        self._account = account
        self._trace = sip_trace
        self.process: subprocess.Popen[bytes] | None = None
        self._write_audio(audio, audio_length_s)

    def __enter__(self) -> Baresip:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def sip_uri(self) -> str:
        """Where to call it: ``sip:USER@127.0.0.1:PORT``."""
        return f"sip:{self.user}@127.0.0.1:{self.sip_port}"

    def _write_audio(self, audio: Path | None, length_s: float) -> None:
        pcm = b""
        if audio is not None:
            pcm, rate = read_wav(audio.read_bytes())
            pcm = resample(pcm, rate, RATE)
        pad = max(0, int(length_s * RATE) * 2 - len(pcm))
        self.mic = self.dir / "mic.wav"
        self.mic.write_bytes(wav_bytes(pcm + bytes(pad), RATE))

    def _write_config(self, answermode: str) -> None:
        config = {
            "poll_method": "epoll",
            "sip_listen": f"127.0.0.1:{self.sip_port}",
            "call_local_timeout": "120",
            "call_max_calls": "4",
            "audio_player": "aubridge,nil",
            "audio_source": f"aufile,{self.mic}",
            "audio_alert": "aubridge,nil",
            "audio_level": "no",
            "ausrc_format": "s16",
            "auplay_format": "s16",
            "auenc_format": "s16",
            "audec_format": "s16",
            "audio_buffer": "20-160",
            "rtp_ports": f"{self.rtp_ports[0]}-{self.rtp_ports[1]}",
            "rtcp_mux": "no",
            "jitter_buffer_delay": "5-10",
            "rtp_stats": "yes",
            "net_interface": "127.0.0.1",  # "lo" makes 1.0.0 exit 99
            "module_path": MODULES,
            "snd_path": str(self.dump_dir),
            "cons_listen": f"127.0.0.1:{self.cons_port}",
        }
        modules = [
            ("module", "g711.so"),
            ("module", "aufile.so"),
            ("module", "aubridge.so"),
            ("module", "sndfile.so"),
            ("module_tmp", "uuid.so"),
            ("module_tmp", "account.so"),
            ("module_app", "menu.so"),
            ("module", "cons.so"),  # not stdio.so: it needs a terminal
        ]
        lines = [f"{key}\t{value}" for key, value in [*config.items(), *modules]]
        (self.dir / "config").write_text("\n".join(lines) + "\n")
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@127.0.0.1>;regint=0;audio_codecs=pcmu,pcma"
            f";answermode={answermode}{self._account}\n"
        )
        (self.dir / "contacts").write_text("")

    def _start(self, answermode: str, extra: list[str]) -> None:
        if self.process is not None:
            raise RuntimeError("this baresip was started already")
        self._write_config(answermode)
        args = [BARESIP, "-f", str(self.dir), *(["-s"] if self._trace else []), *extra]
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(  # cwd: a crash's core file lands there
                args, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )

    def dial(self, uri: str, *, hangup_after_s: float | None = None) -> None:
        """Start baresip calling ``uri`` (``;transport=tcp`` for TCP); returns at once.

        Args:
            uri: the SIP URI to call.
            hangup_after_s: quit after this many seconds from start (baresip's ``-t``, whole
                seconds, rounded up): BYE when connected, CANCEL while ringing.
        """
        extra = ["-e", f"/dial {uri}"]
        if hangup_after_s is not None:
            extra += ["-t", str(max(1, math.ceil(hangup_after_s)))]
        self._start("manual", extra)

    def listen(self, *, startup_s: float = 5.0) -> None:
        """Start baresip answering every call at once (a transfer target); wait until ready."""
        self._start("auto", [])
        deadline = time.monotonic() + startup_s
        while not self.ready():
            if self.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"baresip did not start: {self.log[-2000:]}")
            time.sleep(0.02)

    def ready(self) -> bool:
        """Whether baresip finished starting (its SIP and cons sockets are open)."""
        return "baresip is ready." in self.log

    def _send(self, keys: bytes) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(keys, ("127.0.0.1", self.cons_port))

    def press(self, keys: str, *, gap_s: float = 0.1) -> None:
        """Press keys (DTMF in a call: 0-9 * # A-D), one datagram each, then release the last.

        Blocks ``gap_s`` per key (each digit lasts until the next key).
        """
        for key in keys:
            self._send(key.encode())
            time.sleep(gap_s)
        self._send(b"\x04")  # KEYCODE_REL: ends the last digit

    def command(self, line: str) -> None:
        """Run a menu command such as ``/hold`` (see ``/help``)."""
        self._send(line.encode() + b"\n")

    def hangup(self) -> None:
        """Hang up the current call (BYE; CANCEL while ringing); baresip keeps running."""
        self.command("/hangup")

    @property
    def returncode(self) -> int | None:
        """Its exit code, or None while it runs (or before it started)."""
        return None if self.process is None else self.process.poll()

    def wait(self, timeout_s: float) -> int:
        """Wait for it to exit (``-t`` or :meth:`stop`); return its exit code.

        Raises:
            TimeoutError: still running after ``timeout_s``.
        """
        if self.process is None:
            raise RuntimeError("baresip was not started")
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"baresip still running after {timeout_s} s") from None

    def stop(self, timeout_s: float = 2.0) -> int | None:
        """Stop it; always safe; return its exit code (None if it never started).

        SIGTERM makes it hang up its calls (BYE, CANCEL) and exit once those transactions end;
        when the far end does not answer them it would wait for their timeout, so after
        ``timeout_s`` a second SIGTERM makes it exit at once (code 0), and SIGKILL 2 s later.
        """
        if self.process is None:
            return None
        for sig, wait_s in ((signal.SIGTERM, timeout_s), (signal.SIGTERM, 2.0)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(wait_s)
        if self.process.poll() is None:
            self.process.kill()
        return self.process.wait()

    @property
    def log(self) -> str:
        """Its stdout and stderr so far, without colour codes and status lines."""
        with contextlib.suppress(FileNotFoundError):
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
            return _STATUS.sub("", _ANSI.sub("", text))
        return ""

    def sip_messages(self) -> list[SipMessage]:
        """Every SIP message it sent or received so far, in order (retransmissions too)."""
        with contextlib.suppress(FileNotFoundError):
            with self.log_path.open(encoding="utf-8", errors="replace", newline="") as file:
                raw = file.read()
            return [self._message(*found) for found in _TRACE.findall(raw)]
        return []

    def _message(self, transport: str, source: str, destination: str, text: str) -> SipMessage:
        # The trace does not say which way a message went, and over TCP neither address need
        # be the SIP port; the top Via does: its requests and the responses to them carry ours.
        message = SipMessage(transport, source, destination, text, received=False)
        vias = message.header("Via") or message.header("v")
        sent_by = vias[0].split()[1].split(";")[0] if vias and " " in vias[0] else ""
        ours = sent_by == f"127.0.0.1:{self.sip_port}"
        response = text.startswith("SIP/2.0 ")
        return dataclasses.replace(message, received=ours if response else not ours)

    def progress(self) -> list[str]:
        """The provisional responses to its INVITEs, e.g. ``["100 Trying", "180 Ringing"]``."""
        return re.findall(r"SIP Progress: (\d{3} .*?) \(", self.log)

    def call_established(self) -> bool:
        """Whether a call was answered (``Call established: URI``)."""
        return "Call established: " in self.log

    def established_calls(self) -> list[str]:
        """The peer URI of each answered call, in order."""
        return re.findall(r"Call established: (\S+)", self.log)

    def ended_calls(self) -> list[str]:
        """The peer URI of each answered call that ended, either side hanging up, in order
        (``Call with URI terminated (duration: N secs)``; a rejected call does not count)."""
        return re.findall(r"Call with (\S+) terminated \(duration", self.log)

    def closed_reasons(self) -> list[str]:
        """Why each call the far end ended or refused did so, in order (``session closed:
        REASON``): e.g. ``404 Not Found``, ``408 Request Timeout``, ``Connection reset by
        peer`` (the far end's BYE). Its own hangups (:meth:`hangup`, ``-t``) log none."""
        return re.findall(r"session closed: (.*)", self.log)

    def call_closed_reason(self) -> str | None:
        """Why the last call ended, or None while none ended."""
        reasons = self.closed_reasons()
        return reasons[-1] if reasons else None

    def transferred_to(self) -> str | None:
        """The Refer-To target of the last REFER it followed, or None."""
        found = re.findall(r"transferring call \S+ to '<?([^'>]*)>?'", self.log)
        return found[-1] if found else None

    def incoming_calls(self) -> list[str]:
        """The caller URI of each call it answered (a :meth:`listen` instance), in order."""
        return re.findall(r"answering call on line \d+ from (\S+) with", self.log)

    def _dumps(self, suffix: str) -> list[Path]:
        return sorted(self.dump_dir.glob(f"dump-*-{suffix}.wav"))

    def heard(self, call: int = -1) -> Path | None:
        """The recording of what it received in a call (``dump-…-dec.wav``; default: the last).

        Complete once the call ended (the WAV header is written then). Calls started in the
        same second share one file name (the later one overwrites).
        """
        dumps = self._dumps("dec")
        return dumps[call] if -len(dumps) <= call < len(dumps) else None

    def sent(self, call: int = -1) -> Path | None:
        """The recording of what it sent in a call (``dump-…-enc.wav``)."""
        dumps = self._dumps("enc")
        return dumps[call] if -len(dumps) <= call < len(dumps) else None
