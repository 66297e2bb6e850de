"""The clause chunker decides when speech can start: early for the first chunk, then by clause."""

from __future__ import annotations

import pytest

from openrealtime.runtime.pipeline import ClauseChunker


def feed(chunker: ClauseChunker, text: str) -> list[str]:
    out: list[str] = []
    for token in text.split(" "):
        out += chunker.push(token + " ")
    return out + chunker.flush()


def test_first_chunk_is_cut_at_the_first_clause_end() -> None:
    chunks = feed(ClauseChunker(), "Hi, the capital of France is Paris. It is lovely in spring.")
    assert chunks[0] == "Hi,"
    assert (
        "".join(chunks).split()
        == "Hi, the capital of France is Paris. It is lovely in spring.".split()
    )
    assert chunks[1].strip() == "the capital of France is Paris."


def test_first_chunk_is_cut_after_three_words_without_punctuation() -> None:
    chunker = ClauseChunker()
    got: list[str] = []
    for word in "The capital city of France is Paris and".split():
        got += chunker.push(word + " ")
        if got:
            break
    assert got == ["The capital city "]


def test_later_clauses_wait_for_enough_text() -> None:
    chunks = feed(ClauseChunker(), "Yes. Ok, fine, we can do that, said the man.")
    assert chunks[0] == "Yes."
    assert all(len(c.strip()) >= 12 for c in chunks[1:-1])


@pytest.mark.timeout(30)  # a liveness bound: the old chunker took minutes on this
def test_text_without_spaces_or_punctuation_is_cut_at_max_chars_in_linear_time() -> None:
    chunker = ClauseChunker()
    word = "QUJD" * 50_000  # 200,000 characters of base64, streamed 4 at a time
    chunks: list[str] = []
    for i in range(0, len(word), 4):
        chunks += chunker.push(word[i : i + 4])
    chunks += chunker.flush()
    assert "".join(chunks) == word
    assert all(len(c) <= chunker.max_chars for c in chunks)
    # One huge piece at once is cut the same way.
    big = ClauseChunker()
    pieces = big.push(word) + big.flush()
    assert "".join(pieces) == word and max(map(len, pieces)) <= big.max_chars


def test_long_unpunctuated_text_is_cut_at_a_space() -> None:
    text = " ".join(["word"] * 300) + " "
    chunks = feed(ClauseChunker(), text)
    assert "".join(chunks).split() == text.split()
    assert all(len(c) <= 400 for c in chunks)
    assert all(c.endswith(" ") for c in chunks[:-1])  # never in the middle of a word
