"""The playground page at ``/``: served over a real socket, self-contained, valid JavaScript.

No engine runs here (the fakes are never called): these tests fetch the page and its files
with an HTTP client against a real uvicorn server, as a browser would.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from openrealtime.app import create_app
from openrealtime.backends.base import Engines
from openrealtime.backends.fake import (
    FakeLanguageModel,
    FakeSpeechToText,
    FakeTextToSpeech,
    FakeVad,
)
from openrealtime.config import Config
from openrealtime.web import ASSET_PREFIX, CONTENT_TYPES, asset_names
from tests.helpers.server import running_server

STATIC = Path(__file__).resolve().parents[2] / "src" / "openrealtime" / "web" / "static"
SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest_asyncio.fixture
async def base() -> AsyncIterator[str]:
    engines = Engines(
        vad=FakeVad(), stt=FakeSpeechToText(), llm=FakeLanguageModel(), tts=FakeTextToSpeech()
    )
    # auth on: the page itself must still load without a key
    app = create_app(Config(api_keys=("sk-playground-test",)), engines)
    async with running_server(app) as url:
        yield url


class _Refs(HTMLParser):
    """Collects every src/href of the page, and whether any inline script/style exists."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href"):
            if values.get(name):
                self.refs.append((tag, name, values[name] or ""))
        self._in_script = tag == "script"
        if tag == "style" or values.get("style") is not None:
            self.inline_script = True  # the CSP forbids inline styles too

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_script = True

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


async def test_root_serves_the_page(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["etag"]
    csp = response.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "<title>openrealtime" in response.text
    assert 'type="module"' in response.text


async def test_every_file_the_page_refers_to_is_served(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        page = (await client.get("/")).text
        parser = _Refs()
        parser.feed(page)
        assert not parser.inline_script, "inline scripts/styles would break the page's CSP"
        files = {ref for _, _, ref in parser.refs if not ref.startswith("#") and ref != "./"}
        # the modules the entry point imports, transitively
        for name in asset_names():
            if name.endswith(".js"):
                source = (STATIC / name).read_text()
                for imported in re.findall(r"""from\s+['"]\./([\w.-]+)['"]""", source):
                    files.add(f"{ASSET_PREFIX.lstrip('/')}/{imported}")
        assert f"{ASSET_PREFIX.lstrip('/')}/app.js" in files
        assert len(files) >= 5
        for ref in sorted(files):
            assert not ref.startswith(("http:", "https:", "//")), ref
            response = await client.get("/" + ref)
            assert response.status_code == 200, ref
            suffix = Path(ref).suffix
            assert response.headers["content-type"] == CONTENT_TYPES[suffix], ref
            assert response.headers["cache-control"] == "no-cache", ref
            assert response.content == (STATIC / Path(ref).name).read_bytes()


async def test_every_shipped_file_is_used_and_served(base: str) -> None:
    names = asset_names()
    on_disk = sorted(p.name for p in STATIC.iterdir() if p.is_file())
    assert names == on_disk, "a file in static/ with a type the server does not serve"
    async with httpx.AsyncClient(base_url=base) as client:
        for name in names:
            response = await client.get(f"{ASSET_PREFIX}/{name}")
            assert response.status_code == 200, name
            head = await client.head(f"{ASSET_PREFIX}/{name}")
            assert head.status_code == 200 and head.content == b"", name


async def test_revalidation_answers_304(base: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        first = await client.get(f"{ASSET_PREFIX}/app.js")
        again = await client.get(
            f"{ASSET_PREFIX}/app.js", headers={"If-None-Match": first.headers["etag"]}
        )
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == first.headers["etag"]


@pytest.mark.parametrize(
    "path",
    [
        f"{ASSET_PREFIX}/missing.js",
        f"{ASSET_PREFIX}/..%2f__init__.py",
        f"{ASSET_PREFIX}/__init__.py",
        f"{ASSET_PREFIX}/",
    ],
)
async def test_unknown_files_are_not_served(base: str, path: str) -> None:
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.get(path)
    assert response.status_code == 404


def test_no_external_urls() -> None:
    """Everything is self-contained: no CDN, no web fonts, no remote images."""
    url = re.compile(r"""(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}[^\s'"`)<>]*""", re.IGNORECASE)
    for path in sorted(STATIC.iterdir()):
        text = path.read_text().replace(SVG_NAMESPACE, "")
        found = [m for m in url.findall(text) if "localhost" not in m]
        assert not found, f"{path.name} refers to {found}"
        assert "@import" not in text, path.name


def test_javascript_parses() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the JavaScript syntax check needs it")
    for path in sorted(STATIC.glob("*.js")):
        # --check parses without running; .mjs-style modules need the module flag on old nodes
        result = subprocess.run(
            [node, "--experimental-default-type=module", "--check", str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        if "bad option" in result.stderr:
            result = subprocess.run(
                [node, "--check", str(path)], capture_output=True, text=True, check=False
            )
        assert result.returncode == 0, f"{path.name}: {result.stderr}"
