"""The faster-whisper engine's loading code, checked on small files made here.

No Whisper weights can be fetched at test time; what is checked is what a user meets first:
the missing extra, a directory that is not a model, and (when the extra is installed) a
directory with the right names but a broken model, each with an actionable message.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from openrealtime.backends.errors import ModelFileError
from openrealtime.backends.stt_faster_whisper import FasterWhisperSpeechToText, check_model_dir

HAVE_FW = importlib.util.find_spec("faster_whisper") is not None


def test_a_directory_without_model_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelFileError, match=r"missing model\.bin"):
        check_model_dir(tmp_path)
    with pytest.raises(ModelFileError, match="does not exist"):
        check_model_dir(tmp_path / "nope")


@pytest.mark.skipif(HAVE_FW, reason="checks the message shown when the extra is missing")
def test_missing_extra_says_how_to_install() -> None:
    with pytest.raises(ModelFileError, match=r"openrealtime\[whisper\]"):
        FasterWhisperSpeechToText("small")


@pytest.mark.skipif(not HAVE_FW, reason="the optional 'whisper' extra is not installed")
def test_a_corrupt_model_directory_fails_with_the_path(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.bin").write_bytes(b"not a ctranslate2 model")
    with pytest.raises(ModelFileError, match=str(tmp_path)):
        FasterWhisperSpeechToText(str(tmp_path))
