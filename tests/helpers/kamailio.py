"""A real SIP proxy in front of the server under test: kamailio 5.6 (Debian's) as a trunk.

It listens on a free UDP+TCP port on 127.0.0.1 and relays every initial request to the server
(``sip:test@KAMAILIO`` becomes ``sip:test@127.0.0.1:SERVER_PORT``), statefully (``tm``),
record-routed, with ``X-Trunk: kamailio`` added to INVITEs; in-dialog requests in either direction
follow the Route set (``loose_route``), and one without a Route header for it is answered 404
(a server that forgets the Route set fails)::

    with Kamailio(tmp_path, server_port=sip_port) as trunk:
        phone.dial(trunk.uri_for("test"))
        ...
        assert "relay INVITE" in trunk.log

Its own config, pid file and runtime dir live in a temp dir; it runs in the foreground
(``-DD -E``), as whoever runs the tests (root needs no ``-u``), and logs one ``xlog`` line per
relayed request and reply besides its own warnings.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest

from tests.helpers.baresip import free_sip_port

__all__ = ["KAMAILIO", "Kamailio"]

KAMAILIO = shutil.which("kamailio") or "/usr/sbin/kamailio"
"""Debian's kamailio (``apt install kamailio``)."""

MODULES = "/usr/lib/x86_64-linux-gnu/kamailio/modules"

CONFIG = """#!KAMAILIO
debug=2
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
listen=udp:127.0.0.1:{port}
listen=tcp:127.0.0.1:{port}
alias="127.0.0.1:{port}"
server_header="Server: kamailio-trunk"
user_agent_header="User-Agent: kamailio-trunk"

mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "sanity.so"
loadmodule "pv.so"
loadmodule "xlog.so"

modparam("tm", "fr_timer", 5000)
modparam("tm", "fr_inv_timer", 60000)
modparam("rr", "append_fromtag", 1)

request_route {{
    xlog("L_NOTICE", "trunk: got $rm $ru from $pr:$si:$sp\\n");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (!sanity_check()) {{
        xlog("L_WARN", "trunk: malformed $rm from $si:$sp\\n");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            route(RELAY);
        }}
        if (is_method("ACK") && t_check_trans()) {{
            route(RELAY);  # the ACK of a non-2xx final response
        }}
        xlog("L_WARN", "trunk: in-dialog $rm $ru without our Route: 404\\n");
        if (!is_method("ACK")) {{
            sl_send_reply("404", "Not here");
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            route(RELAY);
        }}
        exit;
    }}
    if (is_method("ACK")) {{
        exit;  # a stray ACK
    }}
    t_check_trans();  # absorbs retransmissions of a transaction in progress
    if (loose_route()) {{
        xlog("L_WARN", "trunk: initial $rm with a Route header: 403\\n");
        sl_send_reply("403", "No pre-loaded routes");
        exit;
    }}
    record_route();
    if (is_method("INVITE")) {{
        append_hf("X-Trunk: kamailio\\r\\n");
    }}
    if ($rU == $null) {{
        $ru = "sip:127.0.0.1:{server_port}{ruri_params}";
    }} else {{
        $ru = "sip:" + $rU + "@127.0.0.1:{server_port}{ruri_params}";
    }}
    route(RELAY);
}}

route[RELAY] {{
    xlog("L_NOTICE", "trunk: relay $rm $ru\\n");
    t_on_reply("REPLY");
    if (!t_relay()) {{
        sl_reply_error();
    }}
    exit;
}}

onreply_route[REPLY] {{
    xlog("L_NOTICE", "trunk: reply $rs $rr to $rm from $si:$sp\\n");
}}
"""


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Kamailio:
    """kamailio relaying to ``sip:127.0.0.1:server_port``; a context manager (stops on exit).

    Args:
        workdir: where its config, runtime dir and log go (a subdir per instance).
        server_port: the SIP port of the server under test.
        server_transport: how it reaches the server (``udp`` or ``tcp``), whatever the
            caller used.
        startup_s: how long it may take to listen.
    """

    def __init__(
        self,
        workdir: Path,
        server_port: int,
        *,
        server_transport: str = "udp",
        startup_s: float = 10.0,
    ) -> None:
        if not Path(KAMAILIO).exists():
            pytest.fail("kamailio is not installed (apt install kamailio)")
        self.port = free_sip_port()
        self.dir = workdir / f"kamailio-{self.port}"
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        self.log_path = self.dir / "kamailio.log"
        config = self.dir / "kamailio.cfg"
        config.write_text(
            CONFIG.format(
                port=self.port,
                server_port=server_port,
                ruri_params="" if server_transport == "udp" else f";transport={server_transport}",
                modules=MODULES,
            )
        )
        command = [
            KAMAILIO,
            "-f",
            str(config),
            "-DD",  # foreground, no daemon
            "-E",  # log to stderr
            "-m",
            "32",
            "-M",
            "4",
            "-P",
            str(self.dir / "run" / "kamailio.pid"),
            "-Y",
            str(self.dir / "run"),
            "-w",
            str(self.dir),
        ]
        with self.log_path.open("wb") as sink:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + startup_s
        while not _listening(self.port):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"kamailio did not start: {self.log[-3000:]}")
            time.sleep(0.05)

    def uri_for(self, user: str, *, transport: str = "udp") -> str:
        """The URI a phone dials to reach ``user`` on the server through the proxy."""
        suffix = "" if transport == "udp" else f";transport={transport}"
        return f"sip:{user}@127.0.0.1:{self.port}{suffix}"

    @property
    def log(self) -> str:
        """Its stderr so far (kamailio's own lines and the ``trunk:`` xlog lines)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        """Stop it (SIGTERM; its children exit with it; kill after ``timeout_s``); always safe."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> Kamailio:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
