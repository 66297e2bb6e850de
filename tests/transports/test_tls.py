"""``wss://`` end to end: the real CLI with ``--ssl-certfile``/``--ssl-keyfile``, the official SDK.

Some clients only speak TLS (openai-node forces ``wss``, spec §1.1), so the server must serve
``https``/``wss`` itself (design.md decision 4). The certificate is self-signed, made here for
``127.0.0.1``; the client trusts exactly that certificate through an :class:`ssl.SSLContext`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from tests.helpers.oracle import SERVER_EVENT

KEY = "sk-tls-0123456789abcdefGOOD"
STARTUP_S = 60.0
WAIT_S = 10.0
_LISTENING = re.compile(r"Uvicorn running on https://127\.0\.0\.1:(\d+)")


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A fresh key and a self-signed certificate for ``127.0.0.1`` and ``localhost``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openrealtime test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@contextlib.asynccontextmanager
async def cli_server(certfile: Path, keyfile: Path) -> AsyncIterator[int]:
    """Run ``openrealtime serve`` with TLS on a free port; yield the port; stop it on exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENREALTIME_")}
    argv = [
        *("serve", "--host", "127.0.0.1", "--port", "0", "--api-key", KEY),
        *("--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)),
        *("--vad", "energy", "--stt", "fake", "--llm", "fake", "--tts", "fake", "--turn", "none"),
    ]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openrealtime",
        *argv,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(STARTUP_S):
            while (match := _LISTENING.search(lines[-1] if lines else "")) is None:
                line = await process.stderr.readline()
                if not line:
                    pytest.fail("openrealtime serve exited:\n" + "".join(lines))
                lines.append(line.decode(errors="replace"))
        drain = asyncio.create_task(_drain(process.stderr, lines))
        try:
            yield int(match[1])
        finally:
            process.terminate()
            try:
                async with asyncio.timeout(WAIT_S):
                    await process.wait()
            finally:
                drain.cancel()
                await asyncio.gather(drain, return_exceptions=True)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def _drain(stream: asyncio.StreamReader, lines: list[str]) -> None:
    """Keep reading the server's log so its pipe never fills."""
    while line := await stream.readline():
        lines.append(line.decode(errors="replace"))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed(tmp_path)


async def test_openai_sdk_over_wss_with_a_self_signed_certificate(
    certificate: tuple[Path, Path],
) -> None:
    certfile, keyfile = certificate
    trusted = ssl.create_default_context(cafile=str(certfile))
    async with cli_server(certfile, keyfile) as port:
        base = f"https://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, verify=trusted, timeout=WAIT_S) as http:
            assert (await http.get("/healthz")).json() == {"status": "ok"}
            minted = await http.post(
                "/v1/realtime/client_secrets",
                json={"session": {"type": "realtime", "instructions": "Over TLS."}},
                headers={"Authorization": f"Bearer {KEY}"},
            )
            assert minted.status_code == 200, minted.text

        api = openai.AsyncOpenAI(
            api_key=minted.json()["value"],  # an ephemeral secret, as a browser would hold
            base_url=f"{base}/v1",
            websocket_base_url=f"wss://127.0.0.1:{port}/v1",
        )
        options: Any = {"ssl": trusted}  # passed through to websockets' connect()
        async with api.realtime.connect(
            model="gpt-realtime", websocket_connection_options=options
        ) as conn:
            async with asyncio.timeout(WAIT_S):
                created = json.loads(await conn.recv_bytes())
                SERVER_EVENT.validate_python(created)
                assert created["type"] == "session.created"
                assert created["session"]["instructions"] == "Over TLS."
                await conn.session.update(
                    session={"type": "realtime", "instructions": "Still TLS.", "tools": []}
                )
                updated = json.loads(await conn.recv_bytes())
            SERVER_EVENT.validate_python(updated)
            assert updated["type"] == "session.updated", updated
            assert updated["session"]["instructions"] == "Still TLS."
        await api.close()


async def test_the_server_really_speaks_tls(certificate: tuple[Path, Path]) -> None:
    certfile, keyfile = certificate
    async with cli_server(certfile, keyfile) as port:
        url = f"wss://127.0.0.1:{port}/v1/realtime?model=gpt-realtime"
        with pytest.raises(ssl.SSLCertVerificationError):  # the system store does not trust it
            async with connect(url, ssl=ssl.create_default_context()):
                pass
        trusted = ssl.create_default_context(cafile=str(certfile))
        headers = {"Authorization": f"Bearer {KEY}"}
        async with connect(url, ssl=trusted, additional_headers=headers) as ws:
            assert json.loads(await ws.recv())["type"] == "session.created"
